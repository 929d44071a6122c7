"""How a run ends: one pure function from the run's state and the cause to its ending.

Every path that ends a run asks ``decide``: the engine for a run it holds (completion, a stop
for any reason, a failure, storage lost, shutdown), the stopper for a paused run (a cancel, the
approval deadline), recovery for a lost worker's runs (stores read the partial state, ``decide``
rules, the store writes what it returns), and the SSE route for a run ended before terminal
events were stored. Nothing else builds a ``RunFinished``, and nothing else decides how open tool
calls and the last message are closed.

``decide`` does no I/O and reads no clock: the caller passes ``now`` and the seq the first new
event takes. What it returns is applied as it is: the events in order (the terminal one last),
the run's terminal fields, and the records to upsert.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, assert_never

from tether.events import (
    RunEvent,
    RunFinished,
    StopReason,
    StopRequested,
    TerminalStatus,
    ToolCallFinished,
    Usage,
)
from tether.ids import RunId
from tether.records import CancelRequest, MessageRecord, MessageStatus, ToolCallRecord

# --- causes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """The runtime returned: the turn is done."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped:
    """A stop ended it: any ``StopReason`` (user, timeout, budgets, disconnect, shutdown, ...).

    A paused run stopped by its approval deadline is ``Stopped`` with reason ``timeout``.
    """

    request: CancelRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """Agent code, a tool or the runtime raised (or a child could not do what it was asked)."""

    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageLost:
    """The store failed for longer than the worker waits (or refused the run's data)."""

    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLost:
    """Recovery: the worker holding the run is gone (its lease expired)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """An ending already decided and stored (a terminal event, or the run's row): adopt it.

    Recovery adopts a stored terminal event; nothing new is written but the records it left open.
    """

    status: TerminalStatus
    reason: StopReason | None = None
    error: str | None = None
    usage: Usage | None = None


Cause = Completed | Stopped | Failed | StorageLost | WorkerLost | Recorded

# --- state and result ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """What the ending depends on: the run's open records, as its holder or its store has them."""

    run_id: RunId
    next_seq: int
    """The seq the first event ``decide`` emits takes (the terminal one if it emits only that)."""
    usage: Usage
    messages: Sequence[MessageRecord] = ()
    """The run's assistant messages still open (``streaming``), oldest first; for a paused run,
    its last response (complete, its calls waiting)."""
    open_calls: Sequence[ToolCallRecord] = ()
    """Tool calls not yet closed (``running`` or ``awaiting_approval``), in the order made."""
    is_paused: bool = False
    """Held by nobody, waiting for approval: nobody announced a stop, so the ending does."""
    stop: CancelRequest | None = None
    """The stop the run took, if any (it may still end otherwise: a failure, storage lost)."""
    now: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnding:
    """A run's ending: apply all of it, in one transaction, or none of it."""

    terminal: RunFinished
    events: tuple[RunEvent, ...]
    """The events to emit and store, in order, ``terminal`` last; empty when adopting a stored
    ending (its terminal event is already there)."""
    status: TerminalStatus
    reason: StopReason | None
    error: str | None
    usage: Usage
    cancel: CancelRequest | None
    """The stop the run ended with, recorded with the ending (first intent wins on the row)."""
    messages: tuple[MessageRecord, ...]
    """The run's open messages, closed (the last one with ``message_status``)."""
    tool_calls: tuple[ToolCallRecord, ...]
    """The run's open tool calls, closed."""
    finished_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verdict:
    status: TerminalStatus
    reason: StopReason | None
    error: str | None
    call_error: str
    """Why the open tool calls were closed, as their record and their event say."""


def decide(state: RunState, cause: Cause) -> RunEnding:
    """The ending of the run in ``state`` for ``cause``: its events and the records to write."""
    verdict = _verdict(cause, is_paused=state.is_paused)
    closing: list[RunEvent] = []
    seq = state.next_seq
    if isinstance(cause, Stopped) and state.is_paused:
        # A live run announced its stop when it took it; a paused run has nobody to.
        request = cause.request
        closing.append(
            StopRequested(
                run_id=state.run_id,
                seq=seq,
                reason=request.reason,
                mode=request.mode,
                action=request.action,
                by=request.by,
            )
        )
        seq += 1
    call_status: Literal["error", "cancelled"] = (
        "error" if verdict.status == "failed" else "cancelled"
    )
    calls = tuple(
        dataclasses.replace(
            call, status=call_status, result=None, error=verdict.call_error, finished_at=state.now
        )
        for call in state.open_calls
    )
    is_adopted = isinstance(cause, Recorded)
    for call in () if is_adopted else calls:
        closing.append(
            ToolCallFinished(
                run_id=state.run_id,
                seq=seq,
                call_id=call.call_id,
                status=call_status,
                error=verdict.call_error,
            )
        )
        seq += 1
    usage = cause.usage if isinstance(cause, Recorded) and cause.usage else state.usage
    terminal = RunFinished(
        run_id=state.run_id,
        seq=seq,
        status=verdict.status,
        reason=verdict.reason,
        usage=usage,
        error=verdict.error,
    )
    return RunEnding(
        terminal=terminal,
        events=() if is_adopted else (*closing, terminal),
        status=verdict.status,
        reason=verdict.reason,
        error=verdict.error,
        usage=usage,
        cancel=cause.request if isinstance(cause, Stopped) else state.stop,
        messages=_close_messages(state, message_status(verdict.status)),
        tool_calls=calls,
        finished_at=state.now,
    )


def message_status(status: TerminalStatus) -> MessageStatus:
    """How a run's last response is kept when the run ends ``status``."""
    match status:
        case "completed":
            return "complete"
        case "failed":
            return "error"
        case "cancelled" | "interrupted":
            return "interrupted"
        case _:
            assert_never(status)


def _verdict(cause: Cause, *, is_paused: bool) -> _Verdict:
    match cause:
        case Completed():
            return _Verdict(status="completed", reason=None, error=None, call_error="run completed")
        case Stopped(request=request):
            why = (
                f"the run was stopped ({request.reason}) while it waited for approval"
                if is_paused
                else "run cancelled"
            )
            return _Verdict(
                status="cancelled",
                reason=request.reason,
                error=None,
                call_error=why,
            )
        case Failed(error=error):
            return _Verdict(status="failed", reason="error", error=error, call_error=error)
        case StorageLost(why=why):
            return _Verdict(status="failed", reason="error", error=why, call_error=why)
        case WorkerLost():
            return _Verdict(
                status="interrupted", reason="worker_lost", error=None, call_error="worker lost"
            )
        case Recorded(status=status, reason=reason, error=error):
            why = "worker lost" if reason == "worker_lost" else error or f"run {status}"
            return _Verdict(status=status, reason=reason, error=error, call_error=why)
        case _:
            assert_never(cause)


def _close_messages(state: RunState, last_status: MessageStatus) -> tuple[MessageRecord, ...]:
    """Open responses close ``complete``; the last one takes the ending's status.

    A paused run's last response was complete when it paused; the ending cuts its turn, so it
    takes the ending's status too (history labels it).
    """
    closed: list[MessageRecord] = []
    for index, message in enumerate(state.messages):
        is_last = index == len(state.messages) - 1
        if message.status != "streaming" and not (is_last and state.is_paused):
            continue
        status = last_status if is_last else "complete"
        closed.append(dataclasses.replace(message, status=status, completed_at=state.now))
    return tuple(closed)
