"""How many concurrent streaming runs fit on 2 workers over PostgreSQL + Redis.

One worker on one core, side by side with Agno and a bare SSE endpoint, is
``bench/capacity.py``; this is the multi-worker figure.

Each run streams 20 tokens/s for as long as its client reads: the ``paced`` agent of
``bench/cross_worker_stop.py`` emits a token every 50 ms on its own clock, as a provider streams,
so a slow server shows as late tokens rather than as a slower model. For each N in ``--steps`` a
client process of its own (so its CPU shows apart from the workers') opens N runs, spread
round-robin over the workers, waits until each has streamed a token, then records for
``--seconds`` the arrival time of every ``text_delta`` frame. Added delay = gap between two
consecutive frames of a run minus the 50 ms interval (negative when a late token is followed by
one on time). A step passes when its p99 added delay is <= ``--target-ms``; the bench stops at
the first step that misses it, and prints a table. The client then disconnects, which stops the
runs (``on_disconnect: cancel``), and the next step waits for the workers to have no runs left.

    .venv/bin/python bench/scale.py [--steps 100,250,500,1000,2000] [--seconds 10]
        [--target-ms 20] [--postgres-url URL] [--redis-url URL]

Worker CPU is read from /proc over each measured window (100 % = one core).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
from anyio.abc import Process, TaskGroup

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import Conn, request
from cross_worker_stop import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    PACED_INTERVAL_S,
    fresh_postgres,
    workers,
)

MARKER: Final = b"event: text_delta"
START_TIMEOUT_S: Final = 120.0
IDLE_TIMEOUT_S: Final = 60.0
_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


# --- the client process ------------------------------------------------------------------------


@dataclass
class Run:
    conn: Conn
    first_token: anyio.Event
    arrivals: list[float]


async def follow(run: Run, window: list[float]) -> None:
    """Read the run's stream for ever, stamping each ``text_delta`` frame with its arrival."""
    tail = b""
    while True:
        chunk = await run.conn.stream.receive()
        now = time.perf_counter()
        data = tail + chunk
        count = data.count(MARKER)
        tail = data[-(len(MARKER) - 1) :]
        if count:
            run.first_token.set()
            if window and window[0] <= now:
                run.arrivals.extend([now] * count)
            elif window:
                run.arrivals[:] = [now]  # the last arrival before the window opens


async def start(port: int) -> Conn:
    conn = await Conn.open(port)
    await conn.send(request("POST", "/agents/paced/runs", {"message": "go"}))
    head = await conn.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return conn


@dataclass
class Window:
    ramp_s: float
    opens_at: float
    closes_at: float
    cpu_s: float


async def measure(
    tg: TaskGroup, runs: list[Run], ports: list[int], n: int, seconds: float
) -> Window:
    """Open ``n`` runs, wait until each streams, then let them stream through the window."""
    window: list[float] = []  # [opens_at] once every run streams
    started_at = time.perf_counter()

    async def open_one(index: int) -> None:
        conn = await start(ports[index % len(ports)])
        run = Run(conn, anyio.Event(), [])
        runs.append(run)
        tg.start_soon(follow, run, window)

    with anyio.fail_after(START_TIMEOUT_S):
        async with anyio.create_task_group() as starters:
            for index in range(n):
                starters.start_soon(open_one, index)
        for run in runs:
            await run.first_token.wait()
    ramp_s = time.perf_counter() - started_at
    opens_at = time.perf_counter() + 1.0  # let the start-up burst settle
    window.append(opens_at)
    before = os.times()
    await anyio.sleep(1.0 + seconds)
    after = os.times()
    cpu_s = after.user + after.system - before.user - before.system
    return Window(ramp_s, opens_at, time.perf_counter(), cpu_s)


async def client(ports: list[int], n: int, seconds: float) -> dict[str, Any]:
    runs: list[Run] = []
    window: Window | None = None
    async with anyio.create_task_group() as tg:
        window = await measure(tg, runs, ports, n, seconds)
        tg.cancel_scope.cancel()
    assert window is not None
    for run in runs:
        await run.conn.aclose()
    added_ms = [
        (later - earlier - PACED_INTERVAL_S) * 1000
        for run in runs
        for earlier, later in zip(run.arrivals, run.arrivals[1:], strict=False)
        if later <= window.closes_at
    ]
    added_ms.sort()
    measured_s = window.closes_at - window.opens_at
    return {
        "n": n,
        "ramp_s": window.ramp_s,
        "gaps": len(added_ms),
        "tokens_per_s": len(added_ms) / measured_s,
        "p50_ms": statistics.median(added_ms),
        "p99_ms": added_ms[min(len(added_ms) - 1, round(0.99 * (len(added_ms) - 1)))],
        "max_ms": added_ms[-1],
        "client_cpu": window.cpu_s / measured_s,
    }


# --- the driver --------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


async def active_runs(port: int) -> float:
    conn = await Conn.open(port)
    try:
        await conn.send(request("GET", "/metrics"))
        body = (await conn.read_response()).decode()
    finally:
        await conn.aclose()
    line = next(x for x in body.splitlines() if x.startswith("tether_active_runs "))
    return float(line.split()[1])


async def wait_idle(ports: list[int]) -> None:
    with anyio.fail_after(IDLE_TIMEOUT_S):
        for port in ports:
            # Deliberate: the workers' state is only visible over HTTP, so poll it.
            while await active_runs(port) > 0:  # noqa: ASYNC110
                await anyio.sleep(0.2)


async def step(started: list[tuple[Process, int]], n: int, seconds: float) -> dict[str, Any]:
    ports = [port for _, port in started]
    await wait_idle(ports)
    command = [sys.executable, str(Path(__file__)), "client", "--n", str(n)]
    command += ["--seconds", str(seconds), "--ports", ",".join(map(str, ports))]
    cpu_before = sum(cpu_s(process.pid) for process, _ in started)
    began = time.perf_counter()
    result = await anyio.run_process(command, stdin=subprocess.DEVNULL, stderr=None)
    elapsed = time.perf_counter() - began
    cpu = (sum(cpu_s(process.pid) for process, _ in started) - cpu_before) / elapsed
    outcome: dict[str, Any] = json.loads(result.stdout)
    outcome["workers_cpu"] = cpu
    return outcome


def row(setup: str, r: dict[str, Any], target_ms: float) -> str:
    verdict = "ok" if r["p99_ms"] <= target_ms else "MISSED"
    return (
        f"{setup:<24} {r['n']:>5} {r['tokens_per_s']:>9.0f} {r['p50_ms']:>8.1f} "
        f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['ramp_s']:>7.1f} "
        f"{r['workers_cpu'] * 100:>6.0f}% {r['client_cpu'] * 100:>6.0f}%  {verdict}"
    )


HEADER: Final = (
    f"{'setup':<24} {'N':>5} {'tokens/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    f"{'ramp s':>7} {'workers':>7} {'client':>7}"
)


async def sweep(
    setup: str, started: list[tuple[Process, int]], options: argparse.Namespace
) -> None:
    best = 0
    for n in options.steps:
        try:
            result = await step(started, n, options.seconds)
        except (subprocess.CalledProcessError, TimeoutError) as exc:
            print(f"{setup:<24} {n:>5}  failed: {exc}", flush=True)
            break
        print(row(setup, result, options.target_ms), flush=True)
        if result["p99_ms"] > options.target_ms:
            break
        best = n
    print(f"{setup}: largest N with p99 added delay <= {options.target_ms} ms: {best}", flush=True)


async def main(options: argparse.Namespace) -> None:
    print(HEADER, flush=True)
    async with (
        fresh_postgres(options.postgres_url) as url,
        workers(2, database_url=url, redis_url=options.redis_url) as started,
    ):
        await sweep("2 workers, pg + redis", started, options)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode")
    client_mode = sub.add_parser("client")
    client_mode.add_argument("--ports", required=True)
    client_mode.add_argument("--n", type=int, required=True)
    client_mode.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--steps", default="100,250,500,1000,2000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--target-ms", type=float, default=20.0)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    options = parser.parse_args(argv)
    if options.mode is None:
        options.steps = [int(n) for n in options.steps.split(",")]
    return options


if __name__ == "__main__":
    parsed = parse(sys.argv[1:])
    if parsed.mode == "client":
        ports = [int(p) for p in parsed.ports.split(",")]
        print(json.dumps(anyio.run(client, ports, parsed.n, parsed.seconds)))
    else:
        anyio.run(main, parsed)
