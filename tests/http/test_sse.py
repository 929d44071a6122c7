"""SSE frames, resume points, and replaying or following a run's events from any source."""

from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import JsonValue
from sse_starlette import ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.exceptions import HTTPException
from starlette.types import Message, Scope

from tests.http._sse import Frame, parse
from tests.http._streams import post_in_task
from tests.scripted import Gate, scripted, text, tool_call
from tether import Settings, Tether
from tether.bus.memory import MemoryEventBus
from tether.events import RunEvent, TextDelta, ToolCallFinished, event_json, parse_event
from tether.http import create_app
from tether.http.metrics import HttpMetrics
from tether.http.sse import event_stream, frame, resume_after
from tether.ids import RunId, SessionId, UserId
from tether.records import RunRecord, SessionRecord
from tether.storage.memory import MemoryStore
from tether.storage.store import Finish, StoredEvent, WriteBatch

json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def round_trip(event: RunEvent) -> RunEvent:
    (parsed,) = parse(frame(event.seq, event.kind, event_json(event)).decode())
    assert (parsed.id, parsed.event) == (str(event.seq), event.kind)
    return parse_event(parsed.data)


@given(st.text(), st.integers(min_value=0, max_value=2**40))
def test_a_text_delta_frame_round_trips_any_text(chunk: str, seq: int) -> None:
    event = TextDelta(run_id=RunId("run_1"), seq=seq, text=chunk)
    assert round_trip(event) == event


@given(json_values, st.none() | st.text())
def test_a_tool_result_frame_round_trips_any_json(result: JsonValue, error: str | None) -> None:
    event = ToolCallFinished(
        run_id=RunId("run_1"), seq=3, call_id="c\n1", status="error", result=result, error=error
    )
    assert round_trip(event) == event


@given(st.text(), st.integers(min_value=0, max_value=2**40))
def test_our_frame_is_what_sse_starlette_would_send(chunk: str, seq: int) -> None:
    event = TextDelta(run_id=RunId("run_1"), seq=seq, text=chunk)
    data = event_json(event)
    expected = ServerSentEvent(data=data, event=event.kind, id=str(seq)).encode()
    assert frame(seq, event.kind, data) == expected


def test_resume_point_prefers_last_event_id_over_the_query() -> None:
    assert resume_after(None, None) == -1
    assert resume_after(None, 4) == 4
    assert resume_after("7", 4) == 7
    assert resume_after(" 0 ", None) == 0


@pytest.mark.parametrize("value", ["", "x", "-1", "+1", "1e3", "0x10", "1 2", "²"])
def test_a_resume_point_that_is_not_a_seq_is_refused(value: str) -> None:
    with pytest.raises(HTTPException) as caught:
        resume_after(value, None)
    assert caught.value.status_code == 400


async def run_to_end(client: httpx.AsyncClient) -> list[Frame]:
    response = await client.post("/agents/a/runs", json={"message": "hi"})
    assert response.status_code == 200, response.text
    return parse(response.text)


async def replay(
    client: httpx.AsyncClient, run_id: str, last_event_id: str | None = None
) -> httpx.Response:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    return await client.get(f"/runs/{run_id}/events", headers=headers)


@pytest.fixture(params=["memory", "sqlite"])
async def stored_client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Tether, httpx.AsyncClient]]:
    if request.param == "memory":
        tether_app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
        tether_app = Tether(settings=Settings(database_url=url, data_dir=tmp_path))
    app = create_app(tether_app)
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield tether_app, client


@pytest.mark.anyio
async def test_a_finished_run_replays_exactly_what_was_streamed(
    stored_client: tuple[Tether, httpx.AsyncClient],
) -> None:
    tether_app, client = stored_client
    model = scripted([text("Hel"), text("lo\nthere"), tool_call("t")], [text("done")])
    tether_app.agent("a")(lambda ctx: model.agent(tools=[lambda: "ok"]))
    live = await run_to_end(client)
    run = live[0].json["run_id"]
    with anyio.fail_after(5):
        await tether_app.engine.wait_terminal(RunId(run))
    response = await replay(client, run)
    assert response.status_code == 200
    assert parse(response.text) == live
    for k in range(len(live) - 1):
        assert parse((await replay(client, run, str(live[k].seq))).text) == live[k + 1 :]


@pytest.mark.anyio
async def test_a_client_that_has_the_last_event_is_told_to_stop_reconnecting(
    stored_client: tuple[Tether, httpx.AsyncClient],
) -> None:
    tether_app, client = stored_client
    model = scripted([text("done")])
    tether_app.agent("a")(lambda ctx: model.agent())
    live = await run_to_end(client)
    run_id = live[0].json["run_id"]
    with anyio.fail_after(5):
        await tether_app.engine.wait_terminal(RunId(run_id))
    response = await replay(client, run_id, str(live[-1].seq))
    assert response.status_code == 204


@pytest.mark.anyio
async def test_a_viewer_follows_a_live_run_from_its_resume_point(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("a"), text("b"), gate, text("c")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run_id,) = tether_app.engine.runs
        viewer_done = anyio.Event()
        seen: list[httpx.Response] = []

        async def view() -> None:
            seen.append(await replay(client, run_id, "1"))
            viewer_done.set()

        tg.start_soon(view)
        await anyio.wait_all_tasks_blocked()
        gate.open()
        live = await stream.frames()
        with anyio.fail_after(5):
            await viewer_done.wait()
        assert parse(seen[0].text) == live[2:]


@pytest.mark.anyio
@pytest.mark.parametrize("shared_bus", [True, False], ids=["shared-bus", "store-only"])
async def test_a_run_on_another_worker_is_followed_through_store_and_bus(
    shared_bus: bool,
) -> None:
    """Worker A drives the run; worker B (same store) streams it to a client, live."""
    store, bus = MemoryStore(), MemoryEventBus()
    settings = Settings(database_url="memory", flush_interval_s=0.01)
    worker_a = Tether(store=store, event_bus=bus, settings=settings)
    worker_b = Tether(
        store=store, event_bus=bus if shared_bus else MemoryEventBus(), settings=settings
    )
    gate = Gate()
    model = scripted([text("a"), text("b"), gate, text("c")])
    worker_a.agent("a")(lambda ctx: model.agent())
    app_b = create_app(worker_b)
    transport = httpx.ASGITransport(app_b)
    async with (
        worker_a,
        app_b.router.lifespan_context(app_b),
        httpx.AsyncClient(transport=transport, base_url="http://b") as client,
        anyio.create_task_group() as tg,
    ):
        run = await worker_a.start("a", "hi")
        with anyio.fail_after(5):
            await gate.reached.wait()
        seen: list[httpx.Response] = []
        viewer_done = anyio.Event()

        async def view() -> None:
            seen.append(await replay(client, run.run_id, "0"))
            viewer_done.set()

        tg.start_soon(view)
        await anyio.wait_all_tasks_blocked()
        gate.open()
        with anyio.fail_after(5):
            await viewer_done.wait()
        expected = [
            Frame(id=str(e.seq), event=e.kind, data=event_json(e)) async for e in run.events()
        ]
        assert parse(seen[0].text) == expected[1:]


@pytest.mark.anyio
async def test_a_stored_run_without_its_terminal_event_still_ends_the_stream() -> None:
    """A run ended by recovery before its events were flushed: the record supplies the end."""
    store = MemoryStore()
    tether_app = Tether(store=store, settings=Settings(database_url="memory"))
    app = create_app(tether_app)
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        session = SessionRecord(session_id=SessionId("ses_x"), user_id=UserId("local"), agent="a")
        await store.create_session(session)
        run_id = RunId("run_x")
        await store.create_run(
            RunRecord(
                run_id=run_id, session_id=session.session_id, agent="a", user_id=session.user_id
            ),
            None,
        )
        started = StoredEvent(run_id=run_id, seq=0, kind="run_started", payload="{}")
        await store.write(WriteBatch(events=[started]))
        await store.finish_run(
            run_id,
            Finish(status="failed", reason="error", error="boom", finished_at=session.created_at),
        )
        frames = parse((await replay(client, run_id)).text)
        assert [f.event for f in frames] == ["run_started", "run_finished"]
        assert (frames[-1].seq, frames[-1].json["status"], frames[-1].json["error"]) == (
            1,
            "failed",
            "boom",
        )


@pytest.mark.anyio
async def test_a_client_that_stops_reading_ends_its_stream_after_the_send_timeout() -> None:
    """Issue #14: sends are watched per stream, not each bounded; a blocked one still ends it."""
    gone: list[str] = []
    started = anyio.Event()

    async def frames() -> AsyncGenerator[bytes, None]:
        yield frame(0, "text_delta", "{}")
        await anyio.sleep_forever()

    async def on_gone() -> None:
        gone.append("gone")

    async def on_shutdown() -> None:
        raise AssertionError("no shutdown here")

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.set()
            return
        await anyio.sleep_forever()  # the socket's buffers are full: the client stopped reading

    response = event_stream(
        frames(),
        metrics=HttpMetrics(active_runs=lambda: 0),
        on_shutdown=on_shutdown,
        on_gone=on_gone,
        send_timeout_s=0.2,
    )
    scope: Scope = {"type": "http", "method": "GET", "headers": []}
    with anyio.fail_after(5), pytest.raises(SendTimeoutError):
        await response(scope, receive, send)
    assert started.is_set()
    assert gone == ["gone"]
