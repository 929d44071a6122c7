"""``EventRouter`` on the Agno events that ordinary runs rarely produce."""

import anyio
import pytest
from agno.agent import Agent
from agno.run import agent as agent_events
from agno.run import workflow as workflow_events
from pydantic import BaseModel

from tests.runtimes._agno_helpers import ChildRecordingSink, ManualSignal, RecordingSink
from tests.runtimes.scripted_agno import scripted_agno
from tests.scripted import text, tool_call
from tether.errors import AgentRunError, ProviderError
from tether.ids import RunId, SessionId, new_id
from tether.runtimes.agno import AgnoRuntime
from tether.runtimes.agno_events import Children, EventRouter
from tether.runtimes.base import Turn

pytestmark = pytest.mark.anyio

RUN = "top"


def router(sink: RecordingSink, *, is_workflow: bool = False) -> tuple[EventRouter, Children]:
    children = Children(getattr(sink, "child_run", None))
    return EventRouter(run_id=RUN, sink=sink, children=children, is_workflow=is_workflow), children


def test_a_failed_workflow_raises_with_agnos_error() -> None:
    events, _ = router(RecordingSink(), is_workflow=True)
    with pytest.raises(AgentRunError, match="step exploded"):
        events.route(workflow_events.WorkflowErrorEvent(run_id=RUN, error="step exploded"))
    failure = workflow_events.WorkflowErrorEvent(
        run_id=RUN, error="rate limited", error_type="model_provider_error"
    )
    with pytest.raises(ProviderError, match="rate limited"):
        events.route(failure)


def test_a_workflow_cancelled_by_agno_itself_is_a_failure() -> None:
    events, _ = router(RecordingSink(), is_workflow=True)
    with pytest.raises(AgentRunError, match="not through tether"):
        events.route(workflow_events.WorkflowCancelledEvent(run_id=RUN))


def test_a_child_ends_once_and_an_unnamed_child_is_called_agno() -> None:
    sink = ChildRecordingSink()
    events, children = router(sink)
    events.route(agent_events.RunStartedEvent(run_id="m1"))
    events.route(agent_events.RunCompletedEvent(run_id="m1"))
    events.route(agent_events.RunCancelledEvent(run_id="m1"))
    events.route(agent_events.RunErrorEvent(run_id="m2", content="boom"))
    assert children.status == {"m1": "completed", "m2": "failed"}
    assert [(c.name, c.status) for c in sink.children] == [
        ("agno", "completed"),
        ("agno", "failed"),
    ]


class Answer(BaseModel):
    answer: str


async def test_structured_output_is_reported_as_its_json() -> None:
    model = scripted_agno([text('{"answer": '), text('"42"}')])
    agent = Agent(telemetry=False, model=model, output_schema=Answer)
    sink = RecordingSink()
    turn = Turn(
        run_id=RunId(new_id("run")), session_id=SessionId(new_id("ses")), prompt="q", history=()
    )
    with anyio.fail_after(5):
        await AgnoRuntime().drive(agent, turn, sink, ManualSignal())
    assert sink.text_deltas == ['{"answer":"42"}']


async def test_a_run_agno_cancels_by_itself_fails_instead_of_completing() -> None:
    turn = Turn(
        run_id=RunId(new_id("run")), session_id=SessionId(new_id("ses")), prompt="q", history=()
    )

    async def quit_via_agno() -> str:
        """Cancels the run the Agno way."""
        await Agent.acancel_run(turn.run_id)
        return "bye"

    model = scripted_agno([tool_call("quit_via_agno")], [text("never")])
    agent = Agent(telemetry=False, model=model, tools=[quit_via_agno])
    with anyio.fail_after(5), pytest.raises(AgentRunError, match="not through tether"):
        await AgnoRuntime().drive(agent, turn, RecordingSink(), ManualSignal())
    assert len(model.received) == 1
