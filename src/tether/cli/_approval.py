"""The approval questions of ``tether chat``: a paused run's pending calls, asked one by one.

Asking happens on the main thread with blocking reads (the caller passes its line reader), so
Ctrl+C and Ctrl+D there behave as at the prompt; either one means "stop the run", and the
caller cancels it. Finding a session's paused run reads the store, on the engine's loop.
Deliberately no editing of arguments here: the terminal offers approve or deny only.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import JsonValue
from rich.markup import escape

from tether.cli._output import console
from tether.engine.approvals import awaiting_calls
from tether.events import PendingCall, ToolDecision
from tether.ids import RunId, SessionId
from tether.storage.store import Store

Read = Callable[[str], str | None]
"""Ask one line: the answer, stripped, or None on Ctrl+C or Ctrl+D."""

YES: Final = frozenset({"y", "yes"})
NO: Final = frozenset({"n", "no"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingApproval:
    """A paused run and the calls it waits on, in the order they were made."""

    run_id: RunId
    calls: tuple[PendingCall, ...]


def call_text(tool: str, args: Mapping[str, JsonValue]) -> str:
    """A tool call as the chat shows it: ``tool(name='value', …)``."""
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"{tool}({shown})"


def ask_decisions(calls: Sequence[PendingCall], *, read: Read) -> list[ToolDecision] | None:
    """A decision for each call, asked in order; None as soon as the user stops instead."""
    decisions: list[ToolDecision] = []
    for call in calls:
        if (decision := _ask(call, read)) is None:
            return None
        decisions.append(decision)
    return decisions


async def find_pending(store: Store, session_id: SessionId) -> PendingApproval | None:
    """The session's paused run and its waiting calls, if its last run paused for approval."""
    run = await store.active_run(session_id)
    if run is None or run.status != "paused":
        return None
    waiting = awaiting_calls(await store.run_messages(run.run_id))
    calls = tuple(PendingCall(call_id=c.call_id, tool=c.tool, args=c.args) for c in waiting)
    return PendingApproval(run_id=run.run_id, calls=calls)


def _ask(call: PendingCall, read: Read) -> ToolDecision | None:
    question = (
        f"[bold yellow]Approve[/] {escape(call_text(call.tool, call.args))}? {escape('[y/n]')} "
    )
    while (answer := read(question)) is not None:
        if answer.lower() in YES:
            return ToolDecision(call_id=call.call_id, approved=True)
        if answer.lower() in NO:
            reason = read("[yellow]Reason[/] [dim](Enter for none)[/]: ")
            if reason is None:
                return None
            # An empty reason leaves the message to the engine's default denial.
            return ToolDecision(call_id=call.call_id, approved=False, message=reason or None)
        console.print("[dim]Please answer y or n (Ctrl+C stops the run).[/]")
    return None
