"""AG-UI (#17) on a real server: a run, a drop, a server stop, and what older clients get."""

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from tests.http._server import serving
from tests.scripted import Gate, scripted, text
from tether import Settings, Tether
from tether.http import create_app
from tether.ids import RunId
from tether.records import RunRecord
from tether.storage.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def tether_app() -> Tether:
    return Tether(store=MemoryStore(), settings=Settings(database_url="memory"))


@pytest.fixture
async def http(tether_app: Tether) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(tether_app)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


def run_input(thread_id: str, text_: str, **extra: Any) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "content": text_}
    return {
        "threadId": thread_id,
        "runId": "client-run-1",
        "messages": [message],
        "state": None,
        "tools": [],
        "context": [],
        "forwardedProps": None,
        "protocolVersion": "1.0",
        **extra,
    }


def events_of(raw: str) -> list[dict[str, Any]]:
    return [json.loads(x[len("data: ") :]) for x in raw.split("\n") if x.startswith("data: ")]


async def terminal(tether_app: Tether, run_id: str) -> RunRecord:
    with anyio.fail_after(5):
        return await tether_app.engine.wait_terminal(RunId(run_id))


async def test_a_run_streams_text_and_finishes_with_success(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    model = scripted([text("Hello "), text("world")])
    tether_app.agent("a")(lambda ctx: model.agent())
    response = await http.post("/agents/a/agui", json=run_input("thread-1", "hi"))
    events = events_of(response.text)
    assert [e["type"] for e in events] == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert all(e["runId"] == "client-run-1" for e in events if "runId" in e)
    assert events[-1]["outcome"] == {"type": "success"}
    run_id = response.headers["x-tether-run-id"]
    assert (await terminal(tether_app, run_id)).status == "completed"
    messages = await tether_app.engine.store.run_messages(RunId(run_id))
    assert [m.content for m in messages if m.role == "assistant"] == ["Hello world"]


@pytest.mark.parametrize(("version", "last"), [("1.0", "RUN_FINISHED"), ("0.0.40", "RUN_ERROR")])
async def test_a_server_stop_closes_the_message_and_ends_cancelled(
    tether_app: Tether, http: httpx.AsyncClient, version: str, last: str
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    body = run_input("thread-2", "hi", protocolVersion=version)
    async with http.stream("POST", "/agents/a/agui", json=body) as response:
        run_id = response.headers["x-tether-run-id"]
        with anyio.fail_after(5):
            await gate.reached.wait()
        assert (await http.post(f"/runs/{run_id}/cancel", json={})).json()["accepted"]
        with anyio.fail_after(5):
            await response.aread()
        events = events_of(response.text)
    assert [e["type"] for e in events][-2:] == ["TEXT_MESSAGE_END", last]
    if last == "RUN_FINISHED":
        assert events[-1]["outcome"] == {"type": "cancelled"}
    else:
        assert events[-1]["code"] == "cancelled"
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "user")


async def test_a_dropped_response_cancels_the_run(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with http.stream("POST", "/agents/a/agui", json=run_input("t3", "hi")) as response:
        run_id = response.headers["x-tether-run-id"]
        with anyio.fail_after(5):
            await gate.reached.wait()
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "disconnect")
    messages = await tether_app.engine.store.run_messages(RunId(run_id))
    assert [m.content for m in messages if m.role == "assistant"] == ["Hello "]
