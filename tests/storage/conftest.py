"""Databases for the SQL storage tests: a fresh SQLite file or a fresh PostgreSQL schema.

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (default: the local ``test`` database); each
test gets its own schema, dropped afterwards. When the server is unreachable its tests are
skipped, or fail if ``REQUIRE_SERVICES=1`` (CI).
"""

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import text

from tests.services import postgres_url
from tether.storage.sql import open_engine


@dataclass(frozen=True, slots=True, kw_only=True)
class Database:
    """An empty database to migrate: pass both to ``upgrade_database`` / ``SqlStore.open``."""

    url: str
    schema: str | None = None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database(url=f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}")
    else:
        async with postgres_schema(request.config) as database:
            yield database


@pytest.fixture
async def postgres_database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    async with postgres_schema(request.config) as database:
        yield database


@asynccontextmanager
async def postgres_schema(config: pytest.Config) -> AsyncGenerator[Database, None]:
    """A fresh, empty schema on the test server, dropped on exit; skips if the server is down."""
    url = await postgres_url(config)
    schema = f"tether_test_{uuid4().hex[:12]}"
    try:
        yield Database(url=url, schema=schema)
    finally:
        engine = open_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await engine.dispose()
