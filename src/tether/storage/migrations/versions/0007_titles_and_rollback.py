"""Who titled a session, and turns rolled back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Self-contained on purpose, like 0001 and 0002.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``sessions.title_source`` and ``runs.discarded_at``.

    ``title_source`` is ``message``, ``generated`` or ``user`` (a hand rename, never
    overwritten); NULL for sessions titled before this revision. A run with ``discarded_at``
    set was rolled back: its turn left the session's history, its rows stay for audit.
    """
    op.add_column("sessions", sa.Column("title_source", sa.String(), nullable=True))
    op.add_column("runs", sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Back to 0005: rolled-back turns reappear, every title counts as unset by hand."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("discarded_at")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("title_source")
