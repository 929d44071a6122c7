"""The SQL schema: sessions, runs, messages, tool calls and run events.

Schema changes go through Alembic (``storage/migrations``); a test checks that autogenerate
finds no difference between these tables and a migrated database, on SQLite and PostgreSQL.

No relationships are declared: ``SqlStore`` loads what it needs with explicit queries, so no
lazy load can ever hide a query per row. Each row class converts to and from its record:
``to_record()`` and ``values(record)`` (insert values keyed by attribute name).
"""

from datetime import datetime
from typing import Any, Final, get_args

from pydantic import JsonValue
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tether.events import (
    ACTIVE_STATUSES,
    RunStatus,
    StopAction,
    StopMode,
    StopReason,
    ToolStatus,
    Usage,
)
from tether.ids import MessageId, RunId, SessionId, UserId
from tether.records import (
    CancelRequest,
    MessageRecord,
    MessageStatus,
    Role,
    RunRecord,
    SessionRecord,
    TitleSource,
    ToolCallRecord,
)
from tether.storage.store import StoredEvent
from tether.storage.types import SafeJSON, SafeString, SafeText, UTCDateTime

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Spelled as SQL text so both dialects index exactly the same predicate.
ACTIVE_RUN_PREDICATE: Final = f"parent_run_id IS NULL AND {_one_of('status', ACTIVE_STATUSES)}"


class Base(DeclarativeBase):
    """The declarative base: naming convention, and UTC-aware datetimes."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 (SQLAlchemy's API)


class SessionRow(Base):
    """A session."""

    __tablename__ = "sessions"
    __table_args__ = (Index(None, "user_id", "agent", "updated_at"),)

    session_id: Mapped[str] = mapped_column("id", SafeString, primary_key=True)
    user_id: Mapped[str] = mapped_column(SafeString)
    agent: Mapped[str] = mapped_column(SafeString)
    title: Mapped[str | None] = mapped_column(SafeText)
    title_source: Mapped[TitleSource | None] = mapped_column(String)
    summary: Mapped[str | None] = mapped_column(SafeText)
    summary_through: Mapped[str | None] = mapped_column(SafeString)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    is_active: Mapped[bool]

    def to_record(self) -> SessionRecord:
        return SessionRecord(
            session_id=SessionId(self.session_id),
            user_id=UserId(self.user_id),
            agent=self.agent,
            title=self.title,
            title_source=self.title_source,
            summary=self.summary,
            summary_through=RunId(self.summary_through) if self.summary_through else None,
            created_at=self.created_at,
            updated_at=self.updated_at,
            is_active=self.is_active,
        )

    @staticmethod
    def values(session: SessionRecord) -> dict[str, Any]:
        return {
            "session_id": session.session_id,
            "user_id": session.user_id,
            "agent": session.agent,
            "title": session.title,
            "title_source": session.title_source,
            "summary": session.summary,
            "summary_through": session.summary_through,
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "is_active": session.is_active,
        }


class RunRow(Base):
    """A run, with its lease and its stop request."""

    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "session_id", "started_at"),
        Index(None, "parent_run_id"),
        Index(None, "status", "lease_expires_at"),
        Index(None, "user_id", "client_request_id"),
        # At most one active top-level run per session, even when two workers race: the loser's
        # INSERT fails and create_run turns that into Conflict.
        Index(
            "uq_runs_active_session",
            "session_id",
            unique=True,
            sqlite_where=text(ACTIVE_RUN_PREDICATE),
            postgresql_where=text(ACTIVE_RUN_PREDICATE),
        ),
        CheckConstraint(_one_of("status", get_args(RunStatus)), name="status"),
        CheckConstraint(_one_of("cancel_mode", get_args(StopMode)), name="cancel_mode"),
        CheckConstraint(_one_of("cancel_action", get_args(StopAction)), name="cancel_action"),
    )

    run_id: Mapped[str] = mapped_column("id", SafeString, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    parent_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    agent: Mapped[str] = mapped_column(SafeString)
    user_id: Mapped[str] = mapped_column(SafeString)
    status: Mapped[RunStatus] = mapped_column(String)
    reason: Mapped[StopReason | None] = mapped_column(String)
    error: Mapped[str | None] = mapped_column(SafeText)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    requests: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Double)
    owner: Mapped[str | None] = mapped_column(SafeString)
    lease_expires_at: Mapped[datetime | None]
    # A cancel request is recorded iff cancel_requested_at is set; the other cancel_* columns
    # are written with it, in one UPDATE.
    cancel_requested_at: Mapped[datetime | None]
    cancel_requested_by: Mapped[str | None] = mapped_column(SafeString)
    cancel_reason: Mapped[StopReason | None] = mapped_column(String)
    cancel_mode: Mapped[StopMode | None] = mapped_column(String)
    cancel_action: Mapped[StopAction | None] = mapped_column(String)
    client_request_id: Mapped[str | None] = mapped_column(SafeString)
    resume_state: Mapped[JsonValue] = mapped_column(SafeJSON, nullable=True)
    discarded_at: Mapped[datetime | None]
    """Set when the run's turn was rolled back: it left the session's history and listings."""

    def to_record(self) -> RunRecord:
        cancel = None
        if self.cancel_requested_at is not None:
            assert self.cancel_reason is not None, "cancel columns are written together"
            cancel = CancelRequest(
                reason=self.cancel_reason,
                mode=self.cancel_mode or "now",
                action=self.cancel_action or "keep",
                by=self.cancel_requested_by,
                requested_at=self.cancel_requested_at,
            )
        return RunRecord(
            run_id=RunId(self.run_id),
            session_id=SessionId(self.session_id),
            agent=self.agent,
            user_id=UserId(self.user_id),
            parent_run_id=RunId(self.parent_run_id) if self.parent_run_id is not None else None,
            status=self.status,
            reason=self.reason,
            error=self.error,
            usage=Usage(
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                requests=self.requests,
                cost_usd=float(self.cost_usd),  # SQLite RETURNING may give an int
            ),
            started_at=self.started_at,
            finished_at=self.finished_at,
            owner=self.owner,
            lease_expires_at=self.lease_expires_at,
            cancel=cancel,
            client_request_id=self.client_request_id,
            resume_state=self.resume_state,
        )

    @staticmethod
    def values(run: RunRecord) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "session_id": run.session_id,
            "parent_run_id": run.parent_run_id,
            "agent": run.agent,
            "user_id": run.user_id,
            "status": run.status,
            "reason": run.reason,
            "error": run.error,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "owner": run.owner,
            "lease_expires_at": run.lease_expires_at,
            "client_request_id": run.client_request_id,
            "resume_state": run.resume_state,
            **RunRow.usage_values(run.usage),
            **RunRow.cancel_values(run.cancel),
        }

    @staticmethod
    def usage_values(usage: Usage) -> dict[str, Any]:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "requests": usage.requests,
            "cost_usd": usage.cost_usd,
        }

    @staticmethod
    def cancel_values(cancel: CancelRequest | None) -> dict[str, Any]:
        return {
            "cancel_requested_at": cancel.requested_at if cancel else None,
            "cancel_requested_by": cancel.by if cancel else None,
            "cancel_reason": cancel.reason if cancel else None,
            "cancel_mode": cancel.mode if cancel else None,
            "cancel_action": cancel.action if cancel else None,
        }


class MessageRow(Base):
    """A message of a session."""

    __tablename__ = "messages"
    # Deliberate: ordered by (created_at, id), not by a position column, exactly as MemoryStore
    # orders them; ids sort by creation time too, so ties are rare and still deterministic.
    __table_args__ = (
        Index(None, "session_id", "created_at", "id"),
        Index(None, "run_id"),
        CheckConstraint(_one_of("role", get_args(Role)), name="role"),
        CheckConstraint(_one_of("status", get_args(MessageStatus)), name="status"),
    )

    message_id: Mapped[str] = mapped_column("id", SafeString, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    role: Mapped[Role] = mapped_column(String)
    content: Mapped[str] = mapped_column(SafeText)
    status: Mapped[MessageStatus] = mapped_column(String)
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    def to_record(self, tool_calls: tuple[ToolCallRecord, ...] = ()) -> MessageRecord:
        return MessageRecord(
            message_id=MessageId(self.message_id),
            session_id=SessionId(self.session_id),
            run_id=RunId(self.run_id),
            role=self.role,
            content=self.content,
            status=self.status,
            created_at=self.created_at,
            completed_at=self.completed_at,
            tool_calls=tool_calls,
        )

    @staticmethod
    def values(message: MessageRecord) -> dict[str, Any]:
        """The message's own columns; its ``tool_calls`` are written separately."""
        return {
            "message_id": message.message_id,
            "session_id": message.session_id,
            "run_id": message.run_id,
            "role": message.role,
            "content": message.content,
            "status": message.status,
            "created_at": message.created_at,
            "completed_at": message.completed_at,
        }

    @staticmethod
    def columns(message: MessageRecord) -> dict[str, Any]:
        """``values`` keyed by column name, for Core statements on the table."""
        values = MessageRow.values(message)
        values["id"] = values.pop("message_id")
        return values


class ToolCallRow(Base):
    """A tool call of a run."""

    __tablename__ = "tool_calls"
    __table_args__ = (
        # Providers' call ids are only unique within a response (some reuse "call_0").
        PrimaryKeyConstraint("run_id", "call_id"),
        Index(None, "message_id"),
        CheckConstraint(_one_of("status", get_args(ToolStatus)), name="status"),
    )

    call_id: Mapped[str] = mapped_column(SafeString)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"))
    tool: Mapped[str] = mapped_column(SafeString)
    args: Mapped[dict[str, JsonValue]] = mapped_column(SafeJSON)
    status: Mapped[ToolStatus] = mapped_column(String)
    # Deliberate: a None result is stored as JSON 'null', not SQL NULL; both read back None.
    result: Mapped[JsonValue] = mapped_column(SafeJSON, nullable=True)
    error: Mapped[str | None] = mapped_column(SafeText)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    def to_record(self) -> ToolCallRecord:
        return ToolCallRecord(
            call_id=self.call_id,
            run_id=RunId(self.run_id),
            message_id=MessageId(self.message_id),
            tool=self.tool,
            args=self.args,
            status=self.status,
            result=self.result,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )

    @staticmethod
    def values(call: ToolCallRecord) -> dict[str, Any]:
        """Keyed by attribute name, which is the column name too (Core statements use it)."""
        return {
            "call_id": call.call_id,
            "run_id": call.run_id,
            "message_id": call.message_id,
            "tool": call.tool,
            "args": dict(call.args),
            "status": call.status,
            "result": call.result,
            "error": call.error,
            "started_at": call.started_at,
            "finished_at": call.finished_at,
        }


ONE_TERMINAL_PREDICATE: Final = "kind = 'run_finished'"


class RunEventRow(Base):
    """A run's events, by seq: what viewers replay."""

    __tablename__ = "run_events"
    __table_args__ = (
        # A run has one ending: a second terminal event (a recovery racing a late final
        # write, a future bug) is refused by the database instead of stored.
        Index(
            "uq_run_events_one_terminal",
            "run_id",
            unique=True,
            sqlite_where=text(ONE_TERMINAL_PREDICATE),
            postgresql_where=text(ONE_TERMINAL_PREDICATE),
        ),
    )

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    payload: Mapped[str] = mapped_column(SafeText)
    """The event's JSON exactly as clients received it."""
    at: Mapped[datetime]
    """When it was stored (not when it happened: the recorder flushes in batches)."""

    def to_stored(self) -> StoredEvent:
        return StoredEvent(
            run_id=RunId(self.run_id), seq=self.seq, kind=self.kind, payload=self.payload
        )

    @staticmethod
    def values(event: StoredEvent, *, at: datetime) -> dict[str, Any]:
        """Keyed by attribute name, which is the column name too (Core statements use it)."""
        return {
            "run_id": event.run_id,
            "seq": event.seq,
            "kind": event.kind,
            "payload": event.payload,
            "at": at,
        }


class HeldStopRow(Base):
    """A stop sent before its run exists: held for the run its user starts under ``key``.

    Keyed by user, so no one can take or replace another's; any worker may hold it and any
    worker's new run takes it (once: the take deletes it). Kept until ``held_until``.
    """

    __tablename__ = "held_stops"
    __table_args__ = (PrimaryKeyConstraint("user_id", "key"), Index(None, "held_until"))

    user_id: Mapped[str] = mapped_column(SafeString)
    key: Mapped[str] = mapped_column(SafeString)
    """The run's ``client_request_id``, or its session's id."""
    held_until: Mapped[datetime]
    requested_at: Mapped[datetime]
    requested_by: Mapped[str | None] = mapped_column(SafeString)
    reason: Mapped[StopReason] = mapped_column(String)
    mode: Mapped[StopMode] = mapped_column(String)
    action: Mapped[StopAction] = mapped_column(String)

    def to_request(self) -> CancelRequest:
        return CancelRequest(
            reason=self.reason,
            mode=self.mode,
            action=self.action,
            by=self.requested_by,
            requested_at=self.requested_at,
        )

    @staticmethod
    def values(
        user_id: UserId, key: str, request: CancelRequest, *, held_until: datetime
    ) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "key": key,
            "held_until": held_until,
            "requested_at": request.requested_at,
            "requested_by": request.by,
            "reason": request.reason,
            "mode": request.mode,
            "action": request.action,
        }
