"""The ``records-clerk`` demo agent: a scripted model (no API key) whose tool needs approval.

Every user message gets the same two-step answer: a sentence saying which record it will delete,
then a call to ``delete_record`` — which only runs once a person approves it. The run pauses
there (``run_paused``); after the decision the model reports what came back: the tool's result,
or the denial.
"""

import json
import re
from collections.abc import AsyncIterator
from typing import Final

import anyio
from pydantic_ai import Agent, Tool
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tether.app import Tether
from tether.engine.context import AgentContext
from tether.ids import new_id

AGENT: Final = "records-clerk"
DELETE: Final = "delete_record"
WORD_S: Final = 0.02
_RECORD: Final = re.compile(r"\b([A-Za-z]+-\d+|\d+)\b")


def register_records_clerk(app: Tether) -> None:
    """Register the ``records-clerk`` agent on ``app``."""

    @app.agent(AGENT, description="Scripted model (no API key) whose tool needs your approval")
    def records_clerk(ctx: AgentContext) -> Agent[None, str]:
        return records_clerk_agent()


def records_clerk_agent() -> Agent[None, str]:
    """The scripted Pydantic AI agent whose ``delete_record`` tool needs approval."""

    def delete_record(record_id: str) -> str:
        """Delete a record for good (needs a person's approval)."""
        return f"record {record_id} deleted"

    model = FunctionModel(stream_function=_stream, model_name=AGENT)
    return Agent(model, tools=[Tool(delete_record, requires_approval=True)], name=AGENT)


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    last = messages[-1]
    if not isinstance(last, ModelRequest):
        return
    answers = [p.model_response_str() for p in last.parts if isinstance(p, ToolReturnPart)]
    if answers:
        async for word in _words(f"The tool answered: {answers[-1]}"):
            yield word
        return
    prompts = [p.content for p in last.parts if isinstance(p, UserPromptPart)]
    found = _RECORD.search(prompts[-1]) if prompts and isinstance(prompts[-1], str) else None
    record_id = found.group(1) if found else "R-1"
    async for word in _words(f"I will delete record {record_id}, once you approve."):
        yield word
    args = json.dumps({"record_id": record_id})
    # Call ids are unique across runs, as a provider's are: storage keys tool calls by them.
    yield {0: DeltaToolCall(name=DELETE, json_args=args, tool_call_id=new_id("call"))}


async def _words(sentence: str) -> AsyncIterator[str]:
    words = sentence.split(" ")
    for index, word in enumerate(words):
        yield word if index == len(words) - 1 else f"{word} "
        await anyio.sleep(WORD_S)
