"""Exactly one cancel answers ``accepted: true``, whichever worker it went through (issue #15).

Two workers (two ``Tether`` apps) on one SQLite file or PostgreSQL schema, with in-process buses,
so a stop sent to the worker that does not drive the run reaches it through the run's row (the
owner's heartbeat). The owner's stop (a disconnect) and a user's cancel through the other worker
race: one is accepted, and the run's stored cancel fields name that one and agree with how the
run ended; a disconnect that won is never stored as the user's stop.
"""

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from tests.storage.conftest import Database
from tests.storage.test_db_failure import POLL_S, Talker
from tether import Settings, Tether
from tether.engine.stopping import CancelResult
from tether.ids import RunId
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore

pytestmark = pytest.mark.anyio

RUNS = 3


@asynccontextmanager
async def worker(
    database: Database, name: str, talker: Talker, *, heartbeat_s: float = 0.05
) -> AsyncGenerator[tuple[Tether, SqlStore], None]:
    store = SqlStore.open(database.url, schema=database.schema)
    settings = Settings(database_url="memory", worker_id=name, heartbeat_s=heartbeat_s, lease_s=30)
    app = Tether(store=store, settings=settings)
    app.agent("talker")(lambda ctx: talker.agent())
    try:
        async with app:
            yield app, store
    finally:
        await store.close()


async def test_concurrent_cancels_through_two_workers_accept_exactly_one(
    database: Database,
) -> None:
    await upgrade_database(database.url, schema=database.schema)
    talker = Talker()
    async with AsyncExitStack() as stack:
        a, store = await stack.enter_async_context(worker(database, "A", talker))
        b, _ = await stack.enter_async_context(worker(database, "B", talker))
        for _ in range(RUNS):
            run = await a.start("talker", "talk")
            results: dict[str, CancelResult] = {}

            async def cancel(
                app: Tether,
                by: str,
                run_id: str = run.run_id,
                into: dict[str, CancelResult] = results,
            ) -> None:
                reason = "disconnect" if app is a else "user"
                into[by] = await app.cancel(run_id, reason=reason, by=by)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cancel, a, "via-A")
                    tg.start_soon(cancel, b, "via-B")
                outcome = await run.outcome()
            accepted = [by for by, result in results.items() if result.accepted]
            assert len(accepted) == 1, results
            stored = await store.get_run(RunId(run.run_id))
            assert stored is not None
            assert stored.cancel is not None
            assert stored.cancel.by == accepted[0]
            assert (stored.status, stored.reason) == (outcome.status, outcome.reason)
            assert stored.reason == stored.cancel.reason


async def test_owner_stop_wins_over_an_intent_that_reached_the_row_first(
    database: Database,
) -> None:
    """B's cancel is on the row before the owner reads it; the owner's disconnect stops the run.

    The disconnect is the stop the run ended with: B answers ``accepted: false``, and the row
    says ``disconnect`` in both its ending and its cancel fields (not B's ``user``).
    """
    await upgrade_database(database.url, schema=database.schema)
    talker = Talker()
    async with AsyncExitStack() as stack:
        # A's heartbeat, which would read B's intent from the row, never beats in this test.
        a, store = await stack.enter_async_context(worker(database, "A", talker, heartbeat_s=600))
        b, _ = await stack.enter_async_context(worker(database, "B", talker))
        run = await a.start("talker", "talk")
        results: dict[str, CancelResult] = {}

        async def cancel_via_b() -> None:
            results["via-B"] = await b.cancel(run.run_id, reason="user", by="via-B")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_via_b)
                await _wait_for_intent(store, RunId(run.run_id))
                results["via-A"] = await a.cancel(run.run_id, reason="disconnect", by="via-A")
            outcome = await run.outcome()
        assert [by for by, r in results.items() if r.accepted] == ["via-A"], results
        assert results["via-B"].status == "cancelled"
        stored = await store.get_run(RunId(run.run_id))
        assert stored is not None
        assert stored.cancel is not None
        assert (stored.status, stored.reason) == (outcome.status, "disconnect")
        assert (stored.cancel.reason, stored.cancel.by) == ("disconnect", "via-A")


async def _wait_for_intent(store: SqlStore, run_id: RunId) -> None:
    """Until a stop intent is on the run's row (written by another worker's cancel)."""
    while True:
        if (record := await store.get_run(run_id)) is not None and record.cancel is not None:
            return
        await anyio.sleep(POLL_S)  # Deliberate: polling the store, the thing under test
