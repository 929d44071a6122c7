"""``/readyz`` tells when this worker can't store, and requests fail fast meanwhile (issue #15).

PostgreSQL behind a TCP proxy the test cuts (the database becomes unreachable, then comes
back); a SQLite file locked by another process while a run streams (this worker's writes fail).
Readiness answers 503 with ``Retry-After`` within about a second, ``/healthz`` (liveness) stays
200, and once the database is back the worker is ready again.
"""

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.http._server import eventually
from tests.services import postgres_url
from tests.storage._proxy import proxy_to
from tests.storage.conftest import postgres_schema
from tests.storage.test_db_failure import (
    FLUSH_INTERVAL_S,
    LEASE_S,
    RETRY_BUDGET_S,
    STORAGE_FAILURE_TIMEOUT_S,
    Talker,
    exclusive_lock,
    recorder_failures,
)
from tether import Settings, Tether
from tether.http import create_app
from tether.ids import RunId
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore

pytestmark = pytest.mark.anyio

PROMPT_S = 2.0
"""A bound on each answer: the issue asks for 503 within 1 s; this leaves room for a busy CI."""


@asynccontextmanager
async def client_of(tether_app: Tether) -> AsyncGenerator[httpx.AsyncClient, None]:
    app = create_app(tether_app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        yield client


async def get_within(client: httpx.AsyncClient, path: str) -> httpx.Response:
    with anyio.fail_after(PROMPT_S):
        return await client.get(path)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"


async def is_ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.mark.postgres
async def test_readyz_and_requests_fail_fast_while_postgres_is_unreachable(
    request: pytest.FixtureRequest,
) -> None:
    url = make_url(await postgres_url(request.config))
    async with (
        postgres_schema(request.config) as database,
        proxy_to(url.host or "127.0.0.1", url.port or 5432) as proxy,
    ):
        await upgrade_database(database.url, schema=database.schema)
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        store = SqlStore.open(proxied.render_as_string(hide_password=False), schema=database.schema)
        try:
            async with client_of(
                Tether(store=store, settings=Settings(database_url="memory"))
            ) as client:
                assert (await get_within(client, "/readyz")).status_code == 200
                proxy.cut()
                assert_unavailable(await get_within(client, "/readyz"))
                # The store knows it is failing now: a request fails in well under its 10 s budget.
                assert_unavailable(await get_within(client, "/runs/run_unknown"))
                assert (await get_within(client, "/healthz")).status_code == 200
                proxy.restore()
                await eventually(lambda: is_ready(client))
                assert (await get_within(client, "/runs/run_unknown")).status_code == 404
        finally:
            await store.close()


async def test_readyz_fails_while_this_workers_sqlite_writes_fail(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await upgrade_database(f"sqlite+aiosqlite:///{path}")
    store = SqlStore.open(f"sqlite+aiosqlite:///{path}", retry_budget_s=RETRY_BUDGET_S)
    settings = Settings(
        database_url="memory",
        flush_interval_s=FLUSH_INTERVAL_S,
        storage_give_up_s=3600.0,  # the run keeps going: readiness is what is tested
        lease_s=LEASE_S,
    )
    tether_app = Tether(store=store, settings=settings)
    talker = Talker()
    tether_app.agent("talker")(lambda ctx: talker.agent())
    try:
        async with client_of(tether_app) as client:
            run = await tether_app.start("talker", "talk")
            assert (await get_within(client, "/readyz")).status_code == 200
            with recorder_failures() as failed:
                async with exclusive_lock(path):
                    with anyio.fail_after(STORAGE_FAILURE_TIMEOUT_S):
                        await failed.wait()
                    # SELECT 1 still works (WAL readers pass the lock); the writes do not.
                    response = await get_within(client, "/readyz")
                    assert_unavailable(response)
                    assert "writes" in response.json()["detail"]
                    assert (await get_within(client, "/healthz")).status_code == 200
            await eventually(lambda: is_ready(client), timeout_s=STORAGE_FAILURE_TIMEOUT_S)
            talker.stop.set()
            with anyio.fail_after(5):
                await run.outcome()
    finally:
        await store.close()


@pytest.mark.postgres
async def test_an_outage_is_answered_within_a_second_and_a_stop_still_lands(
    request: pytest.FixtureRequest,
) -> None:
    """No probe first: the very first requests after the cut learn of it within a second."""
    url = make_url(await postgres_url(request.config))
    async with (
        postgres_schema(request.config) as database,
        proxy_to(url.host or "127.0.0.1", url.port or 5432) as proxy,
    ):
        await upgrade_database(database.url, schema=database.schema)
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        store = SqlStore.open(proxied.render_as_string(hide_password=False), schema=database.schema)
        tether_app = Tether(store=store, settings=Settings(database_url="memory", lease_s=LEASE_S))
        talker = Talker()
        tether_app.agent("talker")(lambda ctx: talker.agent())
        try:
            async with client_of(tether_app) as client:
                run = await tether_app.start("talker", "talk")
                proxy.cut()
                with anyio.fail_after(PROMPT_S):
                    stopped = await client.post(f"/runs/{run.run_id}/cancel")
                assert stopped.status_code == 200, stopped.text
                # Ended here at once; its ending is stored once the database is back.
                assert (stopped.json()["accepted"], stopped.json()["status"]) == (True, "cancelled")
                with anyio.fail_after(PROMPT_S):
                    started = await client.post("/agents/talker/runs", json={"message": "hi"})
                assert_unavailable(started)
                assert_unavailable(await get_within(client, f"/runs/{run.run_id}x"))
                assert_unavailable(await get_within(client, "/agents/talker/sessions"))
                proxy.restore()
                with anyio.fail_after(STORAGE_FAILURE_TIMEOUT_S):
                    assert (await run.outcome()).status == "cancelled"
                stored = await store.get_run(RunId(run.run_id))
                assert stored is not None
                assert (stored.status, stored.reason) == ("cancelled", "user")
        finally:
            await store.close()


async def test_a_locked_sqlite_refuses_new_runs_at_once_and_a_stop_still_lands(
    tmp_path: Path,
) -> None:
    """Writes blocked by another process's lock: the stop answers at once, starts get 503."""
    path = tmp_path / "tether.db"
    await upgrade_database(f"sqlite+aiosqlite:///{path}")
    store = SqlStore.open(f"sqlite+aiosqlite:///{path}")  # the full retry budget (10 s)
    settings = Settings(
        database_url="memory",
        flush_interval_s=FLUSH_INTERVAL_S,
        storage_give_up_s=3600.0,
        lease_s=LEASE_S,
    )
    tether_app = Tether(store=store, settings=settings)
    talker = Talker()
    tether_app.agent("talker")(lambda ctx: talker.agent())
    try:
        async with client_of(tether_app) as client:
            run = await tether_app.start("talker", "talk")
            async with exclusive_lock(path):
                with anyio.fail_after(PROMPT_S):
                    stopped = await client.post(f"/runs/{run.run_id}/cancel")
                assert (stopped.json()["accepted"], stopped.json()["status"]) == (True, "cancelled")
                # Its ending can't be written: the worker knows within about a second.
                await eventually(lambda: is_unready(client), timeout_s=STORAGE_FAILURE_TIMEOUT_S)
                with anyio.fail_after(PROMPT_S):
                    started = await client.post("/agents/talker/runs", json={"message": "hi"})
                assert_unavailable(started)
                # Reads pass the lock (WAL): the run reads back as it ended.
                read = await get_within(client, f"/runs/{run.run_id}")
                assert read.json()["status"] == "cancelled"
            with anyio.fail_after(STORAGE_FAILURE_TIMEOUT_S):
                await run.settled()  # its ending is stored
            stored = await store.get_run(RunId(run.run_id))
            assert stored is not None
            assert stored.cancel is not None
            assert stored.status == "cancelled"
    finally:
        await store.close()


async def is_unready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 503
