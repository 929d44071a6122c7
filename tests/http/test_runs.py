"""Starting, streaming, stopping and reading runs over HTTP."""

from typing import Any

import anyio
import httpx
import pytest

from tests.http._sse import Frame, parse
from tests.http._streams import post_in_task
from tests.scripted import Gate, parked_tool, scripted, text, tool_call
from tether import AgentContext, Settings, Tether
from tether.http import create_app
from tether.ids import RunId
from tether.storage.memory import MemoryStore
from tether.storage.store import WriteBatch

pytestmark = pytest.mark.anyio


def only_run(tether_app: Tether) -> RunId:
    (run_id,) = tether_app.engine.runs
    return run_id


def kinds(frames: list[Frame]) -> list[str]:
    return [f.event for f in frames]


async def test_post_run_streams_from_run_started_to_run_finished(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("Hello "), text("world")])
    tether_app.agent("a")(lambda ctx: model.agent())
    response = await client.post("/agents/a/runs", json={"message": "hi"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse(response.text)
    assert kinds(frames) == ["run_started", "text_delta", "text_delta", "run_finished"]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert all(f.json["kind"] == f.event and f.json["seq"] == f.seq for f in frames)
    assert [f.json["text"] for f in frames[1:3]] == ["Hello ", "world"]
    assert frames[-1].json["status"] == "completed"
    assert response.headers["x-run-id"] == frames[0].json["run_id"]
    assert response.headers["x-session-id"] == frames[0].json["session_id"]


async def test_a_second_message_continues_the_session(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("one")], [text("two")])
    tether_app.agent("a")(lambda ctx: model.agent())
    first = parse((await client.post("/agents/a/runs", json={"message": "hi"})).text)
    session_id = first[0].json["session_id"]
    body = {"message": "again", "session_id": session_id}
    second = parse((await client.post("/agents/a/runs", json=body)).text)
    assert second[0].json["session_id"] == session_id
    assert second[-1].json["status"] == "completed"
    assert len(model.received[1]) > len(model.received[0])  # the history went along


async def test_cancel_route_stops_a_run_mid_text(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), text("wor"), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        run_id = only_run(tether_app)
        response = await client.post(f"/runs/{run_id}/cancel", json={})
        frames = await stream.frames()
        assert response.status_code == 200
        assert response.json()["accepted"] is True
        assert kinds(frames) == [
            "run_started",
            "text_delta",
            "text_delta",
            "stop_requested",
            "run_finished",
        ]
        assert (frames[-1].json["status"], frames[-1].json["reason"]) == ("cancelled", "user")
        assert frames[-2].json["by"] == "local"


async def test_cancel_route_stops_a_run_mid_tool_and_closes_the_call(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("Checking."), tool_call("lookup", {"q": "x"})])
    tether_app.agent("a")(lambda ctx: model.agent(tools=[parked_tool("lookup", gate)]))
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        run_id = only_run(tether_app)
        response = await client.post(f"/runs/{run_id}/cancel", json={"wait": True})
        frames = await stream.frames()
        assert response.json() == {
            "run_id": run_id,
            "accepted": True,
            "status": "cancelled",
            "reason": "user",
        }
        finished = [f.json for f in frames if f.event == "tool_call_finished"]
        assert [(f["call_id"], f["status"]) for f in finished] == [("call_lookup", "cancelled")]
        assert frames[-1].event == "run_finished"
        assert not gate.opened.is_set()


async def test_cancel_is_idempotent_and_honest_about_who_stopped_the_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        run_id = only_run(tether_app)
        first = await client.post(f"/runs/{run_id}/cancel", json={"reason": "user"})
        second = await client.post(f"/runs/{run_id}/cancel", json={"reason": "timeout"})
        await stream.frames()
        after = await client.post(f"/runs/{run_id}/cancel")
        assert first.json()["accepted"] is True
        assert second.json()["accepted"] is False
        assert after.json() == {
            "run_id": run_id,
            "accepted": False,
            "status": "cancelled",
            "reason": "user",
        }


async def test_cancel_of_a_completed_run_says_so(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("done")])
    tether_app.agent("a")(lambda ctx: model.agent())
    frames = parse((await client.post("/agents/a/runs", json={"message": "hi"})).text)
    run_id = frames[0].json["run_id"]
    response = await client.post(f"/runs/{run_id}/cancel", json={"wait": True})
    assert response.json() == {
        "run_id": run_id,
        "accepted": False,
        "status": "completed",
        "reason": None,
    }


async def test_cancel_after_turn_lets_the_turn_finish(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("Checking."), tool_call("lookup")], [text("never")])
    tether_app.agent("a")(lambda ctx: model.agent(tools=[parked_tool("lookup", gate)]))
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        run_id = only_run(tether_app)
        body = {"mode": "after_turn", "action": "rollback"}
        response = await client.post(f"/runs/{run_id}/cancel", json=body)
        gate.open()
        frames = await stream.frames()
        assert response.json()["accepted"] is True
        stop = next(f.json for f in frames if f.event == "stop_requested")
        assert (stop["mode"], stop["action"]) == ("after_turn", "rollback")
        finished = [f.json for f in frames if f.event == "tool_call_finished"]
        assert [f["status"] for f in finished] == ["ok"]
        assert frames[-1].json["status"] == "cancelled"
        assert len(model.received) == 1


async def test_get_run_reports_state_usage_children_and_the_stop(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    parent_model = scripted([tool_call("ask")], [text("ok")])
    child_model = scripted([text("child answer")])

    def parent(ctx: AgentContext) -> Any:
        async def ask() -> str:
            return await ctx.delegate("child", "help")

        return parent_model.agent(tools=[ask])

    tether_app.agent("parent")(parent)
    tether_app.agent("child")(lambda ctx: child_model.agent())
    frames = parse((await client.post("/agents/parent/runs", json={"message": "hi"})).text)
    run_id = frames[0].json["run_id"]
    child = next(f.json for f in frames if f.event == "child_run_started")
    body = (await client.get(f"/runs/{run_id}")).json()
    assert body["status"] == "completed"
    assert body["children"] == [
        {"run_id": child["child_run_id"], "agent": "child", "status": "completed"}
    ]
    assert body["usage"]["requests"] == 2
    assert body["timings"]["duration_s"] >= 0
    assert body["cancel"] is None
    child_body = (await client.get(f"/runs/{child['child_run_id']}")).json()
    assert child_body["parent_run_id"] == run_id


async def test_get_run_of_a_stopped_run_says_who_why_and_how(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        run_id = only_run(tether_app)
        await client.post(f"/runs/{run_id}/cancel", json={"action": "rollback", "wait": True})
        await stream.frames()
        body = (await client.get(f"/runs/{run_id}")).json()
        assert (body["status"], body["reason"]) == ("cancelled", "user")
        cancel = body["cancel"]
        assert (cancel["by"], cancel["reason"], cancel["mode"], cancel["action"]) == (
            "local",
            "user",
            "now",
            "rollback",
        )
        assert cancel["requested_at"]


async def test_if_busy_reject_names_the_active_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        run_id = only_run(tether_app)
        session_id = tether_app.engine.runs[run_id].session_id
        body = {"message": "more", "session_id": session_id}
        response = await client.post("/agents/a/runs", json=body)
        gate.open()
        await stream.frames()
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["active_run_id"] == run_id


async def test_if_busy_interrupt_supersedes_the_active_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("first"), gate], [text("second")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        first = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        session_id = tether_app.engine.runs[only_run(tether_app)].session_id
        body = {"message": "no, this", "session_id": session_id, "if_busy": "interrupt"}
        second = post_in_task(tg, client, "/agents/a/runs", body)
        first_frames, second_frames = await first.frames(), await second.frames()
        assert (first_frames[-1].json["status"], first_frames[-1].json["reason"]) == (
            "cancelled",
            "superseded",
        )
        assert second_frames[-1].json["status"] == "completed"


async def test_if_busy_enqueue_waits_for_the_active_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("first"), gate], [text("second")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        first = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        session_id = tether_app.engine.runs[only_run(tether_app)].session_id
        body = {"message": "and then", "session_id": session_id, "if_busy": "enqueue"}
        second = post_in_task(tg, client, "/agents/a/runs", body)
        gate.open()
        first_frames, second_frames = await first.frames(), await second.frames()
        assert first_frames[-1].json["status"] == "completed"
        assert second_frames[-1].json["status"] == "completed"
        assert [f.json["text"] for f in second_frames if f.event == "text_delta"] == ["second"]


async def test_lifespan_exit_ends_open_streams_with_a_shutdown_terminal_event(
    tether_app: Tether,
) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    app = create_app(tether_app)
    transport = httpx.ASGITransport(app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        anyio.create_task_group() as tg,
    ):
        async with app.router.lifespan_context(app):
            stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
            with anyio.fail_after(5):
                await gate.reached.wait()
            run_id = only_run(tether_app)
            store = tether_app.store
        frames = await stream.frames()
        assert (frames[-1].json["status"], frames[-1].json["reason"]) == ("cancelled", "shutdown")
        record = await store.get_run(run_id)
        assert record is not None
        assert record.status == "cancelled"


class SlowToFinishStore(MemoryStore):
    """Holds the write that carries a run's ending until ``finish_gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_gate = Gate()

    async def write(self, batch: WriteBatch) -> None:
        if batch.endings:
            self.finish_gate.reached.set()
            await self.finish_gate.opened.wait()
        await super().write(batch)


async def test_run_finished_goes_out_once_stored_and_the_next_message_is_accepted() -> None:
    """Issue #13: the terminal event is the commit point; a read right after it agrees."""
    store = SlowToFinishStore()
    tether_app = Tether(store=store, settings=Settings(database_url="memory"))
    gate = Gate()
    model = scripted([text("a"), gate], [text("b")])
    tether_app.agent("a")(lambda ctx: model.agent())
    app = create_app(tether_app)
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        anyio.create_task_group() as tg,
    ):
        first = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run,) = tether_app.engine.runs.values()
        await client.post(f"/runs/{run.run_id}/cancel")
        with anyio.fail_after(5):
            await store.finish_gate.reached.wait()
        await anyio.wait_all_tasks_blocked()
        assert not first.done.is_set()
        store.finish_gate.open()
        assert (await first.frames())[-1].json["status"] == "cancelled"
        assert (await client.get(f"/runs/{run.run_id}")).json()["status"] == "cancelled"
        body = {"message": "next", "session_id": run.session_id}
        second = post_in_task(tg, client, "/agents/a/runs", body)
        frames = await second.frames()
        assert frames[-1].json["status"] == "completed"
