"""Any text a user, a model or a tool produces is stored and read back the same, on every Store.

Regression tests for issue #15: PostgreSQL refused NUL in text and JSON, neither driver could
encode a lone surrogate, and ``run_events.seq`` was 32-bit while the API admits 2**62.
"""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contract.test_store import (
    T0,
    message_record,
    require_run,
    run_record,
    session_record,
    start_session,
    text_event,
    tool_call_record,
)
from tether.events import Usage
from tether.ids import RunId, SessionId
from tether.records import CancelRequest
from tether.storage.sql import SqlStore
from tether.storage.store import Finish, Store, StoredEvent, WriteBatch

pytestmark = pytest.mark.anyio

AWKWARD = ["nul \x00 byte", "lone \ud800 surrogate", "\udfff", "escape \uffff0000 look-alike", ""]
AWKWARD_CHARS = ["\x00", "\ud800", "\udbff", "\udc00", "\uffff", "\ufffe"]
HUGE_SEQ = 2**62


async def test_awkward_text_round_trips_in_every_column(store: Store) -> None:
    weird = "".join(AWKWARD)
    session = dataclasses.replace(session_record(f"s{weird}"), title=weird, summary=weird)
    await store.create_session(session)
    run = dataclasses.replace(run_record("r1", session.session_id), client_request_id=weird)
    await store.create_run(run, None)
    message = message_record("m1", "r1", session_id=session.session_id, content=weird)
    call = dataclasses.replace(
        tool_call_record(f"c{weird}", "r1", "m1"),
        tool=weird,
        args={weird: [weird, {"nested": weird}]},
        status="error",
        result={"text": weird, weird: 1},
        error=weird,
    )
    await store.write(
        WriteBatch(messages=[message], tool_calls=[call], events=[text_event("r1", 0, weird)])
    )
    assert await store.get_session(session.session_id) == session
    assert (await require_run(store, "r1")).client_request_id == weird
    assert await store.messages(session.session_id) == [
        dataclasses.replace(message, tool_calls=(call,))
    ]
    assert await store.events_after(RunId("r1"), -1, limit=5) == [text_event("r1", 0, weird)]


async def test_seq_and_usage_beyond_32_bits_round_trip(store: Store) -> None:
    await start_session(store, run_record("r1"))
    usage = Usage(input_tokens=2**40, output_tokens=2**41, requests=2**33)
    event = StoredEvent(run_id=RunId("r1"), seq=HUGE_SEQ, kind="text_delta", payload="{}")
    await store.write(WriteBatch(events=[event], usage={RunId("r1"): usage}))
    assert await store.events_after(RunId("r1"), HUGE_SEQ - 1, limit=5) == [event]
    assert await store.events_after(RunId("r1"), HUGE_SEQ, limit=5) == []
    assert await store.last_seq(RunId("r1")) == HUGE_SEQ
    assert (await require_run(store, "r1")).usage == usage


async def test_nan_and_infinities_in_json_are_stored_as_null(store: Store) -> None:
    """As in the streamed JSON of the event (pydantic writes them as null)."""
    if not isinstance(store, SqlStore):
        pytest.skip("MemoryStore keeps the caller's objects as they are")
    await start_session(store, run_record("r1"))
    call = dataclasses.replace(
        tool_call_record("c1", "r1", "m1"),
        args={"x": math.nan, "big": 10**30, "list": [math.inf, -math.inf, 1.5]},
        result=math.nan,
    )
    await store.write(WriteBatch(messages=[message_record("m1", "r1")], tool_calls=[call]))
    (message,) = await store.messages(SessionId("s1"))
    (stored,) = message.tool_calls
    assert stored.args == {"x": None, "big": 10**30, "list": [None, None, 1.5]}
    assert stored.result is None


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(st.one_of(st.characters(), st.sampled_from(AWKWARD_CHARS)), max_size=40))
async def test_any_text_round_trips_as_message_content(store: Store, text: str) -> None:
    if await store.get_session(SessionId("s1")) is None:
        await start_session(store, run_record("r1"))
    message = message_record("m1", "r1", content=text, status="streaming")
    await store.write(WriteBatch(messages=[message]))
    assert [m.content for m in await store.messages(SessionId("s1"))] == [text]


async def test_finish_run_records_the_stop_it_ended_with(store: Store) -> None:
    """The first intent stored lost to another stop: the row agrees with the ending (#15)."""
    await start_session(store, run_record("r1", status="running"))
    first = CancelRequest(reason="user", by="bob", requested_at=T0)
    ending = CancelRequest(reason="disconnect", by="alice", requested_at=T0)
    await store.request_cancel(RunId("r1"), first)
    ended = await store.finish_run(
        RunId("r1"),
        Finish(status="cancelled", reason="disconnect", finished_at=T0, cancel=ending),
    )
    assert ended.cancel == ending
    assert (await require_run(store, "r1")).cancel == ending
