"""Several ``tether serve`` processes on one PostgreSQL database and one Redis, for e2e tests.

``fresh_database`` creates a database of its own on the test server (``TETHER_TEST_POSTGRES_URL``,
default the local ``test`` database's server), migrates it, and drops it at the end: a worker
takes its database from ``--database-url`` alone, and a URL can't select a schema. ``serving``
starts workers on it, each on a random loopback port, and waits until every one listens.

Services are probed with the contract suite's helpers: unreachable ones skip the tests, or fail
them under ``REQUIRE_SERVICES=1``.
"""

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from uuid import uuid4

import anyio
import httpx
import pytest
from anyio.abc import Process
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.services import postgres_url
from tether.storage.migrate import upgrade_database
from tether.storage.sql import open_engine

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
TETHER: Final = Path(sys.executable).parent / "tether"
APP: Final = "tests.e2e.multiworker_app:make_app"
# Generous: on a loaded machine importing the app alone can take several seconds.
STARTUP_TIMEOUT_S: Final = 90.0
STOP_TIMEOUT_S: Final = 10.0
DDL_TIMEOUT_S: Final = 30.0
_LISTENING: Final = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@asynccontextmanager
async def fresh_database(config: pytest.Config) -> AsyncGenerator[str, None]:
    """A new, migrated PostgreSQL database; its URL. Dropped (connections and all) at the end."""
    server_url = await postgres_url(config)
    name = f"tether_mw_{uuid4().hex[:12]}"
    with anyio.fail_after(DDL_TIMEOUT_S):
        await _ddl(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with anyio.fail_after(DDL_TIMEOUT_S):
            await upgrade_database(url)
        yield url
    finally:
        with anyio.CancelScope(shield=True), anyio.fail_after(DDL_TIMEOUT_S):
            await _ddl(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _ddl(url: str, statement: str) -> None:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            # CREATE/DROP DATABASE can't run inside a transaction.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class Worker:
    """A ``tether serve`` process, its output, and its address once it listens."""

    name: str
    process: Process
    output: bytearray = field(default_factory=bytearray)
    listening: anyio.Event = field(default_factory=anyio.Event)
    base_url: str = ""

    async def drain(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.output += chunk
            if not self.listening.is_set() and (found := _LISTENING.search(self.output)):
                self.base_url = f"http://127.0.0.1:{int(found[1])}"
                self.listening.set()

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final writes."""
        os.kill(self.process.pid, signal.SIGKILL)

    async def terminate(self) -> None:
        """SIGTERM, as an operator's ``kill``; wait for the exit (SIGKILL after a bound)."""
        await _stop(self.process)

    def client(self, *, timeout: httpx.Timeout | float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout)


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    database_url: str
    redis_url: str | None
    lease_s: float = 10.0
    heartbeat_s: float = 1.0
    flush_interval_s: float = 0.1
    app: str = APP
    cpus: str | None = None
    """Pin the worker to these CPUs (``taskset -c``), e.g. ``"0"``."""
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    """More ``TETHER_*`` variables (e.g. ``TETHER_MAX_RUNS``)."""


@asynccontextmanager
async def serving(
    names: Sequence[str], settings: WorkerSettings, *, log_dir: Path
) -> AsyncGenerator[list[Worker], None]:
    """Start one worker per name on the same services; yield them once all of them listen.

    At the end each is stopped (SIGTERM, then SIGKILL) and its output kept in ``log_dir``.
    """
    async with anyio.create_task_group() as tg:
        workers: list[Worker] = []
        try:
            for name in names:
                worker = Worker(name, await _spawn(name, settings))
                workers.append(worker)
                tg.start_soon(worker.drain)
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                for worker in workers:
                    await worker.listening.wait()
            yield workers
        finally:
            with anyio.CancelScope(shield=True):
                for worker in workers:
                    await _stop(worker.process)
                    (log_dir / f"worker-{worker.name}.log").write_bytes(worker.output)


async def _spawn(name: str, settings: WorkerSettings) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {
        "TETHER_WORKER_ID": name,
        "TETHER_LEASE_S": str(settings.lease_s),
        "TETHER_HEARTBEAT_S": str(settings.heartbeat_s),
        "TETHER_FLUSH_INTERVAL_S": str(settings.flush_interval_s),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        # The scripted mw agent has no script for a title request.
        "TETHER_GENERATE_TITLES": "0",
        **settings.env,
    }
    command = [] if settings.cpus is None else ["taskset", "-c", settings.cpus]
    command += [str(TETHER), "serve", "--app", settings.app, "--port", "0"]
    command += ["--database-url", settings.database_url]
    if settings.redis_url is not None:
        command += ["--redis-url", settings.redis_url]
    return await anyio.open_process(
        command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(STOP_TIMEOUT_S):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
