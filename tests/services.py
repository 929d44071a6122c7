"""The shared test services: find PostgreSQL, or skip (fail under ``REQUIRE_SERVICES=1``, CI).

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (default: the local ``test`` database).
"""

import os

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tether.storage.sql import open_engine

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
_POSTGRES_PROBLEM = pytest.StashKey[str]()  # "" once PostgreSQL answered


async def postgres_url(config: pytest.Config) -> str:
    """The test server's URL, or skip (fail under ``REQUIRE_SERVICES=1``) if it is down."""
    url = os.environ.get("TETHER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    if _POSTGRES_PROBLEM not in config.stash:
        config.stash[_POSTGRES_PROBLEM] = await _probe(url)
    if problem := config.stash[_POSTGRES_PROBLEM]:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    return url


async def _probe(url: str) -> str:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        return f"{url}: {exc}"
    finally:
        await engine.dispose()
    return ""
