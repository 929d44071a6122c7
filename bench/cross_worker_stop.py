"""Stop latency across workers: ``POST /runs/{id}/cancel`` sent to B -> terminal event on A.

Two worker processes, A and B, serve tether's HTTP app on one PostgreSQL database (a fresh one,
created, migrated and dropped by the bench) and one Redis. For each sample the client starts a
run on A, reads its stream until the 5th token (mid-text: a token every 20 ms) or until the tool
call started and the tool is waiting (mid-tool: a 2 s async tool), then sends the cancel to B on
an already-open connection and times until ``run_finished`` arrives on A's stream. The stop goes
B -> PostgreSQL (the durable intent on the run's row) -> Redis (SET NX + PUBLISH) -> A.

    .venv/bin/python bench/cross_worker_stop.py [--n 60] [--postgres-url URL] [--redis-url URL]

Targets: <= 10 ms median / <= 30 ms p99, mid-text and mid-tool.

``worker`` mode is one such worker process (also used by ``bench/scale.py``):

    .venv/bin/python bench/cross_worker_stop.py worker --database-url URL [--redis-url URL]
"""

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import anyio
from anyio.abc import Process

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import Conn, bench_agent, request
from http_stop import TOOL_SETTLE_S, row

DEFAULT_POSTGRES_URL: Final = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
PACED_INTERVAL_S: Final = 0.050
"""The ``paced`` agent's interval between tokens: 20 tokens/s (``bench/scale.py``)."""
STARTUP_TIMEOUT_S: Final = 120.0
_RUN_ID: Final = re.compile(rb"x-run-id: (\S+)", re.IGNORECASE)


# --- the worker process ------------------------------------------------------------------------


async def _paced(messages: Any, info: Any) -> AsyncIterator[str]:
    # On its own clock, as a provider streams: a token every interval, however long the
    # consumer takes with the last one (sleeping a full interval after each yield would add
    # the consumer's latency to every gap, and slow the stream down instead of showing it).
    due = anyio.current_time()
    for i in range(1_000_000):
        due += PACED_INTERVAL_S
        await anyio.sleep(max(0.0, due - anyio.current_time()))
        yield f"w{i} "


def worker_app(database_url: str, redis_url: str | None) -> Any:
    """Tether's HTTP app with the bench agents (``talk``, ``tool``) and ``paced``."""
    from pydantic_ai import Agent
    from pydantic_ai.models.function import FunctionModel

    from tether import Settings, Tether
    from tether.http import create_app

    settings = Settings(
        database_url=database_url, redis_url=redis_url, data_dir=Path(tempfile.mkdtemp())
    )
    app = Tether(settings=settings)
    for name in ("talk", "tool"):
        app.agent(name)(lambda ctx, name=name: bench_agent(name))
    app.agent("paced")(lambda ctx: Agent(FunctionModel(stream_function=_paced)))
    return create_app(app)


def serve_worker(database_url: str, redis_url: str | None) -> None:
    from _server import _serve  # pyright: ignore[reportPrivateUsage]

    app = worker_app(database_url, redis_url)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it stopped on
        anyio.run(_serve, app, None)


# --- processes and services, for the client side ---------------------------------------------


@asynccontextmanager
async def workers(
    count: int, *, database_url: str, redis_url: str | None
) -> AsyncGenerator[list[tuple[Process, int]]]:
    """Start ``count`` workers; yield (process, port) once all listen; SIGINT them at the end."""
    command = [sys.executable, str(Path(__file__)), "worker", "--database-url", database_url]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started: list[tuple[Process, int]] = []
    try:
        processes = [
            await anyio.open_process(command, env=env, stderr=None, stdin=subprocess.DEVNULL)
            for _ in range(count)
        ]
        for process in processes:
            started.append((process, await _port_of(process)))
        yield started
    finally:
        with anyio.CancelScope(shield=True):
            for process, _ in started:
                process.send_signal(signal.SIGINT)
            for process, _ in started:
                with anyio.move_on_after(30):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def _port_of(process: Process) -> int:
    assert process.stdout is not None
    line = b""
    with anyio.fail_after(STARTUP_TIMEOUT_S):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive(1)
    return int(line.split()[1])


@asynccontextmanager
async def fresh_postgres(server_url: str) -> AsyncGenerator[str]:
    """A new database on ``server_url``'s server, migrated; dropped at the end."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from tether.storage.migrate import upgrade_database
    from tether.storage.sql import open_engine

    async def ddl(statement: str) -> None:
        engine = open_engine(server_url)
        try:
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    name = f"tether_bench_{uuid4().hex[:12]}"
    with anyio.fail_after(30):
        await ddl(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        await upgrade_database(url)
        yield url
    finally:
        with anyio.CancelScope(shield=True), anyio.fail_after(30):
            await ddl(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the stop bench ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    stopped_ms: float
    """Cancel sent to B -> ``run_finished`` received on A's stream: the figure."""
    answered_ms: float
    """Cancel sent to B -> B's answer received (B's own work: two reads, a write, the push)."""


async def one_stop(a_port: int, agent: str, *, control_b: Conn) -> Sample:
    stream = await Conn.open(a_port)
    try:
        await stream.send(request("POST", f"/agents/{agent}/runs", {"message": "go"}))
        with anyio.fail_after(30):
            head = await stream.read_until(b"\r\n\r\n")
            found = _RUN_ID.search(head)
            assert found is not None, head
            run_id = found[1].decode()
            if agent == "talk":
                for _ in range(5):
                    await stream.read_until(b"event: text_delta")
            else:
                await stream.read_until(b"event: tool_call_started")
                await anyio.sleep(TOOL_SETTLE_S)
            cancel = request("POST", f"/runs/{run_id}/cancel", {})
            answers: list[dict[str, Any]] = []
            answered_ms: list[float] = []
            latency_ms = float("nan")  # until run_finished arrives
            sent_at = time.perf_counter()
            await control_b.send(cancel)
            async with anyio.create_task_group() as tg:

                async def read_answer() -> None:
                    answers.append(json.loads(await control_b.read_response()))
                    answered_ms.append((time.perf_counter() - sent_at) * 1000)

                tg.start_soon(read_answer)
                await stream.read_until(b"event: run_finished")
                latency_ms = (time.perf_counter() - sent_at) * 1000
        assert answers[0]["accepted"], answers
        return Sample(stopped_ms=latency_ms, answered_ms=answered_ms[0])
    finally:
        await stream.aclose()


async def main(n: int, postgres_url: str, redis_url: str) -> None:
    async with (
        fresh_postgres(postgres_url) as database_url,
        workers(2, database_url=database_url, redis_url=redis_url) as started,
    ):
        (_, a_port), (_, b_port) = started
        control_b = await Conn.open(b_port)
        for _ in range(3):  # warm-up: imports, first runs, connection pools, the subscription
            await one_stop(a_port, "talk", control_b=control_b)
            await one_stop(a_port, "tool", control_b=control_b)
        for agent, name in (("talk", "mid-text (20 ms/token)"), ("tool", "mid-tool (2 s tool)")):
            samples = [await one_stop(a_port, agent, control_b=control_b) for _ in range(n)]
            print(row(f"{name} [B->A]", [s.stopped_ms for s in samples]), flush=True)
            print(row("  (B's answer)", [s.answered_ms for s in samples]), flush=True)
        await control_b.aclose()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode")
    worker = sub.add_parser("worker")
    worker.add_argument("--database-url", required=True)
    worker.add_argument("--redis-url", default=None)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    if options.mode == "worker":
        serve_worker(options.database_url, options.redis_url)
    else:
        anyio.run(main, options.n, options.postgres_url, options.redis_url)
