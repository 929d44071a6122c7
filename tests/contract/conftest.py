"""One fresh ``Store`` per test, for every implementation: memory, SQLite file, PostgreSQL.

SQLite: a file migrated once per test run with ``upgrade_database``, copied into each test's
``tmp_path`` (a copy takes ~1 ms, a migration ~100 ms).

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (default: the local ``test`` database). Each
test run gets its own schema, migrated once with ``upgrade_database`` and dropped at the end, so
parallel runs don't meet; every test starts from emptied tables. When the server is
unreachable its tests are skipped, or fail if ``REQUIRE_SERVICES=1`` (CI).
"""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import anyio
import pytest
from sqlalchemy import text

from tests.services import postgres_url
from tether.storage.memory import MemoryStore
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore, open_engine
from tether.storage.store import Store

_POSTGRES_SCHEMA = pytest.StashKey[str]()
_SQLITE_TEMPLATE = pytest.StashKey[Path]()
# Children first, for the foreign keys. DELETE, not TRUNCATE: ~5 ms instead of ~150 ms here.
_TABLES = ("run_events", "tool_calls", "messages", "runs", "sessions")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    kind: str = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        path = tmp_path / "tether.db"
        shutil.copyfile(await _migrated_sqlite_file(request.config, tmp_path_factory), path)
        sql_store = SqlStore.open(f"sqlite+aiosqlite:///{path}")
        try:
            yield sql_store
        finally:
            await sql_store.close()
    else:
        url = await postgres_url(request.config)
        schema = await _migrated_schema(request.config, url)
        sql_store = SqlStore.open(url, schema=schema)
        try:
            async with sql_store.engine.begin() as connection:
                for table in _TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))
            yield sql_store
        finally:
            await sql_store.close()


async def _migrated_sqlite_file(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    if _SQLITE_TEMPLATE not in config.stash:
        path = factory.mktemp("sqlite-template") / "tether.db"
        # After upgrade_database disposes of its engine the WAL is checkpointed into the file.
        await upgrade_database(f"sqlite+aiosqlite:///{path}")
        config.stash[_SQLITE_TEMPLATE] = path
    return config.stash[_SQLITE_TEMPLATE]


async def _migrated_schema(config: pytest.Config, url: str) -> str:
    if _POSTGRES_SCHEMA not in config.stash:
        schema = f"tether_test_{uuid4().hex[:12]}"
        config.add_cleanup(lambda: anyio.run(drop_schema, url, schema))
        await upgrade_database(url, schema=schema)
        config.stash[_POSTGRES_SCHEMA] = schema
    return config.stash[_POSTGRES_SCHEMA]


async def drop_schema(url: str, schema: str) -> None:
    engine = open_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()
