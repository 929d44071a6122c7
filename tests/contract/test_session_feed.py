"""The live session feed (issue #18) on every store: another tab follows new runs and titles."""

import functools
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from tests.http._server import serving
from tests.http._sse import Frame, frames_of
from tests.scripted import Gate, scripted, text
from tether import Settings, Tether
from tether.http import create_app
from tether.storage.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def base_url(store: Store) -> AsyncIterator[str]:
    tether_app = Tether(store=store, settings=Settings(database_url="memory"))
    gate = Gate()
    model = scripted([text("first")], [text("second "), gate, text("done")])
    tether_app.agent("a")(lambda ctx: model.agent())
    tether_app.agent("other")(lambda ctx: model.agent())
    async with serving(create_app(tether_app)) as url:
        yield url
        gate.open()


async def next_frame(frames: AsyncIterator[Frame]) -> Frame:
    with anyio.fail_after(5):
        return await anext(frames)


async def test_feed_reports_another_tabs_run_its_end_and_a_rename(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as tab:
        first = await tab.post("/agents/a/runs", json={"message": "hello"})
        session_id = first.headers["X-Session-Id"]
        async with tab.stream("GET", f"/sessions/{session_id}/events") as feed:
            assert feed.headers["content-type"].startswith("text/event-stream")
            frames = frames_of(feed.aiter_text())
            async with anyio.create_task_group() as tg:
                # Another tab sends the next message; its answer parks on the gate.
                body = {"message": "again", "session_id": session_id}
                tg.start_soon(functools.partial(tab.post, "/agents/a/runs", json=body))
                started = await next_frame(frames)
                assert started.event == "run_started"
                assert started.json["agent"] == "a"
                run_id = started.json["run_id"]
                detail = (await tab.get(f"/sessions/{session_id}")).json()
                assert detail["active_run_id"] == run_id
                await tab.post(f"/runs/{run_id}/cancel", json={})
                finished = await next_frame(frames)
                assert finished.event == "run_finished"
                assert finished.json == {"run_id": run_id, "status": "cancelled", "reason": "user"}
            renamed = await tab.patch(f"/sessions/{session_id}", json={"title": "Greetings"})
            updated = await next_frame(frames)

    assert renamed.status_code == 200
    assert updated.event == "session_updated"
    assert updated.json["title"] == "Greetings"
    assert updated.json["session_id"] == session_id


async def test_feed_ends_when_the_session_is_deleted(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as tab:
        first = await tab.post("/agents/a/runs", json={"message": "hello"})
        session_id = first.headers["X-Session-Id"]
        async with tab.stream("GET", f"/sessions/{session_id}/events") as feed:
            assert (await tab.delete(f"/sessions/{session_id}")).status_code == 204
            with anyio.fail_after(5):
                rest = [chunk async for chunk in feed.aiter_text()]
    assert "event:" not in "".join(rest)
