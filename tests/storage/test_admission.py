"""A worker refuses what it can't carry, and drains on shutdown (issue #13, items 4 and 5).

Over HTTP and in the database (SQLite file and PostgreSQL): past ``TETHER_MAX_RUNS`` every start
route answers 503 problem+json with ``Retry-After`` and writes no row (no run, no message, no
session for a client-chosen chat id); ``/readyz`` says not ready; once a run ends, the refused
client's retry runs. Draining (what ``tether serve`` does on SIGTERM) refuses starts the same
way, ends every run ``cancelled`` / ``shutdown`` with its end stored, and every client gets that
``run_finished``.
"""

from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest
from pydantic_ai import Agent
from sqlalchemy import text as sql

from tests.http._server import eventually
from tests.http._sse import parse
from tests.http._streams import post_in_task
from tests.scripted import Gate, ScriptedModel, scripted, text
from tests.storage.conftest import Database
from tests.storage.test_db_failure import (
    FLUSH_INTERVAL_S,
    LEASE_S,
    RETRY_BUDGET_S,
    STORAGE_FAILURE_TIMEOUT_S,
    Talker,
    exclusive_lock,
)
from tether import Settings, Tether
from tether.http import create_app
from tether.ids import RunId, SessionId
from tether.storage.migrate import upgrade_database
from tether.storage.sql import DEFAULT_RETRY_BUDGET_S, SqlStore

pytestmark = pytest.mark.anyio

AGENT: Final = "chat"
COUNTS: Final = {
    "runs": "SELECT count(*) FROM runs",
    "sessions": "SELECT count(*) FROM sessions",
    # A refused start would have written its user message; the running run writes only its own.
    "user messages": "SELECT count(*) FROM messages WHERE role = 'user'",
}


@dataclass
class Served:
    tether: Tether
    store: SqlStore
    client: httpx.AsyncClient

    async def counts(self) -> dict[str, int]:
        async with self.store.engine.connect() as connection:
            return {
                name: int((await connection.execute(sql(query))).scalar_one())
                for name, query in COUNTS.items()
            }

    async def running(self) -> int:
        async with self.store.engine.connect() as connection:
            query = sql("SELECT count(*) FROM runs WHERE status = 'running'")
            return int((await connection.execute(query)).scalar_one())


@asynccontextmanager
async def served(
    database: Database,
    model: ScriptedModel,
    *,
    agent: Callable[[], Agent[None, str]] | None = None,
    retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
    **settings: Any,
) -> AsyncGenerator[Served, None]:
    await upgrade_database(database.url, schema=database.schema)
    store = SqlStore.open(database.url, schema=database.schema, retry_budget_s=retry_budget_s)
    tether_app = Tether(store=store, settings=Settings(database_url="memory", **settings))
    make_agent = agent or model.agent
    tether_app.agent(AGENT)(lambda ctx: make_agent())
    app = create_app(tether_app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
        ):
            yield Served(tether_app, store, client)
    finally:
        await store.close()


def assert_refused(response: httpx.Response, *, why: str) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    problem: dict[str, Any] = response.json()
    assert problem["type"] == "urn:tether:problem:overloaded"
    assert why in problem["detail"]
    return problem


async def refused_on_every_route(client: httpx.AsyncClient, *, why: str) -> None:
    """Every start route refuses; the protocol routes name a chat the client chose."""
    native = await client.post(f"/agents/{AGENT}/runs", json={"message": "hi"})
    assert_refused(native, why=why)
    openai = await client.post(
        "/v1/chat/completions",
        json={"model": AGENT, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"x-tether-session-id": "openai-chat"},
    )
    assert assert_refused(openai, why=why)["error"]["code"] == "overloaded"
    user = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    ai_sdk = {"id": "ai-sdk-chat", "messages": [user], "trigger": "submit-message"}
    assert_refused(await client.post(f"/agents/{AGENT}/chat", json=ai_sdk), why=why)
    agui = {
        "threadId": "agui-thread",
        "runId": "client-run-1",
        "messages": [{"id": "u1", "role": "user", "content": "hi"}],
        "state": None,
        "tools": [],
        "context": [],
        "forwardedProps": None,
    }
    assert_refused(await client.post(f"/agents/{AGENT}/agui", json=agui), why=why)


async def test_a_start_past_max_runs_is_refused_on_every_route_and_writes_nothing(
    database: Database,
) -> None:
    gate = Gate()
    model = scripted([text("Hello"), gate, text(" there.")], [text("Again.")])
    async with served(database, model, max_runs=1) as served_app:
        first = await served_app.tether.start(AGENT, "hi")
        with anyio.fail_after(5):
            await gate.reached.wait()
        before = await served_app.counts()

        await refused_on_every_route(served_app.client, why="limit of 1 live runs")
        ready = await served_app.client.get("/readyz")
        assert ready.status_code == 503
        assert "retry-after" in ready.headers

        assert await served_app.counts() == before
        for chat in ("openai-chat", "ai-sdk-chat", "agui-thread"):
            assert await served_app.store.get_session(SessionId(chat)) is None

        # Once a run ends, the refused client's retry is admitted and runs to its end.
        gate.open()
        with anyio.fail_after(5):
            assert (await first.outcome()).status == "completed"
        retry = await served_app.client.post(f"/agents/{AGENT}/runs", json={"message": "hi"})
        assert retry.status_code == 200, retry.text
        frames = parse(retry.text)
        assert [f.json["status"] for f in frames if f.event == "run_finished"] == ["completed"]
        assert "".join(f.json["text"] for f in frames if f.event == "text_delta") == "Again."
        assert (await served_app.client.get("/readyz")).status_code == 200


async def test_draining_refuses_starts_and_ends_every_run_shutdown_with_its_end_stored(
    database: Database,
) -> None:
    gates = [Gate(), Gate()]
    model = scripted([text("One"), gates[0]], [text("Two"), gates[1]])
    async with served(database, model) as served_app, anyio.create_task_group() as tg:
        client = served_app.client
        streams = [
            post_in_task(tg, client, f"/agents/{AGENT}/runs", {"message": "hi"}),
            post_in_task(tg, client, f"/agents/{AGENT}/runs", {"message": "hi"}),
        ]
        with anyio.fail_after(5):
            for gate in gates:
                await gate.reached.wait()

        # What `tether serve` does on SIGTERM: returns once every run's end is stored.
        with anyio.fail_after(10):
            await served_app.tether.drain()
        assert await served_app.running() == 0

        for stream in streams:
            frames = await stream.frames()
            last = frames[-1]
            assert last.event == "run_finished", frames[-3:]
            assert (last.json["status"], last.json["reason"]) == ("cancelled", "shutdown")
            record = await served_app.store.get_run(RunId(last.json["run_id"]))
            assert record is not None
            assert (record.status, record.reason) == ("cancelled", "shutdown")
            stored = await served_app.store.events_after(record.run_id, -1, limit=1000)
            assert [e.kind for e in stored].count("run_finished") == 1

        before = await served_app.counts()
        await refused_on_every_route(client, why="shutting down")
        assert await served_app.counts() == before
        assert (await client.get("/readyz")).status_code == 503


async def test_a_start_while_this_workers_writes_are_behind_is_refused_then_admitted_again(
    tmp_path: Path,
) -> None:
    """Another process holds SQLite's lock: the streaming run's writes fall behind."""
    path = tmp_path / "tether.db"
    talker = Talker()
    settings: dict[str, Any] = {
        "max_write_lag_s": 0.5,
        "flush_interval_s": FLUSH_INTERVAL_S,
        "storage_give_up_s": 3600.0,  # the run keeps going: admission is what is tested
        "lease_s": LEASE_S,
    }
    database = Database(url=f"sqlite+aiosqlite:///{path}")
    async with served(
        database, scripted(), agent=talker.agent, retry_budget_s=RETRY_BUDGET_S, **settings
    ) as served_app:
        run = await served_app.tether.start(AGENT, "talk")
        client = served_app.client
        async with exclusive_lock(path):
            refused: list[httpx.Response] = []

            async def is_refused() -> bool:
                response = await client.post(f"/agents/{AGENT}/runs", json={"message": "hi"})
                refused.append(response)
                return response.status_code == 503 and "behind" in response.text

            await eventually(is_refused, timeout_s=STORAGE_FAILURE_TIMEOUT_S)
            assert_refused(refused[-1], why="writes are")
        before = await served_app.counts()
        talker.stop.set()
        with anyio.fail_after(STORAGE_FAILURE_TIMEOUT_S):
            await run.outcome()

        async def is_admitted() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(is_admitted, timeout_s=STORAGE_FAILURE_TIMEOUT_S)
        assert await served_app.counts() == before  # the refused starts wrote nothing
        retry = await client.post(f"/agents/{AGENT}/runs", json={"message": "talk"})
        assert retry.status_code == 200, retry.text
