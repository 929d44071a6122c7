"""A store that stops answering: the run ends ``failed`` at ``storage_give_up_s``, and tells its
client, without the recorder cutting the stuck write short; the write then lands when it can."""

from collections.abc import AsyncIterator

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tether import RunFinished, Settings, Tether
from tether.errors import StorageError
from tether.events import event_json
from tether.storage.memory import MemoryStore
from tether.storage.store import WriteBatch

pytestmark = pytest.mark.anyio

GIVE_UP_S = 0.3


class StuckStore(MemoryStore):
    """The in-memory store, whose writes hang while ``stuck`` (like a database that froze)."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = False
        self.unstuck = anyio.Event()
        self.entered = anyio.Event()
        self.was_cut_short = False

    async def write(self, batch: WriteBatch) -> None:
        if self.stuck:
            self.entered.set()
            try:
                await self.unstuck.wait()
            except anyio.get_cancelled_exc_class():
                self.was_cut_short = True
                raise
        await super().write(batch)


async def talk(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for i in range(100_000):
        yield f"w{i} "
        await anyio.sleep(0.01)  # Deliberate: the scripted model's token pace


async def test_a_write_stuck_past_give_up_fails_the_run_then_lands_whole() -> None:
    store = StuckStore()
    settings = Settings(database_url="memory", flush_interval_s=0.05, storage_give_up_s=GIVE_UP_S)
    app = Tether(store=store, settings=settings)
    app.agent("talker")(lambda ctx: Agent(FunctionModel(stream_function=talk)))
    async with app:
        run = await app.start("talker", "hi")
        events = run.events()
        async for event in events:
            if event.seq == 5:
                break
        store.stuck = True
        with anyio.fail_after(5):
            await store.entered.wait()
            terminal = [e async for e in events][-1]
        assert isinstance(terminal, RunFinished)
        assert (terminal.status, terminal.reason) == ("failed", "error")
        assert terminal.error is not None
        assert "storage" in terminal.error
        assert not store.was_cut_short  # told at give_up_s; the write itself was left alone
        store.stuck = False
        store.unstuck.set()
        with anyio.fail_after(5):
            outcome = await run.outcome()
        assert outcome.status == "failed"
        stored = await store.events_after(run.run_id, -1, limit=100_000)
        assert stored[-1].kind == "run_finished"
        assert [e.seq for e in stored] == list(range(len(stored)))


class EndingRefusedStore(MemoryStore):
    """The in-memory store, failing every write that carries a run's ending until ``opened``."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.refused = anyio.Event()

    async def write(self, batch: WriteBatch) -> None:
        if batch.endings and not self.opened:
            self.refused.set()
            raise StorageError("database is locked")
        await super().write(batch)


async def short(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for word in ("one ", "two ", "three"):
        yield word


@pytest.mark.parametrize("how", ["completed", "stopped"])
async def test_a_final_write_that_never_lands_ends_the_run_failed_once_for_every_viewer(
    how: str,
) -> None:
    """Issue #13: the final write retries until ``storage_give_up_s``; then the run ends
    ``failed`` (storage lost) instead, and that is the one ending viewers get and the store
    keeps: nobody ever saw the ending it could not store."""
    store = EndingRefusedStore()
    settings = Settings(database_url="memory", flush_interval_s=0.05, storage_give_up_s=GIVE_UP_S)
    app = Tether(store=store, settings=settings)
    app.agent("short")(lambda ctx: Agent(FunctionModel(stream_function=short)))
    app.agent("talker")(lambda ctx: Agent(FunctionModel(stream_function=talk)))
    async with app:
        run = await app.start("short" if how == "completed" else "talker", "hi")
        live, replayed_at_once = run.events(), run.events()
        if how == "stopped":
            async for event in live:
                if event.seq == 3:
                    break
            await run.cancel()
        with anyio.fail_after(5):
            await store.refused.wait()
            seen = [e async for e in live]
            other_viewer = [e async for e in replayed_at_once]
        endings = [e for e in seen if isinstance(e, RunFinished)]
        assert [e for e in other_viewer if isinstance(e, RunFinished)] == endings
        [terminal] = endings
        assert (terminal.status, terminal.reason) == ("failed", "error")
        assert terminal.error is not None
        assert "storage lost" in terminal.error
        store.opened = True
        with anyio.fail_after(5):
            outcome = await run.outcome()
        assert (outcome.status, outcome.error) == ("failed", terminal.error)
        record = await store.get_run(run.run_id)
        assert record is not None
        assert (record.status, record.reason, record.error) == ("failed", "error", terminal.error)
        stored = await store.events_after(run.run_id, -1, limit=100_000)
        assert [e.payload for e in stored if e.kind == "run_finished"] == [event_json(terminal)]
        assert [e.seq for e in stored] == list(range(len(stored)))
