"""Session titles: from the first message at once, then written by a model after the first answer.

The generated title is a courtesy: it runs in the background once the first answer is stored,
bounded in time and in number, and whatever goes wrong is logged, never raised, so it can't
delay or fail a run. A title a person set is never replaced (``Store.set_generated_title``).
"""

import logging
from typing import Final

import anyio
from anyio.abc import TaskGroup

from tether.bus.base import SessionSignals
from tether.ids import SessionId
from tether.runtimes.title_models import title_model_for
from tether.storage.store import Store

log = logging.getLogger(__name__)

TITLE_CHARS: Final = 60
TITLE_TIMEOUT_S: Final = 30.0
MAX_PENDING_TITLES: Final = 4
"""Titles written at once; a session that finds them all busy keeps its first-message title."""
_QUOTES: Final = "\"'*`\u201c\u201d\u2018\u2019"
PROMPT_CHARS: Final = 1000
"""How much of the question and of the answer the title model reads."""


def title_from(message: str) -> str:
    """The first line of ``message``, cut at a word boundary to about ``TITLE_CHARS``."""
    words = " ".join(message.split())
    if len(words) <= TITLE_CHARS:
        return words or "New chat"
    cut = (
        words[:TITLE_CHARS].rsplit(" ", 1)[0] if " " in words[:TITLE_CHARS] else words[:TITLE_CHARS]
    )
    return f"{cut.rstrip(' ,.;:')}…"


def clean_title(answer: str) -> str:
    """A model's answer as a title: its first line, without a label, quotes or full stop."""
    line = next((line for line in answer.strip().splitlines() if line.strip()), "")
    if line.lower().startswith("title:"):
        line = line[len("title:") :]
    line = line.strip().strip(_QUOTES).strip().rstrip(".").strip()
    return title_from(line) if line else ""


def title_prompt(question: str, answer: str) -> str:
    """The request that asks a model for a short title of a first exchange."""
    return (
        f"User: {question[:PROMPT_CHARS]}\n\nAssistant: {answer[:PROMPT_CHARS]}\n\n"
        "A title for this conversation:"
    )


class Titler:
    """Writes a session's title after its first answer, in the engine's task group."""

    def __init__(self, *, store: Store, signals: SessionSignals, task_group: TaskGroup) -> None:
        self._store = store
        self._signals = signals
        self._task_group = task_group
        self._pending = 0

    def start(self, session_id: SessionId, *, agent: object, question: str, answer: str) -> None:
        """Title the session in the background (skipped when ``MAX_PENDING_TITLES`` are)."""
        if self._pending >= MAX_PENDING_TITLES:
            log.debug("session %s: no generated title, %d pending", session_id, self._pending)
            return
        self._pending += 1
        self._task_group.start_soon(
            self._write, session_id, agent, title_prompt(question, answer), name="session title"
        )

    async def _write(self, session_id: SessionId, agent: object, prompt: str) -> None:
        try:
            ask = title_model_for(agent)
            if ask is None:
                return
            with anyio.fail_after(TITLE_TIMEOUT_S):
                title = clean_title(await ask(prompt))
            if title and await self._store.set_generated_title(session_id, title):
                self._signals.notify(session_id)
        except Exception as exc:  # noqa: BLE001 - a title is never worth failing anything for
            log.warning("session %s: no generated title: %r", session_id, exc)
        finally:
            self._pending -= 1
