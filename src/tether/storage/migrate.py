"""Bring a database's schema up to date with the Alembic migrations shipped in the package."""

from pathlib import Path
from typing import Final

import anyio
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateSchema

from tether.errors import StorageError, UsageError
from tether.storage._engine import describe, is_transient
from tether.storage.sql import WRITE_OPTION, open_engine

MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every tether process on the database.
_PG_MIGRATION_LOCK: Final = 0x7E7E_0001
_RETRY_BUDGET_S: Final = 30.0


def alembic_config() -> Config:
    """An Alembic config for the packaged migrations; no ``alembic.ini`` is needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


async def upgrade_database(url: str, *, schema: str | None = None) -> None:
    """Run ``alembic upgrade head`` on ``url``; safe to call from several processes at once.

    Args:
        url: the database (see ``tether.storage.sql.open_engine``).
        schema: PostgreSQL only: migrate this schema (created if missing) instead of the default.

    Raises:
        UsageError: an unsupported database or schema.
        StorageError: the database can't be reached or migrated (after retrying transient
            failures for up to 30 s).
    """
    engine = open_engine(url, schema=schema)
    deadline = anyio.current_time() + _RETRY_BUDGET_S
    try:
        while True:
            try:
                await _upgrade_once(engine, schema)
                return
            except (DBAPIError, OSError) as exc:
                # A concurrent upgrade holding SQLite's write lock longer than busy_timeout,
                # or a database still starting: wait and try again, within a bound.
                if not is_transient(exc) or anyio.current_time() > deadline:
                    raise StorageError(f"migrating the database failed: {describe(exc)}") from exc
                await anyio.sleep(0.2)
    finally:
        await engine.dispose()


async def _upgrade_once(engine: AsyncEngine, schema: str | None) -> None:
    # A write unit: on SQLite that is BEGIN IMMEDIATE, so concurrent upgrades serialize.
    async with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Concurrent upgrades wait here; the later ones then find the schema at head.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
            if schema is not None:
                await connection.execute(CreateSchema(schema, if_not_exists=True))
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def check_schema(url: str, *, shown: str | None = None) -> None:
    """Refuse a database whose schema is not the one this tether's migrations end at.

    A worker on an unmigrated database would otherwise answer its first request with a 503 about
    a missing table; this says what to do instead, before anything is served.

    Args:
        url: the database (see ``tether.storage.sql.open_engine``).
        shown: the URL as it may appear in the message (password hidden); default ``url``.

    Raises:
        UsageError: the schema is missing, behind, or from a newer tether.
        StorageError: the database can't be reached.
    """
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(_current_revision)
    except (DBAPIError, OSError) as exc:
        raise StorageError(f"could not read the database's schema: {describe(exc)}") from exc
    finally:
        await engine.dispose()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if current == head:
        return
    where = shown or url
    if current is None or _is_older(current, head):
        raise UsageError(
            f"the database {where} is not migrated (schema {current or 'empty'}, this tether needs "
            f"{head}): run `tether db upgrade --database-url {where}`, or start with --migrate",
            revision=current,
            head=head,
        )
    raise UsageError(
        f"the database {where} has schema {current}, newer than this tether's {head}: "
        "upgrade tether",
        revision=current,
        head=head,
    )


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _is_older(revision: str, head: str | None) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    return any(step.revision == revision for step in script.walk_revisions(head=head or "heads"))
