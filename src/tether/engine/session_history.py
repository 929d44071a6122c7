"""The history a new turn gets: the session's past turns, fitted to the agent's context budget.

Without a budget (``window_tokens`` None: a hosted model whose window tether doesn't know, and
none set on the agent) every past turn goes in, as before. With one, the oldest whole turns are
dropped until the rest fits (see ``fit``). With a summariser too, the dropped turns are folded
into the session's running summary (``sessions.summary``), which then stands in for them:
history starts after ``summary_through``, with the summary in front.

A summariser that fails costs only the summary's freshness: the turn goes on without it (its
turns are folded in at the next turn that drops some); cancellation still propagates.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tether.engine.fit import SUMMARY_PREFIX, fit_turns, history_budget, with_summary
from tether.engine.history import HistoryRules, TurnItems, build_turns, flatten
from tether.ids import SessionId
from tether.records import HistoryItem
from tether.storage.store import Store

log = logging.getLogger(__name__)

Summariser = Callable[[str | None, Sequence[HistoryItem]], Awaitable[str]]
"""``(summary so far or None, the turns being dropped) -> the new running summary``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnInput:
    """What a new turn sends the model: the fitted history and the prompt."""

    history: list[HistoryItem]
    prompt: str
    """The new message, with the summary in front when no earlier turn is kept to carry it."""


async def session_history(
    store: Store,
    session_id: SessionId,
    *,
    prompt: str,
    rules: HistoryRules,
    window_tokens: int | None,
    summariser: Summariser | None = None,
) -> TurnInput:
    """The history and prompt for a new turn of ``session_id``, fitted to ``window_tokens``."""
    turns = build_turns(await store.history(session_id), rules)
    if window_tokens is None:
        return TurnInput(history=flatten(turns), prompt=prompt)
    session = await store.get_session(session_id)
    summary = session.summary if session is not None else None
    through = session.summary_through if session is not None else None
    if through is not None:
        turns = _after(turns, through)
    fitted = fit_turns(
        turns, budget_tokens=history_budget(window_tokens, prompt=prompt, summary=summary)
    )
    if fitted.dropped and summariser is not None:
        try:
            summary = await summariser(summary, flatten(fitted.dropped))
        except Exception as exc:  # noqa: BLE001  # a summary is an extra: the turn goes on
            log.warning("session %s: summariser failed: %r", session_id, exc)
        else:
            await store.set_summary(session_id, summary, through=fitted.dropped[-1].run_id)
            budget = history_budget(window_tokens, prompt=prompt, summary=summary)
            fitted = fit_turns(fitted.kept, budget_tokens=budget)
    history = with_summary(flatten(fitted.kept), summary)
    if summary and not history:
        prompt = f"{SUMMARY_PREFIX.format(summary=summary)}\n\n{prompt}"
    return TurnInput(history=history, prompt=prompt)


def _after(turns: list[TurnItems], through: str) -> list[TurnItems]:
    for index, turn in enumerate(turns):
        if turn.run_id == through:
            return turns[index + 1 :]
    # Deliberate: if the covered run is gone from history (rolled back after it was summarised),
    # every turn is kept rather than guessing; the summary may then repeat a little.
    return turns
