"""Bring a database's schema up to date with the Alembic migrations shipped in the package."""

from pathlib import Path
from typing import Final

import anyio
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateSchema

from tether.errors import StorageError
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
