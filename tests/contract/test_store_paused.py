"""The ``Store`` contract for paused runs (issue #9), against every implementation."""

import dataclasses

import pytest
from pydantic import JsonValue

from tests.contract.test_store import (
    at,
    message_record,
    run_record,
    session_record,
    tool_call_record,
)
from tether.errors import NotFound
from tether.events import RunFinished, StopRequested, event_json
from tether.ids import RunId
from tether.records import CancelRequest, RunRecord
from tether.storage.store import Finish, Store, StoredEvent, WriteBatch

pytestmark = pytest.mark.anyio

R1 = RunId("r1")


async def running(store: Store, *, owner: str = "w1") -> RunRecord:
    await store.create_session(session_record())
    run = dataclasses.replace(
        run_record("r1"), status="running", owner=owner, lease_expires_at=at(10)
    )
    await store.create_run(run, message_record("m0", "r1", role="user", content="go"))
    waiting = dataclasses.replace(tool_call_record("c1", "r1", "m1"), status="awaiting_approval")
    await store.write(
        WriteBatch(
            messages=[message_record("m1", "r1", content="Asking.", created_at=at(1))],
            tool_calls=[waiting],
            events=[stored(0, "run_started")],
        )
    )
    return run


def stored(seq: int, kind: str) -> StoredEvent:
    return StoredEvent(run_id=R1, seq=seq, kind=kind, payload="{}")


def closing(seq: int) -> tuple[Finish, WriteBatch]:
    stop = StopRequested(run_id=R1, seq=seq, reason="user", mode="now", action="keep", by="u1")
    end = RunFinished(run_id=R1, seq=seq + 1, status="cancelled", reason="user")
    batch = WriteBatch(
        events=[
            StoredEvent(run_id=R1, seq=e.seq, kind=e.kind, payload=event_json(e))
            for e in (stop, end)
        ],
        tool_calls=[
            dataclasses.replace(
                tool_call_record("c1", "r1", "m1"), status="cancelled", finished_at=at(20)
            )
        ],
    )
    return Finish(status="cancelled", reason="user", finished_at=at(20)), batch


async def test_pause_run_frees_the_run_and_keeps_the_state(store: Store) -> None:
    await running(store)
    state: JsonValue = {"context": {"k": [1, "x"]}, "runtime": None}
    assert await store.pause_run(R1, owner="w1", expires_at=at(3600), state=state)
    record = await store.get_run(R1)
    assert record is not None
    assert (record.status, record.owner, record.lease_expires_at) == ("paused", None, at(3600))
    assert record.resume_state == state
    assert (await store.active_run(record.session_id)) == record  # still the session's active run


async def test_pause_run_only_by_its_owner_while_running(store: Store) -> None:
    await running(store)
    assert not await store.pause_run(R1, owner="w2", expires_at=None, state=None)
    assert await store.pause_run(R1, owner="w1", expires_at=None, state=None)
    assert not await store.pause_run(R1, owner="w1", expires_at=None, state=None)


async def test_resume_run_claims_it_once(store: Store) -> None:
    await running(store)
    await store.pause_run(R1, owner="w1", expires_at=at(3600), state={"runtime": 1})
    claimed = await store.resume_run(R1, owner="w2", lease_expires_at=at(30))
    assert claimed is not None
    assert (claimed.status, claimed.owner, claimed.lease_expires_at) == ("running", "w2", at(30))
    assert claimed.resume_state == {"runtime": 1}
    assert await store.resume_run(R1, owner="w3", lease_expires_at=at(40)) is None
    with pytest.raises(NotFound):
        await store.resume_run(RunId("nope"), owner="w3", lease_expires_at=at(40))


async def test_end_paused_writes_the_end_and_its_batch_together_once(store: Store) -> None:
    await running(store)
    await store.pause_run(R1, owner="w1", expires_at=at(3600), state={"runtime": 1})
    finish, batch = closing(1)
    request = CancelRequest(reason="user", by="u1", requested_at=at(20))
    ended = await store.end_paused(R1, finish, cancel=request, batch=batch)
    assert ended is not None
    assert (ended.status, ended.reason, ended.cancel, ended.finished_at) == (
        "cancelled",
        "user",
        request,
        at(20),
    )
    assert (ended.lease_expires_at, ended.resume_state) == (None, None)
    assert [e.seq for e in await store.events_after(R1, -1, limit=10)] == [0, 1, 2]
    [_, answer] = await store.run_messages(R1)
    assert [c.status for c in answer.tool_calls] == ["cancelled"]
    # Second time: not paused any more, nothing written.
    finish2, batch2 = closing(3)
    assert await store.end_paused(R1, finish2, cancel=request, batch=batch2) is None
    assert [e.seq for e in await store.events_after(R1, -1, limit=10)] == [0, 1, 2]


async def test_end_paused_on_a_resumed_run_changes_nothing(store: Store) -> None:
    await running(store)
    await store.pause_run(R1, owner="w1", expires_at=None, state=None)
    await store.resume_run(R1, owner="w2", lease_expires_at=at(30))
    finish, batch = closing(1)
    request = CancelRequest(reason="user", requested_at=at(20))
    assert await store.end_paused(R1, finish, cancel=request, batch=batch) is None
    record = await store.get_run(R1)
    assert record is not None
    assert (record.status, record.cancel) == ("running", None)
    [_, answer] = await store.run_messages(R1)
    assert [c.status for c in answer.tool_calls] == ["awaiting_approval"]


async def test_expired_paused_finds_paused_runs_past_their_deadline_only(store: Store) -> None:
    await running(store)
    await store.pause_run(R1, owner="w1", expires_at=at(100), state=None)
    assert await store.expired_paused(at(99)) == []
    assert [r.run_id for r in await store.expired_paused(at(101))] == [R1]


async def test_recovery_never_takes_a_paused_run_for_a_lost_one(store: Store) -> None:
    await running(store)
    await store.pause_run(R1, owner="w1", expires_at=at(100), state=None)
    assert await store.interrupt_expired(at(500)) == []
    record = await store.get_run(R1)
    assert record is not None
    assert record.status == "paused"


async def test_last_seq_and_run_messages(store: Store) -> None:
    assert await store.last_seq(R1) == -1
    await running(store)
    assert await store.last_seq(R1) == 0
    messages = await store.run_messages(R1)
    assert [(m.role, m.content) for m in messages] == [("user", "go"), ("assistant", "Asking.")]
    assert await store.run_messages(RunId("nope")) == []
