"""Stored turns -> provider-valid, runtime-neutral history.

Rules (every stop path must leave a history that any provider accepts):
- A turn contributes its user message, then one ``AssistantItem`` per model response.
- Every tool call gets a result: a real one, or a synthetic one saying why there is none.
- A turn that did not complete ends with a short marker saying it was interrupted and why; it
  is appended to the last response's text, or added as its own response when the last
  response ended in tool calls (the results must directly follow their calls).
- A turn stopped with ``action="rollback"`` is left out entirely, user message included,
  however its end was recorded (unless it completed before the stop landed).
- A turn that failed before the model produced anything is left out too: feeding its user
  message back would only make the next turn longer (and, on a full context, fail again).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from tether.events import StopReason
from tether.ids import RunId
from tether.records import (
    AssistantItem,
    HistoryItem,
    HistoryTurn,
    MessageRecord,
    ToolCallRecord,
    ToolExchange,
    UserItem,
)

_WHY: dict[StopReason, str] = {
    "user": "stopped by the user",
    "timeout": "the run timed out",
    "token_budget": "the token budget ran out",
    "cost_budget": "the cost budget ran out",
    "disconnect": "the client disconnected",
    "shutdown": "the server shut down",
    "superseded": "the user sent a new message",
    "error": "an error occurred",
    "worker_lost": "the server running it stopped unexpectedly",
    "parent": "the run that started it was stopped",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRules:
    """How interrupted turns are labelled for the model."""

    interrupted_marker: str = "[This answer was interrupted: {why}.]"
    missing_result: str = "[No result: the tool call was interrupted ({why}) before it returned.]"


def why(reason: StopReason | None) -> str:
    """The words the interrupted-turn marker uses for ``reason``."""
    return _WHY[reason] if reason is not None else "it did not complete"


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnItems:
    """One past turn as history items, with the run it came from."""

    run_id: RunId
    items: list[HistoryItem]


def build_turns(turns: Sequence[HistoryTurn], rules: HistoryRules) -> list[TurnItems]:
    """Each turn that belongs in history, as its own items (whole turns can then be dropped)."""
    return [
        TurnItems(run_id=turn.run.run_id, items=_turn_items(turn, rules))
        for turn in turns
        if _is_kept(turn)
    ]


def flatten(turns: Sequence[TurnItems]) -> list[HistoryItem]:
    """The turns' items in order, as one history."""
    return [item for turn in turns for item in turn.items]


def _is_kept(turn: HistoryTurn) -> bool:
    run = turn.run
    # Not only `cancelled`: a rolled-back run whose end was recorded otherwise (its worker was
    # lost, its store failed) stays rolled back (issue #13).
    if run.status != "completed" and run.cancel is not None and run.cancel.action == "rollback":
        return False
    if run.status == "failed":
        return any(m.role == "assistant" and (m.content or m.tool_calls) for m in turn.messages)
    return True


def _turn_items(turn: HistoryTurn, rules: HistoryRules) -> list[HistoryItem]:
    reason = why(turn.run.reason)
    is_complete = turn.run.status == "completed"
    items: list[HistoryItem] = []
    responses: list[AssistantItem] = []
    for message in turn.messages:
        if message.role == "user":
            items.append(UserItem(text=message.content))
        elif message.role == "assistant":
            responses.append(_response(message, rules, reason))
    if not is_complete:
        marker = rules.interrupted_marker.format(why=reason)
        last = responses[-1] if responses else None
        if last is not None and not last.tool_calls:
            text = f"{last.text}\n\n{marker}" if last.text else marker
            responses[-1] = AssistantItem(text=text, is_interrupted=True)
        else:
            responses.append(AssistantItem(text=marker, is_interrupted=True))
    items.extend(responses)
    return items


def _response(message: MessageRecord, rules: HistoryRules, reason: str) -> AssistantItem:
    calls = tuple(_exchange(c, rules, reason) for c in message.tool_calls)
    return AssistantItem(text=message.content, tool_calls=calls)


def _exchange(call: ToolCallRecord, rules: HistoryRules, reason: str) -> ToolExchange:
    match call.status:
        case "ok":
            return ToolExchange(
                call_id=call.call_id, tool=call.tool, args=call.args, result=_text(call.result)
            )
        case "error":
            return ToolExchange(
                call_id=call.call_id,
                tool=call.tool,
                args=call.args,
                result=call.error or "The tool failed.",
                is_error=True,
            )
        case "denied":
            return ToolExchange(
                call_id=call.call_id, tool=call.tool, args=call.args, result=_text(call.result)
            )
        case "cancelled" | "running" | "awaiting_approval":
            return ToolExchange(
                call_id=call.call_id,
                tool=call.tool,
                args=call.args,
                result=rules.missing_result.format(why=reason),
                is_error=True,
            )


def paused_turn_items(messages: Sequence[MessageRecord], rules: HistoryRules) -> list[HistoryItem]:
    """A paused run's own turn, to continue it: its calls awaiting approval stay open."""
    items: list[HistoryItem] = []
    for message in messages:
        if message.role == "user":
            items.append(UserItem(text=message.content))
        elif message.role == "assistant":
            calls = tuple(
                ToolExchange(
                    call_id=c.call_id, tool=c.tool, args=c.args, result="", is_pending=True
                )
                if c.status == "awaiting_approval"
                else _exchange(c, rules, why(None))
                for c in message.tool_calls
            )
            items.append(AssistantItem(text=message.content, tool_calls=calls))
    return items


def _text(result: JsonValue) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result)
