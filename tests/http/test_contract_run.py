"""schemathesis over a served worker, ``--checks all`` and every phase, on SQLite and PostgreSQL.

Bounded (``MAX_TIME_S`` for the stateless phases, and again for the stateful one): the
property-based suite in ``test_schema.py`` runs in process; this one is the CLI run of issue #15,
over HTTP against ``tether serve``, including the stateful phase (its links come from
``X-Run-Id``, ``X-Session-Id`` and ``Location``). Settings that the description can't carry are
in ``schemathesis.toml`` next to this file, each with its reason.
"""

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import anyio
import pytest

from tests.e2e._workers import WorkerSettings, fresh_database, serving
from tether.storage.migrate import upgrade_database

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.slow]

MAX_TIME_S: Final = 20
RUN_TIMEOUT_S: Final = 180.0
CONFIG: Final = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS: Final = Path(sys.executable).parent / "st"
APP: Final = "tests.http.contract_app:make_app"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}"
        await upgrade_database(url)
        yield url
    else:
        async with fresh_database(request.config) as url:
            yield url


async def test_schemathesis_finds_no_failure(database_url: str, tmp_path: Path) -> None:
    settings = WorkerSettings(database_url=database_url, redis_url=None, app=APP)
    async with serving(["contract"], settings, log_dir=tmp_path) as (worker,):
        # Deliberate: two runs. ``--max-time`` bounds a whole run, and the stateless phases can
        # use all of it, leaving the stateful phase none (it then reports "No tests were run").
        await _schemathesis(worker.base_url, "examples,coverage,fuzzing", tmp_path)
        stateful = await _schemathesis(worker.base_url, "stateful", tmp_path)
    assert "✅  Stateful" in stateful, stateful


async def _schemathesis(base_url: str, phases: str, cwd: Path) -> str:
    """Run schemathesis' ``phases`` against ``base_url``; its output (a failure fails the test)."""
    command = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run"]
    command += [f"{base_url}/openapi.json", "--checks", "all", "--no-color"]
    command += ["--phases", phases, "--max-time", str(MAX_TIME_S)]
    with anyio.fail_after(RUN_TIMEOUT_S):
        # In cwd (a temp dir): schemathesis keeps its cache in the working directory.
        result = await anyio.run_process(
            command, check=False, cwd=cwd, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output
    return output
