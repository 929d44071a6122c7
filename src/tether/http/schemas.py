"""Request and response models of the HTTP API (the boundary only: the engine never sees them).

Requests forbid unknown fields, so a misspelt option (``sessionId``) is a 422, not a silent
default. Ids are bounded strings; their existence and ownership are checked by the routes.
"""

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Final, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, field_validator

from tether.events import (
    PendingCall,
    RunStatus,
    StopAction,
    StopMode,
    StopReason,
    ToolDecision,
    ToolStatus,
    Usage,
)
from tether.records import CancelRequest, MessageRecord, MessageStatus, Role, RunRecord

Id = Annotated[str, Field(min_length=1, max_length=128)]
ClientRequestId = Annotated[str, Field(min_length=1, max_length=128)]
MAX_DECISIONS: Final = 100
"""More calls than one model response makes; bounds the request."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
ClientStopReason = Literal["user", "superseded", "timeout"]
"""The reasons a client may give; the others (shutdown, disconnect, budgets …) are tether's."""


class _Request(BaseModel):
    # NaN and infinities are not JSON: refused here (422 naming the field), never stored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _encodable(cls, value: object) -> object:
        # Deliberate: a lone surrogate (a "\ud800" escape in the JSON) has no UTF-8 form, so no
        # answer could ever carry it back: refused, naming the field. NUL is stored as given.
        if _has_lone_surrogate(value):
            raise ValueError("text must not contain lone surrogates (unpaired \\ud800-\\udfff)")
        return value


def _has_lone_surrogate(value: object) -> bool:
    match value:
        case str():
            return not value.isascii() and _SURROGATE.search(value) is not None
        case dict():
            items = cast("dict[object, object]", value).items()
            return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in items)
        case list() | tuple():
            return any(_has_lone_surrogate(v) for v in cast("Sequence[object]", value))
        case _:
            return False


class StartRunIn(_Request):
    """Start a run: the user's message, and the session to continue (else a new one)."""

    message: str = Field(min_length=1)
    """At most ``settings.max_message_chars`` characters (checked by the route)."""
    session_id: Id | None = None
    context: dict[str, JsonValue] | None = None
    """Validated against the agent's context model."""
    client_request_id: ClientRequestId | None = None
    """Lets ``POST /sessions/{id}/cancel`` stop this run before the client knows its id."""
    on_disconnect: Literal["cancel", "continue"] = "cancel"
    if_busy: Literal["reject", "interrupt", "enqueue"] = "reject"


class ToolDecisionIn(_Request):
    """A person's answer to one call awaiting approval."""

    call_id: Id
    approved: StrictBool
    args: dict[str, JsonValue] | None = None
    """Edited arguments to run the tool with instead of the model's (approvals only)."""
    message: str | None = None
    """Why it was denied: the model reads it as the call's result (denials only). At most
    ``settings.max_message_chars`` characters (checked by the route)."""

    def decision(self) -> ToolDecision:
        return ToolDecision(
            call_id=self.call_id, approved=self.approved, args=self.args, message=self.message
        )


class ResumeRunIn(_Request):
    """Continue a paused run with a decision for each call it waits on."""

    decisions: list[ToolDecisionIn] = Field(max_length=MAX_DECISIONS)
    """Exactly one for each call the run waits on (``awaiting_approval`` of ``GET /runs/{id}``)."""
    on_disconnect: Literal["cancel", "continue"] = "cancel"


class CancelRunIn(_Request):
    """Stop a run: why, how (now or after the turn), and whether to keep the turn."""

    reason: ClientStopReason = "user"
    mode: StopMode = "now"
    action: StopAction = "keep"
    wait: StrictBool = False
    """Answer once the run is terminal (bounded; the answer says if it is not yet)."""


class CancelRunOut(BaseModel):
    """The answer to a stop, and the run's state now."""

    run_id: str
    accepted: bool
    """True if this request is the one that stops the run."""
    status: RunStatus
    reason: StopReason | None


class CancelSessionIn(_Request):
    """Stop the session's active run, or the run started with this request id."""

    client_request_id: ClientRequestId | None = None


class CancelSessionOut(BaseModel):
    """The answer to a session stop."""

    session_id: str
    run_id: str | None
    """None when no run exists yet: the stop is held for the run about to start."""
    accepted: bool
    status: RunStatus | None


class ConfigOut(BaseModel):
    """What the web UI needs to know before it signs in."""

    auth_required: bool


class HealthOut(BaseModel):
    """This worker is alive (``/healthz``) or ready (``/readyz``)."""

    status: Literal["ok"] = "ok"


class AgentOut(BaseModel):
    """A registered agent."""

    name: str
    description: str
    available: bool = True
    unavailable_reason: str | None = None
    """Why runs of this agent are refused here, with the command that fixes it."""
    context_schema: dict[str, JsonValue] | None = None
    """The JSON schema of the ``context`` its runs take (None: it takes none)."""


class UsageOut(BaseModel):
    """Tokens and cost a run consumed."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    requests: int
    cost_usd: float

    @classmethod
    def of(cls, usage: Usage) -> "UsageOut":
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            requests=usage.requests,
            cost_usd=usage.cost_usd,
        )


class TimingsOut(BaseModel):
    """When a run started and ended."""

    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None


class CancelInfoOut(BaseModel):
    """The stop that ended (or is ending) a run: who, why and how."""

    by: str | None
    reason: StopReason
    mode: StopMode
    action: StopAction
    requested_at: datetime

    @classmethod
    def of(cls, request: CancelRequest) -> "CancelInfoOut":
        return cls(
            by=request.by,
            reason=request.reason,
            mode=request.mode,
            action=request.action,
            requested_at=request.requested_at,
        )


class ChildRunOut(BaseModel):
    """A child run (a team member or workflow step) of a run."""

    run_id: str
    agent: str
    status: RunStatus


class PendingCallOut(BaseModel):
    """A tool call waiting for a person's approval."""

    call_id: str
    tool: str
    args: dict[str, JsonValue]


class RunOut(BaseModel):
    """A run: its state, ending, usage, timings and children."""

    run_id: str
    session_id: str
    agent: str
    status: RunStatus
    reason: StopReason | None
    error: str | None
    parent_run_id: str | None
    timings: TimingsOut
    usage: UsageOut
    children: list[ChildRunOut]
    cancel: CancelInfoOut | None
    awaiting_approval: list[PendingCallOut]
    """The calls a paused run waits on; empty unless ``status`` is ``paused``."""
    approval_expires_at: datetime | None
    """When a paused run is cancelled (reason ``timeout``) if nobody answers; None if it
    waits for ever, or is not paused."""

    @classmethod
    def of(
        cls,
        record: RunRecord,
        children: list[RunRecord],
        *,
        awaiting: Sequence[PendingCall] = (),
    ) -> "RunOut":
        finished_at = record.finished_at
        duration_s = (finished_at - record.started_at).total_seconds() if finished_at else None
        return cls(
            run_id=record.run_id,
            session_id=record.session_id,
            agent=record.agent,
            status=record.status,
            reason=record.reason,
            error=record.error,
            parent_run_id=record.parent_run_id,
            timings=TimingsOut(
                started_at=record.started_at, finished_at=finished_at, duration_s=duration_s
            ),
            usage=UsageOut.of(record.usage),
            children=[
                ChildRunOut(run_id=c.run_id, agent=c.agent, status=c.status) for c in children
            ],
            cancel=CancelInfoOut.of(record.cancel) if record.cancel else None,
            awaiting_approval=[
                PendingCallOut(call_id=c.call_id, tool=c.tool, args=dict(c.args)) for c in awaiting
            ],
            approval_expires_at=record.lease_expires_at if record.status == "paused" else None,
        )


class RunBriefOut(BaseModel):
    """A run as listed in its session."""

    run_id: str
    status: RunStatus
    reason: StopReason | None
    parent_run_id: str | None
    error: str | None = None
    """Why a failed run failed (shown on its message after a reload)."""

    @classmethod
    def of(cls, record: RunRecord) -> "RunBriefOut":
        return cls(
            run_id=record.run_id,
            status=record.status,
            reason=record.reason,
            parent_run_id=record.parent_run_id,
            error=record.error,
        )


class ToolCallOut(BaseModel):
    """A tool call and its result."""

    call_id: str
    tool: str
    args: dict[str, JsonValue]
    status: ToolStatus
    result: JsonValue
    error: str | None


class MessageOut(BaseModel):
    """A stored message; ``interrupted`` when its run was stopped mid-answer."""

    message_id: str
    run_id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: datetime
    tool_calls: list[ToolCallOut]

    @classmethod
    def of(cls, message: MessageRecord) -> "MessageOut":
        return cls(
            message_id=message.message_id,
            run_id=message.run_id,
            role=message.role,
            content=message.content,
            status=message.status,
            created_at=message.created_at,
            tool_calls=[
                ToolCallOut(
                    call_id=c.call_id,
                    tool=c.tool,
                    args=dict(c.args),
                    status=c.status,
                    result=c.result,
                    error=c.error,
                )
                for c in message.tool_calls
            ],
        )


class SessionOut(BaseModel):
    """A session: one conversation with one agent."""

    session_id: str
    agent: str
    title: str | None
    created_at: datetime
    updated_at: datetime


class SessionPageOut(BaseModel):
    """A page of sessions, most recently active first."""

    sessions: list[SessionOut]
    next_before: datetime | None
    """Pass as ``before`` for the next (older) page; None on the last page."""


class SessionDetailOut(SessionOut):
    """A session with its messages and runs."""

    messages: list[MessageOut]
    runs: list[RunBriefOut]
    active_run_id: str | None


class RenameSessionIn(_Request):
    """A session's new title."""

    title: str = Field(min_length=1, max_length=200)


class RollbackIn(_Request):
    """Discard the session's last turn."""

    run_id: Id
    """The session's last turn: its user message and everything after it are discarded."""


class RollbackOut(BaseModel):
    """The discarded turn: its run, and its user message to send again or edit."""

    run_id: str
    message: str
    """The discarded user message's text: send it again (regenerate) or edit it first."""
