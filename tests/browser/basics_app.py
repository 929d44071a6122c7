"""The app of issue #18's browser tests: agents whose answers exercise the chat basics.

Served like ``server_app`` (``python -m uvicorn --factory tests.browser.basics_app:make_app``),
by its own server, so the main test server's agent list stays as its tests know it.
"""

from typing import Final

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic_ai import Agent

from tests.scripted import scripted, text
from tether import AgentContext, Tether
from tether.http import create_app

CODE_ANSWER: Final = "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
CODE: Final = "def add(a, b):\n    return a + b"
LONG_LINES: Final = 80


def coder_agent(ctx: AgentContext) -> Agent[None, str]:
    return scripted([text(CODE_ANSWER)]).agent()


def long_agent(ctx: AgentContext) -> Agent[None, str]:
    """Answers at once with many lines: enough to scroll the conversation."""
    return scripted([text("\n".join(f"line {i}" for i in range(LONG_LINES)))]).agent()


class Profile(BaseModel):
    """The context the ``profile`` agent needs."""

    user_name: str
    max_items: int = 3


def profile_agent(ctx: AgentContext) -> Agent[None, str]:
    profile: Profile = ctx.context
    return scripted([text(f"Hello {profile.user_name}, up to {profile.max_items} items.")]).agent()


def make_app() -> FastAPI:
    tether_app = Tether()
    tether_app.agent("coder", description="Answers with a code block")(coder_agent)
    tether_app.agent("long", description="Answers with many lines")(long_agent)
    tether_app.agent("profile", description="Needs your name", context=Profile)(profile_agent)
    return create_app(tether_app)
