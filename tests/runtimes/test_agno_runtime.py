"""``AgnoRuntime`` driven directly: what it reports, how it fails, and how it stops."""

from typing import Any

import anyio
import pytest
from agno.agent import Agent
from agno.run.cancel import aget_active_runs
from agno.team import Team
from agno.workflow import Step, Workflow

from tests.runtimes._agno_helpers import ChildRecordingSink, ManualSignal, RecordingSink
from tests.runtimes.scripted_agno import ScriptedAgnoModel, scripted_agno
from tests.scripted import Call, Gate, fail, parked_tool, text, tool_call
from tether.errors import AgentRunError, ProviderError, UsageError
from tether.events import Usage
from tether.ids import RunId, SessionId, new_id
from tether.runtimes.agno import AgnoRuntime
from tether.runtimes.base import RunSink, Turn

pytestmark = pytest.mark.anyio


def new_turn(prompt: str = "hi") -> Turn:
    return Turn(
        run_id=RunId(new_id("run")),
        session_id=SessionId(new_id("ses")),
        prompt=prompt,
        history=(),
    )


async def lookup(q: str) -> str:
    """Look q up."""
    return f"found {q}"


async def drive(agent: object, sink: RunSink, signal: ManualSignal | None = None) -> Turn:
    turn = new_turn()
    with anyio.fail_after(5):
        await AgnoRuntime().drive(agent, turn, sink, signal or ManualSignal())
    return turn


def crew(
    leader: ScriptedAgnoModel, writer: ScriptedAgnoModel, tools: list[Any] | None = None
) -> Team:
    members: list[Agent | Team] = [
        Agent(telemetry=False, name="writer", model=writer, tools=tools),
        Agent(telemetry=False, name="critic", model=scripted_agno(name="critic")),
    ]
    return Team(telemetry=False, name="crew", model=leader, members=members)


def delegate(member: str, call_id: str = "d1") -> Call:
    return tool_call(
        "delegate_task_to_member", {"member_id": member, "task": "do it"}, call_id=call_id
    )


def test_accepts_agents_teams_and_workflows_only() -> None:
    runtime = AgnoRuntime()
    agent = Agent(telemetry=False, model=scripted_agno())
    assert runtime.accepts(agent)
    assert runtime.accepts(Team(telemetry=False, members=[agent], model=scripted_agno()))
    assert runtime.accepts(Workflow(telemetry=False, steps=[Step(name="s", agent=agent)]))
    assert not runtime.accepts(object())


async def test_driving_something_else_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot drive a str"):
        await drive("not an agent", RecordingSink())


async def test_drive_reports_responses_text_tool_calls_and_cumulative_usage() -> None:
    model = scripted_agno(
        [text("Check"), text("ing."), tool_call("lookup", {"q": "x"}, call_id="c1")],
        [text("Done.")],
    )
    sink = RecordingSink()
    await drive(Agent(telemetry=False, model=model, tools=[lookup]), sink)
    assert sink.calls == [
        ("response_started",),
        ("text", "Check"),
        ("text", "ing."),
        ("tool_started", "c1", "lookup", {"q": "x"}),
        ("tool_finished", "c1", True, "found x", None),
        ("response_started",),
        ("text", "Done."),
    ]
    # request 1: 1 message in, 3 steps out; request 2: user, assistant, tool in, 1 out
    assert sink.last_usage == Usage(input_tokens=4, output_tokens=4, requests=2)


async def test_a_failing_tool_is_reported_as_a_failed_call_and_the_run_goes_on() -> None:
    async def broken(q: str) -> str:
        """Always fails."""
        raise ValueError("no such thing")

    model = scripted_agno([tool_call("broken", {"q": "x"}, call_id="c1")], [text("Sorry.")])
    sink = RecordingSink()
    await drive(Agent(telemetry=False, model=model, tools=[broken]), sink)
    (finished,) = [c for c in sink.calls if c[0] == "tool_finished"]
    assert finished[:4] == ("tool_finished", "c1", False, None)
    assert "no such thing" in str(finished[4])
    assert sink.text_deltas == ["Sorry."]


async def test_a_model_failure_raises_provider_error() -> None:
    sink = RecordingSink()
    with pytest.raises(ProviderError, match="upstream is down"):
        await drive(
            Agent(telemetry=False, model=scripted_agno([text("Hi"), fail("upstream is down")])),
            sink,
        )
    assert sink.text_deltas == ["Hi"]


async def test_a_request_beyond_the_script_fails_the_run() -> None:
    model = scripted_agno([tool_call("lookup", {"q": "x"})])
    with pytest.raises(AgentRunError, match="beyond the script"):
        await drive(Agent(telemetry=False, model=model, tools=[lookup]), RecordingSink())
    assert model.unexpected == [2]


async def test_stop_now_mid_text_returns_with_only_the_text_before_the_stop() -> None:
    gate = Gate()
    model = scripted_agno([text("Hel"), text("lo"), gate, text("never")])
    sink, signal = RecordingSink(), ManualSignal()
    turn = new_turn()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                AgnoRuntime().drive, Agent(telemetry=False, model=model), turn, sink, signal
            )
            await gate.reached.wait()
            signal.stop_now()
    assert sink.text_deltas == ["Hel", "lo"]
    assert not gate.opened.is_set()
    assert turn.run_id not in await aget_active_runs()


async def test_stop_now_reports_nothing_agno_yields_after_the_stop() -> None:
    model = scripted_agno([text("one"), text("two"), text("three")])
    signal = ManualSignal()
    sink = RecordingSink(on_text=lambda delta: signal.stop_now() if delta == "one" else None)
    await drive(Agent(telemetry=False, model=model), sink, signal)
    assert sink.text_deltas == ["one"]


async def test_stop_now_inside_an_async_tool_cancels_the_tool() -> None:
    gate, cancelled = Gate(), anyio.Event()

    async def slow(q: str) -> str:
        """Takes a while."""
        gate.reached.set()
        try:
            await gate.opened.wait()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "late"

    model = scripted_agno([tool_call("slow", {"q": "x"}, call_id="c1")])
    agent = Agent(telemetry=False, model=model, tools=[slow])
    sink, signal = RecordingSink(), ManualSignal()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(AgnoRuntime().drive, agent, new_turn(), sink, signal)
            await gate.reached.wait()
            signal.stop_now()
    assert cancelled.is_set()
    assert sink.tool_calls == [("tool_started", "c1", "slow", {"q": "x"})]


async def test_stop_after_turn_lets_tools_finish_then_stops_before_the_next_request() -> None:
    signal = ManualSignal()

    async def lookup_then_stop(q: str) -> str:
        """Look q up."""
        signal.stop_after_turn()
        return "found"

    model = scripted_agno([tool_call("lookup_then_stop", {"q": "x"}, call_id="c1")], [text("x")])
    sink = RecordingSink()
    await drive(Agent(telemetry=False, model=model, tools=[lookup_then_stop]), sink, signal)
    assert len(model.received) == 1
    assert sink.calls[-1] == ("tool_finished", "c1", True, "found", None)


async def test_team_members_report_to_their_own_child_runs() -> None:
    leader = scripted_agno([delegate("writer")], [text("All done.")], name="leader")
    writer = scripted_agno([text("Draft")], name="writer")
    sink = ChildRecordingSink()
    await drive(crew(leader, writer), sink)
    assert sink.text_deltas == ["All done."]
    assert [c[:3] for c in sink.tool_calls] == [
        ("tool_started", "d1", "delegate_task_to_member"),
        ("tool_finished", "d1", True),
    ]
    child = sink.child("writer")
    assert (child.text_deltas, child.status) == (["Draft"], "completed")
    assert child.last_usage == Usage(input_tokens=1, output_tokens=1, requests=1)
    assert sink.last_usage is not None
    assert sink.last_usage.requests == 3  # the leader's two and the member's one


async def test_team_member_text_stays_out_of_the_team_run_without_child_runs() -> None:
    leader = scripted_agno([delegate("writer")], [text("All done.")], name="leader")
    writer = scripted_agno([text("Draft")], name="writer")
    sink = RecordingSink()
    await drive(crew(leader, writer), sink)
    assert sink.text_deltas == ["All done."]


async def test_stopping_a_team_cancels_the_member_agno_ran_detached() -> None:
    gate = Gate()
    cancelled = anyio.Event()

    async def research(q: str) -> str:
        """Research q."""
        gate.reached.set()
        try:
            await gate.opened.wait()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "late"

    leader = scripted_agno([delegate("writer")], name="leader")
    writer = scripted_agno([text("Let me see."), tool_call("research", {"q": "x"})], name="writer")
    sink, signal = ChildRecordingSink(), ManualSignal()
    team = crew(leader, writer, tools=[research])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(AgnoRuntime().drive, team, new_turn(), sink, signal)
            await gate.reached.wait()
            signal.stop_now()
        # The member runs in a task Agno detached from ours: it ends soon after, not with us.
        await cancelled.wait()
    child = sink.child("writer")
    assert (child.text_deltas, child.status) == (["Let me see."], "cancelled")


async def test_workflow_steps_report_as_children_and_their_text_is_the_workflows() -> None:
    research = scripted_agno([text("Notes.")], name="research")
    write = scripted_agno([text("Essay.")], name="write")
    workflow = Workflow(
        telemetry=False,
        name="pipeline",
        steps=[
            Step(name="research", agent=Agent(telemetry=False, name="researcher", model=research)),
            Step(name="write", agent=Agent(telemetry=False, name="writer", model=write)),
        ],
    )
    sink = ChildRecordingSink()
    await drive(workflow, sink)
    assert sink.calls == [
        ("response_started",),
        ("text", "Notes."),
        ("response_started",),
        ("text", "Essay."),
    ]
    assert [(c.name, c.text_deltas, c.status) for c in sink.children] == [
        ("researcher", ["Notes."], "completed"),
        ("writer", ["Essay."], "completed"),
    ]
    assert write.received[0][-1].content == "Notes."


async def test_stopping_a_workflow_mid_step_ends_that_step_cancelled() -> None:
    gate = Gate()
    workflow = Workflow(
        telemetry=False,
        name="pipeline",
        steps=[
            Step(
                name="research",
                agent=Agent(telemetry=False, name="researcher", model=scripted_agno([text("N")])),
            ),
            Step(
                name="write",
                agent=Agent(
                    telemetry=False,
                    name="writer",
                    model=scripted_agno([text("E"), gate, text("x")]),
                ),
            ),
        ],
    )
    sink, signal = ChildRecordingSink(), ManualSignal()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(AgnoRuntime().drive, workflow, new_turn(), sink, signal)
            await gate.reached.wait()
            signal.stop_now()
    assert sink.text_deltas == ["N", "E"]
    assert [(c.name, c.status) for c in sink.children] == [
        ("researcher", "completed"),
        ("writer", "cancelled"),
    ]


async def test_a_parked_tool_from_the_shared_script_helpers_works_with_agno() -> None:
    gate = Gate()
    gate.open()
    model = scripted_agno([tool_call("lookup", {"q": "x"}, call_id="c1")], [text("ok")])
    sink = RecordingSink()
    await drive(Agent(telemetry=False, model=model, tools=[parked_tool("lookup", gate)]), sink)
    assert ("tool_finished", "c1", True, "lookup done", None) in sink.calls
