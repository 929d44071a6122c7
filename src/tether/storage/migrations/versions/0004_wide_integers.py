"""Integer columns as wide as the API admits: ``run_events.seq`` and the usage counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

The API admits event seqs up to 2**62 (``?after=``, ``Last-Event-ID``) and counts tokens over a
whole run; PostgreSQL's ``integer`` stops at 2**31 - 1. Self-contained on purpose, like 0001.
SQLite stores any integer in 8 bytes whatever the declared type; its columns are redeclared
through Alembic's batch mode so both databases match the tables' metadata.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("run_events", ("seq",)),
    ("runs", ("input_tokens", "output_tokens", "requests")),
)


def _set_types(wide: bool) -> None:
    old, new = (sa.Integer(), sa.BigInteger()) if wide else (sa.BigInteger(), sa.Integer())
    for table, columns in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, existing_type=old, type_=new, existing_nullable=False)


def upgrade() -> None:
    """Widen the columns to 64 bits."""
    _set_types(wide=True)


def downgrade() -> None:
    """Back to 32 bits (fails if a stored value no longer fits)."""
    _set_types(wide=False)
