"""The embedded offline model (SmolLM2-135M-Instruct on llama.cpp) as a Pydantic AI `Model`.

`LocalModel` streams text deltas and exact token usage from a shared `LocalLlama`. The model
can't call tools: a request with function tools is a `UsageError`, and tool calls and results
already in the history are rendered as plain text. Structured output uses prompted JSON.
Cancelling the task that streams stops the generation within one token (see `_llama`).
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from pydantic_ai.messages import (
    BaseToolCallPart,
    CachePoint,
    CompactionPart,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    ModelResponseStreamEvent,
    SpeechPart,
    SystemPromptPart,
    TextContent,
    TextPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.messages import FinishReason as PydanticFinishReason
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.profiles import ModelProfile
from pydantic_ai.settings import ModelSettingName, ModelSettings
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RequestUsage

from tether.errors import UsageError
from tether.runtimes._llama import (
    LocalChatStream,
    LocalLlama,
    close_default_local_llama,
    default_local_llama,
)
from tether.runtimes._llama_context import (
    PROVIDER,
    ChatMessage,
    FinishReason,
    GenerationOptions,
    GenerationResult,
    Role,
    chat_turns,
    embedded_model_missing,
    find_smollm2_gguf,
)

__all__ = [
    "MODEL_NAME",
    "ChatMessage",
    "GenerationOptions",
    "GenerationResult",
    "LocalChatStream",
    "LocalLlama",
    "LocalModel",
    "LocalStreamedResponse",
    "chat_turns",
    "close_default_local_llama",
    "default_local_llama",
    "embedded_model_missing",
    "find_smollm2_gguf",
    "to_chat_messages",
]

MODEL_NAME = "smollm2-135m"

_FINISH_REASONS: dict[FinishReason, PydanticFinishReason | None] = {
    "stop": "stop",
    "length": "length",
    "cancelled": None,
}


class LocalModel(Model):
    """A Pydantic AI model answering from the embedded SmolLM2 model, offline."""

    # The model reads text only; a file in a prompt is refused before it reaches the mapping.
    _unsupported_file_inputs = frozenset({"image", "document", "audio", "video"})
    unsupported_settings: ClassVar[frozenset[ModelSettingName]] = frozenset(
        {
            "citations",
            "extra_body",
            "extra_headers",
            "logit_bias",
            "max_retries",
            "parallel_tool_calls",
            "service_tier",
            "timeout",
        }
    )

    def __init__(
        self,
        llama: LocalLlama | None = None,
        *,
        on_wait: Callable[[], None] | None = None,
        settings: ModelSettings | None = None,
    ) -> None:
        """Answer from `llama`, by default the process-wide `default_local_llama()`.

        Args:
            llama: The embedded model to generate with.
            on_wait: Called once when a request has to wait for another generation.
            settings: Default model settings, e.g. `max_tokens` or `temperature`.
        """
        self.llama = llama if llama is not None else default_local_llama()
        self.on_wait = on_wait
        super().__init__(settings=settings)

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def system(self) -> str:
        return PROVIDER

    def _provider_model_profile(self) -> ModelProfile:
        return ModelProfile(
            supports_tools=False,
            supports_json_schema_output=False,
            supports_json_object_output=False,
            default_structured_output_mode="prompted",
            context_window=self.llama.n_ctx,
            # The prompt is tokenized with special tokens on, so `<|im_start|>` typed in content
            # would open a real turn; Pydantic AI defuses such tokens when this is set.
            may_tokenize_special_tokens_in_content=True,
        )

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        chat, options, _ = self._prepare(messages, model_settings, model_request_parameters)
        async with self.llama.generate(chat, options=options, on_wait=self.on_wait) as stream:
            text = "".join([delta async for delta in stream])
        result = stream.result
        assert result is not None, "a generation that ran to its end reports a result"
        return ModelResponse(
            parts=[TextPart(content=text)] if text else [],
            usage=RequestUsage(
                input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens
            ),
            model_name=MODEL_NAME,
            provider_name=PROVIDER,
            finish_reason=_FINISH_REASONS[result.finish_reason],
        )

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        chat, options, params = self._prepare(messages, model_settings, model_request_parameters)
        async with self.llama.generate(chat, options=options, on_wait=self.on_wait) as stream:
            yield LocalStreamedResponse(model_request_parameters=params, _stream=stream)

    def _prepare(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> tuple[list[ChatMessage], GenerationOptions, ModelRequestParameters]:
        settings, params = self.prepare_request(model_settings, model_request_parameters)
        if params.function_tools:
            names = ", ".join(sorted(t.name for t in params.function_tools))
            raise UsageError(
                f"The embedded model ({MODEL_NAME}) can't call tools; remove {names} "
                "from this agent or use a hosted model",
                tools=names,
            )
        instructions = [p.content for p in self._get_instruction_parts(messages, params) or []]
        return to_chat_messages(messages, instructions=instructions), _options(settings), params


@dataclass
class LocalStreamedResponse(StreamedResponse):
    """Streams the text deltas of one `LocalLlama` generation."""

    _stream: LocalChatStream
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        async for delta in self._stream:
            for event in self._parts_manager.handle_text_delta(
                vendor_part_id="content", content=delta
            ):
                yield event
        if (result := self._stream.result) is not None:
            self.finish_reason = _FINISH_REASONS[result.finish_reason]

    async def close_stream(self) -> None:
        self._stream.stop()

    @property
    def usage(self) -> RequestUsage:
        # Read live from the generation, so a stopped stream still reports what it used.
        return RequestUsage(
            input_tokens=self._stream.prompt_tokens, output_tokens=self._stream.completion_tokens
        )

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def provider_name(self) -> str:
        return PROVIDER

    @property
    def provider_url(self) -> None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp


def _options(settings: ModelSettings | None) -> GenerationOptions:
    s = settings or {}
    defaults = GenerationOptions()
    return GenerationOptions(
        max_tokens=s.get("max_tokens"),
        temperature=s.get("temperature", defaults.temperature),
        top_p=s.get("top_p", defaults.top_p),
        top_k=s.get("top_k", defaults.top_k),
        presence_penalty=s.get("presence_penalty", defaults.presence_penalty),
        frequency_penalty=s.get("frequency_penalty", defaults.frequency_penalty),
        seed=s.get("seed"),
        stop_sequences=tuple(s.get("stop_sequences", ())),
    )


def to_chat_messages(
    messages: list[ModelMessage], *, instructions: list[str] | None = None
) -> list[ChatMessage]:
    """Render Pydantic AI history as chat turns the embedded model's template understands.

    System prompts and instructions become one leading system turn. Tool calls and their results
    become plain text, and consecutive turns of one role are merged (see `chat_turns`).

    Args:
        messages: History as prepared by `Model.prepare_messages` (an `Agent` does this).
        instructions: Instruction texts for this request, placed after the system prompts.

    Returns:
        The chat turns, system turn first.

    Raises:
        UsageError: a prompt holds non-text content, or a part needs `prepare_messages` first.
    """
    texts: list[tuple[Role, str]] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            texts.extend(_request_texts(message))
        else:
            texts.append(("assistant", "\n\n".join(_response_texts(message.parts))))
    texts.extend(("system", text) for text in instructions or [])
    return chat_turns(texts)


def _request_texts(message: ModelRequest) -> list[tuple[Role, str]]:
    texts: list[tuple[Role, str]] = []
    for part in message.parts:
        match part:
            case SystemPromptPart():
                texts.append(("system", part.content))
            case UserPromptPart():
                texts.append(("user", _user_text(part)))
            case ToolReturnPart():
                result = cast(ToolReturnPart[Any], part).model_response_str()
                texts.append(("user", f"Result of tool `{part.tool_name}`: {result}"))
            case SpeechPart(speaker="user", transcript=str() as transcript):
                texts.append(("user", transcript))
            case CompactionPart(content=str() as summary):
                texts.append(("user", f"Summary of the earlier conversation: {summary}"))
            case _:
                raise UsageError(
                    f"The embedded model can't render a {type(part).__name__}; pass history "
                    "through `model.prepare_messages(...)` first (an Agent does this)",
                    part=type(part).__name__,
                )
    return texts


def _user_text(part: UserPromptPart) -> str:
    if isinstance(part.content, str):
        return part.content
    texts: list[str] = []
    for item in part.content:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, TextContent):
            texts.append(item.content)
        elif not isinstance(item, CachePoint):
            raise UsageError(
                f"The embedded model reads text only, not {type(item).__name__}",
                content=type(item).__name__,
            )
    return "\n".join(texts)


def _response_texts(parts: Sequence[ModelResponsePart]) -> list[str]:
    texts: list[str] = []
    for part in parts:
        if isinstance(part, TextPart):
            texts.append(part.content)
        elif isinstance(part, BaseToolCallPart):
            call = cast(BaseToolCallPart[Any], part)
            args = call.args_as_json_str() or json.dumps({})
            texts.append(f"(called tool `{call.tool_name}` with {args})")
        elif isinstance(part, SpeechPart) and part.transcript:
            texts.append(part.transcript)
        # Thinking, files and native tool parts carry nothing this model can use.
    return texts
