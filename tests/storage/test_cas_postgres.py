"""Compare-and-set under real concurrency: many workers, each with its own engine, on PostgreSQL.

Every race starts on one ``anyio.Event`` so the workers' statements reach the server together;
each worker holds its own connection pool, as separate processes would.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.storage.conftest import Database
from tether.errors import Conflict
from tether.events import TerminalStatus
from tether.ids import RunId, SessionId, UserId
from tether.records import CancelRequest, RunRecord, SessionRecord
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore
from tether.storage.store import RECOVERY_SEQ_GAP, Finish

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

WORKERS = 8
ROUNDS = 5
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STATUSES: tuple[TerminalStatus, ...] = ("completed", "cancelled", "failed", "interrupted")


@pytest.fixture
async def workers(postgres_database: Database) -> AsyncIterator[list[SqlStore]]:
    url, schema = postgres_database.url, postgres_database.schema
    await upgrade_database(url, schema=schema)
    stores = [SqlStore.open(url, schema=schema) for _ in range(WORKERS)]
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


async def race(*attempts: Callable[[], Awaitable[None]]) -> None:
    """Run the attempts concurrently, released together."""
    start = anyio.Event()

    async def run(attempt: Callable[[], Awaitable[None]]) -> None:
        await start.wait()
        await attempt()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for attempt in attempts:
                tg.start_soon(run, attempt)
            start.set()


async def new_running_run(store: SqlStore, name: str) -> RunId:
    session_id = SessionId(f"s-{name}")
    await store.create_session(
        SessionRecord(session_id=session_id, user_id=UserId("u1"), agent="agent")
    )
    run_id = RunId(f"r-{name}")
    await store.create_run(
        RunRecord(run_id=run_id, session_id=session_id, agent="agent", user_id=UserId("u1")),
        None,
    )
    assert await store.claim_run(run_id, owner="w0", lease_expires_at=T0 + timedelta(seconds=10))
    return run_id


async def test_concurrent_finish_run_exactly_one_outcome_wins(workers: list[SqlStore]) -> None:
    for round_ in range(ROUNDS):
        await race_finishes(workers, await new_running_run(workers[0], f"finish-{round_}"))


async def race_finishes(workers: list[SqlStore], run_id: RunId) -> None:
    seen: list[RunRecord] = []

    def finisher(i: int, store: SqlStore) -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            finish = Finish(
                status=STATUSES[i % len(STATUSES)],
                error=f"worker {i}",
                finished_at=T0 + timedelta(seconds=i),
            )
            seen.append(await store.finish_run(run_id, finish))

        return attempt

    await race(*(finisher(i, store) for i, store in enumerate(workers)))

    final = await workers[0].get_run(run_id)
    assert final is not None
    assert len(seen) == WORKERS
    assert all(record == final for record in seen), "every caller learns the one winner"
    winner = int(final.error.removeprefix("worker ")) if final.error else -1
    assert final.status == STATUSES[winner % len(STATUSES)]
    assert final.finished_at == T0 + timedelta(seconds=winner)


async def test_concurrent_create_run_admits_one_active_run_per_session(
    workers: list[SqlStore],
) -> None:
    session_id = SessionId("s-busy")
    await workers[0].create_session(
        SessionRecord(session_id=session_id, user_id=UserId("u1"), agent="agent")
    )
    created: list[RunId] = []
    conflicts: list[Conflict] = []

    def creator(i: int, store: SqlStore) -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            run_id = RunId(f"r-{i}")
            run = RunRecord(run_id=run_id, session_id=session_id, agent="a", user_id=UserId("u1"))
            try:
                await store.create_run(run, None)
            except Conflict as exc:
                conflicts.append(exc)
            else:
                created.append(run_id)

        return attempt

    await race(*(creator(i, store) for i, store in enumerate(workers)))

    assert len(created) == 1
    assert len(conflicts) == WORKERS - 1
    assert {c.details["active_run_id"] for c in conflicts} == set(created)
    assert [r.run_id for r in await workers[0].session_runs(session_id)] == created


async def test_concurrent_request_cancel_first_request_wins(workers: list[SqlStore]) -> None:
    run_id = await new_running_run(workers[0], "cancel")
    seen: list[RunRecord] = []

    def canceller(i: int, store: SqlStore) -> Callable[[], Awaitable[None]]:
        async def attempt() -> None:
            request = CancelRequest(reason="user", by=f"worker {i}", requested_at=T0)
            seen.append(await store.request_cancel(run_id, request))

        return attempt

    await race(*(canceller(i, store) for i, store in enumerate(workers)))

    final = await workers[0].get_run(run_id)
    assert final is not None
    assert final.cancel is not None
    assert all(record.cancel == final.cancel for record in seen)


async def test_recovery_racing_completion_leaves_one_terminal_state(
    workers: list[SqlStore],
) -> None:
    for round_ in range(ROUNDS):
        await race_recovery(workers, await new_running_run(workers[0], f"recover-{round_}"))


async def race_recovery(workers: list[SqlStore], run_id: RunId) -> None:
    finished: list[RunRecord] = []
    recovered: list[RunRecord] = []

    async def complete() -> None:
        done = Finish(status="completed", finished_at=T0 + timedelta(seconds=15))
        finished.append(await workers[1].finish_run(run_id, done))

    async def recover() -> None:
        recovered.extend(await workers[2].interrupt_expired(T0 + timedelta(seconds=20)))

    await race(complete, recover)

    final = await workers[0].get_run(run_id)
    assert final is not None
    assert finished == [final]
    events = await workers[0].events_after(run_id, -1, limit=10)
    if final.status == "interrupted":
        assert recovered == [final]
        assert [(e.seq, e.kind) for e in events] == [(RECOVERY_SEQ_GAP - 1, "run_finished")]
    else:
        assert final.status == "completed"
        assert (recovered, events) == ([], [])
