"""Agno runs under tether: a stop lands wherever the run is, and the next turn sees it."""

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from agno.agent import Agent
from agno.models.message import Message
from agno.team import Team
from agno.workflow import Step, Workflow

from tests.engine._helpers import all_events, wait_for
from tests.runtimes.scripted_agno import ScriptedAgnoModel, scripted_agno
from tests.scripted import Call, Gate, parked_tool, text, tool_call
from tether import RunFinished, Settings, Tether, TextDelta, ToolCallFinished, ToolCallStarted
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio

MARKER = "[This answer was interrupted: stopped by the user.]"
MISSING = "[No result: the tool call was interrupted (stopped by the user) before it returned.]"


@pytest.fixture
async def app() -> AsyncIterator[Tether]:
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    async with app:
        yield app


def register(app: Tether, name: str, make: Any) -> None:
    app.agent(name)(lambda ctx: make())


def roles(messages: list[Message]) -> list[tuple[str, object]]:
    return [(m.role, m.content) for m in messages]


async def test_stop_mid_text_keeps_the_partial_answer_for_the_next_turn(app: Tether) -> None:
    gate = Gate()
    model = scripted_agno([text("Hello "), text("wor"), gate, text("never")], [text("Sure.")])
    register(app, "a", lambda: Agent(telemetry=False, model=model, instructions="Be brief."))
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel(reason="user")
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert (outcome.status, outcome.reason, outcome.text) == ("cancelled", "user", "Hello wor")
    assert not gate.opened.is_set()
    events = await all_events(run)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello ", "wor"]

    again = await app.start("a", "continue", session_id=run.session_id)
    assert (await again.outcome()).status == "completed"
    assert roles(model.received[-1][1:]) == [
        ("user", "hi"),
        ("assistant", f"Hello wor\n\n{MARKER}"),
        ("user", "continue"),
    ]


async def test_stop_while_waiting_for_the_model_ends_with_no_text(app: Tether) -> None:
    gate = Gate()
    model = scripted_agno([gate, text("never")])
    register(app, "a", lambda: Agent(telemetry=False, model=model))
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert (outcome.status, outcome.text) == ("cancelled", "")
    assert isinstance((await all_events(run))[-1], RunFinished)


async def test_stop_inside_an_async_tool_closes_the_call_and_the_next_turn_gets_a_result(
    app: Tether,
) -> None:
    gate = Gate()
    model = scripted_agno(
        [text("Checking."), tool_call("lookup", {"q": "x"}, call_id="c1")], [text("Again?")]
    )
    register(
        app, "a", lambda: Agent(telemetry=False, model=model, tools=[parked_tool("lookup", gate)])
    )
    run = await app.start("a", "hi")
    await wait_for(run, ToolCallStarted)
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert not gate.opened.is_set()
    events = await all_events(run)
    assert [(e.call_id, e.status) for e in events if isinstance(e, ToolCallFinished)] == [
        ("c1", "cancelled")
    ]

    again = await app.start("a", "continue", session_id=run.session_id)
    assert (await again.outcome()).status == "completed"
    request = model.received[-1]
    assert roles(request) == [
        ("user", "hi"),
        ("assistant", "Checking."),
        ("tool", MISSING),
        ("assistant", MARKER),
        ("user", "continue"),
    ]
    assert request[1].tool_calls is not None
    assert [c["id"] for c in request[1].tool_calls] == ["c1"]
    assert (request[2].tool_call_id, request[2].tool_call_error) == ("c1", True)


async def test_stop_after_turn_lets_the_tool_finish_and_skips_the_next_request(
    app: Tether,
) -> None:
    gate = Gate()
    model = scripted_agno([tool_call("lookup", {"q": "x"}, call_id="c1")], [text("never")])
    register(
        app, "a", lambda: Agent(telemetry=False, model=model, tools=[parked_tool("lookup", gate)])
    )
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel(mode="after_turn")
    gate.open()
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert len(model.received) == 1
    events = await all_events(run)
    assert [(e.call_id, e.status) for e in events if isinstance(e, ToolCallFinished)] == [
        ("c1", "ok")
    ]


def delegate(member: str, call_id: str) -> Call:
    args = {"member_id": member, "task": "do it"}
    return tool_call("delegate_task_to_member", args, call_id=call_id)


def crew(leader: ScriptedAgnoModel, members: dict[str, tuple[ScriptedAgnoModel, Any]]) -> Team:
    agents: list[Agent | Team] = [
        Agent(telemetry=False, name=name, model=model, tools=tools)
        for name, (model, tools) in members.items()
    ]
    return Team(telemetry=False, name="crew", model=leader, members=agents)


async def test_stopping_a_team_mid_member_ends_it_cancelled(app: Tether) -> None:
    gate = Gate()
    leader = scripted_agno([delegate("writer", "d1")], [delegate("critic", "d2")], name="leader")
    writer = scripted_agno([text("Draft.")], name="writer")
    critic = scripted_agno([text("Hmm, "), tool_call("research", {"q": "x"})], name="critic")
    team = crew(
        leader,
        {"writer": (writer, None), "critic": (critic, [parked_tool("research", gate)])},
    )
    register(app, "crew", lambda: team)
    run = await app.start("crew", "review this")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert outcome.status == "cancelled"
    events = await all_events(run)
    assert [(e.call_id, e.status) for e in events if isinstance(e, ToolCallFinished)] == [
        ("d1", "ok"),
        ("d2", "cancelled"),
    ]
    assert isinstance(events[-1], RunFinished)


async def test_stopping_a_workflow_mid_step_keeps_what_its_steps_said(app: Tether) -> None:
    gate = Gate()
    workflow = Workflow(
        telemetry=False,
        name="pipeline",
        steps=[
            Step(
                name="research",
                agent=Agent(telemetry=False, name="researcher", model=scripted_agno([text("N.")])),
            ),
            Step(
                name="write",
                agent=Agent(
                    telemetry=False,
                    name="writer",
                    model=scripted_agno([text("Es"), gate, text("say")]),
                ),
            ),
        ],
    )
    register(app, "pipeline", lambda: workflow)
    run = await app.start("pipeline", "write an essay")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert (outcome.status, outcome.text) == ("cancelled", "N.Es")
    messages = await app.store.messages(run.session_id)
    assert [(m.role, m.content, m.status) for m in messages if m.run_id == run.run_id] == [
        ("user", "write an essay", "complete"),
        ("assistant", "N.", "complete"),
        ("assistant", "Es", "interrupted"),
    ]
    # Each step is a child run with its own partial output and status.
    children = {c.agent: c for c in await app.store.child_runs(run.run_id)}
    assert {name: (c.status, c.reason) for name, c in children.items()} == {
        "researcher": ("completed", None),
        "writer": ("cancelled", "parent"),
    }
    child_text = {m.run_id: (m.content, m.status) for m in messages if m.run_id != run.run_id}
    assert child_text[children["researcher"].run_id] == ("N.", "complete")
    assert child_text[children["writer"].run_id] == ("Es", "interrupted")
