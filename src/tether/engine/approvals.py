"""Paused runs, as rows: which calls wait, whether decisions answer them, and how a pause ends.

A paused run is held by no worker and no task, so whoever ends it (a cancel on any worker, the
approval deadline found by any worker's heartbeat) writes its end straight to the store, in one
compare-and-set transaction with the events a live run would have emitted: ``stop_requested``,
a ``tool_call_finished`` (``cancelled``) for every waiting call, and ``run_finished``.
"""

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from pydantic import JsonValue

from tether.errors import UsageError
from tether.events import (
    RunEvent,
    RunFinished,
    StopRequested,
    ToolCallFinished,
    ToolDecision,
    event_json,
)
from tether.ids import RunId
from tether.records import CancelRequest, MessageRecord, RunRecord, ToolCallRecord
from tether.storage.store import Finish, StoredEvent, WriteBatch


def awaiting_calls(messages: Sequence[MessageRecord]) -> list[ToolCallRecord]:
    """The paused run's calls that wait for a decision, in the order they were made."""
    return [c for m in messages for c in m.tool_calls if c.status == "awaiting_approval"]


def check_decisions(
    run_id: RunId, calls: Sequence[ToolCallRecord], decisions: Sequence[ToolDecision]
) -> None:
    """Every waiting call answered once, and nothing else.

    Raises:
        UsageError: a call is unanswered, unknown or answered twice, or edited arguments
            come with a denial.
    """
    waiting = {c.call_id for c in calls}
    answered = [d.call_id for d in decisions]
    problems: list[str] = []
    if missing := sorted(waiting - set(answered)):
        problems.append(f"no decision for {', '.join(missing)}")
    if unknown := sorted(set(answered) - waiting):
        problems.append(f"no call awaiting approval named {', '.join(unknown)}")
    if twice := sorted({a for a in answered if answered.count(a) > 1}):
        problems.append(f"more than one decision for {', '.join(twice)}")
    if edited_denials := sorted(d.call_id for d in decisions if not d.approved and d.args):
        problems.append(f"arguments edited on a denied call: {', '.join(edited_denials)}")
    if problems:
        raise UsageError(
            f"run {run_id}: " + "; ".join(problems),
            run_id=run_id,
            awaiting=sorted(waiting),
        )


def resume_state(context: JsonValue, runtime_state: JsonValue) -> JsonValue:
    """What a paused run stores to continue: the request context and the runtime's state."""
    return {"context": context, "runtime": runtime_state}


def split_resume_state(state: JsonValue) -> tuple[JsonValue, JsonValue]:
    """(context, runtime state) from what ``resume_state`` made."""
    if not isinstance(state, dict):
        return None, None
    return state.get("context"), state.get("runtime")


def ending(
    run: RunRecord,
    messages: Sequence[MessageRecord],
    request: CancelRequest,
    *,
    last_seq: int,
    now: datetime,
) -> tuple[Finish, WriteBatch]:
    """The end of a paused run stopped by ``request``: its terminal state, and its batch.

    The batch closes the waiting calls, marks the last response interrupted, and carries the
    events a live run would have emitted.
    """
    why = f"the run was stopped ({request.reason}) while it waited for approval"
    calls = [
        dataclasses.replace(c, status="cancelled", error=why, finished_at=now)
        for c in awaiting_calls(messages)
    ]
    events: list[RunEvent] = [
        StopRequested(
            run_id=run.run_id,
            seq=last_seq + 1,
            reason=request.reason,
            mode=request.mode,
            action=request.action,
            by=request.by,
        )
    ]
    for call in calls:
        events.append(
            ToolCallFinished(
                run_id=run.run_id,
                seq=last_seq + 1 + len(events),
                call_id=call.call_id,
                status="cancelled",
                error=why,
            )
        )
    events.append(
        RunFinished(
            run_id=run.run_id,
            seq=last_seq + 1 + len(events),
            status="cancelled",
            reason=request.reason,
            usage=run.usage,
        )
    )
    answers = [m for m in messages if m.role == "assistant"]
    interrupted = (
        [dataclasses.replace(answers[-1], status="interrupted", completed_at=now)]
        if answers
        else []
    )
    batch = WriteBatch(
        messages=interrupted,
        tool_calls=calls,
        events=[
            StoredEvent(run_id=e.run_id, seq=e.seq, kind=e.kind, payload=event_json(e))
            for e in events
        ],
    )
    finish = Finish(status="cancelled", reason=request.reason, usage=run.usage, finished_at=now)
    return finish, batch
