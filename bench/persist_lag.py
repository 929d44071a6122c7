"""Persistence lag: from a text delta's emission to the commit of the flush that stores it.

N runs stream concurrently (a token every 20 ms by default) through the real engine, recorder
and ``SqlStore``; the model stamps each token as it yields it, and a measuring ``SqlStore``
subclass stamps each ``write`` when its transaction has committed (the moment another
connection can see the rows). Lag = commit - emission, per delta. Prints min / median / p99 /
max per database; the target is p99 <= 200 ms at 50 concurrent runs with the default 100 ms
flush interval. Each run's stored text is checked against what it streamed.

SQLite is a fresh file; PostgreSQL (``--postgres-url``, default ``TETHER_TEST_POSTGRES_URL`` or
the local ``test`` database) gets a fresh schema, dropped afterwards, and is skipped if
unreachable.

    .venv/bin/python bench/persist_lag.py [--runs 50] [--tokens 100] [--token-ms 20]
"""

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).parent.parent))

from tether import Settings, Tether
from tether.ids import SessionId
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore, open_engine
from tether.storage.store import WriteBatch

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TARGET_P99_MS = 200.0
LOOP_PROBE_S = 0.005


@dataclass
class Clock:
    """Emission stamps (by token text, which is unique) and committed batches."""

    emitted_at: dict[str, float] = field(default_factory=dict[str, float])
    commits: list[tuple[float, WriteBatch]] = field(default_factory=list[tuple[float, WriteBatch]])
    write_ms: list[float] = field(default_factory=list[float])
    loop_lag_ms: list[float] = field(default_factory=list[float])
    all_started_at: float = 0.0
    """When the last of the concurrent runs was created: the end of the start-up burst."""

    def clear(self) -> None:
        self.commits.clear()
        self.write_ms.clear()
        self.loop_lag_ms.clear()

    def lags_ms(self, *, emitted_after: float = 0.0) -> list[float]:
        lags: list[float] = []
        for committed_at, batch in self.commits:
            for event in batch.events:
                if event.kind == "text_delta":
                    emitted_at = self.emitted_at[json.loads(event.payload)["text"]]
                    if emitted_at >= emitted_after:
                        lags.append((committed_at - emitted_at) * 1000)
        return lags


class TimedSqlStore(SqlStore):
    """``SqlStore`` that notes when each write committed (only a timestamp and a reference)."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock) -> None:
        super().__init__(engine)
        self.clock = clock

    async def write(self, batch: WriteBatch) -> None:
        started_at = time.perf_counter()
        await super().write(batch)
        committed_at = time.perf_counter()
        self.clock.commits.append((committed_at, batch))
        self.clock.write_ms.append((committed_at - started_at) * 1000)


async def probe_loop_lag(clock: Clock) -> None:
    """How late the event loop wakes a 5 ms sleeper: CPU starvation shows up here first."""
    while True:
        before = time.perf_counter()
        await anyio.sleep(LOOP_PROBE_S)
        clock.loop_lag_ms.append((time.perf_counter() - before - LOOP_PROBE_S) * 1000)


def streaming_agent(clock: Clock, *, tokens: int, token_s: float) -> Agent[None, str]:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        request = messages[-1]
        assert isinstance(request, ModelRequest)
        prompt = next(p.content for p in request.parts if isinstance(p, UserPromptPart))
        for i in range(tokens):
            await anyio.sleep(token_s)
            token = f"{prompt}.{i} "
            clock.emitted_at[token] = time.perf_counter()
            yield token

    return Agent(FunctionModel(stream_function=stream, model_name="bench"))


async def run_all(
    app: Tether, clock: Clock, *, runs: int, prefix: str
) -> list[tuple[SessionId, str]]:
    """Start ``runs`` runs at once and wait for them; return (session id, prompt) of each."""
    started: list[tuple[SessionId, str]] = []
    finished: list[tuple[SessionId, str]] = []

    async def one(index: int) -> None:
        prompt = f"{prefix}{index}"
        run = await app.start("bench", prompt)
        started.append((run.session_id, prompt))
        if len(started) == runs:
            clock.all_started_at = time.perf_counter()
        outcome = await run.outcome()
        assert outcome.status == "completed", outcome
        finished.append((run.session_id, prompt))

    async with anyio.create_task_group() as tg:
        for index in range(runs):
            tg.start_soon(one, index)
    return finished


async def check_stored(store: SqlStore, finished: list[tuple[SessionId, str]], tokens: int) -> None:
    for session_id, prompt in finished:
        messages = await store.messages(session_id)
        stored = "".join(m.content for m in messages if m.role == "assistant")
        expected = "".join(f"{prompt}.{i} " for i in range(tokens))
        assert stored == expected, f"run {prompt}: stored text differs from what it streamed"


async def measure(store: TimedSqlStore, args: argparse.Namespace) -> Clock:
    clock = store.clock
    settings = Settings(database_url="memory", flush_interval_s=args.flush_ms / 1000)
    app = Tether(store=store, settings=settings)
    app.agent("bench")(
        lambda ctx: streaming_agent(clock, tokens=args.tokens, token_s=args.token_ms / 1000)
    )
    async with app:
        await run_all(app, clock, runs=min(5, args.runs), prefix="warm")  # warm-up
        clock.clear()
        gc.collect()
        gc.freeze()
        finished: list[tuple[SessionId, str]] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe_loop_lag, clock)
                finished = await run_all(app, clock, runs=args.runs, prefix="r")
                tg.cancel_scope.cancel()
        finally:
            gc.unfreeze()
        await check_stored(store, finished, args.tokens)
    return clock


def stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"min {ordered[0]:6.1f}  median {statistics.median(ordered):6.1f}  "
        f"p99 {p99:6.1f}  max {ordered[-1]:6.1f} ms"
    )


def report(name: str, clock: Clock) -> None:
    lags = clock.lags_ms()
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    verdict = "ok" if p99 <= TARGET_P99_MS else f"OVER the {TARGET_P99_MS:.0f} ms target"
    print(f"{name}: {len(lags)} deltas in {len(clock.commits)} writes ({verdict})")
    print(f"  delta -> committed  {stats(lags)}")
    steady = clock.lags_ms(emitted_after=clock.all_started_at)
    print(f"  ... after start-up  {stats(steady)}   ({len(steady)} deltas)")
    print(f"  write duration      {stats(clock.write_ms)}")
    print(f"  event-loop lag      {stats(clock.loop_lag_ms)}", flush=True)


async def bench_sqlite(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'tether.db'}"
        await upgrade_database(url)
        store = TimedSqlStore(open_engine(url), clock=Clock())
        try:
            clock = await measure(store, args)
        finally:
            await store.close()
    report("SQLite", clock)


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
        store = TimedSqlStore(open_engine(url, schema=schema), clock=Clock())
        try:
            clock = await measure(store, args)
        finally:
            await store.close()
    finally:
        engine = open_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await engine.dispose()
    report("PostgreSQL", clock)


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.runs} concurrent runs x {args.tokens} tokens, a token every {args.token_ms} ms, "
        f"flush interval {args.flush_ms} ms",
        flush=True,
    )
    await bench_sqlite(args)
    if not args.no_postgres:
        await bench_postgres(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--token-ms", type=float, default=20.0)
    parser.add_argument("--flush-ms", type=float, default=100.0)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TETHER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--no-postgres", action="store_true")
    anyio.run(main, parser.parse_args())
