"""The Alembic migrations build exactly the schema ``tables.py`` declares, on both databases."""

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from tests.storage.conftest import Database
from tether.events import ACTIVE_STATUSES, TERMINAL_STATUSES
from tether.storage.migrate import alembic_config, upgrade_database
from tether.storage.sql import open_engine
from tether.storage.tables import Base

pytestmark = pytest.mark.anyio

T = TypeVar("T")
TABLES = [
    "alembic_version",
    "held_stops",
    "messages",
    "run_events",
    "runs",
    "sessions",
    "tool_calls",
]


async def on_connection(database: Database, inspect_with: Callable[[Connection], T]) -> T:
    engine = open_engine(database.url, schema=database.schema)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(inspect_with)
    finally:
        await engine.dispose()


def metadata_diff(connection: Connection) -> list[Any]:
    return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def table_names(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


def active_run_index(connection: Connection) -> Any:
    indexes = inspect(connection).get_indexes("runs")
    return next(i for i in indexes if i["name"] == "uq_runs_active_session")


def downgrade_to_base(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def test_migrated_database_matches_tables_metadata(database: Database) -> None:
    await upgrade_database(database.url, schema=database.schema)
    assert await on_connection(database, metadata_diff) == []
    assert await on_connection(database, table_names) == TABLES


async def test_upgrade_database_again_is_a_noop_at_head(database: Database) -> None:
    await upgrade_database(database.url, schema=database.schema)
    await upgrade_database(database.url, schema=database.schema)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert await on_connection(database, current_revision) == head


async def test_concurrent_upgrades_both_succeed(database: Database) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(lambda: upgrade_database(database.url, schema=database.schema))
    assert await on_connection(database, metadata_diff) == []


async def test_active_run_index_covers_only_active_top_level_runs(database: Database) -> None:
    """Autogenerate ignores partial-index predicates, so this one is checked by hand."""
    await upgrade_database(database.url, schema=database.schema)
    index = await on_connection(database, active_run_index)
    predicate = str(next(iter(index["dialect_options"].values())))
    assert index["unique"]
    assert index["column_names"] == ["session_id"]
    assert "parent_run_id IS NULL" in predicate
    assert all(f"'{status}'" in predicate for status in ACTIVE_STATUSES)
    assert not any(f"'{status}'" in predicate for status in TERMINAL_STATUSES)


async def test_downgrade_to_base_then_upgrade_restores_the_schema(database: Database) -> None:
    await upgrade_database(database.url, schema=database.schema)
    await on_connection(database, downgrade_to_base)
    assert await on_connection(database, table_names) == ["alembic_version"]
    await upgrade_database(database.url, schema=database.schema)
    assert await on_connection(database, metadata_diff) == []


def one_terminal_index(connection: Connection) -> Any:
    indexes = inspect(connection).get_indexes("run_events")
    return next(i for i in indexes if i["name"] == "uq_run_events_one_terminal")


async def test_one_terminal_index_is_unique_per_run_on_run_finished_only(
    database: Database,
) -> None:
    """Issue #13; autogenerate ignores partial-index predicates, so this is checked by hand."""
    await upgrade_database(database.url, schema=database.schema)
    index = await on_connection(database, one_terminal_index)
    predicate = str(next(iter(index["dialect_options"].values())))
    assert index["unique"]
    assert index["column_names"] == ["run_id"]
    assert "run_finished" in predicate
