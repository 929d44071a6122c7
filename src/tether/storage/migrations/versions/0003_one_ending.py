"""One ending per run: at most one terminal ``run_finished`` event per run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

Self-contained on purpose, like 0001. A partial unique index (both SQLite and PostgreSQL have
them). A database written by an older tether may hold two terminal events for one run (issue
#13: a recovery that overwrote a late final write); the first one is what the run's viewers
received, so the later ones are deleted before the index is built.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TERMINAL = "kind = 'run_finished'"


def upgrade() -> None:
    """Keep each run's first terminal event only, then forbid a second one."""
    op.execute(
        "DELETE FROM run_events WHERE kind = 'run_finished' AND seq > ("
        "SELECT MIN(first.seq) FROM run_events AS first "
        "WHERE first.run_id = run_events.run_id AND first.kind = 'run_finished')"
    )
    op.create_index(
        "uq_run_events_one_terminal",
        "run_events",
        ["run_id"],
        unique=True,
        sqlite_where=sa.text(_TERMINAL),
        postgresql_where=sa.text(_TERMINAL),
    )


def downgrade() -> None:
    """Back to 0002: the index goes (the deleted duplicates stay deleted)."""
    op.drop_index("uq_run_events_one_terminal", table_name="run_events")
