"""The database fails while a run streams: the run goes on, and nothing it accepted is lost.

SQLite is made unwritable the way a real neighbour would: another connection holds
``BEGIN EXCLUSIVE``. While it does, the run keeps streaming (writes are behind the stream), the
recorder's writes fail and are retried; once the lock goes, everything streamed is stored. If
the lock never goes, the run ends ``failed`` after ``storage_give_up_s``, saying why, and its
client gets the terminal event.
"""

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import anyio
import pytest
from anyio.abc import TaskGroup
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tether import RunFinished, RunHandle, Settings, Tether, TextDelta
from tether.events import RunEvent, event_json
from tether.ids import RunId, SessionId
from tether.records import MessageRecord
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore
from tether.storage.store import StoredEvent

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FLUSH_INTERVAL_S = 0.05
# The store gives up on one write quickly; the recorder keeps the batch and tries again.
RETRY_BUDGET_S = 0.2
WORD_DELAY_S = 0.01
# Generous: a write blocked on the lock fails only after SQLite's busy_timeout (2 s).
STORAGE_FAILURE_TIMEOUT_S = 15.0
# Short, but longer than one blocked write (busy_timeout, 2 s), so the give-up comes from
# failures counted over time, and also when a write is still blocked at that moment.
GIVE_UP_S = 3.0
LEASE_S = 120.0
POLL_S = 0.005


@dataclass
class Talker:
    """A model that streams a word every ``WORD_DELAY_S`` until told to stop."""

    stop: anyio.Event = field(default_factory=anyio.Event)

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        index = 0
        while not self.stop.is_set():
            yield f"w{index:04d} "
            index += 1
            with anyio.move_on_after(WORD_DELAY_S):  # the model's pace, not the test's
                await self.stop.wait()
        yield "end."

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(stream_function=self.stream, model_name="talker"))


@dataclass
class Transcript:
    """Every event a run emits, as the client receives them."""

    events: list[RunEvent] = field(default_factory=list[RunEvent])
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def follow(self, run: RunHandle) -> None:
        async for event in run.events():
            self.events.append(event)
            changed, self.changed = self.changed, anyio.Event()
            changed.set()

    @property
    def deltas(self) -> int:
        return sum(isinstance(e, TextDelta) for e in self.events)

    @property
    def is_over(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], RunFinished)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self.changed.wait()


class _FailureSeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.set()


@contextmanager
def recorder_failures() -> Generator[anyio.Event, None, None]:
    """An event set when the recorder reports a failed write (it logs each one)."""
    handler = _FailureSeen()
    logger = logging.getLogger("tether.engine.recorder")
    logger.addHandler(handler)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)


@asynccontextmanager
async def exclusive_lock(path: Path) -> AsyncGenerator[None, None]:
    """Hold SQLite's exclusive lock on ``path`` from another connection until the block ends."""
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            await db.execute("ROLLBACK")


@pytest.fixture
async def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "tether.db"
    await upgrade_database(f"sqlite+aiosqlite:///{path}")
    return path


@asynccontextmanager
async def app_on(path: Path, talker: Talker, *, give_up_s: float) -> AsyncGenerator[Tether, None]:
    store = SqlStore.open(f"sqlite+aiosqlite:///{path}", retry_budget_s=RETRY_BUDGET_S)
    settings = Settings(
        database_url="memory",
        flush_interval_s=FLUSH_INTERVAL_S,
        storage_give_up_s=give_up_s,
        # Outlasts the lock: leases can't be renewed while it is held, and a lapsed lease is
        # recovery's business (tests/e2e/test_crash_recovery.py), not these tests'.
        lease_s=LEASE_S,
    )
    app = Tether(store=store, settings=settings)
    app.agent("talker")(lambda ctx: talker.agent())
    try:
        async with app:
            yield app
    finally:
        await store.close()


async def stored_assistant_text(store: SqlStore, session_id: SessionId) -> str:
    messages: list[MessageRecord] = await store.messages(session_id)
    return "".join(m.content for m in messages if m.role == "assistant")


async def wait_stored_text(store: SqlStore, session_id: SessionId) -> None:
    while True:
        if await stored_assistant_text(store, session_id):
            return
        await anyio.sleep(POLL_S)  # Deliberate: polling the store, the thing under test


async def wait_stored_terminal(store: SqlStore, run_id: RunId) -> list[StoredEvent]:
    while True:
        stored = await store.events_after(run_id, -1, limit=100_000)
        if stored and stored[-1].kind == "run_finished":
            return stored
        await anyio.sleep(POLL_S)  # Deliberate: polling the store, the thing under test


def follow(tg: TaskGroup, run: RunHandle) -> Transcript:
    transcript = Transcript()
    tg.start_soon(transcript.follow, run)
    return transcript


async def test_locked_sqlite_keeps_the_run_streaming_and_loses_nothing(db_path: Path) -> None:
    talker = Talker()
    async with app_on(db_path, talker, give_up_s=60) as app, anyio.create_task_group() as tg:
        assert isinstance(app.store, SqlStore)
        store = app.store
        run = await app.start("talker", "hi")
        transcript = follow(tg, run)
        with anyio.fail_after(5):
            await wait_stored_text(store, run.session_id)
        with recorder_failures() as failed:
            async with exclusive_lock(db_path):
                locked_at = transcript.deltas
                with anyio.fail_after(STORAGE_FAILURE_TIMEOUT_S):
                    await failed.wait()
                failed_at = transcript.deltas
                assert failed_at > locked_at, "the run stopped streaming while writes blocked"
                with anyio.fail_after(5):
                    await transcript.wait_until(lambda: transcript.deltas >= failed_at + 10)
        talker.stop.set()
        with anyio.fail_after(5):
            outcome = await run.outcome()
            await transcript.wait_until(lambda: transcript.is_over)
        assert outcome.status == "completed"
        streamed = transcript.text
        assert streamed.endswith("end.")
        assert await stored_assistant_text(store, run.session_id) == streamed
        stored_events = await store.events_after(run.run_id, -1, limit=100_000)
        assert [(e.seq, e.payload) for e in stored_events] == [
            (e.seq, event_json(e)) for e in transcript.events
        ]
        record = await store.get_run(run.run_id)
        assert record is not None
        assert record.status == "completed"


@pytest.mark.skip(
    reason="passes, then 2 runs in 5 hang in the event loop's teardown: SQLAlchemy's aiosqlite "
    "adapter leaves a _terminate_graceful_close task awaiting a connection close that never "
    "completes, and asyncio.Runner waits for it (investigate, then re-enable)"
)
async def test_storage_lost_for_good_fails_the_run_and_tells_the_client(db_path: Path) -> None:
    talker = Talker()
    async with app_on(db_path, talker, give_up_s=GIVE_UP_S) as app, anyio.create_task_group() as tg:
        assert isinstance(app.store, SqlStore)
        run = await app.start("talker", "hi")
        transcript = follow(tg, run)
        with anyio.fail_after(5):
            await wait_stored_text(app.store, run.session_id)
        async with exclusive_lock(db_path):
            with anyio.fail_after(STORAGE_FAILURE_TIMEOUT_S):
                await transcript.wait_until(lambda: transcript.is_over)
            terminal = transcript.events[-1]
            assert isinstance(terminal, RunFinished)
            assert (terminal.status, terminal.reason) == ("failed", "error")
            assert terminal.error is not None
            assert "storage" in terminal.error
            # The engine leaves the model running when storage is lost (reported): end it here.
            talker.stop.set()
            with anyio.fail_after(10):
                outcome = await run.outcome()
        assert (outcome.status, outcome.error) == ("failed", terminal.error)
        # With the database back, everything the client was sent gets stored, terminal included.
        with anyio.fail_after(10):
            stored = await wait_stored_terminal(app.store, run.run_id)
        assert [(e.seq, e.payload) for e in stored] == [
            (e.seq, event_json(e)) for e in transcript.events
        ]
        assert await stored_assistant_text(app.store, run.session_id) == transcript.text
