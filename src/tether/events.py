"""The typed events a run emits, in order, ending with exactly one ``RunFinished``.

Every event carries ``run_id`` and ``seq``: strictly increasing per run from 0, and doubling as
the SSE event id. ``kind`` is the snake_case class name and is part of the wire contract.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal, cast

from pydantic import Field, JsonValue, TypeAdapter
from pydantic_core import PydanticSerializationError

from tether.ids import RunId, SessionId

RunStatus = Literal[
    "pending", "running", "paused", "completed", "cancelled", "failed", "interrupted"
]
TerminalStatus = Literal["completed", "cancelled", "failed", "interrupted"]
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset(
    {"completed", "cancelled", "failed", "interrupted"}
)
ACTIVE_STATUSES: Final[tuple[RunStatus, ...]] = ("pending", "running", "paused")
LEASED_STATUSES: Final[tuple[RunStatus, ...]] = ("pending", "running")
"""Held by a worker under a lease; a ``paused`` run is held by nobody until it is resumed."""

StopReason = Literal[
    "user",
    "timeout",
    "token_budget",
    "cost_budget",
    "disconnect",
    "shutdown",
    "superseded",
    "error",
    "worker_lost",
    "parent",
]
"""Why a run ended early. ``parent``: its parent run was stopped; ``error``: it failed."""

StopMode = Literal["now", "after_turn"]
"""``now`` interrupts the current await; ``after_turn`` lets the current model turn and its tool
calls finish, then stops (escalating to ``now`` after a grace period)."""

StopAction = Literal["keep", "rollback"]
"""``keep`` leaves the stopped turn in the session history; ``rollback`` discards it."""

ToolStatus = Literal["awaiting_approval", "running", "ok", "error", "cancelled", "denied"]
"""``awaiting_approval``: its run paused on it; ``denied``: a person said no (the model is told)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens and money a run consumed (cost from the agent's configured prices)."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """The first event of every run (``seq`` 0): which session and agent it serves."""

    run_id: RunId
    seq: int
    session_id: SessionId
    agent: str
    parent_run_id: RunId | None = None
    kind: Literal["run_started"] = "run_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """A piece of the answer's text, in order; concatenated they are the stored message."""

    run_id: RunId
    seq: int
    text: str
    kind: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted:
    """The model called a tool; every call gets exactly one ``ToolCallFinished``."""

    run_id: RunId
    seq: int
    call_id: str
    tool: str
    args: Mapping[str, JsonValue] = field(default_factory=dict[str, JsonValue])
    kind: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallFinished:
    """A tool call's result: ``ok``, ``error``, ``cancelled`` (a stop) or ``denied``."""

    run_id: RunId
    seq: int
    call_id: str
    status: Literal["ok", "error", "cancelled", "denied"]
    result: JsonValue = None
    error: str | None = None
    kind: Literal["tool_call_finished"] = "tool_call_finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildRunStarted:
    """A child run (a team member, a workflow step) started inside this run."""

    run_id: RunId
    seq: int
    child_run_id: RunId
    agent: str
    call_id: str | None = None
    """The parent's tool call that started the child, when there is one."""
    kind: Literal["child_run_started"] = "child_run_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildRunFinished:
    """A child run ended, with its own terminal status."""

    run_id: RunId
    seq: int
    child_run_id: RunId
    status: TerminalStatus
    reason: StopReason | None = None
    kind: Literal["child_run_finished"] = "child_run_finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunQueued:
    """The run waits for a shared resource (e.g. the embedded model serving another run)."""

    run_id: RunId
    seq: int
    resource: str
    kind: Literal["run_queued"] = "run_queued"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequested:
    """A stop was accepted; the terminal ``RunFinished`` follows."""

    run_id: RunId
    seq: int
    reason: StopReason
    mode: StopMode
    action: StopAction
    by: str | None = None
    kind: Literal["stop_requested"] = "stop_requested"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingCall:
    """A tool call that waits for a person's approval."""

    call_id: str
    tool: str
    args: Mapping[str, JsonValue] = field(default_factory=dict[str, JsonValue])


DEFAULT_DENIAL: Final = "The tool call was denied by the user."
"""What the model reads as a denied call's result when the person gave no reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolDecision:
    """A person's answer to one pending call."""

    call_id: str
    approved: bool
    args: Mapping[str, JsonValue] | None = None
    """Edited arguments to run the tool with instead of the model's (approvals only)."""
    message: str | None = None
    """Why it was denied: the model reads it as the call's result (denials only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPaused:
    """The run waits for approval of ``calls``; no worker holds it until it is resumed.

    A stream ends here (the run is not over): ``POST /runs/{run_id}/resume`` continues it.
    """

    run_id: RunId
    seq: int
    calls: tuple[PendingCall, ...]
    expires_at: datetime | None = None
    """When the run is cancelled (reason ``timeout``) if nobody answers."""
    kind: Literal["run_paused"] = "run_paused"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResumed:
    """A paused run continues with these decisions (first event of the resumed stream)."""

    run_id: RunId
    seq: int
    decisions: tuple[ToolDecision, ...]
    kind: Literal["run_resumed"] = "run_resumed"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """The run's one terminal event, always last; viewers get it once the ending is stored."""

    run_id: RunId
    seq: int
    status: TerminalStatus
    reason: StopReason | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    kind: Literal["run_finished"] = "run_finished"


RunEvent = Annotated[
    RunStarted
    | TextDelta
    | ToolCallStarted
    | ToolCallFinished
    | ChildRunStarted
    | ChildRunFinished
    | RunQueued
    | StopRequested
    | RunPaused
    | RunResumed
    | RunFinished,
    Field(discriminator="kind"),
]
RUN_EVENTS: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)


def event_json(event: RunEvent) -> str:
    """Serialize an event to one line of JSON (no newlines, so it fits one SSE ``data:`` line)."""
    if isinstance(event, TextDelta):
        # Hot path: one call per token. json.dumps escapes newlines and is ~10x cheaper than
        # going through the TypeAdapter for this flat shape.
        return json.dumps(
            {"run_id": event.run_id, "seq": event.seq, "text": event.text, "kind": event.kind}
        )
    try:
        return RUN_EVENTS.dump_json(event).decode()
    except PydanticSerializationError:
        # A lone surrogate (a model or a tool may emit one) has no UTF-8 form: JSON can still
        # carry it, escaped. NaN and infinities become null, as pydantic writes them.
        value = _finite(RUN_EVENTS.dump_python(event, mode="json"))
        return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in cast("dict[str, Any]", value).items()}
    if isinstance(value, list):
        return [_finite(v) for v in cast("list[Any]", value)]
    return value


def parse_event(data: str | bytes) -> RunEvent:
    """Parse an event from its JSON form (validates: use at trust boundaries only)."""
    return RUN_EVENTS.validate_json(data)
