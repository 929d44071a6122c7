"""Portable column types: the same Python values come back from SQLite and PostgreSQL.

Any ``str`` a user, a model or a tool produces is stored (NUL, lone surrogates included), and the
same bytes land on both databases: text that one of them can't hold is escaped at the column.
"""

import math
import re
from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy import JSON as SA_JSON
from sqlalchemy import DateTime, Dialect, String, Text
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


# Deliberate: one escape, applied the same on both databases, so any Python str round-trips.
# PostgreSQL refuses NUL in text and JSONB, and neither driver can encode a lone surrogate
# (a model or a tool may emit either); U+FFFF, a noncharacter, introduces the code unit in hex.
_ESCAPE: Final = "\uffff"
_NEEDS_ESCAPE: Final = re.compile("[\x00\ud800-\udfff\uffff]")
_ESCAPED: Final = re.compile("\uffff([0-9a-f]{4})")


def escape_text(value: str) -> str:
    """``value`` with NUL, lone surrogates and U+FFFF spelled ``U+FFFF`` + 4 hex digits."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return _NEEDS_ESCAPE.sub(lambda m: f"{_ESCAPE}{ord(m[0]):04x}", value)


def unescape_text(value: str) -> str:
    """The inverse of ``escape_text``."""
    if _ESCAPE not in value:
        return value
    return _ESCAPED.sub(lambda m: chr(int(m[1], 16)), value)


class SafeString(TypeDecorator[str]):
    """A string column that stores any Python ``str`` the same way on SQLite and PostgreSQL."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else escape_text(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unescape_text(value)


class SafeText(SafeString):
    """``SafeString`` over ``TEXT`` (unbounded text: message content, errors, titles)."""

    impl = Text
    cache_ok = True


def _escape_json(value: Any) -> Any:
    # NaN and infinities become null, as in the JSON that was streamed (pydantic writes them
    # so), and as PostgreSQL requires (its JSON has no NaN).
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        items = cast("dict[Any, Any]", value).items()
        return {escape_text(str(k)): _escape_json(v) for k, v in items}
    if isinstance(value, list | tuple):
        return [_escape_json(v) for v in cast("list[Any]", value)]
    return value


def _unescape_json(value: Any) -> Any:
    if isinstance(value, str):
        return unescape_text(value)
    if isinstance(value, dict):
        items = cast("dict[str, Any]", value).items()
        return {unescape_text(k): _unescape_json(v) for k, v in items}
    if isinstance(value, list):
        return [_unescape_json(v) for v in cast("list[Any]", value)]
    return value


class SafeJSON(TypeDecorator[Any]):
    """JSON (``JSONB`` on PostgreSQL) that stores any JSON-able value the same on both databases.

    Strings (keys too) go through ``escape_text``; NaN and infinities are stored as null.
    """

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _escape_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return _unescape_json(value)
