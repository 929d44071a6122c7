"""Clients that go away, on a real server: what happens to the run, resuming, and no leaks.

uvicorn serves the app in this event loop on a random loopback port, so the test can watch the
run (and the loop's tasks) while real sockets connect, read and drop.
"""

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import httpx
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCalls, FunctionModel

from tests.http._server import eventually, serving
from tests.http._sse import Frame, frames_of, parse
from tests.scripted import Gate, scripted, text
from tether import Settings, Tether
from tether.http import create_app
from tether.http.auth import LOCAL_USER
from tether.ids import RunId
from tether.storage.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def tether_app() -> Tether:
    return Tether(store=MemoryStore(), settings=Settings(database_url="memory"))


@pytest.fixture
async def base_url(tether_app: Tether) -> AsyncIterator[str]:
    async with serving(create_app(tether_app)) as url:
        yield url


async def read_until(response: httpx.Response, kind: str) -> list[Frame]:
    """Frames up to and including the first of ``kind``."""
    seen: list[Frame] = []
    with anyio.fail_after(5):
        async for frame in frames_of(response.aiter_text()):
            seen.append(frame)
            if frame.event == kind:
                return seen
    raise AssertionError(f"the stream ended without {kind}: {seen}")


async def stream_clients(http: httpx.AsyncClient) -> float:
    metrics = (await http.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("tether_stream_clients "))
    return float(line.split()[1])


async def wait_no_stream_clients(http: httpx.AsyncClient) -> None:
    async def no_clients() -> bool:
        return await stream_clients(http) == 0

    await eventually(no_clients)


async def test_a_dropped_client_stops_its_run_when_asked_to(
    tether_app: Tether, base_url: str
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream("POST", "/agents/a/runs", json={"message": "hi"}) as response:
            await read_until(response, "text_delta")
            with anyio.fail_after(5):
                await gate.reached.wait()
            run_id = response.headers["x-run-id"]
            handle = tether_app.handle(run_id)
            assert handle is not None
        # The response is closed unread: the connection drops while the run is parked.
        with anyio.fail_after(5):
            outcome = await handle.outcome()
        assert (outcome.status, outcome.reason, outcome.text) == (
            "cancelled",
            "disconnect",
            "Hello ",
        )
        record = await tether_app.engine.wait_terminal(RunId(run_id))
        assert record.cancel is not None
        assert record.cancel.reason == "disconnect"


async def test_a_dropped_client_leaves_the_run_going_when_asked_and_resumes_without_gap(
    tether_app: Tether, base_url: str
) -> None:
    gate = Gate()
    model = scripted([text("one "), text("two "), gate, text("three "), text("four")])
    tether_app.agent("a")(lambda ctx: model.agent())
    body = {"message": "hi", "on_disconnect": "continue"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream("POST", "/agents/a/runs", json=body) as response:
            prefix = await read_until(response, "text_delta")
            run_id = response.headers["x-run-id"]
        await wait_no_stream_clients(http)  # the server saw the drop ...
        handle = tether_app.handle(run_id)
        assert handle is not None  # ... and the run goes on
        resumed: list[Frame] = []
        headers = {"Last-Event-ID": prefix[-1].id or ""}
        async with http.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
            assert response.status_code == 200
            gate.open()
            with anyio.fail_after(5):
                async for frame in frames_of(response.aiter_text()):
                    resumed.append(frame)
        full = parse((await http.get(f"/runs/{run_id}/events")).text)
    assert prefix + resumed == full
    assert [f.seq for f in full] == list(range(len(full)))
    assert full[-1].json["status"] == "completed"
    deltas = "".join(f.json["text"] for f in full if f.event == "text_delta")
    assert deltas == "one two three four"


async def test_a_viewer_that_drops_does_not_stop_the_run(tether_app: Tether, base_url: str) -> None:
    gate = Gate()
    model = scripted([text("one "), gate, text("two")])
    tether_app.agent("a")(lambda ctx: model.agent())
    body = {"message": "hi", "on_disconnect": "continue"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream("POST", "/agents/a/runs", json=body) as response:
            await read_until(response, "text_delta")
            run_id = response.headers["x-run-id"]
        async with http.stream("GET", f"/runs/{run_id}/events") as response:
            await read_until(response, "text_delta")
        await wait_no_stream_clients(http)
        gate.open()
        handle = tether_app.handle(run_id)
        assert handle is not None
        with anyio.fail_after(5):
            assert (await handle.outcome()).status == "completed"


async def _park_forever(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    yield "parked"
    await anyio.sleep_forever()


def _post(body: bytes) -> bytes:
    head = (
        "POST /agents/park/runs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connect_read_and_abort(port: int, request: bytes) -> None:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        await stream.send(request)
        received = b""
        with anyio.fail_after(5):
            while b"event: text_delta" not in received:
                received += await stream.receive()
    finally:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        # SO_LINGER 0: close with a reset, the most abrupt way a client can go.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()


async def test_many_abrupt_disconnects_leave_no_task_or_run_behind(
    tether_app: Tether, base_url: str
) -> None:
    tether_app.agent("park")(lambda ctx: Agent(FunctionModel(stream_function=_park_forever)))
    port = httpx.URL(base_url).port
    assert port is not None
    request = _post(b'{"message": "hi"}')
    await _connect_read_and_abort(port, request)  # warm up: lazy imports, sse-starlette's watcher
    async with httpx.AsyncClient(base_url=base_url) as http:
        await wait_no_stream_clients(http)
    await _wait_runs_over(tether_app)
    baseline = len(asyncio.all_tasks())
    for _ in range(20):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(_connect_read_and_abort, port, request)
    await _wait_runs_over(tether_app)

    async def back_to_baseline() -> bool:
        return len(asyncio.all_tasks()) <= baseline

    await eventually(back_to_baseline, timeout_s=10)
    sessions = await tether_app.store.list_sessions(LOCAL_USER, "park", limit=1000)
    assert len(sessions) == 201
    for session in sessions:
        runs = await tether_app.store.session_runs(session.session_id)
        assert [(r.status, r.reason) for r in runs] == [("cancelled", "disconnect")]


async def _wait_runs_over(tether_app: Tether) -> None:
    async def no_runs() -> bool:
        return not tether_app.engine.runs

    await eventually(no_runs, timeout_s=10)
