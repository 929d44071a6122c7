"""Paused runs, as rows: which calls wait, whether decisions answer them, and how a pause ends.

A paused run is held by no worker and no task, so whoever ends it (a cancel on any worker, the
approval deadline found by any worker's heartbeat) writes its end straight to the store, in one
compare-and-set transaction with the events a live run would have emitted: ``stop_requested``,
a ``tool_call_finished`` (``cancelled``) for every waiting call, and ``run_finished``.
"""

from collections.abc import Sequence
from datetime import datetime

from pydantic import JsonValue

from tether.ending import RunState, Stopped, decide
from tether.errors import UsageError
from tether.events import ToolDecision
from tether.ids import RunId
from tether.records import CancelRequest, MessageRecord, RunRecord, ToolCallRecord
from tether.storage.store import Finish, WriteBatch, stored


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

    ``tether.ending.decide`` rules (the batch closes the waiting calls, marks the last response
    interrupted, and carries the events a live run would have emitted); this only gathers the
    paused run's state from its stored records.
    """
    answers = [m for m in messages if m.role == "assistant"]
    state = RunState(
        run_id=run.run_id,
        next_seq=last_seq + 1,
        usage=run.usage,
        messages=answers[-1:],
        open_calls=awaiting_calls(messages),
        is_paused=True,
        stop=run.cancel,
        now=now,
    )
    end, batch = stored(decide(state, Stopped(request=request)))
    return end.finish, batch
