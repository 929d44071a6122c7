import os
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of the test's own (created on first use)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}"


def pytest_configure(config: pytest.Config) -> None:
    # Scripted models answer a fixed script: a title request after a first answer would take
    # the next run's step. The tests of titles turn them on with the scripted title step.
    os.environ.setdefault("TETHER_GENERATE_TITLES", "0")
