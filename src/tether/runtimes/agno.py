"""Agno runtime: drives an Agno ``Agent``, ``Team`` or ``Workflow`` turn and reports to the sink.

Stopping. A stop now cancels this runtime's own scope at once, wherever the run awaits: the
model stream, an async tool (Agno runs tools in ``asyncio.gather``, which cancels them with
us), a member or a step. Agno's stream is an async generator, closed with ``aclosing`` so its
own cancellation handling runs; no event that arrives after the stop is reported. Then, shielded
and bounded, Agno is told with its own ``acancel_run``: its bookkeeping then agrees, and the
cancel cascades to runs Agno detached from ours — a team runs each delegation to a member in a
task of its own, which our scope cannot reach; those are cancelled too. A stop after the turn
is honoured at the next model request or workflow step.

Approval. An agent's tool made with ``requires_confirmation=True`` pauses the run: the turn
returns ``Paused`` with the waiting calls and, as its state, Agno's paused ``RunOutput``. The
continuation gives that ``RunOutput``, with the decisions applied, to Agno's ``acontinue_run``:
approved calls run (reported as usual), denied ones get their reason as an error result the
model reads, and the stream is reported and stopped like any other (see ``_agno_approval.py``).
Only an agent's own confirmations are supported. A pause for user input or external
execution, and any pause of a team or a workflow (including a member or a step whose tool needs
confirmation), fails the run with ``UsageError``.

Deliberately not done: Agno's stored history (``add_history_to_context`` is off; history comes
from tether's records, see ``agno_history.py``).
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Protocol, cast, runtime_checkable

import anyio
from agno.agent import Agent
from agno.run import cancel as agno_cancel
from agno.team import Team
from agno.workflow import Workflow

from tether.errors import UsageError
from tether.runtimes._agno_approval import continued, paused
from tether.runtimes.agno_events import Children, ChildSink, EventRouter, OpenChild
from tether.runtimes.agno_history import with_history, without_stored_history, workflow_input
from tether.runtimes.base import Paused, RunSink, StopSignal, Turn

AGNO_CANCEL_TIMEOUT_S = 1.0
"""How long telling Agno about a stop may take (its cancellation manager may be Redis)."""

Target = Agent | Team | Workflow


class AgnoRuntime:
    """Drives Agno agents, teams and workflows; stops them by cancelling their scope."""

    name = "agno"
    handles_stop = True

    def accepts(self, agent: object) -> bool:
        return isinstance(agent, Agent | Team | Workflow)

    async def drive(
        self, agent: object, turn: Turn, sink: RunSink, signal: StopSignal
    ) -> Paused | None:
        """Run or continue one turn of ``agent``; return when it is over, stopped or paused.

        Raises:
            UsageError: ``agent`` is not an Agno agent, team or workflow, or it paused for
                something other than an agent's tool confirmation.
            ProviderError: the model failed.
            AgentRunError: the Agno run failed otherwise.
        """
        if not isinstance(agent, Agent | Team | Workflow):
            raise UsageError(f"the Agno runtime cannot drive a {type(agent).__name__}")
        children = Children(_open_child(sink))
        router = EventRouter(
            run_id=turn.run_id,
            sink=sink,
            children=children,
            is_workflow=isinstance(agent, Workflow),
            can_pause=isinstance(agent, Agent),
        )
        # Agno only prepares here (its run is registered once the stream starts), so a failure
        # here, such as a paused state that can't be continued, leaves nothing to cancel.
        stream = _stream(agent, turn)
        scope = anyio.CancelScope()
        signal.on_stop_now(scope.cancel)
        is_over = False
        try:
            with scope:
                is_over = await _pump(stream, router, signal, scope)
        finally:
            children.finish_open("cancelled")
            if not is_over:
                with anyio.move_on_after(AGNO_CANCEL_TIMEOUT_S, shield=True):
                    await cancel_in_agno(agent, turn.run_id)
        if is_over and router.paused is not None:
            return paused(router.paused, run_id=turn.run_id)
        return None


async def _pump(
    stream: AsyncGenerator[object],
    router: EventRouter,
    signal: StopSignal,
    scope: anyio.CancelScope,
) -> bool:
    """Report ``stream``'s events until it ends (True) or the run stops (False)."""
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            if scope.cancel_called:
                # Agno can yield more events before its next real await; none are reported.
                return False
            if router.is_boundary(event) and signal.is_after_turn_requested:
                scope.cancel()
                return False
            router.route(event)
    return True


def _stream(agent: Target, turn: Turn) -> AsyncGenerator[object]:
    # Agno's run signatures are partly untyped; only the generator they return matters here.
    runner: Any
    if turn.resume is not None:
        if not isinstance(agent, Agent):  # only an agent's run can have paused
            raise UsageError(f"an Agno {type(agent).__name__} can't continue a paused run")
        runner = without_stored_history(agent)
        stream = runner.acontinue_run(
            continued(
                turn.resume.state,
                turn.resume.decisions,
                run_id=turn.run_id,
                session_id=turn.session_id,
            ),
            stream=True,
            stream_events=True,
            yield_run_output=True,  # a paused run ends its stream with its RunOutput
        )
    elif isinstance(agent, Workflow):
        runner = agent
        stream = runner.arun(
            input=workflow_input(turn.prompt, turn.history),
            run_id=turn.run_id,
            session_id=turn.session_id,
            stream=True,
            stream_events=True,
        )
    else:
        runner = with_history(agent, turn.history)
        stream = runner.arun(
            turn.prompt,
            stream=True,
            stream_events=True,
            run_id=turn.run_id,
            session_id=turn.session_id,
            add_history_to_context=False,
            yield_run_output=isinstance(agent, Agent),
        )
    # Agno's streaming runs are async generators: aclosing needs their aclose().
    assert isinstance(stream, AsyncGenerator)
    return cast(AsyncGenerator[object], stream)


async def cancel_in_agno(target: Target, run_id: str) -> None:
    """Tell Agno that ``run_id`` was stopped, and stop what it runs detached from it.

    ``acancel_run`` marks the run and cascades to its members' and steps' runs, which then stop
    at their next cancellation check. The run's own entries are removed afterwards, as Agno
    does when a run ends (on a cancelled stream it leaves the member map until its TTL). Member
    runs that had already ended keep the cancelled mark the cascade gave them until that TTL.
    """
    member_run_ids = await agno_cancel.aget_member_run_ids(run_id)
    await target.acancel_run(run_id)
    for key in (run_id, *member_run_ids):
        _cancel_delegations(key)
    await agno_cancel.acleanup_run(run_id)
    await agno_cancel.acleanup_member_runs(run_id)


def _cancel_delegations(team_run_id: str) -> None:
    # Deliberate: Agno runs a team's delegations to members in tasks of its own
    # (Model.arun_function_calls, asyncio.create_task), outside our cancel scope. It registers
    # them for draining but offers no public way to cancel them; without this, a stopped
    # team's member runs on until its next cancellation check (e.g. after a slow tool returns).
    # Pinned by test_stopping_a_team_cancels_the_member_agno_ran_detached; an Agno upgrade that
    # drops the registry degrades to that check.
    registry: dict[str, set[asyncio.Task[Any]]] = getattr(agno_cancel, "_member_drain_tasks", {})
    for task in list(registry.get(team_run_id, ())):
        task.cancel()


@runtime_checkable
class _ChildRuns(Protocol):
    def child_run(self, agent_name: str) -> ChildSink: ...


def _open_child(sink: RunSink) -> OpenChild | None:
    """Where member and step runs report: the engine's child runs, when its sink offers them."""
    return sink.child_run if isinstance(sink, _ChildRuns) else None
