"""The embedded offline model as an Agno `Model`; importable only where agno is installed.

Text only: the model can't call tools, so a request with tools is a `UsageError`, and tool
calls and results in the history are rendered as plain text. The async methods share the
`LocalLlama` (and its one-generation-at-a-time lock) with the Pydantic AI `LocalModel`; the
sync ones drive it from a private event loop in a worker thread, so don't run them while the
same `LocalLlama` is in use from another event loop.
"""

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
from agno.metrics import MessageMetrics
from agno.models.base import Model
from agno.models.message import Message
from agno.models.response import ModelResponse

from tether.errors import UsageError
from tether.runtimes._llama_context import Role
from tether.runtimes.local import (
    MODEL_NAME,
    ChatMessage,
    GenerationOptions,
    LocalChatStream,
    LocalLlama,
    chat_turns,
    default_local_llama,
)

__all__ = ["LocalAgnoModel", "to_chat_messages"]

PROVIDER_LABEL = "llama.cpp"


@dataclass
class LocalAgnoModel(Model):
    """An Agno model answering from the embedded SmolLM2 model, offline."""

    id: str = MODEL_NAME
    name: str | None = "SmolLM2"
    provider: str | None = PROVIDER_LABEL
    llama: LocalLlama = field(default_factory=default_local_llama)
    """The embedded model to generate with; by default the process-wide one."""
    on_wait: Callable[[], None] | None = None
    """Called once when a request has to wait for another generation."""
    max_tokens: int | None = None
    temperature: float | None = None

    def ainvoke_stream(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> AsyncIterator[ModelResponse]:
        self._refuse_tools(tools)
        return self._stream(to_chat_messages(messages), assistant_message)

    async def ainvoke(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> ModelResponse:
        self._refuse_tools(tools)
        assistant_message.metrics.start_timer()
        chat = to_chat_messages(messages)
        async with self.llama.generate(
            chat, options=self._options(), on_wait=self.on_wait
        ) as stream:
            text = "".join([delta async for delta in stream])
        assistant_message.metrics.stop_timer()
        response = self._parse_provider_response(text)
        response.response_usage = _metrics(stream)
        return response

    def invoke_stream(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> Iterator[ModelResponse]:
        self._refuse_tools(tools)
        chat = to_chat_messages(messages)
        assistant_message.metrics.start_timer()
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(
                self.llama.generate(chat, options=self._options(), on_wait=self.on_wait)
            ) as stream,
        ):
            while True:
                try:
                    delta = portal.call(stream.__anext__)
                except StopAsyncIteration:
                    break
                yield self._parse_provider_response_delta(delta)
        assistant_message.metrics.stop_timer()
        yield ModelResponse(response_usage=_metrics(stream))

    def invoke(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> ModelResponse:
        text: list[str] = []
        usage: MessageMetrics | None = None
        for delta in self.invoke_stream(messages, assistant_message, tools=tools):
            text.append(delta.content or "")
            usage = delta.response_usage or usage
        response = self._parse_provider_response("".join(text))
        response.response_usage = usage
        return response

    def _parse_provider_response(self, response: str, **kwargs: Any) -> ModelResponse:
        return ModelResponse(role="assistant", content=response)

    def _parse_provider_response_delta(self, response: str) -> ModelResponse:
        return ModelResponse(content=response)

    async def _stream(
        self, chat: list[ChatMessage], assistant_message: Message
    ) -> AsyncIterator[ModelResponse]:
        assistant_message.metrics.start_timer()
        async with self.llama.generate(
            chat, options=self._options(), on_wait=self.on_wait
        ) as stream:
            async for delta in stream:
                yield self._parse_provider_response_delta(delta)
        assistant_message.metrics.stop_timer()
        yield ModelResponse(response_usage=_metrics(stream))

    def _options(self) -> GenerationOptions:
        defaults = GenerationOptions()
        return GenerationOptions(
            max_tokens=self.max_tokens,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
        )

    def _refuse_tools(self, tools: Sequence[object] | None) -> None:
        if tools:
            raise UsageError(
                f"The embedded model ({MODEL_NAME}) can't call tools; remove them from this "
                "agent or use a hosted model"
            )


def _metrics(stream: LocalChatStream) -> MessageMetrics:
    return MessageMetrics(
        input_tokens=stream.prompt_tokens,
        output_tokens=stream.completion_tokens,
        total_tokens=stream.prompt_tokens + stream.completion_tokens,
    )


def to_chat_messages(messages: Sequence[Message]) -> list[ChatMessage]:
    """Render Agno messages as chat turns the embedded model's template understands.

    Returns:
        The chat turns, system turn first; tool calls and results become plain text.
    """
    texts: list[tuple[Role, str]] = []
    for message in messages:
        text = message.get_content_string()
        match message.role:
            case "system" | "developer":
                texts.append(("system", text))
            case "user":
                texts.append(("user", text))
            case "assistant":
                calls = [_call_text(call) for call in message.tool_calls or []]
                texts.append(("assistant", "\n\n".join([text, *calls]).strip()))
            case "tool":
                texts.append(("user", f"Result of tool `{message.tool_name}`: {text}"))
            case _:
                raise UsageError(f"The embedded model can't render a {message.role!r} message")
    return chat_turns(texts)


def _call_text(call: dict[str, Any]) -> str:
    function: dict[str, Any] = call.get("function") or {}
    return f"(called tool `{function.get('name')}` with {function.get('arguments') or '{}'})"
