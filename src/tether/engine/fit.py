"""Fit a session's history into the model's context window.

Guarantees: what the model gets is whole turns, the newest kept and the oldest dropped first, so
a tool call always travels with its result and an interrupted turn with its marker; the kept
turns are exactly what ``build_turns`` made of them, so any provider accepts them. A turn is
never cut in half: if even the newest turn does not fit, it is dropped too and the model sees
only the new message (and the summary, if any).

Deliberately not exact: tokenizers differ per model, so the count is an estimate, pessimistic
for common text (UTF-8 bytes / 3, plus a per-message overhead), and a share of the window is
kept free for the instructions and the reply. A prompt that still overflows fails its own turn
only; that turn produced nothing, so it is left out of the next turn's history.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tether.engine.history import TurnItems
from tether.records import AssistantItem, HistoryItem, UserItem

REPLY_SHARE: Final = 0.25
"""The share of the window kept for the reply."""
INSTRUCTIONS_SHARE: Final = 0.125
"""The share kept for instructions, the chat template and the estimate's error."""
_PER_MESSAGE: Final = 8

SUMMARY_PREFIX: Final = "[Summary of the earlier conversation: {summary}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fitted:
    """The turns that fit the budget, and those dropped to make room."""

    kept: list[TurnItems]
    dropped: list[TurnItems]
    """Oldest first."""


def estimate_tokens(text: str) -> int:
    """A conservative token estimate for ``text`` (bytes / 3, plus per-message overhead)."""
    return len(text.encode()) // 3 + _PER_MESSAGE


def _item_tokens(item: HistoryItem) -> int:
    match item:
        case UserItem():
            return estimate_tokens(item.text)
        case AssistantItem():
            calls = sum(
                estimate_tokens(f"{c.tool}{c.args}") + estimate_tokens(c.result)
                for c in item.tool_calls
            )
            return estimate_tokens(item.text) + calls


def turn_tokens(turn: TurnItems) -> int:
    """The estimated tokens of one past turn as the model would see it."""
    return sum(_item_tokens(item) for item in turn.items)


def history_budget(window_tokens: int, *, prompt: str, summary: str | None) -> int:
    """Tokens left for past turns once the reply, instructions, prompt and summary have room."""
    reserved = int(window_tokens * (REPLY_SHARE + INSTRUCTIONS_SHARE))
    used = estimate_tokens(prompt) + (estimate_tokens(summary) if summary else 0)
    return window_tokens - reserved - used


def fit_turns(turns: Sequence[TurnItems], *, budget_tokens: int) -> Fitted:
    """Keep the newest whole turns whose estimated size fits ``budget_tokens``."""
    total, start = 0, len(turns)
    for index in range(len(turns) - 1, -1, -1):
        total += turn_tokens(turns[index])
        if total > budget_tokens:
            break
        start = index
    return Fitted(kept=list(turns[start:]), dropped=list(turns[:start]))


def with_summary(items: list[HistoryItem], summary: str | None) -> list[HistoryItem]:
    """Put the running summary in front of the first kept user message.

    Deliberate: folded into a user message rather than a made-up exchange, so the history still
    starts with a request and alternates, and the model never sees words it didn't say.
    """
    if not summary or not items:
        return items
    first = items[0]
    assert isinstance(first, UserItem), "a turn starts with its user message"
    note = SUMMARY_PREFIX.format(summary=summary)
    return [UserItem(text=f"{note}\n\n{first.text}"), *items[1:]]
