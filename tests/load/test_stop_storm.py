"""A CI-sized stop storm over HTTP (issue #13): every stopped run reads the same everywhere.

``tests.load._storm`` starts runs on real ``tether serve`` workers and stops each at a random
point (seeded); right after its terminal frame and a second later, the run's row, its events,
its messages and tool calls, and what ``GET /runs/{id}`` and ``GET /sessions/{id}`` answer must
all agree with that frame and the streamed text. The full-sized storm is ``bench/stop_storm.py``.
"""

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

from tests.contract.test_bus import redis_url
from tests.e2e._workers import Worker, WorkerSettings, fresh_database, serving
from tests.load._client import http_client
from tests.load._storm import Storm, plan, storm
from tests.load.load_app import APP
from tether.storage.sql import open_engine

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.slow]

RUNS: Final = 64
"""Eight of each stop point."""
CONCURRENCY: Final = 30
SEED: Final = 13


@asynccontextmanager
async def storm_on(workers: list[Worker], database_url: str) -> AsyncGenerator[Storm, None]:
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(http_client(worker.base_url)) for worker in workers
        ]
        engine = open_engine(database_url)
        stack.push_async_callback(engine.dispose)
        yield Storm(clients=clients, engine=engine)


async def test_stop_storm_on_sqlite_one_worker(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}"
    settings = WorkerSettings(database_url=url, redis_url=None, app=APP)
    async with (
        serving(["A"], settings, log_dir=tmp_path) as workers,
        storm_on(workers, url) as where,
    ):
        tally = await storm(where, plan(RUNS, seed=SEED, workers=1), concurrency=CONCURRENCY)

    assert tally.total == 0, tally.report()


@pytest.mark.postgres
@pytest.mark.redis
async def test_stop_storm_on_postgres_and_redis_two_workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    live_redis = await redis_url(request.config)
    async with fresh_database(request.config) as url:
        settings = WorkerSettings(database_url=url, redis_url=live_redis, app=APP)
        async with (
            serving(["A", "B"], settings, log_dir=tmp_path) as workers,
            storm_on(workers, url) as where,
        ):
            tally = await storm(where, plan(RUNS, seed=SEED, workers=2), concurrency=CONCURRENCY)

    assert tally.total == 0, tally.report()
