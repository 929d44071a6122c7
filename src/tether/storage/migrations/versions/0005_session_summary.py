"""Running session summaries: which turns ``sessions.summary`` stands in for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Self-contained on purpose, like 0001 and 0002.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``sessions.summary_through``: the newest run the summary covers."""
    op.add_column("sessions", sa.Column("summary_through", sa.String(), nullable=True))


def downgrade() -> None:
    """Back to 0002: the summary stays, what it covers is forgotten."""
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("summary_through")
