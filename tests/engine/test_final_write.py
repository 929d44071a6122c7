"""The final write (issue #13): a run's ending lands once, however late; while it is pending
the run keeps its lease (no recovery gives it a second ending) and its viewers don't have the
terminal event yet (the commit point)."""

from collections.abc import AsyncIterator

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tether import RunEvent, RunFinished, Settings, Tether
from tether.errors import StorageError
from tether.records import utcnow
from tether.storage.memory import MemoryStore
from tether.storage.store import WriteBatch

pytestmark = pytest.mark.anyio

DELAY_S = 6.0
"""Past the old fixed bound on the final write (5 s), after which it was given up."""


class LateEndingStore(MemoryStore):
    """The in-memory store, refusing the write that carries a run's ending until ``opens``."""

    def __init__(self) -> None:
        super().__init__()
        self.opens_at: float | None = None
        self.refused = 0

    async def write(self, batch: WriteBatch) -> None:
        if batch.endings and (self.opens_at is None or anyio.current_time() < self.opens_at):
            self.refused += 1
            raise StorageError("database is locked")
        await super().write(batch)


async def talk(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for i in range(100_000):
        yield f"w{i} "
        await anyio.sleep(0.01)  # Deliberate: the scripted model's token pace


@pytest.mark.slow
async def test_final_write_delayed_past_5_s_lands_once_and_is_never_recovered() -> None:
    store = LateEndingStore()
    settings = Settings(database_url="memory", flush_interval_s=0.05, lease_s=0.6, heartbeat_s=0.1)
    app = Tether(store=store, settings=settings)
    app.agent("talker")(lambda ctx: Agent(FunctionModel(stream_function=talk)))
    async with app:
        run = await app.start("talker", "hi")
        seen: list[RunEvent] = []
        streaming, ended = anyio.Event(), anyio.Event()

        async def watch() -> None:
            async for event in run.events():
                seen.append(event)
                if len(seen) == 5:
                    streaming.set()
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            with anyio.fail_after(5):
                await streaming.wait()
            store.opens_at = anyio.current_time() + DELAY_S
            await run.cancel(reason="user")
            # Another worker's recovery, all along the delay: the lease is held, nothing to
            # take. Nor has any viewer had the terminal event: it waits for the stored ending.
            while anyio.current_time() < store.opens_at - 0.5:
                assert await store.interrupt_expired(utcnow()) == []
                assert not ended.is_set()
                await anyio.sleep(0.2)  # Deliberate: waiting out the delay is the test
            with anyio.fail_after(5):
                await ended.wait()
        # Read right after the terminal event: the store already agrees with it.
        record = await store.get_run(run.run_id)
        outcome = await run.outcome()
        terminal = seen[-1]
        assert isinstance(terminal, RunFinished)
    assert store.refused > 1
    assert (outcome.status, outcome.reason) == (terminal.status, terminal.reason)
    assert record is not None
    assert (record.status, record.reason) == ("cancelled", "user")
    stored = await store.events_after(run.run_id, -1, limit=100_000)
    assert [e.kind for e in stored].count("run_finished") == 1
    assert stored[-1].seq == terminal.seq
    assert await store.interrupt_expired(utcnow()) == []
