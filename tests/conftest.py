from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of the test's own (created on first use)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}"
