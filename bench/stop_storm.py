"""A stop storm over HTTP, full size (issue #13): 300 runs, up to 30 at once, each stopped.

Each run is stopped at a random point (seeded): before its first event, mid-text, mid-tool
(async and sync tool), twice, stop + client disconnect together, ``action: rollback``,
``mode: after_turn`` (``tests.load._storm``). Its state is read right after its terminal frame
and again 1 s later, over HTTP and in the database (``tests.load._invariants``); a rolled-back
turn must be absent from the next turn's model input. Two set-ups: one worker on SQLite; two
workers on PostgreSQL (a fresh database) + Redis, runs started on A, half stopped through B.
Then ``--disconnects`` clients on A drop their streams at once: each run must be stored
``cancelled`` / ``disconnect``, as a reconnect shows it.

    .venv/bin/python bench/stop_storm.py [--runs 300] [--concurrency 30] [--seed 13]
        [--disconnects 500] [--only sqlite|pg] [--postgres-url URL] [--redis-url URL]

Target: 0 violations, 0 stale reads. Prints, per set-up, the violations by kind (``now:`` read
right after the terminal frame, ``1s:`` a second later) and the stop points' counts.
"""

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Final

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cross_worker_stop import DEFAULT_POSTGRES_URL, DEFAULT_REDIS_URL, fresh_postgres

from tests.e2e._workers import Worker, WorkerSettings, serving
from tests.load._client import follow, http_client, start_run
from tests.load._invariants import Seen, Tally, Violation, check_stored, read_stored
from tests.load._storm import Storm, plan, storm
from tests.load.load_app import APP
from tether.storage.sql import open_engine

DISCONNECT_AFTER_TOKENS: Final = 3
SETTLE_S: Final = 30.0


@asynccontextmanager
async def storm_on(workers: list[Worker], database_url: str) -> AsyncGenerator[Storm, None]:
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(http_client(w.base_url)) for w in workers]
        engine = open_engine(database_url)
        stack.push_async_callback(engine.dispose)
        yield Storm(clients=clients, engine=engine)


async def disconnects(where: Storm, count: int) -> Tally:
    """``count`` runs on the first worker whose clients all leave at once; then reconnects."""
    seen = [Seen() for _ in range(count)]
    async with AsyncExitStack() as stack:

        async def one(index: int) -> None:
            run = start_run(where.driver, f"talk #{index}", seen[index])
            stream = await stack.enter_async_context(run)
            if stream is None:
                return
            for _ in range(DISCONNECT_AFTER_TOKENS):
                await stream.read_until(lambda frame: frame.event == "text_delta")

        async with anyio.create_task_group() as tg:
            for index in range(count):
                tg.start_soon(one, index)
    left_at = time.perf_counter()
    # The worker ends the runs on its own; a reconnect (on the other worker) shows the ending.
    tally = Tally()
    with anyio.fail_after(SETTLE_S + count / 10):
        for record in seen:
            if record.status_code != 200:
                tally.refused[record.status_code] += 1
                if record.status_code != 503:  # overload may refuse a start; nothing else may
                    detail = f"{record.status_code}: {record.refusal}"
                    tally.add([Violation("start_failed", "", detail)])
                continue
            async with follow(where.reader, record, after=record.last_seq) as resumed:
                if resumed is None:
                    tally.add([Violation("reconnect_204", record.run_id, "")])
                    continue
                await resumed.read_to_end()
            if record.ending != ("cancelled", "disconnect"):
                detail = f"ended {record.ending}"
                tally.add([Violation("not_disconnect", record.run_id, detail)])
            stored = await read_stored(where.engine, record.run_id)
            tally.add(check_stored(record, stored))
    print(f"  (all ended within {time.perf_counter() - left_at:.1f} s)", flush=True)
    return tally


def show(setup: str, tally: Tally, elapsed_s: float) -> None:
    refused = f", refused starts {dict(tally.refused)}" if tally.refused else ""
    print(f"{setup}: {tally.total} violations{refused} ({elapsed_s:.0f} s)", flush=True)
    for kind, count in sorted(tally.counts.items()):
        example = tally.examples[kind]
        print(f"  {kind:<32} {count:>5}   e.g. {example.run_id}: {example.detail}", flush=True)


async def run_setup(
    setup: str, workers: list[Worker], url: str, options: argparse.Namespace
) -> None:
    runs = plan(options.runs, seed=options.seed, workers=len(workers))
    points = Counter(r.point for r in runs)
    print(f"{setup}: {options.runs} runs ({dict(points)})", flush=True)
    async with storm_on(workers, url) as where:
        began = time.perf_counter()
        tally = await storm(where, runs, concurrency=options.concurrency)
        show(f"{setup}, stop storm", tally, time.perf_counter() - began)
        if options.disconnects:
            began = time.perf_counter()
            tally = await disconnects(where, options.disconnects)
            show(f"{setup}, {options.disconnects} disconnects", tally, time.perf_counter() - began)


async def main(options: argparse.Namespace) -> None:
    if options.only in (None, "sqlite"):
        data_dir = Path(tempfile.mkdtemp(prefix="stop-storm-"))
        url = f"sqlite+aiosqlite:///{data_dir / 'tether.db'}"
        settings = WorkerSettings(database_url=url, redis_url=None, app=APP)
        async with serving(["A"], settings, log_dir=data_dir) as workers:
            await run_setup("1 worker, sqlite", workers, url, options)
    if options.only in (None, "pg"):
        data_dir = Path(tempfile.mkdtemp(prefix="stop-storm-"))
        async with fresh_postgres(options.postgres_url) as url:
            settings = WorkerSettings(database_url=url, redis_url=options.redis_url, app=APP)
            async with serving(["A", "B"], settings, log_dir=data_dir) as workers:
                await run_setup("2 workers, pg + redis", workers, url, options)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--disconnects", type=int, default=500)
    parser.add_argument("--only", choices=["sqlite", "pg"], default=None)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
