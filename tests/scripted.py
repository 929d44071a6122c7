"""A scripted model for tests, on Pydantic AI's ``FunctionModel``.

Each response is a list of steps: ``text`` chunks, ``tool_call``s, ``Gate``s that park the
stream until the test opens them (so a test can stop a run at an exact point), or ``fail``.
The model records the messages it receives; a request beyond the script fails the run loudly.
"""

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel


@dataclass
class Gate:
    """Parks the stream at this step until ``open()``; ``reached`` is set when it gets there."""

    reached: anyio.Event = field(default_factory=anyio.Event)
    opened: anyio.Event = field(default_factory=anyio.Event)

    def open(self) -> None:
        self.opened.set()


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any]
    call_id: str


@dataclass(frozen=True)
class Fail:
    message: str


@dataclass(frozen=True)
class Delay:
    seconds: float


Step = Text | Call | Gate | Fail | Delay


def text(chunk: str) -> Text:
    return Text(chunk)


def tool_call(tool: str, args: dict[str, Any] | None = None, *, call_id: str | None = None) -> Call:
    return Call(tool, args or {}, call_id or f"call_{tool}")


def fail(message: str) -> Fail:
    return Fail(message)


class UnexpectedRequest(AssertionError):
    pass


@dataclass
class ScriptedModel:
    responses: list[list[Step]]
    received: list[list[ModelMessage]] = field(default_factory=list[list[ModelMessage]])

    @property
    def model(self) -> FunctionModel:
        return FunctionModel(stream_function=self._stream, model_name="scripted")

    def agent(self, **kwargs: Any) -> Agent[None, str]:
        return Agent(self.model, **kwargs)

    async def _stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        index = len(self.received)
        self.received.append(list(messages))
        if index >= len(self.responses):
            raise UnexpectedRequest(f"model request #{index + 1} is beyond the script")
        calls = 0
        for step in self.responses[index]:
            match step:
                case Text(text=chunk):
                    yield chunk
                case Call(tool=tool, args=args, call_id=call_id):
                    yield {
                        calls: DeltaToolCall(
                            name=tool, json_args=json.dumps(args), tool_call_id=call_id
                        )
                    }
                    calls += 1
                case Gate() as gate:
                    gate.reached.set()
                    await gate.opened.wait()
                case Delay(seconds=seconds):
                    await anyio.sleep(seconds)
                case Fail(message=message):
                    raise RuntimeError(message)


def scripted(*responses: Sequence[Step]) -> ScriptedModel:
    return ScriptedModel([list(r) for r in responses])


def parked_tool(name: str, gate: Gate) -> Callable[..., Any]:
    """An async tool that parks on ``gate`` (sets ``reached`` when called)."""

    async def tool(**kwargs: Any) -> str:
        gate.reached.set()
        await gate.opened.wait()
        return f"{name} done"

    tool.__name__ = name
    return tool
