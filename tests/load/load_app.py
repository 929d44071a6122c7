"""The app the load and fault tests serve: one scripted agent, ``load``, chosen by the prompt.

The prompt's first word picks the script; any words after it are a tag that only makes runs
distinct (``tok 200 #17``):

- ``tok N``: streams ``N`` tokens (``token(i)``) at ``TOKENS_PER_S`` on its own clock, as a
  provider streams, so a slow server shows as late tokens rather than as a slower model;
- ``talk``: the same, for minutes (every test stops it first);
- ``async``: says ``TOOL_TEXT``, then calls ``slow_lookup``, an async tool that takes an hour;
- ``sync``: says ``TOOL_TEXT``, then calls ``blocking_lookup``, a plain function (run in a
  thread) that blocks for ``SYNC_TOOL_S``;
- ``recall``: answers the user prompts of its history, joined by ``RECALL_SEPARATOR``, so a test
  reads what the model was given (a rolled-back turn must not be in it).

Served by ``tether serve --app tests.load.load_app:make_app``; settings come from ``TETHER_*``.
"""

import json
import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
from pydantic_ai import Agent, Tool
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tether import AgentContext, Tether

APP: Final = "tests.load.load_app:make_app"
AGENT: Final = "load"
TOKENS_PER_S: Final = 20.0
TALK_TOKENS: Final = 100_000
TOOL_TEXT: Final = "Let me look that up."
SLOW_TOOL_S: Final = 3600.0
SYNC_TOOL_S: Final = 3.0
RECALL_SEPARATOR: Final = "|"


def token(index: int) -> str:
    """The ``index``-th token a streaming script sends, with its trailing space."""
    return f"t{index:05d} "


async def slow_lookup(query: str) -> str:
    """Look something up, for an hour: every test stops it first."""
    await anyio.sleep(SLOW_TOOL_S)
    return f"nothing found for {query}"


def blocking_lookup(query: str) -> str:
    """Look something up, blocking its thread for a few seconds."""
    time.sleep(SYNC_TOOL_S)
    return f"nothing found for {query}"


def _prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    ]


async def _tokens(count: int) -> AsyncIterator[str]:
    due = anyio.current_time()
    for i in range(count):
        due += 1 / TOKENS_PER_S
        await anyio.sleep(max(0.0, due - anyio.current_time()))
        yield token(i)


def _tool_call(name: str) -> DeltaToolCalls:
    args = json.dumps({"query": "weather"})
    return {0: DeltaToolCall(name=name, json_args=args, tool_call_id="call_1")}


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    if returned := [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]:
        yield f"The tool said: {returned[-1].model_response_str()}"
        return
    prompts = _prompts(messages)
    words = prompts[-1].split() if prompts else [""]
    match words[0]:
        case "tok":
            async for text in _tokens(int(words[1])):
                yield text
        case "talk":
            async for text in _tokens(TALK_TOKENS):
                yield text
        case "async":
            yield TOOL_TEXT
            yield _tool_call("slow_lookup")
        case "sync":
            yield TOOL_TEXT
            yield _tool_call("blocking_lookup")
        case "recall":
            yield RECALL_SEPARATOR.join(prompts[:-1]) or "(nothing)"
        case script:
            raise AssertionError(f"the load agent has no script {script!r}")


def load_agent(ctx: AgentContext) -> Agent[None, str]:
    tools = [Tool(slow_lookup), Tool(blocking_lookup)]
    return Agent(FunctionModel(stream_function=_stream, model_name="load"), tools=tools)


def make_app() -> Tether:
    app = Tether()
    app.agent(AGENT, description="Streams at 20 tokens/s, calls slow tools, or recalls")(load_agent)
    return app
