"""The ``Store`` contract, run against every implementation (see ``conftest.store``)."""

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from tether.bus.memory import MemoryEventBus
from tether.errors import Conflict, NotFound
from tether.events import (
    ACTIVE_STATUSES,
    RunFinished,
    RunStatus,
    StopReason,
    TerminalStatus,
    TextDelta,
    ToolCallFinished,
    Usage,
    event_json,
    parse_event,
)
from tether.ids import MessageId, RunId, SessionId, UserId
from tether.records import (
    CancelRequest,
    MessageRecord,
    MessageStatus,
    Role,
    RunRecord,
    SessionRecord,
    ToolCallRecord,
)
from tether.storage.memory import MemoryStore
from tether.storage.sql import SqlStore
from tether.storage.store import RECOVERY_SEQ_GAP, Finish, Store, StoredEvent, WriteBatch

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def session_record(
    session_id: str = "s1",
    *,
    user_id: str = "u1",
    agent: str = "agent",
    updated_at: datetime = T0,
) -> SessionRecord:
    return SessionRecord(
        session_id=SessionId(session_id),
        user_id=UserId(user_id),
        agent=agent,
        created_at=T0,
        updated_at=updated_at,
    )


def run_record(
    run_id: str,
    session_id: str = "s1",
    *,
    parent_run_id: str | None = None,
    status: RunStatus = "pending",
    started_at: datetime = T0,
) -> RunRecord:
    return RunRecord(
        run_id=RunId(run_id),
        session_id=SessionId(session_id),
        agent="agent",
        user_id=UserId("u1"),
        parent_run_id=RunId(parent_run_id) if parent_run_id else None,
        status=status,
        started_at=started_at,
    )


def message_record(
    message_id: str,
    run_id: str,
    *,
    session_id: str = "s1",
    role: Role = "assistant",
    content: str = "",
    status: MessageStatus = "complete",
    created_at: datetime = T0,
) -> MessageRecord:
    return MessageRecord(
        message_id=MessageId(message_id),
        session_id=SessionId(session_id),
        run_id=RunId(run_id),
        role=role,
        content=content,
        status=status,
        created_at=created_at,
    )


def tool_call_record(
    call_id: str, run_id: str, message_id: str, *, started_at: datetime = T0
) -> ToolCallRecord:
    return ToolCallRecord(
        call_id=call_id,
        run_id=RunId(run_id),
        message_id=MessageId(message_id),
        tool="lookup",
        args={"q": "x", "n": [1, 2.5, None, True]},
        started_at=started_at,
    )


def text_event(run_id: str, seq: int, text: str = "chunk") -> StoredEvent:
    delta = TextDelta(run_id=RunId(run_id), seq=seq, text=text)
    return StoredEvent(run_id=delta.run_id, seq=seq, kind=delta.kind, payload=event_json(delta))


def finish(
    status: TerminalStatus = "completed",
    *,
    reason: StopReason | None = None,
    error: str | None = None,
    usage: Usage | None = None,
) -> Finish:
    return Finish(
        status=status, reason=reason, error=error, usage=usage or Usage(), finished_at=at(60)
    )


async def start_session(store: Store, *runs: RunRecord, session_id: str = "s1") -> None:
    await store.create_session(session_record(session_id))
    for run in runs:
        await store.create_run(run, None)


async def require_run(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(RunId(run_id))
    assert run is not None
    return run


# Sessions


async def test_get_session_after_create_returns_it(store: Store) -> None:
    session = dataclasses.replace(session_record(), title="Trip", summary="Planning")
    await store.create_session(session)
    assert await store.get_session(SessionId("s1")) == session


async def test_get_session_when_missing_returns_none(store: Store) -> None:
    assert await store.get_session(SessionId("nope")) is None


async def test_list_sessions_pages_newest_activity_first(store: Store) -> None:
    for i in range(5):
        await store.create_session(session_record(f"s{i}", updated_at=at(i)))
    first = await store.list_sessions(UserId("u1"), "agent", limit=2)
    assert [s.session_id for s in first] == ["s4", "s3"]
    second = await store.list_sessions(UserId("u1"), "agent", limit=2, before=first[-1].updated_at)
    assert [s.session_id for s in second] == ["s2", "s1"]
    last = await store.list_sessions(UserId("u1"), "agent", limit=2, before=second[-1].updated_at)
    assert [s.session_id for s in last] == ["s0"]


async def test_list_sessions_same_updated_at_orders_by_id_descending(store: Store) -> None:
    for session_id in ("s1", "s3", "s2"):
        await store.create_session(session_record(session_id))
    found = await store.list_sessions(UserId("u1"), None, limit=10)
    assert [s.session_id for s in found] == ["s3", "s2", "s1"]


async def test_list_sessions_hides_other_users_other_agents_and_deleted(store: Store) -> None:
    await store.create_session(session_record("mine"))
    await store.create_session(session_record("theirs", user_id="u2"))
    await store.create_session(session_record("other-agent", agent="other", updated_at=at(1)))
    await store.create_session(session_record("deleted", updated_at=at(2)))
    await store.delete_session(SessionId("deleted"))

    by_agent = await store.list_sessions(UserId("u1"), "agent", limit=10)
    assert [s.session_id for s in by_agent] == ["mine"]
    any_agent = await store.list_sessions(UserId("u1"), None, limit=10)
    assert [s.session_id for s in any_agent] == ["other-agent", "mine"]
    assert await store.list_sessions(UserId("u3"), None, limit=10) == []


async def test_rename_session_changes_only_the_title_and_who_set_it(store: Store) -> None:
    await store.create_session(session_record())
    await store.rename_session(SessionId("s1"), "New title")
    assert await store.get_session(SessionId("s1")) == dataclasses.replace(
        session_record(), title="New title", title_source="user"
    )


async def test_set_summary_keeps_the_summary_and_what_it_covers(store: Store) -> None:
    await store.create_session(session_record())
    await store.set_summary(SessionId("s1"), "They talked about tides.", through=RunId("r7"))
    assert await store.get_session(SessionId("s1")) == dataclasses.replace(
        session_record(), summary="They talked about tides.", summary_through=RunId("r7")
    )


async def test_delete_session_hides_it_from_reads(store: Store) -> None:
    await store.create_session(session_record())
    await store.delete_session(SessionId("s1"))
    assert await store.get_session(SessionId("s1")) is None
    assert await store.list_sessions(UserId("u1"), None, limit=10) == []


async def test_rename_or_delete_when_session_missing_or_deleted_raises_not_found(
    store: Store,
) -> None:
    await store.create_session(session_record("gone"))
    await store.delete_session(SessionId("gone"))
    for session_id in ("missing", "gone"):
        with pytest.raises(NotFound):
            await store.rename_session(SessionId(session_id), "x")
        with pytest.raises(NotFound):
            await store.delete_session(SessionId(session_id))


async def test_create_run_moves_session_to_top_of_listing(store: Store) -> None:
    await store.create_session(session_record("old", updated_at=at(0)))
    await store.create_session(session_record("new", updated_at=at(1)))
    await store.create_run(run_record("r1", "old", started_at=at(2)), None)
    found = await store.list_sessions(UserId("u1"), "agent", limit=10)
    assert [(s.session_id, s.updated_at) for s in found] == [("old", at(2)), ("new", at(1))]


# Runs


async def test_create_run_stores_run_and_user_message(store: Store) -> None:
    await store.create_session(session_record())
    run = dataclasses.replace(run_record("r1"), client_request_id="req-1")
    question = message_record("m1", "r1", role="user", content="Hello?")
    await store.create_run(run, question)
    assert await store.get_run(RunId("r1")) == run
    assert await store.messages(SessionId("s1")) == [question]


async def test_create_run_with_a_new_session_stores_both_in_one_go(store: Store) -> None:
    session = session_record("s9", updated_at=at(0))
    run = run_record("r1", "s9", started_at=at(1))
    question = message_record("m1", "r1", session_id="s9", role="user", content="Hi")
    await store.create_run(run, question, new_session=session)
    assert await store.get_session(SessionId("s9")) == dataclasses.replace(
        session, updated_at=at(1)
    )
    assert await store.get_run(RunId("r1")) == run
    assert await store.messages(SessionId("s9")) == [question]


@pytest.mark.parametrize("status", ACTIVE_STATUSES)
async def test_create_run_when_session_has_active_run_raises_conflict(
    store: Store, status: RunStatus
) -> None:
    await start_session(store, run_record("r1", status=status))
    with pytest.raises(Conflict) as caught:
        await store.create_run(
            run_record("r2", started_at=at(1)), message_record("m2", "r2", role="user")
        )
    assert caught.value.details["active_run_id"] == "r1"
    assert await store.get_run(RunId("r2")) is None
    assert await store.messages(SessionId("s1")) == []


async def test_create_run_after_active_run_finishes_succeeds(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await store.finish_run(RunId("r1"), finish("cancelled", reason="user"))
    await store.create_run(run_record("r2", started_at=at(1)), None)
    assert (await require_run(store, "r2")).status == "pending"


async def test_create_child_run_while_parent_is_active_succeeds(store: Store) -> None:
    await start_session(store, run_record("parent", status="running"))
    await store.create_run(run_record("child-1", parent_run_id="parent", started_at=at(1)), None)
    await store.create_run(run_record("child-2", parent_run_id="parent", started_at=at(2)), None)
    active = await store.active_run(SessionId("s1"))
    assert active is not None
    assert active.run_id == "parent"
    children = await store.child_runs(RunId("parent"))
    assert [r.run_id for r in children] == ["child-1", "child-2"]
    assert await store.child_runs(RunId("child-1")) == []


async def test_active_run_ignores_finished_runs_and_other_sessions(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await start_session(store, run_record("other", "s2"), session_id="s2")
    await store.finish_run(RunId("r1"), finish())
    assert await store.active_run(SessionId("s1")) is None
    assert await store.active_run(SessionId("missing")) is None


async def test_session_runs_lists_all_runs_oldest_first(store: Store) -> None:
    await start_session(store, run_record("r1", started_at=at(0)))
    await store.create_run(run_record("c1", parent_run_id="r1", started_at=at(1)), None)
    await store.finish_run(RunId("c1"), finish())
    await store.finish_run(RunId("r1"), finish())
    await store.create_run(run_record("r2", started_at=at(2)), None)
    runs = await store.session_runs(SessionId("s1"))
    assert [r.run_id for r in runs] == ["r1", "c1", "r2"]


async def test_get_run_when_missing_returns_none(store: Store) -> None:
    assert await store.get_run(RunId("nope")) is None


async def test_claim_run_when_pending_takes_it_once(store: Store) -> None:
    await start_session(store, run_record("r1"))
    assert await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(30))
    assert not await store.claim_run(RunId("r1"), owner="w2", lease_expires_at=at(40))
    run = await require_run(store, "r1")
    assert (run.status, run.owner, run.lease_expires_at) == ("running", "w1", at(30))


async def test_claim_run_when_finished_returns_false(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await store.finish_run(RunId("r1"), finish("cancelled"))
    assert not await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(30))


async def test_run_transitions_when_run_missing_raise_not_found(store: Store) -> None:
    missing = RunId("missing")
    with pytest.raises(NotFound):
        await store.claim_run(missing, owner="w1", lease_expires_at=at(30))
    with pytest.raises(NotFound):
        await store.finish_run(missing, finish())
    with pytest.raises(NotFound):
        await store.request_cancel(missing, CancelRequest(reason="user"))


async def test_finish_run_records_the_terminal_state(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(30))
    usage = Usage(input_tokens=10, output_tokens=5, requests=2, cost_usd=0.0125)
    done = await store.finish_run(
        RunId("r1"), finish("failed", reason="error", error="boom", usage=usage)
    )
    assert done == await store.get_run(RunId("r1"))
    assert (done.status, done.reason, done.error, done.usage) == ("failed", "error", "boom", usage)
    assert (done.finished_at, done.lease_expires_at, done.owner) == (at(60), None, "w1")


async def test_finish_run_second_finish_returns_the_first_outcome(store: Store) -> None:
    await start_session(store, run_record("r1", status="running"))
    first = await store.finish_run(RunId("r1"), finish("cancelled", reason="user"))
    second = await store.finish_run(
        RunId("r1"), Finish(status="completed", finished_at=at(99), usage=Usage(requests=9))
    )
    assert second == first
    assert (second.status, second.reason, second.finished_at) == ("cancelled", "user", at(60))


async def test_request_cancel_first_request_wins(store: Store) -> None:
    await start_session(store, run_record("r1", status="running"))
    first = CancelRequest(
        reason="user", mode="after_turn", action="rollback", by="alice", requested_at=at(5)
    )
    recorded = await store.request_cancel(RunId("r1"), first)
    assert recorded.cancel == first
    again = await store.request_cancel(
        RunId("r1"), CancelRequest(reason="timeout", requested_at=at(6))
    )
    assert again.cancel == first
    assert (await require_run(store, "r1")).cancel == first


async def test_request_cancel_when_run_finished_records_nothing(store: Store) -> None:
    await start_session(store, run_record("r1"))
    done = await store.finish_run(RunId("r1"), finish())
    assert await store.request_cancel(RunId("r1"), CancelRequest(reason="user")) == done
    assert (await require_run(store, "r1")).cancel is None


async def test_renew_leases_extends_owned_active_runs_and_returns_cancelled_ones(
    store: Store,
) -> None:
    for i, owner in enumerate(("w1", "w1", "w2", "w1")):
        await start_session(store, run_record(f"r{i}", f"s{i}"), session_id=f"s{i}")
        await store.claim_run(RunId(f"r{i}"), owner=owner, lease_expires_at=at(10))
    await store.request_cancel(RunId("r1"), CancelRequest(reason="user", requested_at=at(5)))
    await store.request_cancel(RunId("r2"), CancelRequest(reason="user", requested_at=at(5)))
    await store.finish_run(RunId("r3"), finish())
    ids = [RunId(f"r{i}") for i in range(4)] + [RunId("missing")]

    cancelled = await store.renew_leases("w1", ids, lease_expires_at=at(20))

    assert [r.run_id for r in cancelled] == ["r1"]
    leases = [(await require_run(store, f"r{i}")).lease_expires_at for i in range(4)]
    assert leases == [at(20), at(20), at(10), None]


async def test_renew_leases_with_no_runs_returns_nothing(store: Store) -> None:
    assert await store.renew_leases("w1", [], lease_expires_at=at(20)) == []


# Recovery of runs whose worker was lost


async def test_interrupt_expired_closes_the_run_its_messages_and_tool_calls(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(10))
    question = message_record("m0", "r1", role="user", content="q", created_at=at(0))
    partial = message_record(
        "m1", "r1", content="Half an ans", status="streaming", created_at=at(1)
    )
    done_call = dataclasses.replace(
        tool_call_record("c1", "r1", "m1", started_at=at(2)),
        status="ok",
        result={"hits": 3},
        finished_at=at(3),
    )
    open_call = tool_call_record("c2", "r1", "m1", started_at=at(4))
    usage = Usage(input_tokens=7, requests=1)
    await store.write(
        WriteBatch(
            messages=[question, partial],
            tool_calls=[done_call, open_call],
            events=[text_event("r1", seq) for seq in range(3)],
            usage={RunId("r1"): usage},
        )
    )

    interrupted = await store.interrupt_expired(at(20))

    assert [r.run_id for r in interrupted] == ["r1"]
    run = interrupted[0]
    assert (run.status, run.reason, run.error) == ("interrupted", "worker_lost", None)
    assert (run.finished_at, run.lease_expires_at, run.usage) == (at(20), None, usage)
    assert await store.get_run(RunId("r1")) == run
    closed_call = dataclasses.replace(
        open_call, status="cancelled", error="worker lost", finished_at=at(20)
    )
    assert await store.messages(SessionId("s1")) == [
        question,
        dataclasses.replace(
            partial,
            status="interrupted",
            completed_at=at(20),
            tool_calls=(done_call, closed_call),
        ),
    ]
    events = await store.events_after(RunId("r1"), -1, limit=100)
    # Like a live run's ending: the open call is closed by an event, then the terminal one.
    assert [(e.seq, e.kind) for e in events] == [
        (0, "text_delta"),
        (1, "text_delta"),
        (2, "text_delta"),
        (2 + RECOVERY_SEQ_GAP, "tool_call_finished"),
        (3 + RECOVERY_SEQ_GAP, "run_finished"),
    ]
    closed = parse_event(events[-2].payload)
    assert isinstance(closed, ToolCallFinished)
    assert (closed.call_id, closed.status, closed.error) == ("c2", "cancelled", "worker lost")
    terminal = parse_event(events[-1].payload)
    assert isinstance(terminal, RunFinished)
    assert (terminal.run_id, terminal.status, terminal.reason) == (
        "r1",
        "interrupted",
        "worker_lost",
    )


async def test_interrupt_expired_when_run_has_no_events_appends_terminal_past_the_gap(
    store: Store,
) -> None:
    """Issue #13: its viewers may have seen events (from seq 0) that were never stored."""
    await start_session(store, run_record("r1"))
    await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(10))
    await store.interrupt_expired(at(20))
    events = await store.events_after(RunId("r1"), -1, limit=100)
    assert [(e.seq, e.kind) for e in events] == [(RECOVERY_SEQ_GAP - 1, "run_finished")]


async def test_interrupt_expired_leaves_live_finished_and_unleased_runs(store: Store) -> None:
    await start_session(store, run_record("live"))
    await store.claim_run(RunId("live"), owner="w1", lease_expires_at=at(30))
    await start_session(store, run_record("done", "s2"), session_id="s2")
    await store.claim_run(RunId("done"), owner="w1", lease_expires_at=at(10))
    await store.finish_run(RunId("done"), finish())
    await start_session(store, run_record("queued", "s3"), session_id="s3")

    assert await store.interrupt_expired(at(20)) == []
    statuses = [(await require_run(store, r)).status for r in ("live", "done", "queued")]
    assert statuses == ["running", "completed", "pending"]
    assert await store.events_after(RunId("done"), -1, limit=10) == []


async def test_interrupt_expired_spares_the_runs_the_caller_drives(store: Store) -> None:
    await start_session(store, run_record("mine"))
    await store.claim_run(RunId("mine"), owner="w1", lease_expires_at=at(10))
    await start_session(store, run_record("lost", "s2"), session_id="s2")
    await store.claim_run(RunId("lost"), owner="w2", lease_expires_at=at(10))
    recovered = await store.interrupt_expired(at(20), spare=[RunId("mine")])
    assert [r.run_id for r in recovered] == ["lost"]
    assert (await require_run(store, "mine")).status == "running"


async def test_interrupt_expired_twice_interrupts_once(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(10))
    assert len(await store.interrupt_expired(at(20))) == 1
    assert await store.interrupt_expired(at(30)) == []
    assert len(await store.events_after(RunId("r1"), -1, limit=10)) == 1
    assert (await require_run(store, "r1")).finished_at == at(20)


async def test_interrupt_expired_ends_after_the_last_event_stored_or_on_the_bus(
    store: Store,
) -> None:
    """Issue #8: viewers may have seen, on the bus, events the lost worker never stored."""
    await start_session(store, run_record("ahead"))
    await start_session(store, run_record("behind", "s2"), session_id="s2")
    await start_session(store, run_record("unknown", "s3"), session_id="s3")
    for run_id in ("ahead", "behind", "unknown"):
        await store.claim_run(RunId(run_id), owner="w1", lease_expires_at=at(10))
        await store.write(WriteBatch(events=[text_event(run_id, seq) for seq in range(3)]))
    live = MemoryEventBus()
    for seq in range(5):
        live.publish(text_event("ahead", seq))
    live.publish(text_event("behind", 0))

    recovered = await store.interrupt_expired(at(20), live=live)

    assert sorted(r.run_id for r in recovered) == ["ahead", "behind", "unknown"]
    for run_id, last_seen in [("ahead", 4), ("behind", 2), ("unknown", 2)]:
        terminal_seq = last_seen + RECOVERY_SEQ_GAP
        stored = await store.events_after(RunId(run_id), -1, limit=10)
        assert [e.seq for e in stored] == [0, 1, 2, terminal_seq]
        terminal = parse_event(stored[-1].payload)
        assert isinstance(terminal, RunFinished)
        assert (terminal.seq, terminal.status, terminal.reason) == (
            terminal_seq,
            "interrupted",
            "worker_lost",
        )
        # Published as stored, so a viewer waiting on the bus ends at once, with it.
        assert await live.read(RunId(run_id), terminal_seq - 1, timeout_s=0) == stored[-1:]


async def test_interrupt_expired_with_nothing_expired_publishes_nothing(store: Store) -> None:
    await start_session(store, run_record("live"))
    await store.claim_run(RunId("live"), owner="w1", lease_expires_at=at(30))
    live = MemoryEventBus()
    assert await store.interrupt_expired(at(20), live=live) == []
    assert await live.last_seqs([RunId("live")]) == {}


# What the run streamed


async def test_write_same_batch_twice_is_idempotent(store: Store) -> None:
    await start_session(store, run_record("r1"))
    message = message_record("m1", "r1", content="Hi", status="streaming")
    call = tool_call_record("c1", "r1", "m1")
    batch = WriteBatch(
        messages=[message],
        tool_calls=[call],
        events=[text_event("r1", 0), text_event("r1", 1)],
        usage={RunId("r1"): Usage(output_tokens=2)},
    )
    await store.write(batch)
    await store.write(batch)
    assert await store.messages(SessionId("s1")) == [
        dataclasses.replace(message, tool_calls=(call,))
    ]
    assert await store.events_after(RunId("r1"), -1, limit=10) == list(batch.events)
    assert (await require_run(store, "r1")).usage == Usage(output_tokens=2)


async def test_write_same_call_id_in_two_runs_keeps_both_calls(store: Store) -> None:
    """Providers reuse call ids across responses ("call_0"): a call is keyed by its run too."""
    await start_session(store, run_record("r1", status="completed"))
    await store.create_run(run_record("r2", started_at=at(5)), None)
    first = tool_call_record("call_0", "r1", "m1")
    second = dataclasses.replace(tool_call_record("call_0", "r2", "m2"), tool="other")
    await store.write(
        WriteBatch(
            messages=[message_record("m1", "r1"), message_record("m2", "r2", created_at=at(5))],
            tool_calls=[first, second],
        )
    )
    messages = await store.messages(SessionId("s1"))
    assert [m.tool_calls for m in messages] == [(first,), (second,)]


async def test_write_later_batch_updates_message_tool_call_and_usage(store: Store) -> None:
    await start_session(store, run_record("r1"))
    streaming = message_record("m1", "r1", content="Hel", status="streaming")
    running = tool_call_record("c1", "r1", "m1")
    await store.write(WriteBatch(messages=[streaming], tool_calls=[running]))
    complete = dataclasses.replace(
        streaming, content="Hello, world", status="complete", completed_at=at(9)
    )
    failed = dataclasses.replace(running, status="error", error="timeout", finished_at=at(8))
    usage = Usage(input_tokens=3, output_tokens=4, requests=1, cost_usd=0.5)
    await store.write(
        WriteBatch(messages=[complete], tool_calls=[failed], usage={RunId("r1"): usage})
    )
    assert await store.messages(SessionId("s1")) == [
        dataclasses.replace(complete, tool_calls=(failed,))
    ]
    assert (await require_run(store, "r1")).usage == usage


async def test_write_usage_of_unknown_run_is_ignored(store: Store) -> None:
    await store.write(WriteBatch(usage={RunId("unknown"): Usage(input_tokens=1)}))
    assert await store.get_run(RunId("unknown")) is None


async def test_write_empty_batch_changes_nothing(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await store.write(WriteBatch())
    assert await store.messages(SessionId("s1")) == []


async def test_events_after_returns_later_events_in_seq_order_up_to_limit(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await start_session(store, run_record("r2", "s2"), session_id="s2")
    texts = ["zero", "one\nline two", 'quote " and emoji \U0001f600', "three", "four"]
    events = [text_event("r1", seq, t) for seq, t in enumerate(texts)]
    for order in ([3, 0], [2, 4, 1]):
        await store.write(WriteBatch(events=[events[i] for i in order]))
    await store.write(WriteBatch(events=[text_event("r2", 0)]))

    assert await store.events_after(RunId("r1"), 0, limit=2) == events[1:3]
    assert await store.events_after(RunId("r1"), -1, limit=100) == events
    assert await store.events_after(RunId("r1"), 4, limit=10) == []
    assert await store.events_after(RunId("unknown"), -1, limit=10) == []


async def test_messages_are_in_order_with_their_tool_calls(store: Store) -> None:
    await start_session(store, run_record("r1"))
    await start_session(store, run_record("r2", "s2"), session_id="s2")
    question = message_record("m-q", "r1", role="user", created_at=at(0))
    answer = message_record("m-a", "r1", created_at=at(1))
    tie_b = message_record("m-tie-b", "r1", created_at=at(2))
    tie_a = message_record("m-tie-a", "r1", created_at=at(2))
    late_call = tool_call_record("c-late", "r1", "m-a", started_at=at(5))
    early_call = tool_call_record("c-early", "r1", "m-a", started_at=at(3))
    elsewhere = message_record("m-other", "r2", session_id="s2", created_at=at(0))
    await store.write(
        WriteBatch(
            messages=[tie_b, answer, elsewhere, tie_a, question],
            tool_calls=[late_call, early_call],
        )
    )
    assert await store.messages(SessionId("s1")) == [
        question,
        dataclasses.replace(answer, tool_calls=(early_call, late_call)),
        tie_a,
        tie_b,
    ]


async def test_history_has_finished_top_level_runs_oldest_first(store: Store) -> None:
    await start_session(store, run_record("r1", started_at=at(0)))
    await store.create_run(run_record("child", parent_run_id="r1", started_at=at(1)), None)
    q1 = message_record("m1", "r1", role="user", created_at=at(0))
    a1 = message_record("m2", "r1", created_at=at(2))
    child_message = message_record("m3", "child", created_at=at(1))
    call = tool_call_record("c1", "r1", "m2", started_at=at(3))
    await store.write(WriteBatch(messages=[q1, a1, child_message], tool_calls=[call]))
    await store.finish_run(RunId("child"), finish())
    await store.finish_run(RunId("r1"), finish())
    q2 = message_record("m4", "r2", role="user", created_at=at(10))
    await store.create_run(run_record("r2", started_at=at(10)), q2)
    await store.finish_run(RunId("r2"), finish("cancelled", reason="user"))
    q3 = message_record("m5", "r3", role="user", created_at=at(20))
    await store.create_run(run_record("r3", status="running", started_at=at(20)), q3)

    history = await store.history(SessionId("s1"))

    assert [(t.run.run_id, t.run.status) for t in history] == [
        ("r1", "completed"),
        ("r2", "cancelled"),
    ]
    assert history[0].messages == (q1, dataclasses.replace(a1, tool_calls=(call,)))
    assert history[1].messages == (q2,)
    assert await store.history(SessionId("empty")) == []


async def test_history_query_count_does_not_grow_with_messages(store: Store) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("counts SQL statements")

    async def count_history_queries() -> int:
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        event.listen(store.engine.sync_engine, "before_cursor_execute", record)
        try:
            await store.history(SessionId("s1"))
        finally:
            event.remove(store.engine.sync_engine, "before_cursor_execute", record)
        return len(statements)

    await store.create_session(session_record())
    await add_finished_turn(store, 0, messages=1)
    one_turn = await count_history_queries()
    for turn in range(1, 6):
        await add_finished_turn(store, turn, messages=8)
    assert await count_history_queries() == one_turn


async def add_finished_turn(store: Store, turn: int, *, messages: int) -> None:
    run_id = f"r{turn}"
    await store.create_run(run_record(run_id, started_at=at(turn * 100)), None)
    rows = [
        message_record(f"m{turn}-{i}", run_id, created_at=at(turn * 100 + i))
        for i in range(messages)
    ]
    calls = [tool_call_record(f"c{turn}-{i}", run_id, f"m{turn}-{i}") for i in range(messages)]
    await store.write(WriteBatch(messages=rows, tool_calls=calls))
    await store.finish_run(RunId(run_id), finish())


# Timestamps


async def test_timestamps_come_back_utc_aware_to_the_microsecond(store: Store) -> None:
    await start_session(store, run_record("r1", started_at=at(0.000001)))
    await store.claim_run(RunId("r1"), owner="w1", lease_expires_at=at(30.5))
    await store.request_cancel(RunId("r1"), CancelRequest(reason="user", requested_at=at(7.25)))
    message = dataclasses.replace(message_record("m1", "r1"), completed_at=at(3.999999))
    call = dataclasses.replace(tool_call_record("c1", "r1", "m1"), finished_at=at(4))
    await store.write(WriteBatch(messages=[message], tool_calls=[call]))

    session = await store.get_session(SessionId("s1"))
    run = await require_run(store, "r1")
    stored = await store.messages(SessionId("s1"))

    assert session is not None
    assert run.cancel is not None
    assert stored == [dataclasses.replace(message, tool_calls=(call,))]
    assert (run.started_at, run.lease_expires_at) == (at(0.000001), at(30.5))
    values = [
        session.created_at,
        session.updated_at,
        run.started_at,
        run.lease_expires_at,
        run.cancel.requested_at,
        stored[0].created_at,
        stored[0].completed_at,
        stored[0].tool_calls[0].started_at,
        stored[0].tool_calls[0].finished_at,
    ]
    assert all(v is not None and v.utcoffset() == timedelta(0) for v in values)


async def test_timestamps_in_other_zones_come_back_as_utc(store: Store) -> None:
    if isinstance(store, MemoryStore):
        pytest.skip("MemoryStore hands back the caller's datetime objects unchanged")
    india = timezone(timedelta(hours=5, minutes=30))
    session = dataclasses.replace(session_record(), created_at=T0.astimezone(india))
    await store.create_session(session)
    found = await store.get_session(SessionId("s1"))
    assert found is not None
    assert found.created_at == T0
    assert found.created_at.utcoffset() == timedelta(0)
