"""What a run streams is in the database while it streams, not only when it ends.

On a SQLite file and on PostgreSQL, through the real engine, recorder and ``SqlStore``: the run
and the user message are stored before the model is called; the assistant message appears within
a flush interval of the first delta, holding a prefix of what was streamed; a tool call forces a
flush of the text before it; and ``run_events`` holds the events in order, as they were sent.
"""

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest

from tests.engine._helpers import all_events, wait_for
from tests.scripted import Delay, Gate, Step, parked_tool, scripted, text, tool_call
from tests.storage.conftest import Database
from tether import RunHandle, Settings, Tether, TextDelta, ToolCallStarted
from tether.events import event_json, parse_event
from tether.ids import RunId, SessionId
from tether.records import MessageRecord
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore
from tether.storage.store import Store, StoredEvent

pytestmark = pytest.mark.anyio

FLUSH_INTERVAL_S = 0.1
# A flush commits one interval after the delta at the latest, plus the time the write takes.
WRITE_ALLOWANCE_S = 0.25
# Long enough that no periodic flush happens during a test: only forced flushes write.
NEVER_S = 3600.0
POLL_S = 0.005


@pytest.fixture
async def store(database: Database) -> AsyncIterator[SqlStore]:
    await upgrade_database(database.url, schema=database.schema)
    sql_store = SqlStore.open(database.url, schema=database.schema)
    try:
        yield sql_store
    finally:
        await sql_store.close()


@asynccontextmanager
async def running(
    store: Store, steps: Sequence[Sequence[Step]], *, flush_interval_s: float, tools: list[object]
) -> AsyncGenerator[Tether, None]:
    model = scripted(*steps)
    app = Tether(
        store=store, settings=Settings(database_url="memory", flush_interval_s=flush_interval_s)
    )
    app.agent("a")(lambda ctx: model.agent(tools=tools))
    async with app:
        yield app


async def wait_stored(
    store: Store, session_id: SessionId, until: Callable[[list[MessageRecord]], bool]
) -> list[MessageRecord]:
    """Poll the session's messages until ``until`` holds for them (the caller bounds the wait)."""
    while True:
        if until(messages := await store.messages(session_id)):
            return messages
        await anyio.sleep(POLL_S)  # Deliberate: polling the store, the thing under test


async def wait_events(store: Store, run_id: RunId, *, through_seq: int) -> list[StoredEvent]:
    """Poll the run's stored events until ``through_seq`` is among them (the caller bounds it)."""
    while True:
        events = await store.events_after(run_id, -1, limit=1000)
        if events and events[-1].seq >= through_seq:
            return events
        await anyio.sleep(POLL_S)  # Deliberate: polling the store, the thing under test


def assistant(messages: list[MessageRecord]) -> list[MessageRecord]:
    return [m for m in messages if m.role == "assistant"]


async def streamed_text(run: RunHandle) -> str:
    return "".join(e.text for e in await all_events(run) if isinstance(e, TextDelta))


async def test_run_and_user_message_are_stored_before_the_first_model_call(
    store: SqlStore,
) -> None:
    before_first_chunk = Gate()
    steps = [[before_first_chunk, text("Hello")]]
    async with running(store, steps, flush_interval_s=FLUSH_INTERVAL_S, tools=[]) as app:
        run = await app.start("a", "hi")
        with anyio.fail_after(5):
            await before_first_chunk.reached.wait()
        record = await store.get_run(run.run_id)
        assert record is not None
        assert record.status == "running"
        [message] = await store.messages(run.session_id)
        assert (message.role, message.content, message.status) == ("user", "hi", "complete")
        before_first_chunk.open()
        assert (await run.outcome()).status == "completed"


async def test_assistant_message_is_stored_within_a_flush_interval_of_the_first_delta(
    store: SqlStore,
) -> None:
    words = [f"w{i:03d} " for i in range(100)]
    steps: list[Step] = []
    for word in words:
        steps += [text(word), Delay(0.01)]
    async with running(store, [steps], flush_interval_s=FLUSH_INTERVAL_S, tools=[]) as app:
        run = await app.start("a", "hi")
        await wait_for(run, TextDelta)
        with anyio.fail_after(FLUSH_INTERVAL_S + WRITE_ALLOWANCE_S):
            messages = await wait_stored(store, run.session_id, lambda ms: bool(assistant(ms)))
        [first_seen] = assistant(messages)
        assert first_seen.status == "streaming"
        streamed = await streamed_text(run)
        assert first_seen.content
        assert streamed.startswith(first_seen.content)
        assert len(first_seen.content) < len(streamed), "stored only once the run had ended"
        assert (await run.outcome()).status == "completed"
        [final] = assistant(await store.messages(run.session_id))
        assert (final.message_id, final.content, final.status) == (
            first_seen.message_id,
            "".join(words),
            "complete",
        )


async def test_text_before_a_tool_call_is_flushed_when_the_call_starts(store: SqlStore) -> None:
    before_call, in_tool = Gate(), Gate()
    steps = [
        [text("Let me "), text("check."), before_call, tool_call("lookup", {"q": "x"})],
        [text("Done.")],
    ]
    tools: list[object] = [parked_tool("lookup", in_tool)]
    async with running(store, steps, flush_interval_s=NEVER_S, tools=tools) as app:
        run = await app.start("a", "hi")
        with anyio.fail_after(5):
            await before_call.reached.wait()
        assert not assistant(await store.messages(run.session_id)), "no flush was due yet"
        before_call.open()
        await wait_for(run, ToolCallStarted)
        with anyio.fail_after(5):
            messages = await wait_stored(
                store, run.session_id, lambda ms: bool(assistant(ms) and ms[-1].tool_calls)
            )
        [message] = assistant(messages)
        assert (message.content, message.status) == ("Let me check.", "streaming")
        assert [(c.tool, c.status) for c in message.tool_calls] == [("lookup", "running")]
        in_tool.open()
        assert (await run.outcome()).status == "completed"
        first, second = assistant(await store.messages(run.session_id))
        assert (first.content, first.status) == ("Let me check.", "complete")
        assert [c.status for c in first.tool_calls] == ["ok"]
        assert (second.content, second.status) == ("Done.", "complete")


async def test_events_are_stored_in_order_exactly_as_sent(store: SqlStore) -> None:
    steps = [
        [text("Let me "), Delay(0.02), text("check."), tool_call("lookup", {"q": "x"})],
        [text("Found "), Delay(0.02), text("it.")],
    ]

    async def lookup(q: str) -> str:
        return f"found {q}"

    async with running(store, steps, flush_interval_s=0.01, tools=[lookup]) as app:
        run = await app.start("a", "hi")
        assert (await run.outcome()).status == "completed"
        sent = await all_events(run)
        stored = await store.events_after(run.run_id, -1, limit=1000)
    assert [e.seq for e in stored] == list(range(len(sent)))
    assert [(e.seq, e.kind, e.payload) for e in stored] == [
        (e.seq, e.kind, event_json(e)) for e in sent
    ]
    kinds = [e.kind for e in sent]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert {"text_delta", "tool_call_started", "tool_call_finished"} <= set(kinds)


async def test_replay_after_any_seq_is_exact_across_flush_boundaries(store: SqlStore) -> None:
    """Issue #14: events written a flush at a time replay exactly from every ``Last-Event-ID``,
    and at any moment the stored message holds exactly the text of the stored deltas (what
    recovery keeps if the worker dies there)."""
    parked = Gate()
    words = [f"w{i:02d} " for i in range(40)]
    steps: list[Step] = []
    for i, word in enumerate(words):
        steps += [text(word), Delay(0.003)]
        if i == 24:
            steps.append(parked)
    async with running(store, [steps], flush_interval_s=0.01, tools=[]) as app:
        run = await app.start("a", "hi")
        with anyio.fail_after(5):
            await parked.reached.wait()
            # Parked after 25 words (seqs 1 to 25): wait for the flush that stores them all.
            stored = await wait_events(store, run.run_id, through_seq=25)
        [message] = assistant(await store.messages(run.session_id))
        assert message.content == "".join(words[:25])
        assert message.content == _stored_text(stored)
        parked.open()
        assert (await run.outcome()).status == "completed"
        sent = await all_events(run)
        writes = await store.events_after(run.run_id, -1, limit=1000)
    assert len(writes) == len(sent) > len(words)
    for after in range(-1, len(sent)):
        replay = await store.events_after(run.run_id, after, limit=1000)
        assert [(e.seq, e.kind, e.payload) for e in replay] == [
            (e.seq, e.kind, event_json(e)) for e in sent[after + 1 :]
        ]
    [final] = assistant(await store.messages(run.session_id))
    assert final.content == "".join(words) == _stored_text(writes)


def _stored_text(events: Sequence[StoredEvent]) -> str:
    deltas = [parse_event(e.payload) for e in events if e.kind == "text_delta"]
    return "".join(d.text for d in deltas if isinstance(d, TextDelta))
