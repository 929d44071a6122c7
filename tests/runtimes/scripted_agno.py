"""A scripted Agno ``Model`` for tests: the Agno twin of ``tests/scripted.py``.

Each response is a list of the same steps: ``text`` chunks, ``tool_call``s, ``Gate``s that park
the stream until the test opens them (so a test can stop a run at an exact point), ``Delay``s
and ``fail``. The model records the messages it receives for each request; a request beyond
the script fails the run loudly (``UnexpectedRequest``) and is recorded in ``unexpected``.

Agno deep-copies models in places (a team's members, ``Agent.deep_copy``); every copy shares
one script, so what a test reads is what the run did.
"""

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn, Self

import anyio
from agno.exceptions import ModelProviderError
from agno.metrics import MessageMetrics
from agno.models.base import Model
from agno.models.message import Message
from agno.models.response import ModelResponse

from tests.scripted import Call, Delay, Fail, Gate, Step, Text, UnexpectedRequest


class _Script:
    """The responses and what was received: shared by every copy of the model."""

    def __init__(self, responses: Sequence[Sequence[Step]]) -> None:
        self.responses = [list(r) for r in responses]
        self.received: list[list[Message]] = []
        self.unexpected: list[int] = []

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class ScriptedAgnoModel(Model):
    def __init__(self, responses: Sequence[Sequence[Step]], *, name: str = "scripted") -> None:
        super().__init__(id=name, name=name, provider="scripted")
        self.script = _Script(responses)

    @property
    def received(self) -> list[list[Message]]:
        """The messages of each request, as the model got them."""
        return self.script.received

    @property
    def unexpected(self) -> list[int]:
        """Request numbers (from 1) that went beyond the script."""
        return self.script.unexpected

    async def ainvoke_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ModelResponse]:
        async for part in self._play(kwargs["messages"]):
            yield part

    async def ainvoke(self, *args: Any, **kwargs: Any) -> ModelResponse:
        """The whole response at once (Agno asks for it when it parses structured output)."""
        whole = ModelResponse()
        chunks: list[str] = []
        async for part in self._play(kwargs["messages"]):
            chunks.append(part.content or "")
            whole.tool_calls.extend(part.tool_calls)
            whole.response_usage = part.response_usage or whole.response_usage
        whole.content = "".join(chunks)
        return whole

    async def _play(self, messages: list[Message]) -> AsyncIterator[ModelResponse]:
        script = self.script
        index = len(script.received)
        script.received.append([m.model_copy() for m in messages])
        if index >= len(script.responses):
            script.unexpected.append(index + 1)
            raise UnexpectedRequest(f"model request #{index + 1} is beyond the script")
        output_tokens = 0
        for step in script.responses[index]:
            match step:
                case Text(text=chunk):
                    output_tokens += 1
                    yield ModelResponse(content=chunk)
                case Call(tool=tool, args=tool_args, call_id=call_id):
                    output_tokens += 1
                    call = {"name": tool, "arguments": json.dumps(tool_args)}
                    yield ModelResponse(
                        tool_calls=[{"id": call_id, "type": "function", "function": call}]
                    )
                case Gate() as gate:
                    gate.reached.set()
                    await gate.opened.wait()
                case Delay(seconds=seconds):
                    await anyio.sleep(seconds)
                case Fail(message=message):
                    raise ModelProviderError(message, model_name=self.name, model_id=self.id)
        usage = MessageMetrics(
            input_tokens=len(messages),
            output_tokens=output_tokens,
            total_tokens=len(messages) + output_tokens,
        )
        yield ModelResponse(response_usage=usage)

    def invoke(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("the scripted model only runs asynchronously")

    def invoke_stream(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("the scripted model only runs asynchronously")

    def _parse_provider_response(self, response: ModelResponse, **kwargs: Any) -> ModelResponse:
        return response  # ainvoke already speaks Agno's ModelResponse

    def _parse_provider_response_delta(self, response: Any) -> NoReturn:
        raise NotImplementedError


def scripted_agno(*responses: Sequence[Step], name: str = "scripted") -> ScriptedAgnoModel:
    return ScriptedAgnoModel(responses, name=name)
