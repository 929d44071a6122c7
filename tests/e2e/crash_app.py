"""The app the crash-recovery tests serve: one scripted agent, ``crash``, chosen by the prompt.

- ``talk``: streams ``w0000 w0001 …``, a word every ``WORD_DELAY_S``, for minutes (it is killed
  long before it ends);
- ``lookup``: says ``LOOKUP_TEXT``, then calls ``slow_lookup``, which never returns in time;
- ``echo``: answers with the history it was given, as JSON (``echo_entries`` parses it back), so
  a test can see exactly what the model sees on the turn after a crash.

Served with ``tether serve --app tests.e2e.crash_app:make_app``; settings (lease, flush interval)
come from ``TETHER_*`` environment variables like in production.
"""

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tether import AgentContext, Tether

AGENT: Final = "crash"
WORD_COUNT: Final = 10_000
WORD_DELAY_S: Final = 0.02
LOOKUP_TEXT: Final = "Let me look that up."
SLOW_TOOL_S: Final = 3600.0


def word(index: int) -> str:
    """The ``index``-th word ``talk`` streams, with its trailing space (distinct, fixed width)."""
    return f"w{index:04d} "


async def slow_lookup(query: str) -> str:
    """Look something up, for an hour: the server is always killed first."""
    await anyio.sleep(SLOW_TOOL_S)
    return f"nothing found for {query}"


def _last_prompt(messages: list[ModelMessage]) -> str | None:
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    prompts = [p.content for p in last.parts if isinstance(p, UserPromptPart)]
    return str(prompts[-1]) if prompts else None


def _entries(messages: list[ModelMessage]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for message in messages:
        for part in message.parts:
            match part:
                case UserPromptPart(content=content):
                    entries.append({"part": "user", "text": content})
                case ToolReturnPart(tool_name=tool, content=content):
                    entries.append({"part": "tool_return", "tool": tool, "content": content})
                case TextPart(content=content):
                    assert isinstance(message, ModelResponse)
                    entries.append({"part": "text", "text": content, "state": message.state})
                case ToolCallPart(tool_name=tool):
                    entries.append({"part": "tool_call", "tool": tool})
                case _:
                    pass
    return entries


def echo_entries(answer: str) -> list[dict[str, Any]]:
    """The history an ``echo`` answer reports, one entry per message part."""
    entries: list[dict[str, Any]] = json.loads(answer)
    return entries


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    match _last_prompt(messages):
        case "talk":
            for i in range(WORD_COUNT):
                yield word(i)
                await anyio.sleep(WORD_DELAY_S)
        case "lookup":
            yield LOOKUP_TEXT
            args = json.dumps({"query": "weather"})
            yield {0: DeltaToolCall(name="slow_lookup", json_args=args, tool_call_id="call_1")}
        case "echo":
            # Without the prompt this turn added, which the test knows.
            yield json.dumps(_entries(messages[:-1]))
        case prompt:
            raise AssertionError(f"the crash agent has no script for {prompt!r}")


def crash_agent(ctx: AgentContext) -> Agent[None, str]:
    return Agent(FunctionModel(stream_function=_stream, model_name="crash"), tools=[slow_lookup])


def make_app() -> Tether:
    app = Tether()
    app.agent(AGENT, description="Streams slowly, calls a slow tool, or echoes its history")(
        crash_agent
    )
    return app
