"""Paused runs: tool calls awaiting approval or denied, and a runtime's state to resume from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Self-contained on purpose, like 0001. SQLite can't alter a CHECK constraint in place, so the
``tool_calls`` change goes through Alembic's batch mode (copy and swap the table there).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('running', 'ok', 'error', 'cancelled')"
_NEW = "status IN ('awaiting_approval', 'running', 'ok', 'error', 'cancelled', 'denied')"


def _set_tool_statuses(check: str) -> None:
    with op.batch_alter_table("tool_calls") as batch:
        batch.drop_constraint("ck_tool_calls_status", type_="check")
        batch.create_check_constraint("ck_tool_calls_status", sa.text(check))


def upgrade() -> None:
    """Allow the new tool statuses; add ``runs.resume_state``."""
    _set_tool_statuses(_NEW)
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("runs", sa.Column("resume_state", json_type, nullable=True))


def downgrade() -> None:
    """Back to 0001: paused runs' tool calls become cancelled, their state is dropped."""
    op.drop_column("runs", "resume_state")
    op.execute(
        "UPDATE tool_calls SET status = 'cancelled' WHERE status IN ('awaiting_approval', 'denied')"
    )
    _set_tool_statuses(_OLD)
