"""Any script, stopped at any point: one terminal event, last; seq increasing; stored text equals
the streamed text; every tool call closed — for an agent, a two-member team and a two-step
workflow under tether."""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

# Deliberate: imported at collection. Hypothesis imports it lazily mid-test, where pytest's
# assertion rewriting compiles it deep inside the event loop's stack; CPython 3.11.7 then
# intermittently fails with "SystemError: AST constructor recursion depth mismatch".
import hypothesis.internal.conjecture.optimiser  # noqa: F401  # pyright: ignore[reportUnusedImport]
import pytest
from agno.agent import Agent
from agno.team import Team
from agno.workflow import Step as WorkflowStep
from agno.workflow import Workflow
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.runtimes.scripted_agno import scripted_agno
from tests.scripted import Gate, Step, fail, text, tool_call
from tether import (
    RunFinished,
    RunHandle,
    RunOutcome,
    Settings,
    Tether,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio

PlanStep = tuple[str, str]  # ("text", chunk) | ("call", "ok" | "boom") | ("fail", "")
Response = tuple[PlanStep, ...]
AgentPlan = tuple[Response, ...]
MEMBERS = ("alpha", "beta")

chunks = st.text(st.characters(codec="utf-8"), min_size=1, max_size=4)


@st.composite
def responses(draw: st.DrawFn, last: st.SearchStrategy[PlanStep] | None) -> Response:
    """Up to three text chunks, then ``last`` (a call, a delegation or a failure) if given."""
    steps: list[PlanStep] = [("text", chunk) for chunk in draw(st.lists(chunks, max_size=3))]
    if last is not None and (step := draw(last)) != ("", ""):
        steps.append(step)
    return tuple(steps) or (("text", "."),)


@st.composite
def plans(draw: st.DrawFn, calling: st.SearchStrategy[PlanStep]) -> AgentPlan:
    """Up to two responses ending in a call (each needs another request), then a final one."""
    head = draw(st.lists(responses(calling), max_size=2))
    final = draw(responses(st.sampled_from([("", ""), ("fail", "")])))
    return (*head, final)


calls: st.SearchStrategy[PlanStep] = st.sampled_from([("call", "ok"), ("call", "boom")])
delegations: st.SearchStrategy[PlanStep] = st.sampled_from([("delegate", m) for m in MEMBERS])
agent_plans = plans(calls)


@dataclass
class Builder:
    """Turns plans into scripts, with a gate at stop slot ``stop_slot`` (None: no stop)."""

    stop_slot: int | None = None
    gate: Gate = field(default_factory=Gate)
    slots: int = 0
    calls: int = 0

    def _is_stop(self) -> bool:
        hit = self.slots == self.stop_slot
        self.slots += 1
        return hit

    def response(self, plan: Response) -> list[Step]:
        steps: list[Step] = []
        for kind, value in plan:
            if self._is_stop():
                steps.append(self.gate)
            self.calls += 1
            match kind:
                case "text":
                    steps.append(text(value))
                case "call":
                    q = "park" if self._is_stop() else value
                    steps.append(tool_call("lookup", {"q": q}, call_id=f"c{self.calls}"))
                case "delegate":
                    args = {"member_id": value, "task": "go"}
                    steps.append(
                        tool_call("delegate_task_to_member", args, call_id=f"d{self.calls}")
                    )
                case _:
                    steps.append(fail("provider down"))
        return steps

    def script(self, plan: AgentPlan) -> list[list[Step]]:
        return [self.response(r) for r in plan]

    def lookup(self) -> Callable[[str], object]:
        gate = self.gate

        async def lookup(q: str) -> str:
            """Look q up."""
            if q == "park":
                gate.reached.set()
                await gate.opened.wait()
            if q == "boom":
                raise ValueError("boom")
            return f"found {q}"

        return lookup


def agent_factory(plan: AgentPlan, builder: Builder) -> Callable[[], object]:
    model = scripted_agno(*builder.script(plan))
    return lambda: Agent(telemetry=False, name="solo", model=model, tools=[builder.lookup()])


def team_factory(
    leader: AgentPlan, members: dict[str, list[AgentPlan]], builder: Builder
) -> Callable[[], object]:
    leader_model = scripted_agno(*builder.script(leader), name="leader")
    agents: list[Agent | Team] = []
    for name in MEMBERS:
        script = [s for plan in members[name] for s in builder.script(plan)]
        model = scripted_agno(*script, name=name)
        agents.append(Agent(telemetry=False, name=name, model=model, tools=[builder.lookup()]))
    team = Team(telemetry=False, name="crew", model=leader_model, members=agents)
    return lambda: team


def workflow_factory(plans: tuple[AgentPlan, AgentPlan], builder: Builder) -> Callable[[], object]:
    steps: list[Any] = []
    for n, plan in enumerate(plans):
        model = scripted_agno(*builder.script(plan), name=f"agent{n}")
        agent = Agent(telemetry=False, name=f"agent{n}", model=model, tools=[builder.lookup()])
        steps.append(WorkflowStep(name=f"step{n}", agent=agent))
    workflow = Workflow(telemetry=False, name="pipeline", steps=steps)
    return lambda: workflow


async def run_and_maybe_stop(make: Callable[[], object], gate: Gate) -> tuple[Tether, RunHandle]:
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    async with app:
        app.agent("subject")(lambda ctx: make())
        run = await app.start("subject", "go")
        settled = anyio.Event()

        async def on_gate() -> None:
            await gate.reached.wait()
            settled.set()

        async def on_end() -> None:
            await run.outcome()
            settled.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_gate)
                tg.start_soon(on_end)
                await settled.wait()
                tg.cancel_scope.cancel()
            if gate.reached.is_set():
                await run.cancel()
            await run.outcome()
        await check_invariants(app, run, is_stopped=gate.reached.is_set())
        event(f"run ended {(await run.outcome()).status}")
    return app, run


async def check_invariants(app: Tether, run: RunHandle, *, is_stopped: bool) -> None:
    outcome: RunOutcome = await run.outcome()
    with anyio.fail_after(5):
        events = [e async for e in run.events()]
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert len(finished) == 1
    assert events[-1] is finished[0]
    seqs = [e.seq for e in events]
    assert all(a < b for a, b in itertools.pairwise(seqs))

    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    messages = await app.store.messages(run.session_id)
    stored = "".join(
        m.content for m in messages if m.role == "assistant" and m.run_id == run.run_id
    )
    assert stored == streamed == outcome.text

    started = [e.call_id for e in events if isinstance(e, ToolCallStarted)]
    closed = [e.call_id for e in events if isinstance(e, ToolCallFinished)]
    assert sorted(started) == sorted(closed)
    assert len(set(started)) == len(started)
    assert all(c.status != "running" for m in messages for c in m.tool_calls)
    if is_stopped:
        assert outcome.status == "cancelled"
    else:
        assert outcome.status in ("completed", "failed")


def slots(plans: list[AgentPlan]) -> int:
    """How many stop slots ``Builder`` numbers in ``plans``: one per step, two per tool call."""
    return sum(1 + (kind == "call") for plan in plans for r in plan for kind, _ in r)


def stops(count: int) -> st.SearchStrategy[int | None]:
    """A stop slot two times in three, else no stop."""
    slot = st.integers(0, max(count - 1, 0))
    return st.one_of(slot, slot, st.none())


@st.composite
def agent_cases(draw: st.DrawFn) -> tuple[AgentPlan, int | None]:
    plan = draw(agent_plans)
    return plan, draw(stops(slots([plan])))


@st.composite
def team_cases(
    draw: st.DrawFn,
) -> tuple[AgentPlan, dict[str, list[AgentPlan]], int | None]:
    leader = draw(plans(delegations))
    members: dict[str, list[AgentPlan]] = {name: [] for name in MEMBERS}
    for response in leader:
        for kind, member in response:
            if kind == "delegate":
                members[member].append(draw(agent_plans))
    every = [leader, *(p for plans in members.values() for p in plans)]
    return leader, members, draw(stops(slots(every)))


@st.composite
def workflow_cases(draw: st.DrawFn) -> tuple[tuple[AgentPlan, AgentPlan], int | None]:
    plans = (draw(agent_plans), draw(agent_plans))
    return plans, draw(stops(slots(list(plans))))


PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(case=agent_cases())
async def test_agent_run_invariants_hold_for_any_script_and_stop(
    case: tuple[AgentPlan, int | None],
) -> None:
    plan, stop = case
    builder = Builder(stop_slot=stop)
    await run_and_maybe_stop(agent_factory(plan, builder), builder.gate)


@PROPERTY
@given(case=team_cases())
async def test_team_run_invariants_hold_for_any_script_and_stop(
    case: tuple[AgentPlan, dict[str, list[AgentPlan]], int | None],
) -> None:
    leader, members, stop = case
    builder = Builder(stop_slot=stop)
    await run_and_maybe_stop(team_factory(leader, members, builder), builder.gate)


@PROPERTY
@given(case=workflow_cases())
async def test_workflow_run_invariants_hold_for_any_script_and_stop(
    case: tuple[tuple[AgentPlan, AgentPlan], int | None],
) -> None:
    plans, stop = case
    builder = Builder(stop_slot=stop)
    await run_and_maybe_stop(workflow_factory(plans, builder), builder.gate)
