"""``tether serve`` on a server database: an unmigrated one is refused up front, or migrated."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import anyio
import httpx
import pexpect
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.cli.test_serve import free_port
from tests.services import postgres_url
from tether.storage.sql import open_engine

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


async def _admin(url: str, statement: str) -> None:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def empty_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    server = anyio.run(postgres_url, request.config)
    name = f"tether_empty_{uuid4().hex[:12]}"
    anyio.run(_admin, server, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        anyio.run(_admin, server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}


def _serve(url: str, tmp_path: Path, *extra: str, port: int) -> "pexpect.spawn[str]":
    return pexpect.spawn(
        sys.executable,
        ["-m", "tether.cli.main", "serve", "--port", str(port), "--database-url", url, *extra],
        cwd=str(tmp_path),
        env=_env(),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 400),
    )


def test_unmigrated_database_is_refused_with_the_command_that_migrates_it(
    empty_database: str, tmp_path: Path
) -> None:
    server = _serve(empty_database, tmp_path, port=free_port())
    try:
        server.expect(pexpect.EOF)
    finally:
        server.close(force=True)

    output = server.before or ""
    assert server.exitstatus == 2
    assert "is not migrated" in output
    assert f"tether db upgrade --database-url {empty_database}" in output
    assert "Application startup" not in output  # refused before anything is served


def test_migrate_flag_migrates_then_serves(empty_database: str, tmp_path: Path) -> None:
    port = free_port()
    server = _serve(empty_database, tmp_path, "--migrate", port=port)
    try:
        server.expect_exact("Application startup complete")
        sessions = httpx.get(f"http://127.0.0.1:{port}/agents/slow-tools/sessions", timeout=10)
        server.sendintr()
        server.expect(pexpect.EOF)
    finally:
        server.close(force=True)

    assert sessions.status_code == 200, sessions.text  # its tables exist
