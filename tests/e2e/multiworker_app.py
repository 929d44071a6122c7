"""The app the multi-worker tests serve: one scripted agent, ``mw``, chosen by the prompt.

- ``talk``: streams ``w0000 w0001 …``, a word every ``WORD_DELAY_S``, for minutes (every test
  stops it, or kills its worker, long before it ends);
- ``lookup``: says ``LOOKUP_TEXT``, then calls ``slow_lookup``, an async tool that takes an hour;
- ``quick``: answers ``QUICK_TEXT`` at once;
- ``approve``: says ``APPROVE_TEXT``, then calls ``send_note``, which needs a person's approval
  (the run pauses); once decided, it repeats what the tool answered.

Served by several ``tether serve --app tests.e2e.multiworker_app:make_app`` processes on one
database and one Redis; settings (lease, flush interval) come from ``TETHER_*`` variables.
"""

import json
from collections.abc import AsyncIterator
from typing import Final

import anyio
from pydantic_ai import Agent, Tool
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tether import AgentContext, Tether

AGENT: Final = "mw"
WORD_COUNT: Final = 10_000
WORD_DELAY_S: Final = 0.02
LOOKUP_TEXT: Final = "Let me look that up."
QUICK_TEXT: Final = "Done."
SLOW_TOOL_S: Final = 3600.0
APPROVE_TEXT: Final = "I'll send the note once you approve."


def word(index: int) -> str:
    """The ``index``-th word ``talk`` streams, with its trailing space (distinct, fixed width)."""
    return f"w{index:04d} "


async def slow_lookup(query: str) -> str:
    """Look something up, for an hour: every test stops it first."""
    await anyio.sleep(SLOW_TOOL_S)
    return f"nothing found for {query}"


def send_note(to: str) -> str:
    """Send a note (needs a person's approval)."""
    return f"note sent to {to}"


def _last_prompt(messages: list[ModelMessage]) -> str | None:
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    prompts = [p.content for p in last.parts if isinstance(p, UserPromptPart)]
    return str(prompts[-1]) if prompts else None


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    if returned := [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]:
        yield f"The tool said: {returned[-1].model_response_str()}"
        return
    match _last_prompt(messages):
        case "talk":
            for i in range(WORD_COUNT):
                yield word(i)
                await anyio.sleep(WORD_DELAY_S)
        case "lookup":
            yield LOOKUP_TEXT
            args = json.dumps({"query": "weather"})
            yield {0: DeltaToolCall(name="slow_lookup", json_args=args, tool_call_id="call_1")}
        case "quick":
            yield QUICK_TEXT
        case "approve":
            yield APPROVE_TEXT
            args = json.dumps({"to": "ops"})
            yield {0: DeltaToolCall(name="send_note", json_args=args, tool_call_id="call_2")}
        case prompt:
            raise AssertionError(f"the mw agent has no script for {prompt!r}")


def mw_agent(ctx: AgentContext) -> Agent[None, str]:
    tools = [Tool(slow_lookup), Tool(send_note, requires_approval=True)]
    return Agent(FunctionModel(stream_function=_stream, model_name="mw"), tools=tools)


def make_app() -> Tether:
    app = Tether()
    app.agent(AGENT, description="Streams slowly, calls a slow tool, or answers at once")(mw_agent)
    return app
