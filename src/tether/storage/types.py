"""Portable column types: the same Python values come back from SQLite and PostgreSQL."""

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import JSON as SA_JSON
from sqlalchemy import DateTime, Dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned UTC-aware.

    PostgreSQL keeps ``timestamptz``. SQLite has no timezone support and hands back naive
    datetimes, so values are stored there as naive UTC (which also keeps its text ordering
    chronological) and made aware again on the way out.

    Raises:
        ValueError: when binding a naive datetime (its meaning would depend on the host).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSON: Final = SA_JSON().with_variant(JSONB(), "postgresql")
"""JSON documents: ``JSONB`` on PostgreSQL (indexable, compact), ``JSON`` elsewhere."""
