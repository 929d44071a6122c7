"""One ending per run (issue #13): a run's end lands with its last events, a second ending
is refused, and recovery adopts an ending that was stored instead of writing its own."""

import pytest

from tests.contract.test_store import (
    at,
    message_record,
    require_run,
    run_record,
    start_session,
    text_event,
    tool_call_record,
)
from tether.events import RunFinished, StopReason, TerminalStatus, event_json
from tether.ids import RunId, SessionId
from tether.records import CancelRequest
from tether.storage.store import Ending, Finish, Store, StoredEvent, WriteBatch

pytestmark = pytest.mark.anyio


def terminal_event(
    run_id: str, seq: int, status: TerminalStatus, reason: StopReason | None = None
) -> StoredEvent:
    event = RunFinished(run_id=RunId(run_id), seq=seq, status=status, reason=reason)
    return StoredEvent(run_id=event.run_id, seq=seq, kind=event.kind, payload=event_json(event))


def ending(
    status: TerminalStatus, reason: StopReason | None = None, cancel: CancelRequest | None = None
) -> Ending:
    return Ending(finish=Finish(status=status, reason=reason, finished_at=at(5)), cancel=cancel)


async def running(store: Store, run_id: str = "r1", *, lease_s: float = 10) -> None:
    await start_session(store, run_record(run_id))
    await store.claim_run(RunId(run_id), owner="w1", lease_expires_at=at(lease_s))


async def terminal_seqs(store: Store, run_id: str = "r1") -> list[int]:
    events = await store.events_after(RunId(run_id), -1, limit=100)
    return [e.seq for e in events if e.kind == "run_finished"]


async def test_write_with_ending_ends_the_run_with_its_terminal_event(store: Store) -> None:
    await running(store)
    stop = CancelRequest(reason="user", action="rollback", by="u1")
    await store.write(
        WriteBatch(
            events=[text_event("r1", 0), terminal_event("r1", 1, "cancelled", "user")],
            endings={RunId("r1"): ending("cancelled", "user", stop)},
        )
    )
    run = await require_run(store, "r1")
    assert (run.status, run.reason, run.finished_at, run.lease_expires_at) == (
        "cancelled",
        "user",
        at(5),
        None,
    )
    assert run.cancel == stop
    assert await terminal_seqs(store) == [1]


async def test_write_with_ending_keeps_an_earlier_stop_intent(store: Store) -> None:
    await running(store)
    first = CancelRequest(reason="user", by="u1")
    await store.request_cancel(RunId("r1"), first)
    later = CancelRequest(reason="timeout", by="policy")
    await store.write(WriteBatch(endings={RunId("r1"): ending("cancelled", "timeout", later)}))
    assert (await require_run(store, "r1")).cancel == first


async def test_write_second_terminal_event_is_refused_and_first_ending_stands(
    store: Store,
) -> None:
    await running(store)
    await store.write(
        WriteBatch(
            events=[terminal_event("r1", 3, "completed")],
            endings={RunId("r1"): ending("completed")},
        )
    )
    # A late second ending (another seq, another status) changes nothing, and fails nothing.
    await store.write(
        WriteBatch(
            events=[terminal_event("r1", 9, "interrupted", "worker_lost")],
            endings={RunId("r1"): ending("interrupted", "worker_lost")},
        )
    )
    assert await terminal_seqs(store) == [3]
    assert (await require_run(store, "r1")).status == "completed"


async def test_interrupt_expired_adopts_a_stored_terminal_event(store: Store) -> None:
    """Issue #13: the final write's events landed but not the run's row; recovery adopts it."""
    await running(store)
    partial = message_record("m1", "r1", content="All of it", status="streaming")
    call = tool_call_record("c1", "r1", "m1")
    await store.write(
        WriteBatch(
            messages=[partial],
            tool_calls=[call],
            events=[text_event("r1", 0), terminal_event("r1", 1, "cancelled", "user")],
        )
    )

    recovered = await store.interrupt_expired(at(20))

    assert [(r.run_id, r.status, r.reason) for r in recovered] == [("r1", "cancelled", "user")]
    assert await terminal_seqs(store) == [1]
    [message] = await store.messages(SessionId("s1"))
    assert message.status == "interrupted"
    assert [c.status for c in message.tool_calls] == ["cancelled"]
    assert await store.interrupt_expired(at(30)) == []


async def test_interrupt_expired_adopts_a_completed_ending_as_completed(store: Store) -> None:
    await running(store)
    partial = message_record("m1", "r1", content="Done", status="streaming")
    await store.write(WriteBatch(messages=[partial], events=[terminal_event("r1", 0, "completed")]))
    [run] = await store.interrupt_expired(at(20))
    assert (run.status, run.reason) == ("completed", None)
    [message] = await store.messages(SessionId("s1"))
    assert message.status == "complete"


async def test_write_with_ending_after_recovery_leaves_the_recovered_ending(
    store: Store,
) -> None:
    """A worker whose final write lands after recovery ended its run stores no second end."""
    await running(store)
    await store.write(WriteBatch(events=[text_event("r1", 0)]))
    await store.interrupt_expired(at(20))
    await store.write(
        WriteBatch(
            events=[terminal_event("r1", 1, "completed")],
            endings={RunId("r1"): ending("completed")},
        )
    )
    run = await require_run(store, "r1")
    assert (run.status, run.reason) == ("interrupted", "worker_lost")
    assert len(await terminal_seqs(store)) == 1
