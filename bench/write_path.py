"""CPU cost of the streaming write path: the recorder's flushes of live runs, per token stored.

N runs stream into their ``RunBuffer``s as the engine's sink does (a text delta and its
``text_delta`` event per token, ``--per-flush`` tokens per run between two flushes), and the
real ``Recorder`` flushes them to a real ``SqlStore``: one transaction per flush, every live run
in it. Prints this process's CPU time per token stored (``time.process_time``: aiosqlite's and
asyncpg's work in this process included, the database server's not) and the wall time of a
flush. Then checks that every run's stored text equals what it streamed and that its stored
events replay, by seq, exactly the events it streamed.

SQLite is a fresh file; PostgreSQL (``--postgres-url``, default ``TETHER_TEST_POSTGRES_URL`` or
the local ``test`` database) gets a fresh schema, dropped afterwards, and is skipped if
unreachable. CPU time is less noisy than latency on a busy machine, but still read the figures
of one run side by side, not against another day's.

    .venv/bin/python bench/write_path.py [--runs 200] [--flushes 50] [--per-flush 2]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

import anyio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

sys.path.insert(0, str(Path(__file__).parent.parent))

from tether.engine.recorder import Recorder, RunBuffer
from tether.ids import MessageId, RunId, SessionId, UserId, new_id
from tether.records import MessageRecord, RunRecord, SessionRecord
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore, open_engine
from tether.storage.store import StoredEvent

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _lost(reason: str) -> None:
    raise AssertionError(f"storage lost: {reason}")


async def open_runs(store: SqlStore, recorder: Recorder, runs: int) -> list[RunBuffer]:
    buffers: list[RunBuffer] = []
    for _ in range(runs):
        session = SessionRecord(
            session_id=SessionId(new_id("ses")), user_id=UserId("bench"), agent="bench"
        )
        run = RunRecord(
            run_id=RunId(new_id("run")),
            session_id=session.session_id,
            agent="bench",
            user_id=session.user_id,
            status="running",
        )
        user = MessageRecord(
            message_id=MessageId(new_id("msg")),
            session_id=session.session_id,
            run_id=run.run_id,
            role="user",
            content="go",
        )
        await store.create_run(run, user, new_session=session)
        buffer = recorder.open(run.run_id, session.session_id, _lost)
        buffer.response_started()
        buffers.append(buffer)
    return buffers


async def measure(store: SqlStore, args: argparse.Namespace) -> tuple[list[float], float]:
    """Stream and flush; return the flushes' wall times (ms) and CPU ms per token stored."""
    recorder = Recorder(store, flush_interval_s=0.1)
    buffers = await open_runs(store, recorder, args.runs)
    seqs = dict.fromkeys((b.run_id for b in buffers), 0)
    wall_ms: list[float] = []
    cpu_s = 0.0
    for flush in range(args.flushes):
        for buffer in buffers:
            for i in range(args.per_flush):
                token = f"w{flush}.{i} "
                seq = seqs[buffer.run_id] = seqs[buffer.run_id] + 1
                payload = json.dumps({"run_id": buffer.run_id, "seq": seq, "text": token})
                buffer.text_delta(token)
                buffer.event(
                    StoredEvent(run_id=buffer.run_id, seq=seq, kind="text_delta", payload=payload)
                )
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        assert await recorder.flush()
        cpu_s += time.process_time() - cpu_before
        wall_ms.append((time.perf_counter() - wall_before) * 1000)
    await check_stored(store, buffers, args)
    return wall_ms, cpu_s * 1000 / (args.runs * args.flushes * args.per_flush)


async def check_stored(store: SqlStore, buffers: list[RunBuffer], args: argparse.Namespace) -> None:
    expected = "".join(f"w{f}.{i} " for f in range(args.flushes) for i in range(args.per_flush))
    total = args.flushes * args.per_flush
    for buffer in buffers:
        messages = await store.run_messages(buffer.run_id)
        stored = "".join(m.content for m in messages if m.role == "assistant")
        assert stored == expected, f"run {buffer.run_id}: stored text differs from the stream"
        # Replay from the start and from mid-stream: every later event once, in order.
        for after in (0, total // 3, total - 1):
            events = await store.events_after(buffer.run_id, after, limit=total)
            assert [e.seq for e in events] == list(range(after + 1, total + 1)), buffer.run_id
            texts = "".join(json.loads(e.payload)["text"] for e in events)
            assert expected.endswith(texts), f"run {buffer.run_id}: replay differs"


def report(name: str, wall_ms: list[float], cpu_ms_per_token: float) -> None:
    ordered = sorted(wall_ms)
    p90 = ordered[round(0.9 * (len(ordered) - 1))]
    print(
        f"{name:<11} CPU {cpu_ms_per_token * 1000:6.1f} us/token   flush wall median "
        f"{statistics.median(ordered):6.1f} ms  p90 {p90:6.1f} ms",
        flush=True,
    )


async def bench_sqlite(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'tether.db'}"
        await upgrade_database(url)
        store = SqlStore(open_engine(url))
        try:
            report("SQLite", *await measure(store, args))
        finally:
            await store.close()


async def postgres_problem(url: str) -> str | None:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        return str(exc).splitlines()[0]
    finally:
        await engine.dispose()
    return None


async def bench_postgres(args: argparse.Namespace) -> None:
    url: str = args.postgres_url
    if problem := await postgres_problem(url):
        print(f"PostgreSQL: skipped, unreachable ({problem})")
        return
    schema = f"tether_bench_{uuid4().hex[:12]}"
    try:
        await upgrade_database(url, schema=schema)
        store = SqlStore(open_engine(url, schema=schema))
        try:
            report("PostgreSQL", *await measure(store, args))
        finally:
            await store.close()
    finally:
        engine = open_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.runs} live runs, {args.per_flush} tokens each per flush, {args.flushes} flushes",
        flush=True,
    )
    await bench_sqlite(args)
    if not args.no_postgres:
        await bench_postgres(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--flushes", type=int, default=50)
    parser.add_argument("--per-flush", type=int, default=2)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TETHER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--no-postgres", action="store_true")
    anyio.run(main, parser.parse_args())
