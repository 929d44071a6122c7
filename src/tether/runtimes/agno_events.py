"""Agno stream events -> sink calls, keeping members' and steps' runs apart.

One Agno stream carries several runs: the run tether started (an agent, a team's leader, or a
workflow) and, for teams and workflows, the runs of members and step executors, each with its
own ``run_id``. ``EventRouter`` sends each run's text, tool calls and usage to its own sink:

- The top-level run reports to the run's sink; its usage there includes every child's, since
  budgets apply to what the whole run costs.
- Every other run is a child. ``Children`` is the one place that decides where a child reports;
  until the engine offers child runs, children are tracked (status and usage) but not reported,
  except that a workflow's step executors' text is also the workflow's own text (a workflow has
  no model of its own: what its steps say is what it says).

Pauses: an agent run that pauses for confirmation ends its stream with the paused
``RunOutput``, which the router keeps (``paused``) for ``agno.py`` to turn into tether's
``Paused``. Any other pause of the top-level run (a team's, a workflow's, or any pause when the
router isn't told the run ``can_pause``) fails the run with ``UsageError``.

Deliberately not done here: stopping. The router only says which events are step boundaries;
``agno.py`` decides to stop there.
"""

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from agno.run import agent as agent_events
from agno.run import team as team_events
from agno.run import workflow as workflow_events
from agno.run.agent import RunOutput
from pydantic import BaseModel, JsonValue
from pydantic_core import to_jsonable_python

from tether.errors import AgentRunError, ProviderError, UsageError
from tether.events import Usage
from tether.runtimes.base import RunSink

ChildStatus = Literal["completed", "cancelled", "failed"]

_REQUEST_STARTED = (agent_events.ModelRequestStartedEvent, team_events.ModelRequestStartedEvent)
_PAUSED = (
    agent_events.RunPausedEvent,
    team_events.RunPausedEvent,
    workflow_events.WorkflowPausedEvent,
    workflow_events.StepPausedEvent,
    workflow_events.StepExecutorPausedEvent,
    workflow_events.StepOutputReviewEvent,
    workflow_events.RouterPausedEvent,
)
_PROVIDER_ERROR_TYPES = frozenset({"model_provider_error", "model_authentication_error"})


class ChildSink(RunSink, Protocol):
    """The sink of a child run (a team member or workflow step)."""

    def finished(self, status: ChildStatus) -> None:
        """The child run ended (reported once)."""
        ...


OpenChild = Callable[[str], ChildSink]
"""Opens a child run for the named member or step and returns the sink it reports to."""


class _Source:
    """One Agno run in the stream: where it reports, and what it has used so far."""

    __slots__ = ("input_tokens", "is_mirrored", "name", "output_tokens", "requests", "sink")

    def __init__(self, *, name: str, sink: RunSink | None, is_mirrored: bool = False) -> None:
        self.name = name
        self.sink = sink
        self.is_mirrored = is_mirrored
        self.input_tokens = 0
        self.output_tokens = 0
        self.requests = 0

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            requests=self.requests,
        )


class Children:
    """Member and step runs: where they report and how they ended.

    The one place to wire the engine's child runs: ``open_child`` (from the engine's sink once
    it offers child runs) gets each child's events; without it children are only tracked.
    """

    def __init__(self, open_child: OpenChild | None) -> None:
        self._open_child = open_child
        self._sinks: dict[str, ChildSink] = {}
        self.status: dict[str, ChildStatus | None] = {}
        """Every child seen, by Agno run id: how it ended, or None while it runs."""

    def open(self, key: str, name: str) -> RunSink | None:
        self.status[key] = None
        if self._open_child is None:
            return None
        sink = self._sinks[key] = self._open_child(name)
        return sink

    def finish(self, key: str, status: ChildStatus) -> None:
        if self.status.get(key, "completed") is not None:
            return  # unknown, or already ended: the first ending wins
        self.status[key] = status
        if (sink := self._sinks.pop(key, None)) is not None:
            sink.finished(status)

    def finish_open(self, status: ChildStatus) -> None:
        """End every child still running (the parent stopped or failed)."""
        for key in [k for k, s in self.status.items() if s is None]:
            self.finish(key, status)


class EventRouter:
    """Routes one Agno stream's events to the sinks of the runs they belong to."""

    def __init__(
        self,
        *,
        run_id: str,
        sink: RunSink,
        children: Children,
        is_workflow: bool = False,
        can_pause: bool = False,
    ) -> None:
        self._run_id = run_id
        self._can_pause = can_pause
        self.paused: RunOutput | None = None
        """The top-level agent run as it paused for confirmation (when ``can_pause``)."""
        self._sink = sink
        self._top = _Source(name="", sink=sink)
        self._sources: dict[str, _Source] = {run_id: self._top}
        self._children = children
        self._is_workflow = is_workflow

    def is_boundary(self, event: object) -> bool:
        """Whether ``event`` starts a new model turn of the run, or a new workflow step."""
        if isinstance(event, _REQUEST_STARTED):
            source = self._sources.get(event.run_id or self._run_id)
            return source is self._top or (source is not None and source.is_mirrored)
        return isinstance(event, workflow_events.StepStartedEvent)

    def route(self, event: object) -> None:
        """Report ``event`` to its run's sink.

        Raises:
            ProviderError: the top-level run failed calling its model.
            UsageError: the run paused, and it isn't an agent run that ``can_pause``.
            AgentRunError: the top-level run failed otherwise, or Agno cancelled it by itself.
        """
        match event:
            case agent_events.RunContentEvent() | team_events.RunContentEvent():
                if (delta := _text(event.content)) is not None:
                    self._text(self._source(event), delta)
            case agent_events.ModelRequestStartedEvent() | team_events.ModelRequestStartedEvent():
                self._response_started(self._source(event))
            case (
                agent_events.ModelRequestCompletedEvent() | team_events.ModelRequestCompletedEvent()
            ):
                self._usage(self._source(event), event.input_tokens, event.output_tokens)
            case agent_events.ToolCallStartedEvent() | team_events.ToolCallStartedEvent():
                self._tool_started(self._source(event), event.tool)
            case agent_events.ToolCallCompletedEvent() | team_events.ToolCallCompletedEvent():
                self._tool_finished(self._source(event), event.tool)
            case _:
                self._lifecycle(event)

    def _lifecycle(self, event: object) -> None:
        match event:
            case agent_events.RunStartedEvent() | team_events.RunStartedEvent():
                self._source(event)
            case agent_events.RunCompletedEvent() | team_events.RunCompletedEvent():
                self._ended(event, "completed")
            case agent_events.RunCancelledEvent() | team_events.RunCancelledEvent():
                self._ended(event, "cancelled")
            case agent_events.RunErrorEvent() | team_events.RunErrorEvent():
                if self._is_top(event.run_id):
                    raise _failure(event.content, event.error_type, run_id=self._run_id)
                self._ended(event, "failed")
            case workflow_events.WorkflowErrorEvent():
                raise _failure(event.error, event.error_type, run_id=self._run_id)
            case _ if isinstance(event, (*_PAUSED, RunOutput)):
                self._paused(event)
            case workflow_events.WorkflowCancelledEvent():
                self._ended(event, "cancelled")
            case _:
                pass

    def _paused(self, event: object) -> None:
        if not self._is_top(getattr(event, "run_id", None)):
            return  # a member's or step's pause surfaces as its parent's
        if isinstance(event, RunOutput):
            if event.is_paused:  # the stream's last item, after its RunPausedEvent
                self.paused = event
        elif not (self._can_pause and isinstance(event, agent_events.RunPausedEvent)):
            raise UsageError(
                "the Agno run paused for human input; tether continues only an agent's own "
                "tools that need confirmation, not a team's or a workflow's pause",
                run_id=self._run_id,
            )

    # --- one run's reports -----------------------------------------------------------

    def _source(self, event: Any) -> _Source:
        key: str = event.run_id or self._run_id
        source = self._sources.get(key)
        if source is None:
            name = _name(event)
            parent = getattr(event, "parent_run_id", None)  # workflow events have none
            is_step = self._is_workflow and parent in (None, self._run_id)
            sink = self._children.open(key, name)
            source = self._sources[key] = _Source(name=name, sink=sink, is_mirrored=is_step)
        return source

    def _text(self, source: _Source, delta: str) -> None:
        if source.sink is not None:
            source.sink.text(delta)
        if source.is_mirrored:
            self._sink.text(delta)

    def _response_started(self, source: _Source) -> None:
        if source.sink is not None:
            source.sink.response_started()
        if source.is_mirrored:
            self._sink.response_started()

    def _usage(self, source: _Source, input_tokens: int | None, output_tokens: int | None) -> None:
        source.input_tokens += input_tokens or 0
        source.output_tokens += output_tokens or 0
        source.requests += 1
        if source is not self._top and source.sink is not None:
            source.sink.usage(source.usage())
        total = Usage(
            input_tokens=sum(s.input_tokens for s in self._sources.values()),
            output_tokens=sum(s.output_tokens for s in self._sources.values()),
            requests=sum(s.requests for s in self._sources.values()),
        )
        self._sink.usage(total)

    def _tool_started(self, source: _Source, tool: Any) -> None:
        if source.sink is None or tool is None:
            return
        args: Mapping[str, JsonValue] = to_jsonable_python(tool.tool_args or {})
        source.sink.tool_started(call_id_of(tool), tool.tool_name or "", args)

    def _tool_finished(self, source: _Source, tool: Any) -> None:
        if source.sink is None or tool is None:
            return
        result: JsonValue = to_jsonable_python(tool.result)
        if tool.tool_call_error:
            error = str(result) if result is not None else "the tool failed"
            source.sink.tool_finished(call_id_of(tool), ok=False, error=error)
        else:
            source.sink.tool_finished(call_id_of(tool), ok=True, result=result)

    def _ended(self, event: Any, status: ChildStatus) -> None:
        run_id: str | None = event.run_id
        if not self._is_top(run_id):
            self._source(event)  # a child may end before Agno reports it started
            self._children.finish(event.run_id, status)
        elif status == "cancelled":
            raise AgentRunError(
                "Agno cancelled the run by itself (not through tether)", run_id=self._run_id
            )

    def _is_top(self, run_id: str | None) -> bool:
        return run_id is None or run_id == self._run_id


def _text(content: object) -> str | None:
    if content is None or isinstance(content, str):
        return content or None
    if isinstance(content, BaseModel):
        return content.model_dump_json()  # structured output arrives whole, once
    return str(content)


def _name(event: Any) -> str:
    for attribute in ("agent_name", "team_name", "workflow_name", "step_name"):
        if name := getattr(event, attribute, None):
            return str(name)
    return "agno"


def call_id_of(tool: Any) -> str:
    """The call id of an Agno tool execution."""
    # Some providers omit ids; Agno then invents one, so this fallback is only a guard.
    return str(tool.tool_call_id or f"{tool.tool_name}-{tool.created_at}")


def _failure(message: str | None, error_type: str | None, *, run_id: str) -> AgentRunError:
    message = message or "the Agno run failed"
    if error_type in _PROVIDER_ERROR_TYPES:
        return ProviderError(message, provider="agno", run_id=run_id, error_type=error_type)
    return AgentRunError(message, run_id=run_id, error_type=error_type)
