"""A stop sent before its run exists stops it on whichever worker it starts (issue #15).

Two workers (two apps) on one SQLite file or PostgreSQL schema. A user's stop by request id,
sent to B before any run has that id, is held in the database; the run that user then starts
with that id on A takes it and ends ``cancelled`` without streaming. Held stops are per user:
another user's stop under the same id neither stops nor spares the first user's run. A stop
sent to B once the run exists on A finds it through the database.
"""

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx
import pytest

from tests.http.conftest import ALICE, BOB, KEYS
from tests.storage.conftest import Database
from tests.storage.test_db_failure import Talker
from tether import RunHandle, Settings, Tether, TextDelta
from tether.http import create_app
from tether.ids import RunId
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore

pytestmark = pytest.mark.anyio

STOP_TIMEOUT_S = 10.0


@asynccontextmanager
async def worker(
    database: Database, name: str, talker: Talker
) -> AsyncGenerator[tuple[Tether, httpx.AsyncClient], None]:
    store = SqlStore.open(database.url, schema=database.schema)
    settings = Settings(database_url="memory", worker_id=name, api_keys=KEYS)
    tether_app = Tether(store=store, settings=settings)
    tether_app.agent("talker")(lambda ctx: talker.agent())
    app = create_app(tether_app, settings=settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield tether_app, client
    finally:
        await store.close()


@asynccontextmanager
async def two_workers(
    database: Database,
) -> AsyncGenerator[tuple[Tether, httpx.AsyncClient, SqlStore], None]:
    """Worker A (its app, to start runs), worker B (its HTTP client), and the database."""
    await upgrade_database(database.url, schema=database.schema)
    talker = Talker()
    async with AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(worker(database, "A", talker))
        _, b = await stack.enter_async_context(worker(database, "B", talker))
        store = SqlStore.open(database.url, schema=database.schema)
        stack.push_async_callback(store.close)
        yield a, b, store


async def hold(client: httpx.AsyncClient, request_id: str, user: dict[str, str]) -> None:
    response = await client.post(
        "/sessions/new/cancel", json={"client_request_id": request_id}, headers=user
    )
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["run_id"]) == (True, None)


async def first_text(run: RunHandle) -> bool:
    """Whether the run streams any text before it ends."""
    async for event in run.events():
        if isinstance(event, TextDelta):
            return True
    return False


async def test_a_stop_held_on_one_worker_stops_the_run_started_on_another(
    database: Database,
) -> None:
    async with two_workers(database) as (a, b, store):
        await hold(b, "req-1", ALICE)
        await hold(b, "req-1", BOB)  # the same id, another user: held apart
        for user in ("alice", "bob"):
            run = await a.start("talker", "talk", user_id=user, client_request_id="req-1")
            with anyio.fail_after(STOP_TIMEOUT_S):
                assert not await first_text(run)
                outcome = await run.outcome()
            assert (outcome.status, outcome.reason) == ("cancelled", "user")
            stored = await store.get_run(RunId(run.run_id))
            assert stored is not None
            assert stored.cancel is not None
            assert stored.cancel.by == user


async def test_another_users_held_stop_does_not_stop_my_run(database: Database) -> None:
    async with two_workers(database) as (a, b, _):
        await hold(b, "req-2", BOB)
        run = await a.start("talker", "talk", user_id="alice", client_request_id="req-2")
        with anyio.fail_after(STOP_TIMEOUT_S):
            assert await first_text(run)
        # Bob's stop is still his: his own run with that id takes it.
        bobs = await a.start("talker", "talk", user_id="bob", client_request_id="req-2")
        with anyio.fail_after(STOP_TIMEOUT_S):
            assert (await bobs.outcome()).reason == "user"
            await run.cancel()


async def test_a_stop_by_request_id_finds_the_run_on_another_worker(database: Database) -> None:
    async with two_workers(database) as (a, b, _):
        run = await a.start("talker", "talk", user_id="alice", client_request_id="req-3")
        response = await b.post(
            f"/sessions/{run.session_id}/cancel", json={"client_request_id": "req-3"}, headers=BOB
        )
        assert response.status_code == 404  # not Bob's session
        response = await b.post(
            "/sessions/elsewhere/cancel", json={"client_request_id": "req-3"}, headers=ALICE
        )
        assert response.status_code == 200, response.text
        assert (response.json()["run_id"], response.json()["accepted"]) == (run.run_id, True)
        with anyio.fail_after(STOP_TIMEOUT_S):
            outcome = await run.outcome()
        assert (outcome.status, outcome.reason) == ("cancelled", "user")
