"""The model that writes a session's title: the agent's own, else the embedded one, else none.

Only a Pydantic AI agent's model can be asked directly; it gets a tool-less request of its own,
so the agent's tools and instructions play no part.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

TitleModel = Callable[[str], Awaitable[str]]
"""Answers a prompt with a title."""

TITLE_INSTRUCTIONS: Final = (
    "You name conversations. Answer with a title of at most six words for the conversation "
    "you are shown: no quotes, no final full stop, nothing else."
)
TITLE_MAX_TOKENS: Final = 24


def title_model_for(agent: object) -> TitleModel | None:
    """The model to title a session of ``agent`` with, or None if there is none to ask."""
    model = _own_model(agent) or _embedded_model()
    if model is None:
        return None

    async def ask(prompt: str) -> str:
        titler = Agent(model, instructions=TITLE_INSTRUCTIONS, name="titles")
        # Streamed: every model tether drives streams, not every one answers a plain request.
        settings: ModelSettings = {"max_tokens": TITLE_MAX_TOKENS}
        async with titler.run_stream(prompt, model_settings=settings) as result:
            return await result.get_output()

    return ask


def _own_model(agent: object) -> Model | str | None:
    if isinstance(agent, Agent):
        return cast("Agent[Any, Any]", agent).model
    return None


def _embedded_model() -> Model | None:
    try:
        from tether.runtimes.local import LocalModel, embedded_model_missing
    except ImportError:  # pragma: no cover - the embedded model is an optional extra
        return None
    if embedded_model_missing() is not None:
        return None
    return LocalModel()
