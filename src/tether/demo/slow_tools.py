"""The ``slow-tools`` demo agent: a scripted model, no API key, with two slow tools.

Each user message gets three model responses, chosen by what the last message holds:

1. after the user's message: how the previous answer ended (if there is one, quoted as the
   model sees it, interrupted marker included), then a sentence streamed word by word, then a
   call to ``search_archive`` (async: ``anyio.sleep``, so a stop cancels it at once);
2. after the search result: a sentence, then a call to ``crunch_numbers`` (sync: ``time.sleep``
   on a worker thread, which a stop abandons);
3. after the numbers: a conclusion quoting both results.
"""

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tether.app import Tether
from tether.engine.context import AgentContext
from tether.ids import new_id

SEARCH: Final = "search_archive"
CRUNCH: Final = "crunch_numbers"
RECAP_WORDS: Final = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class SlowToolsTiming:
    """How slow the ``slow-tools`` demo is (tests make it fast)."""

    word_s: float = 0.02
    """Pause after each streamed word."""
    search_s: float = 5.0
    """How long ``search_archive`` (async) takes."""
    crunch_s: float = 5.0
    """How long ``crunch_numbers`` (sync, on a thread) takes."""


def register_slow_tools(app: Tether, timing: SlowToolsTiming) -> None:
    """Register the ``slow-tools`` agent on ``app``."""

    @app.agent("slow-tools", description="Scripted model with slow tools (no API key): try Stop")
    def slow_tools(ctx: AgentContext) -> Agent[None, str]:
        return slow_tools_agent(timing)


def slow_tools_agent(timing: SlowToolsTiming) -> Agent[None, str]:
    """The ``slow-tools`` agent: its scripted model and its two tools."""

    async def search_archive(query: str) -> str:
        """Search the archive for notes about a topic (slow)."""
        await anyio.sleep(timing.search_s)
        return f"3 archived notes mention {query!r}"

    def crunch_numbers(n: int) -> int:
        """Add up the squares of 1..n (slow)."""
        time.sleep(timing.crunch_s)
        return sum(i * i for i in range(1, n + 1))

    model = FunctionModel(stream_function=_Script(timing).stream, model_name="slow-tools")
    return Agent(model, tools=[search_archive, crunch_numbers], name="slow-tools")


class _Script:
    def __init__(self, timing: SlowToolsTiming) -> None:
        self._timing = timing

    async def stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        returned = _returned_tools(messages[-1])
        if CRUNCH in returned:
            results = _tool_results(messages)
            async for word in self._words(
                f"Done. The archive says: {results.get(SEARCH, 'nothing')}. "
                f"The numbers add up to {results.get(CRUNCH, 'nothing')}. "
                "That is all I found."
            ):
                yield word
        elif SEARCH in returned:
            async for word in self._words("Found something. Now let me crunch the numbers."):
                yield word
            prompt = _last_prompt(messages)
            yield _call(CRUNCH, {"n": len(prompt.split()) * 10})
        else:
            prompt = _last_prompt(messages)
            sentence = (
                f"You asked about {prompt!r}. I will search the archive first, "
                "then crunch some numbers, and tell you what I find."
            )
            if recap := _recap(messages):
                sentence = f"{recap} {sentence}"
            async for word in self._words(sentence):
                yield word
            yield _call(SEARCH, {"query": prompt})

    async def _words(self, sentence: str) -> AsyncIterator[str]:
        words = sentence.split(" ")
        for index, word in enumerate(words):
            yield word if index == len(words) - 1 else f"{word} "
            await anyio.sleep(self._timing.word_s)


def _call(tool: str, args: dict[str, object]) -> DeltaToolCalls:
    # Call ids are unique across runs, as a provider's are: storage keys tool calls by them.
    call_id = new_id("call")
    return {0: DeltaToolCall(name=tool, json_args=json.dumps(args), tool_call_id=call_id)}


def _returned_tools(message: ModelMessage) -> set[str]:
    if not isinstance(message, ModelRequest):
        return set()
    return {part.tool_name for part in message.parts if isinstance(part, ToolReturnPart)}


def _tool_results(messages: list[ModelMessage]) -> dict[str, str]:
    """The latest result of each tool in this turn (since the last user message)."""
    results: dict[str, str] = {}
    for message in reversed(messages):
        if not isinstance(message, ModelRequest):
            continue
        for part in message.parts:
            if isinstance(part, ToolReturnPart):
                results.setdefault(part.tool_name, part.model_response_str())
            elif isinstance(part, UserPromptPart):
                return results
    return results


def _last_prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


def _recap(messages: list[ModelMessage]) -> str:
    """Quote how the previous answer ended, as the model received it, and if it was cut off."""
    previous: list[ModelResponse] = []
    prompts = 0
    for message in reversed(messages):
        if isinstance(message, ModelResponse):
            if prompts == 1:
                previous.append(message)
        elif any(isinstance(p, UserPromptPart) for p in message.parts):
            prompts += 1
            if prompts == 2:
                break
    if not previous:
        return ""
    previous.reverse()
    text = " ".join(
        part.content for m in previous for part in m.parts if isinstance(part, TextPart)
    )
    words = text.split()
    quoted = ("… " if len(words) > RECAP_WORDS else "") + " ".join(words[-RECAP_WORDS:])
    cut = " It was cut off." if any(m.state == "interrupted" for m in previous) else ""
    return f"My last answer ended: «{quoted}».{cut}"
