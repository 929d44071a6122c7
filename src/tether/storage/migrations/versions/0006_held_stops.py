"""Held stops: a stop sent before its run exists, durable and seen by every worker.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

Self-contained on purpose, like 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``held_stops``, keyed by user and key (a client request id or a session id)."""
    op.create_table(
        "held_stops",
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name="pk_held_stops"),
    )
    op.create_index("ix_held_stops_held_until", "held_stops", ["held_until"])
    # A stop by request id finds its run on any worker.
    op.create_index("ix_runs_user_id_client_request_id", "runs", ["user_id", "client_request_id"])


def downgrade() -> None:
    """Back to 0005: stops held then are forgotten."""
    op.drop_index("ix_runs_user_id_client_request_id", table_name="runs")
    op.drop_index("ix_held_stops_held_until", table_name="held_stops")
    op.drop_table("held_stops")
