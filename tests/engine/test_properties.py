"""For random scripts and a stop at a random point, the run's invariants hold."""

import anyio
import anyio.lowlevel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.history_validator import validate_history
from tests.scripted import Step, fail, scripted, text, tool_call
from tether import (
    RunEvent,
    RunFinished,
    Settings,
    Tether,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from tether.storage.memory import MemoryStore

chunk = st.text(min_size=1, max_size=8).map(text)


@st.composite
def scripts(draw: st.DrawFn) -> list[list[Step]]:
    """Responses with text and tool calls; a tool-call response is always followed by another."""
    n_tool_turns = draw(st.integers(0, 3))
    responses: list[list[Step]] = []
    for turn in range(n_tool_turns):
        steps: list[Step] = list(draw(st.lists(chunk, max_size=3)))
        tools = draw(st.lists(st.sampled_from(["quick", "busy", "broken"]), min_size=1, max_size=2))
        steps += [tool_call(t, call_id=f"c{turn}_{i}") for i, t in enumerate(tools)]
        responses.append(steps)
    final: list[Step] = list(draw(st.lists(chunk, min_size=1, max_size=5)))
    if draw(st.booleans()) and draw(st.booleans()):
        final.insert(draw(st.integers(0, len(final))), fail("model failed"))
    responses.append(final)
    return responses


async def quick() -> str:
    return "quick result"


async def busy() -> str:
    for _ in range(5):
        await anyio.lowlevel.checkpoint()
    return "busy result"


async def broken() -> str:
    raise ValueError("broken tool")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts(), stop_at=st.one_of(st.none(), st.integers(0, 25)))
def test_any_script_stopped_anywhere_keeps_the_invariants(
    script: list[list[Step]], stop_at: int | None
) -> None:
    anyio.run(_check, script, stop_at)


async def _check(script: list[list[Step]], stop_at: int | None) -> None:
    model = scripted(*script, [text("next turn")])
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    app.agent("a")(lambda ctx: model.agent(tools=[quick, busy, broken]))
    async with app:
        run = await app.start("a", "go")
        events: list[RunEvent] = []
        with anyio.fail_after(5):
            async for event in run.events():
                events.append(event)
                if len(events) - 1 == stop_at:
                    await run.cancel()
            outcome = await run.outcome()

        assert [e.seq for e in events] == list(range(len(events)))
        terminals = [e for e in events if isinstance(e, RunFinished)]
        assert len(terminals) == 1
        assert events[-1] is terminals[0]
        assert terminals[0].status == outcome.status

        streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
        messages = await app.store.messages(run.session_id)
        stored = "".join(m.content for m in messages if m.role == "assistant")
        assert stored == streamed == outcome.text

        started = {e.call_id for e in events if isinstance(e, ToolCallStarted)}
        closed = [e.call_id for e in events if isinstance(e, ToolCallFinished)]
        assert sorted(closed) == sorted(started)
        assert all(c.status != "running" for m in messages for c in m.tool_calls)

        if outcome.status == "failed" and model.received and len(model.received) > len(script):
            return  # the script ran out: nothing left to answer the next turn
        calls_before = len(model.received)
        model.responses[calls_before:] = [[text("next turn")]]
        second = await app.start("a", "continue", session_id=run.session_id)
        assert (await second.outcome()).status == "completed"
        validate_history(model.received[-1])
