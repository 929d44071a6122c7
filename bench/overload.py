"""Overload: one worker pinned to one core, N runs at 1x, 2x and 4x its capacity (issue #13).

One ``tether serve`` (``tests.load.load_app``, SQLite) runs pinned to core 0 (``taskset -c 0``);
this process, the load client, pins itself to core 1. For each N in ``--steps`` a fresh worker
gets N runs of ``tok 200`` (200 tokens at 20 tokens/s, 10 s each), started evenly over
``--spread-s``; each client reads its stream to ``run_finished``. Then, from outside, per run
(``tests.load._invariants``): the client's terminal frame equals the stored status and reason;
exactly one terminal event in ``run_events``; stored text == streamed text; no message
``streaming``, no tool call ``running``; and no row ``running`` after the load and after the
worker's SIGTERM. A start answered 503 (admission control, ``TETHER_MAX_RUNS``) is a refused
start, counted, not a violation.

The ``sigterm`` phase starts ``--sigterm-n`` runs the same way and sends SIGTERM to the worker
one second after the last start, mid-stream: every client must get its ``run_finished``, and
every run be stored ended as its client saw it.

    .venv/bin/python bench/overload.py [--steps 100,200,400] [--spread-s 2] [--sigterm-n 300]
        [--max-runs N] [--max-write-lag-s S]

``--max-runs 100000 --max-write-lag-s 1000`` turns admission off, to see what it prevents.

Target: 0 violations at every N. Prints a table; time to first token (ttft) is measured from
the start request.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e._workers import Worker, WorkerSettings, serving
from tests.load._client import http_client, start_run
from tests.load._invariants import Seen, Tally, check_stored, count_running, read_stored
from tests.load.load_app import APP
from tether.storage.sql import open_engine

TOKENS: Final = 200
WORKER_CPU: Final = "0"
CLIENT_CPU: Final = 1
SIGTERM_AFTER_S: Final = 1.0
SETTLE_BOUND_S: Final = 30.0
"""How long rows may stay ``running`` once every client has its end (writes catching up)."""
SETTLE_POLL_S: Final = 0.2


@dataclass
class Step:
    phase: str
    n: int
    seen: list[Seen]
    tally: Tally
    running_after_load: int
    settle_s: float
    running_after_sigterm: int

    def row(self) -> str:
        ok = [s for s in self.seen if s.status_code == 200]
        refused = sum(s.status_code == 503 for s in self.seen)
        other = len(self.seen) - len(ok) - refused
        completed = sum(s.ending == ("completed", None) for s in ok)
        endings = Counter(
            "/".join(map(str, s.ending)) if s.ending else "none"
            for s in ok
            if s.ending != ("completed", None)
        )
        ttft = sorted(s.first_token_at - s.started_at for s in ok if s.first_token_at)
        p50 = statistics.median(ttft) if ttft else float("nan")
        p99 = ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))] if ttft else float("nan")
        return (
            f"{self.phase:<8} {self.n:>5} {len(ok):>7} {refused:>5} {other:>5} {completed:>9}"
            f" {p50:>8.2f} {p99:>8.2f} {self.running_after_load:>7} {self.settle_s:>7.1f}"
            f" {self.running_after_sigterm:>7}"
            f"  {self.tally.summary()}"
            + (f"; other endings seen: {dict(endings)}" if endings else "")
            + (f"; 503 because: {dict(self.refusals())}" if refused else "")
        )

    def refusals(self) -> Counter[str]:
        """Why starts were refused: the problem's detail, numbers dropped."""
        return Counter(
            re.sub(r"[0-9.]+", "#", json.loads(s.refusal).get("detail", "?"))
            if s.refusal.startswith("{")
            else s.refusal[:40]
            for s in self.seen
            if s.status_code == 503
        )


HEADER: Final = (
    f"{'phase':<8} {'N':>5} {'started':>7} {'503':>5} {'other':>5} {'completed':>9}"
    f" {'ttft p50':>8} {'ttft p99':>8} {'run@end':>7} {'settle':>7} {'run@TERM':>7}"
    "  violations by kind"
)


async def load(worker: Worker, n: int, spread_s: float, seen: list[Seen]) -> None:
    """Start ``n`` runs evenly over ``spread_s``; read each to its end."""
    async with http_client(worker.base_url) as client, anyio.create_task_group() as tg:

        async def one(index: int) -> None:
            await anyio.sleep(index * spread_s / n)
            seen.append(record := Seen())
            try:
                async with start_run(client, f"tok {TOKENS} #{index}", record) as stream:
                    if stream is not None:
                        await stream.read_to_end()
            except httpx.TransportError as exc:
                record.broken = repr(exc)

        for index in range(n):
            tg.start_soon(one, index)


async def step(phase: str, n: int, options: argparse.Namespace) -> Step:
    data_dir = Path(tempfile.mkdtemp(prefix=f"overload-{phase}-{n}-"))
    url = f"sqlite+aiosqlite:///{data_dir / 'tether.db'}"
    env: dict[str, str] = {}
    if options.max_runs is not None:
        env["TETHER_MAX_RUNS"] = str(options.max_runs)
    if options.max_write_lag_s is not None:
        env["TETHER_MAX_WRITE_LAG_S"] = str(options.max_write_lag_s)
    settings = WorkerSettings(database_url=url, redis_url=None, app=APP, cpus=WORKER_CPU, env=env)
    seen: list[Seen] = []
    running_after_load = -1  # not counted: the SIGTERM comes mid-load
    settle_s = float("nan")
    engine = open_engine(url)
    try:
        async with serving(["A"], settings, log_dir=data_dir) as (worker,):
            if phase == "load":
                await load(worker, n, options.spread_s, seen)
                running_after_load, settle_s = await settle(engine)
                await worker.terminate()
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load, worker, n, options.spread_s, seen)
                    await anyio.sleep(options.spread_s + SIGTERM_AFTER_S)
                    await worker.terminate()
        running_after_sigterm = await count_running(engine)
        tally = Tally()
        # Rows still running once every client has its run_finished and the writes had
        # SETTLE_BOUND_S to catch up, or once the worker exited.
        tally.counts["running_at_end"] += max(0, running_after_load)
        tally.counts["running_after_sigterm"] += running_after_sigterm
        tally.counts = +tally.counts  # drop the zero counts
        for record in seen:
            if record.status_code == 200:
                tally.add(check_stored(record, await read_stored(engine, record.run_id)))
    finally:
        await engine.dispose()
    print(f"  (worker log and database in {data_dir})", file=sys.stderr)
    return Step(phase, n, seen, tally, running_after_load, settle_s, running_after_sigterm)


async def settle(engine: AsyncEngine) -> tuple[int, float]:
    """Rows still ``running`` once writes caught up, and how long that took (bounded).

    Every client has its ``run_finished`` by now, which goes out only once the run's end is
    stored; rows still ``running`` are runs whose client never saw theirs (a start the client
    gave up on, a broken stream) ending, or a lag that must settle within the bound.
    """
    began = anyio.current_time()
    with anyio.move_on_after(SETTLE_BOUND_S):
        while await count_running(engine):  # noqa: ASYNC110  # Deliberate: another process
            await anyio.sleep(SETTLE_POLL_S)
    return await count_running(engine), anyio.current_time() - began


async def main(options: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {CLIENT_CPU})
    print(HEADER, flush=True)
    steps = [("load", n) for n in options.steps]
    if options.sigterm_n:
        steps.append(("sigterm", options.sigterm_n))
    for phase, n in steps:
        began = time.perf_counter()
        result = await step(phase, n, options)
        print(result.row(), f"({time.perf_counter() - began:.0f} s)", flush=True)
        for kind, example in sorted(result.tally.examples.items()):
            print(f"    e.g. {kind}: {example.run_id}: {example.detail}", flush=True)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="100,200,400")
    parser.add_argument("--spread-s", type=float, default=2.0)
    parser.add_argument("--sigterm-n", type=int, default=300)
    parser.add_argument("--max-runs", type=int, default=None, help="TETHER_MAX_RUNS")
    parser.add_argument(
        "--max-write-lag-s", type=float, default=None, help="TETHER_MAX_WRITE_LAG_S"
    )
    options = parser.parse_args(argv)
    options.steps = [int(n) for n in options.steps.split(",")]
    return options


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
