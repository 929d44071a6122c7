"""An Agno agent's confirmation pause <-> tether's ``Paused`` and its continuation.

Agno pauses an agent run when the model calls a tool made with ``requires_confirmation=True``
and hands back the paused ``RunOutput``: the run's messages so far (system, tether's history,
the user message, the responses and the results of the calls that already ran) and its tool
executions. That object, as Agno's own ``to_dict``, is the state tether stores with the paused
run; continuing rebuilds it with ``from_dict``, marks each waiting call confirmed or rejected,
and gives it to Agno's ``acontinue_run(run_response=...)``. Nothing is read from Agno's
database, so the run can continue in another process or after a restart.

The continuation's ``items`` (tether's records of the turn) go unused: the stored messages are
exactly what the model saw. The price: the state holds the whole request, the session's
history included, so a long session stores a large state (only while the run is paused).

Deliberately not supported: pauses for user input or external execution (the run fails with
``UsageError``), and the pause of a team or a workflow (see ``agno_events.py``).
"""

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agno.models.response import ToolExecution
from agno.run.agent import RunOutput
from pydantic import JsonValue
from pydantic_core import to_jsonable_python

from tether.errors import UsageError
from tether.events import DEFAULT_DENIAL, PendingCall, ToolDecision
from tether.runtimes.agno_events import call_id_of
from tether.runtimes.base import Paused

"""What the model reads for a denial without a reason (the engine stores the same text)."""

_STATE_KEY: Final = "agno_run_output"
_UNSTORED: Final = ("additional_input", "events")
"""``RunOutput`` fields continuing doesn't read: ``additional_input`` repeats the history that is
already in ``messages``, ``events`` is Agno's own log of the stream."""


def paused(output: RunOutput, *, run_id: str) -> Paused:
    """The calls ``output`` waits on, and the state to continue it.

    Raises:
        UsageError: the run also waits for user input or external execution.
    """
    waiting = [t for t in output.tools or [] if t.is_paused]
    unsupported = [t for t in waiting if t.requires_user_input or t.external_execution_required]
    if unsupported or not waiting:
        names = ", ".join(sorted({t.tool_name or "?" for t in unsupported})) or "none"
        raise UsageError(
            "the Agno run paused for human input other than a confirmation, which tether does "
            f"not support (tools: {names})",
            run_id=run_id,
        )
    calls = tuple(
        PendingCall(
            call_id=call_id_of(t),
            tool=t.tool_name or "",
            args=to_jsonable_python(t.tool_args or {}),
        )
        for t in waiting
    )
    state: dict[str, Any] = output.to_dict()
    for key in _UNSTORED:
        state.pop(key, None)
    return Paused(calls=calls, state={_STATE_KEY: to_jsonable_python(state)})


def continued(
    state: JsonValue, decisions: Sequence[ToolDecision], *, run_id: str, session_id: str
) -> RunOutput:
    """The paused ``RunOutput`` stored in ``state``, with ``decisions`` applied to its calls.

    Raises:
        UsageError: ``state`` is not what ``paused`` stored, or the decisions don't answer
            exactly the calls it waits on.
    """
    stored = state.get(_STATE_KEY) if isinstance(state, dict) else None
    if not isinstance(stored, dict):
        raise UsageError(
            f"run {run_id}: no Agno run to continue in its paused state", run_id=run_id
        )
    output = RunOutput.from_dict(copy.deepcopy(stored))  # from_dict consumes its argument
    # The run goes on under tether's ids, which Agno's stop (acancel_run) is keyed by.
    output.run_id, output.session_id = run_id, session_id
    waiting = {call_id_of(t): t for t in output.tools or [] if t.is_paused}
    by_id = {d.call_id: d for d in decisions}
    if set(waiting) != set(by_id):
        raise UsageError(
            f"run {run_id}: the decisions don't answer the calls the Agno run waits on",
            run_id=run_id,
            awaiting=sorted(waiting),
        )
    for call_id, tool in waiting.items():
        _decide(tool, by_id[call_id])
    _sync_requirements(output, waiting)
    return output


def _decide(tool: ToolExecution, decision: ToolDecision) -> None:
    tool.confirmed = decision.approved
    if decision.approved:
        if decision.args is not None:
            # Deliberate: only the call that runs changes; the model's own message keeps the
            # arguments it asked for (as Pydantic AI's ``override_args`` does).
            tool.tool_args = dict[str, Any](decision.args)
    else:
        tool.confirmation_note = decision.message or DEFAULT_DENIAL


def _sync_requirements(output: RunOutput, decided: Mapping[str, ToolExecution]) -> None:
    # from_dict gives each requirement its own copy of its call: point it at the decided one,
    # so Agno sees the requirement resolved (its next pause lists only new ones).
    for requirement in output.requirements or []:
        tool = requirement.tool_execution
        if tool is not None and (decided_tool := decided.get(call_id_of(tool))) is not None:
            requirement.tool_execution = decided_tool
            requirement.confirmation = decided_tool.confirmed
            requirement.confirmation_note = decided_tool.confirmation_note
