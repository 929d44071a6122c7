"""Runtime-neutral records: what storage keeps and what history is built from.

An assistant turn is stored as one ``MessageRecord`` per model response: its streamed text and
the tool calls that response made. That keeps the provider's alternation (response, tool
results, response) recoverable from rows without storing provider-specific payloads.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import JsonValue

from tether.events import RunStatus, StopAction, StopMode, StopReason, ToolStatus, Usage
from tether.ids import MessageId, RunId, SessionId, UserId

Role = Literal["user", "assistant", "system", "tool"]
MessageStatus = Literal["complete", "streaming", "interrupted", "error"]
TitleSource = Literal["message", "generated", "user"]
"""Who titled a session: its first message, a model after the first answer, or a person."""


def utcnow() -> datetime:
    """Now, in UTC (timezone-aware)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """A stored session."""

    session_id: SessionId
    user_id: UserId
    agent: str
    title: str | None = None
    title_source: TitleSource | None = None
    """Who set ``title``: a hand rename (``user``) is never replaced by a generated one."""
    summary: str | None = None
    """A running summary standing in for the turns dropped from the model's history."""
    summary_through: RunId | None = None
    """The newest run ``summary`` covers: history starts after it."""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    is_active: bool = True
    """False once deleted: rows stay for audit, the session disappears from listings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequest:
    """A durable stop intent, written to the run before it is pushed to the run's owner."""

    reason: StopReason
    mode: StopMode = "now"
    action: StopAction = "keep"
    by: str | None = None
    requested_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A stored run: its state, ending, stop request, usage and lease."""

    run_id: RunId
    session_id: SessionId
    agent: str
    user_id: UserId
    parent_run_id: RunId | None = None
    status: RunStatus = "pending"
    reason: StopReason | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    owner: str | None = None
    """The worker running it; with ``lease_expires_at``, how crashed workers' runs are found."""
    lease_expires_at: datetime | None = None
    cancel: CancelRequest | None = None
    client_request_id: str | None = None
    resume_state: JsonValue = None
    """While ``paused``: what the runtime needs to continue (opaque to tether)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallRecord:
    """A stored tool call and its result."""

    call_id: str
    run_id: RunId
    message_id: MessageId
    tool: str
    args: Mapping[str, JsonValue] = field(default_factory=dict[str, JsonValue])
    status: ToolStatus = "running"
    result: JsonValue = None
    error: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRecord:
    """A stored message (user or assistant)."""

    message_id: MessageId
    session_id: SessionId
    run_id: RunId
    role: Role
    content: str = ""
    status: MessageStatus = "complete"
    created_at: datetime = field(default_factory=utcnow)
    completed_at: datetime | None = None
    tool_calls: tuple[ToolCallRecord, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryTurn:
    """One past run as history sees it: its messages and how the run ended."""

    run: RunRecord
    messages: tuple[MessageRecord, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExchange:
    """A tool call and its result as the model will see it (synthetic if it never returned)."""

    call_id: str
    tool: str
    args: Mapping[str, JsonValue]
    result: str
    is_error: bool = False
    is_pending: bool = False
    """Waits for a person's decision (only in a paused turn being continued): no result yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserItem:
    """A user message in the history a runtime gets."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantItem:
    """One model response: its text, then the tool calls it made with their results."""

    text: str
    tool_calls: tuple[ToolExchange, ...] = ()
    is_interrupted: bool = False


HistoryItem = UserItem | AssistantItem
"""Provider-neutral history; each runtime turns it into its framework's messages."""
