"""The ``AsyncEngine`` under ``SqlStore``: creating it, its SQLite connection setup, and retries.

- ``open_engine`` gives SQLite WAL, ``busy_timeout`` and ``foreign_keys=ON`` on every
  connection, and makes write units take SQLite's write lock up front (``BEGIN IMMEDIATE``);
  PostgreSQL gets a connect timeout, pre-ping and an optional ``search_path``.
- ``run_unit`` runs one unit of work in one session and transaction, retrying transient failures
  (connection lost, database locked, serialization failure, deadlock) with exponential backoff
  for up to a budget, then raising ``StorageError``. A failure while committing is retried only
  where replaying the unit is harmless; elsewhere it is raised at once, since the commit may or
  may not have happened.

Deliberately not done here: anything about tether's tables; that is ``sql.py``'s job.
"""

import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import anyio
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

from tether.errors import StorageError, StorageRejected, UsageError

DEFAULT_RETRY_BUDGET_S: Final = 10.0
_FIRST_BACKOFF_S: Final = 0.05
_MAX_BACKOFF_S: Final = 1.0
# Short enough that one attempt stays well inside the retry budget, which then bounds the total.
_SQLITE_BUSY_TIMEOUT_MS: Final = 2_000
_PG_CONNECT_TIMEOUT_S: Final = 5.0
# Connection exceptions (class 08) plus these: serialization failure, deadlock, lock timeout,
# server shutting down or starting up, too many connections.
_TRANSIENT_SQLSTATES: Final = frozenset(
    {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}
)
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
WRITE_OPTION: Final = "tether_write"
"""Execution option marking a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*")

_T = TypeVar("_T")


def open_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """Create the engine for ``url`` (SQLite or PostgreSQL), with the session setup we rely on.

    ``sqlite://`` and ``postgresql://`` URLs get their async driver (aiosqlite, asyncpg).
    ``schema`` (PostgreSQL only) puts tether's tables in that schema via ``search_path``.

    Raises:
        UsageError: an unsupported database, or a schema on SQLite or with an unsafe name.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if schema is not None:
            raise UsageError("SQLite has no schemas", url=parsed.render_as_string())
        if parsed.drivername == "sqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        engine = sa_create_async_engine(parsed)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+asyncpg")
        connect_args: dict[str, Any] = {}
        if "timeout" not in parsed.query:
            connect_args["timeout"] = _PG_CONNECT_TIMEOUT_S
        if schema is not None:
            if not _SCHEMA_NAME.fullmatch(schema):
                raise UsageError(f"unsafe schema name {schema!r}", schema=schema)
            connect_args["server_settings"] = {"search_path": schema}
        return sa_create_async_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    raise UsageError(
        f"unsupported database {backend!r}: use SQLite or PostgreSQL",
        url=parsed.render_as_string(),
    )


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Deliberate: the driver must not emit its own BEGIN (it skips SELECTs, so multi-query
    # reads would not be one snapshot); _on_sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # Deliberate: NORMAL is WAL's recommended level. A crash of the process loses nothing and
    # the file can't be corrupted; only a power cut may drop the last few commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that reads, then writes,
    # fails at once with SQLITE_BUSY when another writer got in between, busy_timeout or not.
    is_write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if is_write else "BEGIN")


def is_transient(exc: Exception) -> bool:
    if isinstance(exc, OSError):  # refused, reset, timed out while connecting
        return True
    if not isinstance(exc, DBAPIError) or isinstance(exc, IntegrityError):
        return False
    if exc.connection_invalidated:
        return True
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _TRANSIENT_SQLSTATES
    )


def is_unreachable(exc: Exception) -> bool:
    """The database could not be reached or dropped the connection (not a busy or lock error)."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or (isinstance(sqlstate, str) and sqlstate.startswith("08"))


def is_rejected_data(exc: Exception) -> bool:
    """The database (or its driver) refused a value itself: it would refuse it again."""
    if isinstance(exc, DataError | UnicodeError):
        return True
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True  # a bind parameter could not be converted (SQLAlchemy wraps that)
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")  # class 22: data exception


def describe(exc: Exception) -> str:
    """The driver's message, without the SQL and parameters SQLAlchemy adds to its own."""
    # Deliberate: never str() the SQLAlchemy wrapper, whose text repeats the parameters (a
    # parameter may be what failed to convert, and then fails again in its repr).
    orig = exc.orig if isinstance(exc, StatementError) else None
    cause = orig if isinstance(orig, BaseException) else exc
    return f"{type(cause).__name__}: {cause}"


async def run_unit(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[_T]],
    *,
    retry_budget_s: float,
    unreachable_budget_s: float | None = None,
    is_idempotent: bool = True,
) -> _T:
    """Run ``work`` in one session and transaction, retrying transient failures.

    ``unreachable_budget_s``: once the database proves unreachable (not merely busy), the
    retries stop this long after the start instead (a caller learns of an outage at once).

    Raises:
        StorageError: a transient failure outlasted the retry budget, or struck the commit
            of a unit that must not be replayed, or the database failed for good.
        StorageRejected: the database refused a value of the unit (never retried).
        IntegrityError: the unit broke a constraint (never retried; the caller interprets it).
    """
    started_at = anyio.current_time()
    deadline = started_at + retry_budget_s
    backoff_s = _FIRST_BACKOFF_S
    while True:
        is_committing = False
        try:
            async with sessions() as db:
                result = await work(db)
                is_committing = True
                await db.commit()
                return result
        except IntegrityError:
            raise
        except (StatementError, UnicodeError, OSError) as exc:
            if is_rejected_data(exc):
                raise StorageRejected(f"the database refused a value: {describe(exc)}") from exc
            if not isinstance(exc, DBAPIError | OSError):
                raise
            if not is_transient(exc):
                raise StorageError(f"database error: {describe(exc)}") from exc
            if is_committing and not is_idempotent:
                raise StorageError(f"database failed during commit: {describe(exc)}") from exc
            if unreachable_budget_s is not None and is_unreachable(exc):
                deadline = min(deadline, started_at + unreachable_budget_s)
            delay_s = backoff_s * random.uniform(0.5, 1.0)
            if anyio.current_time() + delay_s > deadline:
                raise StorageError(
                    f"database still failing after retries: {describe(exc)}",
                    retry_budget_s=retry_budget_s,
                ) from exc
            await anyio.sleep(delay_s)
            backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
