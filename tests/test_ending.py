"""``tether.ending.decide``: one ending per path, decided from the run's state and the cause.

Issue #13 item 1: every way a run ends goes through this function; the engine, the stopper,
recovery and the SSE route only apply what it returns.
"""

import dataclasses
from datetime import UTC, datetime
from typing import get_args

import pytest

from tether.ending import (
    Completed,
    Failed,
    Recorded,
    RunState,
    Stopped,
    StorageLost,
    WorkerLost,
    decide,
)
from tether.events import (
    RunFinished,
    StopReason,
    StopRequested,
    TerminalStatus,
    ToolCallFinished,
    ToolStatus,
    Usage,
)
from tether.ids import MessageId, RunId, SessionId
from tether.records import CancelRequest, MessageRecord, MessageStatus, ToolCallRecord

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN = RunId("r1")
USAGE = Usage(input_tokens=11, output_tokens=7, requests=2)


def message(message_id: str, status: MessageStatus = "streaming") -> MessageRecord:
    return MessageRecord(
        message_id=MessageId(message_id),
        session_id=SessionId("s1"),
        run_id=RUN,
        role="assistant",
        content=f"text of {message_id}",
        status=status,
    )


def call(call_id: str, status: ToolStatus = "running") -> ToolCallRecord:
    return ToolCallRecord(
        call_id=call_id,
        run_id=RUN,
        message_id=MessageId("m2"),
        tool="lookup",
        args={"q": call_id},
        status=status,
    )


MID_TOOL = RunState(
    run_id=RUN,
    next_seq=5,
    usage=USAGE,
    messages=[message("m1"), message("m2")],
    open_calls=[call("c1"), call("c2")],
    now=NOW,
)
"""A run cut mid-tool: two responses still open, two calls running, 5 events so far."""


def test_completion_ends_completed_and_closes_the_last_response_complete() -> None:
    state = dataclasses.replace(MID_TOOL, open_calls=[])
    ending = decide(state, Completed())
    assert ending.terminal == RunFinished(run_id=RUN, seq=5, status="completed", usage=USAGE)
    assert ending.events == (ending.terminal,)
    assert (ending.status, ending.reason, ending.error, ending.cancel) == (
        "completed",
        None,
        None,
        None,
    )
    assert [(m.message_id, m.status, m.completed_at) for m in ending.messages] == [
        ("m1", "complete", NOW),
        ("m2", "complete", NOW),
    ]
    assert ending.tool_calls == ()


@pytest.mark.parametrize("reason", get_args(StopReason))
def test_a_stop_for_any_reason_ends_cancelled_with_its_calls_closed_before_the_terminal(
    reason: StopReason,
) -> None:
    request = CancelRequest(reason=reason, mode="now", action="rollback", by="u1")
    ending = decide(dataclasses.replace(MID_TOOL, stop=request), Stopped(request=request))
    assert (ending.status, ending.reason, ending.error) == ("cancelled", reason, None)
    assert ending.cancel == request  # the stop is recorded with the ending it caused
    assert ending.events == (
        ToolCallFinished(
            run_id=RUN, seq=5, call_id="c1", status="cancelled", error="run cancelled"
        ),
        ToolCallFinished(
            run_id=RUN, seq=6, call_id="c2", status="cancelled", error="run cancelled"
        ),
        RunFinished(run_id=RUN, seq=7, status="cancelled", reason=reason, usage=USAGE),
    )
    assert ending.terminal is ending.events[-1]
    assert [(c.call_id, c.status, c.result, c.finished_at) for c in ending.tool_calls] == [
        ("c1", "cancelled", None, NOW),
        ("c2", "cancelled", None, NOW),
    ]
    # Partial text is kept: only the last response is labelled interrupted.
    assert [(m.message_id, m.status, m.content) for m in ending.messages] == [
        ("m1", "complete", "text of m1"),
        ("m2", "interrupted", "text of m2"),
    ]


def test_shutdown_ends_cancelled_shutdown() -> None:
    request = CancelRequest(reason="shutdown", by="worker-1")
    ending = decide(MID_TOOL, Stopped(request=request))
    assert (ending.terminal.status, ending.terminal.reason) == ("cancelled", "shutdown")
    assert ending.messages[-1].status == "interrupted"
    assert {c.status for c in ending.tool_calls} == {"cancelled"}


def test_a_failure_ends_failed_and_closes_calls_and_response_as_errors() -> None:
    ending = decide(MID_TOOL, Failed(error="ValueError: bad"))
    assert (ending.status, ending.reason, ending.error) == ("failed", "error", "ValueError: bad")
    assert ending.terminal.error == "ValueError: bad"
    assert [(e.kind, e.seq) for e in ending.events] == [
        ("tool_call_finished", 5),
        ("tool_call_finished", 6),
        ("run_finished", 7),
    ]
    assert {(c.status, c.error) for c in ending.tool_calls} == {("error", "ValueError: bad")}
    assert ending.messages[-1].status == "error"


def test_a_failure_after_a_stop_keeps_the_stop_on_record() -> None:
    request = CancelRequest(reason="user")
    ending = decide(dataclasses.replace(MID_TOOL, stop=request), Failed(error="boom"))
    assert (ending.status, ending.cancel) == ("failed", request)


def test_storage_lost_ends_failed_with_why() -> None:
    why = "storage lost: the run's ending was not stored within 30 s"
    ending = decide(dataclasses.replace(MID_TOOL, open_calls=[]), StorageLost(why=why))
    assert (ending.terminal.status, ending.terminal.reason, ending.terminal.error) == (
        "failed",
        "error",
        why,
    )
    assert ending.events == (ending.terminal,)


def test_approval_timeout_of_a_paused_run_announces_the_stop_and_cuts_the_turn() -> None:
    """Nobody holds a paused run, so its ending emits the stop a live run would have."""
    request = CancelRequest(reason="timeout", by="policy")
    state = dataclasses.replace(
        MID_TOOL,
        messages=[message("m2", status="complete")],
        open_calls=[call("c1", "awaiting_approval")],
        is_paused=True,
    )
    ending = decide(state, Stopped(request=request))
    why = "the run was stopped (timeout) while it waited for approval"
    assert ending.events == (
        StopRequested(run_id=RUN, seq=5, reason="timeout", mode="now", action="keep", by="policy"),
        ToolCallFinished(run_id=RUN, seq=6, call_id="c1", status="cancelled", error=why),
        RunFinished(run_id=RUN, seq=7, status="cancelled", reason="timeout", usage=USAGE),
    )
    assert [(m.message_id, m.status) for m in ending.messages] == [("m2", "interrupted")]
    assert [(c.status, c.error) for c in ending.tool_calls] == [("cancelled", why)]


def test_worker_lost_ends_interrupted_and_closes_what_was_open() -> None:
    gap_seq = 1_000_004
    ending = decide(dataclasses.replace(MID_TOOL, next_seq=gap_seq), WorkerLost())
    assert (ending.status, ending.reason) == ("interrupted", "worker_lost")
    assert [(e.kind, e.seq) for e in ending.events] == [
        ("tool_call_finished", gap_seq),
        ("tool_call_finished", gap_seq + 1),
        ("run_finished", gap_seq + 2),
    ]
    assert {(c.status, c.error) for c in ending.tool_calls} == {("cancelled", "worker lost")}
    assert ending.messages[-1].status == "interrupted"
    assert ending.usage == USAGE  # what the store had: the lost worker's last flush


@pytest.mark.parametrize(
    ("status", "message_status"),
    [("completed", "complete"), ("cancelled", "interrupted"), ("failed", "error")],
)
def test_adopting_a_stored_ending_writes_no_event_and_closes_records_as_it_says(
    status: TerminalStatus, message_status: MessageStatus
) -> None:
    stored_usage = Usage(output_tokens=99)
    recorded = Recorded(
        status=status,
        reason=None if status == "completed" else "error" if status == "failed" else "user",
        error="boom" if status == "failed" else None,
        usage=stored_usage,
    )
    ending = decide(dataclasses.replace(MID_TOOL, next_seq=9), recorded)
    assert ending.events == ()  # its terminal event is already stored
    assert (ending.terminal.seq, ending.terminal.status, ending.status) == (9, status, status)
    assert ending.usage == stored_usage
    assert ending.messages[-1].status == message_status
    assert len(ending.tool_calls) == 2


def test_a_run_with_nothing_open_ends_with_the_terminal_event_alone() -> None:
    ending = decide(dataclasses.replace(MID_TOOL, messages=[], open_calls=[]), WorkerLost())
    assert ending.events == (ending.terminal,)
    assert (ending.messages, ending.tool_calls) == ((), ())
