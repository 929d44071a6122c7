"""The app the graceful-shutdown test serves (``tether serve --app …:make_app``).

- prompt ``talk``: streams a word every 20 ms for minutes;
- prompt ``lookup``: says a sentence, then calls ``slow_lookup``, which takes an hour.

Whatever is running when the server gets SIGTERM has to be stopped by the server.
"""

import json
from collections.abc import AsyncIterator

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tether import AgentContext, Tether


async def slow_lookup(query: str) -> str:
    """Look something up, for an hour."""
    # Deliberate: a tool that never returns by itself
    await anyio.sleep(3600)
    return "found"


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    prompt = next(p.content for p in last.parts if isinstance(p, UserPromptPart))
    if prompt == "lookup":
        yield "Let me look."
        args = json.dumps({"query": "x"})
        yield {0: DeltaToolCall(name="slow_lookup", json_args=args, tool_call_id="call_1")}
        return
    for i in range(10_000):
        # Deliberate: the scripted model's token pace
        yield f"w{i} "
        await anyio.sleep(0.02)


def _agent(ctx: AgentContext) -> Agent[None, str]:
    return Agent(FunctionModel(stream_function=_stream), tools=[slow_lookup])


def make_app() -> Tether:
    app = Tether()
    app.agent("slow", description="Talks for minutes, or waits an hour on a tool")(_agent)
    return app
