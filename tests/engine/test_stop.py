"""A stop lands at once wherever the run is, and ends it in one terminal state."""

import threading
import time

import anyio
import anyio.lowlevel
import pytest

from tests.engine._helpers import all_events, wait_for
from tests.scripted import Gate, parked_tool, scripted, text, tool_call
from tether import (
    AgentContext,
    RunFinished,
    Tether,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

pytestmark = pytest.mark.anyio


async def test_stop_mid_text_ends_cancelled_with_the_partial_text(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("Hello "), text("wor"), gate, text("never")])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    result = await run.cancel(reason="user")
    assert result.accepted
    outcome = await run.outcome()
    assert (outcome.status, outcome.reason, outcome.text) == ("cancelled", "user", "Hello wor")
    events = await all_events(run)
    assert isinstance(events[-1], RunFinished)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello ", "wor"]


async def test_stop_inside_async_tool_cancels_it_and_closes_the_call(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("Checking."), tool_call("lookup", {"q": "x"})])
    app.agent("a")(lambda ctx: model.agent(tools=[parked_tool("lookup", gate)]))
    run = await app.start("a", "hi")
    await wait_for(run, ToolCallStarted)
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert not gate.opened.is_set()
    events = await all_events(run)
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.call_id, e.status) for e in finished] == [("call_lookup", "cancelled")]
    messages = await app.store.messages(run.session_id)
    assert messages[-1].tool_calls[0].status == "cancelled"
    assert messages[-1].status == "interrupted"


async def test_stop_inside_sync_tool_stops_waiting_for_its_thread(app: Tether) -> None:
    entered, release = threading.Event(), threading.Event()

    def crunch() -> str:
        entered.set()
        release.wait(10)
        return "late"

    model = scripted([tool_call("crunch")])
    app.agent("a")(lambda ctx: model.agent(tools=[crunch]))
    run = await app.start("a", "hi")
    await wait_for(run, ToolCallStarted)
    with anyio.fail_after(5):
        while not entered.is_set():
            await (
                anyio.lowlevel.checkpoint()
            )  # Deliberate: polls a threading.Event set by the tool's thread
        await run.cancel()
        outcome = await run.outcome()
    assert outcome.status == "cancelled"
    release.set()  # the thread returns after the run ended; its result is discarded
    events = await all_events(run)
    assert [e.status for e in events if isinstance(e, ToolCallFinished)] == ["cancelled"]


async def test_stop_between_steps_and_during_second_model_turn(app: Tether) -> None:
    gate = Gate()
    model = scripted(
        [tool_call("lookup", {"q": "x"})],
        [text("Found "), gate, text("it")],
    )

    async def lookup(q: str) -> str:
        return f"found {q}"

    app.agent("a")(lambda ctx: model.agent(tools=[lookup]))
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    outcome = await run.outcome()
    assert (outcome.status, outcome.text) == ("cancelled", "Found ")
    messages = await app.store.messages(run.session_id)
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("assistant", "interrupted"),
    ]
    assert messages[1].tool_calls[0].status == "ok"


async def test_stop_before_the_first_event_still_ends_once(app: Tether) -> None:
    model = scripted([text("never")])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    await run.cancel()
    outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert model.received == []
    events = await all_events(run)
    assert [e.kind for e in events] == ["run_started", "stop_requested", "run_finished"]


async def test_cancel_from_another_thread_lands(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    delivered = await anyio.to_thread.run_sync(lambda: app.cancel_threadsafe(run.run_id))
    assert delivered
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert (outcome.status, outcome.reason) == ("cancelled", "user")


async def test_after_turn_lets_the_turn_and_its_tools_finish(app: Tether) -> None:
    tool_gate = Gate()
    model = scripted([text("Let me check."), tool_call("lookup")], [text("never")])
    app.agent("a")(lambda ctx: model.agent(tools=[parked_tool("lookup", tool_gate)]))
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await tool_gate.reached.wait()
    result = await run.cancel(mode="after_turn")
    assert result.accepted
    tool_gate.open()
    outcome = await run.outcome()
    assert outcome.status == "cancelled"
    events = await all_events(run)
    assert [e.status for e in events if isinstance(e, ToolCallFinished)] == ["ok"]
    assert len(model.received) == 1


async def test_after_turn_escalates_to_now_after_the_grace_period() -> None:
    from tether import Settings
    from tether.storage.memory import MemoryStore

    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory", stop_grace_s=0.05))
    gate = Gate()
    model = scripted([text("x"), gate])
    app.agent("a")(lambda ctx: model.agent())
    async with app:
        run = await app.start("a", "hi")
        with anyio.fail_after(5):
            await gate.reached.wait()
            started = time.monotonic()
            await run.cancel(mode="after_turn")
            outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert time.monotonic() - started >= 0.05


async def test_delegate_starts_a_child_and_stopping_the_parent_stops_it(app: Tether) -> None:
    child_gate = Gate()
    child_model = scripted([text("partial child "), child_gate, text("never")])
    parent_model = scripted([tool_call("ask_expert", {"q": "x"})], [text("never")])
    app.agent("expert")(lambda ctx: child_model.agent())

    def boss(ctx: AgentContext) -> object:
        async def ask_expert(q: str) -> str:
            return await ctx.delegate("expert", q)

        return parent_model.agent(tools=[ask_expert])

    app.agent("boss")(boss)
    run = await app.start("boss", "hi")
    with anyio.fail_after(5):
        await child_gate.reached.wait()
    await run.cancel()
    outcome = await run.outcome()
    assert outcome.status == "cancelled"
    events = await all_events(run)
    kinds = [e.kind for e in events]
    assert "child_run_started" in kinds
    assert "child_run_finished" in kinds
    started = next(e for e in events if e.kind == "child_run_started")
    assert started.call_id == "call_ask_expert"
    child = await app.store.get_run(started.child_run_id)
    assert child is not None
    assert (child.status, child.reason, child.parent_run_id) == ("cancelled", "parent", run.run_id)
    child_messages = [
        m for m in await app.store.messages(run.session_id) if m.run_id == child.run_id
    ]
    assert child_messages[-1].content == "partial child "


async def test_delegate_returns_the_childs_answer_as_the_tool_result(app: Tether) -> None:
    child_model = scripted([text("42")])
    parent_model = scripted([tool_call("ask_expert", {"q": "x"})], [text("The answer is 42.")])
    app.agent("expert")(lambda ctx: child_model.agent())

    def boss(ctx: AgentContext) -> object:
        async def ask_expert(q: str) -> str:
            return await ctx.delegate("expert", q)

        return parent_model.agent(tools=[ask_expert])

    app.agent("boss")(boss)
    run = await app.start("boss", "hi")
    outcome = await run.outcome()
    assert outcome.status == "completed"
    events = await all_events(run)
    result = next(e for e in events if isinstance(e, ToolCallFinished))
    assert (result.status, result.result) == ("ok", "42")
