"""The app the browser tests serve: scripted agents behind the real HTTP API and web UI.

Run as ``python -m uvicorn --factory tests.browser.server_app:make_app``; settings (database,
API keys) come from ``TETHER_*`` environment variables like in production.
"""

from typing import Final

import anyio
from fastapi import FastAPI
from pydantic_ai import Agent

from tests.scripted import Delay, Step, fail, scripted, text, tool_call
from tether import AgentContext, Tether
from tether.demo.approvals import register_records_clerk
from tether.http import create_app

WORD_COUNT: Final = 200
WORD_DELAY_S: Final = 0.05
SLOW_TOOL_S: Final = 30.0


def word(index: int) -> str:
    """The ``index``-th word the chat agent streams (distinct, so duplicates are visible)."""
    return f"w{index:03d}"


def chat_text() -> str:
    """Everything the chat agent says when it is not stopped."""
    return " ".join(word(i) for i in range(WORD_COUNT))


def _chat_steps() -> list[Step]:
    steps: list[Step] = []
    for i in range(WORD_COUNT):
        steps += [text(word(i) if i == 0 else f" {word(i)}"), Delay(WORD_DELAY_S)]
    return steps


async def slow_lookup(query: str) -> str:
    """Look something up, slowly: long enough that a test always stops it first."""
    await anyio.sleep(SLOW_TOOL_S)
    return f"nothing found for {query}"


def chat_agent(ctx: AgentContext) -> Agent[None, str]:
    # A fresh script per run: every run of the server makes exactly one model request.
    return scripted(_chat_steps()).agent()


def tools_agent(ctx: AgentContext) -> Agent[None, str]:
    first: list[Step] = [text("Let me "), Delay(WORD_DELAY_S), text("look that up.")]
    first += [Delay(WORD_DELAY_S), tool_call("slow_lookup", {"query": "weather"})]
    model = scripted(first, [text("Found nothing.")])
    return model.agent(tools=[slow_lookup])


def broken_agent(ctx: AgentContext) -> Agent[None, str]:
    return scripted([fail("the model is unreachable")]).agent()


def make_app() -> FastAPI:
    tether_app = Tether()
    tether_app.agent("chat", description="Streams many words")(chat_agent)
    tether_app.agent("tools", description="Calls a slow tool")(tools_agent)
    tether_app.agent("broken", description="Its model always fails")(broken_agent)
    register_records_clerk(tether_app)
    return create_app(tether_app)
