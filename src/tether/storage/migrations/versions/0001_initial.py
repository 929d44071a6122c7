"""Initial schema: sessions, runs, messages, tool calls, run events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Hand-checked against ``tether.storage.tables``. Self-contained on purpose: no imports from the
package, so later changes to the models can't rewrite history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_TOP_LEVEL_RUN = "parent_run_id IS NULL AND status IN ('pending', 'running', 'paused')"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, *, nullable: bool) -> sa.Column[object]:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    return sa.Column(name, json_type, nullable=nullable)


def upgrade() -> None:
    """Create the five tables and their indexes."""
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index(
        "ix_sessions_user_id_agent_updated_at", "sessions", ["user_id", "agent", "updated_at"]
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column("parent_run_id", sa.String(), nullable=True),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double[float](), nullable=False),
        sa.Column("owner", sa.String(), nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        _timestamp("cancel_requested_at", nullable=True),
        sa.Column("cancel_requested_by", sa.String(), nullable=True),
        sa.Column("cancel_reason", sa.String(), nullable=True),
        sa.Column("cancel_mode", sa.String(), nullable=True),
        sa.Column("cancel_action", sa.String(), nullable=True),
        sa.Column("client_request_id", sa.String(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'paused', 'completed', 'cancelled', 'failed', "
            "'interrupted')",
            name="ck_runs_status",
        ),
        sa.CheckConstraint("cancel_mode IN ('now', 'after_turn')", name="ck_runs_cancel_mode"),
        sa.CheckConstraint("cancel_action IN ('keep', 'rollback')", name="ck_runs_cancel_action"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_runs_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(["parent_run_id"], ["runs.id"], name="fk_runs_parent_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_session_id_started_at", "runs", ["session_id", "started_at"])
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])
    op.create_index("ix_runs_status_lease_expires_at", "runs", ["status", "lease_expires_at"])
    op.create_index(
        "uq_runs_active_session",
        "runs",
        ["session_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE_TOP_LEVEL_RUN),
        postgresql_where=sa.text(ACTIVE_TOP_LEVEL_RUN),
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        _timestamp("created_at"),
        _timestamp("completed_at", nullable=True),
        sa.CheckConstraint(
            "role IN ('user', 'assistant', 'system', 'tool')", name="ck_messages_role"
        ),
        sa.CheckConstraint(
            "status IN ('complete', 'streaming', 'interrupted', 'error')",
            name="ck_messages_status",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_messages_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_messages_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index(
        "ix_messages_session_id_created_at_id", "messages", ["session_id", "created_at", "id"]
    )
    op.create_index("ix_messages_run_id", "messages", ["run_id"])

    op.create_table(
        "tool_calls",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        _json("args", nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        _json("result", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'ok', 'error', 'cancelled')", name="ck_tool_calls_status"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_tool_calls_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_tool_calls_message_id_messages"
        ),
        sa.PrimaryKeyConstraint("run_id", "call_id", name="pk_tool_calls"),
    )
    op.create_index("ix_tool_calls_message_id", "tool_calls", ["message_id"])

    op.create_table(
        "run_events",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _timestamp("at"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_events_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_run_events"),
    )


def downgrade() -> None:
    """Drop everything ``upgrade`` created."""
    # Dropping a table drops its indexes; children first, for the foreign keys.
    for table in ("run_events", "tool_calls", "messages", "runs", "sessions"):
        op.drop_table(table)
