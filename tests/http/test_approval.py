"""Human in the loop over HTTP: streams end at `run_paused`, `POST /runs/{id}/resume` goes on.

Issue #9: approve, deny, edit, cancel while paused, refusals as problem+json, replays that end
at a pause but not at an earlier one, resuming on another worker, and double-texting a paused
session.
"""

import functools
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic_ai.messages import ModelRequest, ToolReturnPart

from tests.approvals import Outbox
from tests.history_validator import validate_history
from tests.http._server import eventually, serving
from tests.http._sse import Frame, frames_of, parse
from tests.http._streams import get_in_task, post_in_task
from tests.http.conftest import ALICE, BOB
from tests.scripted import Gate, ScriptedModel, scripted, text, tool_call
from tether import RunHandle, Settings, Tether
from tether.bus.memory import MemoryEventBus
from tether.events import ToolDecision, event_json
from tether.http import create_app
from tether.ids import RunId
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio

CALL = "call_send_email"
ARGS = {"to": "a@x.org", "body": "hi"}


def mail_script(*after: Any) -> ScriptedModel:
    """Pause on `send_email`; then `after` (default: "Done."), then one more plain answer."""
    return scripted(
        [text("I'll send it."), tool_call("send_email", ARGS)],
        list(after) or [text("Done.")],
        [text("Next answer.")],
    )


def register(tether_app: Tether, model: ScriptedModel, outbox: Outbox) -> None:
    tether_app.agent("mailer")(lambda ctx: model.agent(tools=[outbox.tool()]))


def decision(*, approved: bool = True, **fields: Any) -> dict[str, Any]:
    return {"call_id": CALL, "approved": approved, **fields}


def kinds(frames: list[Frame]) -> list[str]:
    return [f.event for f in frames]


def tool_returns(model: ScriptedModel, request: int) -> list[ToolReturnPart]:
    return [
        p
        for m in model.received[request]
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    ]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["type"][:19]) == (status, "urn:tether:problem:")
    return body


async def start_paused(
    client: httpx.AsyncClient, message: str = "mail a@x.org", **kwargs: Any
) -> list[Frame]:
    """Start a run of `mailer` and return its stream, which ends at `run_paused`."""
    response = await client.post("/agents/mailer/runs", json={"message": message}, **kwargs)
    assert response.status_code == 200, response.text
    frames = parse(response.text)
    assert frames[-1].event == "run_paused"
    return frames


async def resume(
    client: httpx.AsyncClient, run_id: str, *decisions: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    return await client.post(
        f"/runs/{run_id}/resume", json={"decisions": list(decisions)}, **kwargs
    )


async def resumed(
    client: httpx.AsyncClient, run_id: str, *decisions: dict[str, Any]
) -> list[Frame]:
    response = await resume(client, run_id, *decisions)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse(response.text)


async def replay(
    client: httpx.AsyncClient, run_id: str, last_event_id: int | None = None
) -> httpx.Response:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    return await client.get(f"/runs/{run_id}/events", headers=headers)


async def frames_of_handle(handle: RunHandle) -> list[Frame]:
    """The frames a stream of ``handle``'s events carries."""
    with anyio.fail_after(5):
        return [
            Frame(id=str(e.seq), event=e.kind, data=event_json(e)) async for e in handle.events()
        ]


async def settled(tether_app: Tether, run_id: str) -> None:
    """Wait until this process let go of the run (its pause or end is stored)."""
    if (handle := tether_app.handle(run_id)) is not None:
        with anyio.fail_after(5):
            await handle.settled()


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


async def test_a_run_needing_approval_streams_to_run_paused_and_reports_the_waiting_calls(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    register(tether_app, mail_script(), outbox)
    frames = await start_paused(client)
    paused = frames[-1].json
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert paused["calls"] == [{"call_id": CALL, "tool": "send_email", "args": ARGS}]
    run_id = paused["run_id"]

    async def assert_paused() -> dict[str, Any]:
        body = (await client.get(f"/runs/{run_id}")).json()
        assert body["status"] == "paused"
        assert body["awaiting_approval"] == [{"call_id": CALL, "tool": "send_email", "args": ARGS}]
        expires_at = datetime.fromisoformat(body["approval_expires_at"])
        assert expires_at == datetime.fromisoformat(paused["expires_at"])
        return body

    await assert_paused()  # its pause may still be being stored here
    await settled(tether_app, run_id)
    body = await assert_paused()
    assert outbox.sent == []
    session = (await client.get(f"/sessions/{body['session_id']}")).json()
    assert session["active_run_id"] == run_id
    [call] = [c for m in session["messages"] for c in m["tool_calls"]]
    assert (call["call_id"], call["status"]) == (CALL, "awaiting_approval")
    # The stream ended at the pause: the run is not over, so nothing counts it as finished.
    metrics = (await client.get("/metrics")).text
    assert 'tether_runs_started_total{agent="mailer"} 1.0' in metrics
    assert "tether_runs_finished_total{" not in metrics


async def test_approving_resumes_the_run_on_a_stream_from_run_resumed_to_run_finished(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    model = mail_script()
    register(tether_app, model, outbox)
    paused = (await start_paused(client))[-1]
    run_id = paused.json["run_id"]
    response = await resume(client, run_id, decision())
    assert response.status_code == 200, response.text
    assert response.headers["x-run-id"] == run_id
    frames = parse(response.text)
    assert frames[0].event == "run_resumed"
    assert frames[0].json["decisions"] == [
        {"call_id": CALL, "approved": True, "args": None, "message": None}
    ]
    assert [f.seq for f in frames] == list(range(paused.seq + 1, paused.seq + 1 + len(frames)))
    finished = [f.json for f in frames if f.event == "tool_call_finished"]
    assert [(f["call_id"], f["status"], f["result"]) for f in finished] == [
        (CALL, "ok", "sent to a@x.org")
    ]
    assert (frames[-1].event, frames[-1].json["status"]) == ("run_finished", "completed")
    assert outbox.sent == [ARGS]
    assert [r.content for r in tool_returns(model, 1)] == ["sent to a@x.org"]
    validate_history(model.received[1])
    await settled(tether_app, run_id)
    body = (await client.get(f"/runs/{run_id}")).json()
    assert (body["status"], body["awaiting_approval"], body["approval_expires_at"]) == (
        "completed",
        [],
        None,
    )
    metrics = (await client.get("/metrics")).text
    assert 'tether_runs_started_total{agent="mailer"} 1.0' in metrics  # a resume is no new run
    assert 'tether_runs_finished_total{reason="none",status="completed"} 1.0' in metrics


async def test_denying_tells_the_model_why_and_never_runs_the_tool(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    model = mail_script(text("Understood."))
    register(tether_app, model, outbox)
    run_id = (await start_paused(client))[-1].json["run_id"]
    frames = await resumed(client, run_id, decision(approved=False, message="Not to them."))
    finished = [f.json for f in frames if f.event == "tool_call_finished"]
    assert [(f["call_id"], f["status"], f["result"]) for f in finished] == [
        (CALL, "denied", "Not to them.")
    ]
    assert frames[-1].json["status"] == "completed"
    assert outbox.sent == []
    assert [r.content for r in tool_returns(model, 1)] == ["Not to them."]
    validate_history(model.received[1])


async def test_edited_arguments_are_what_the_tool_runs_with_and_what_is_stored(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    register(tether_app, mail_script(), outbox)
    run_id = (await start_paused(client))[-1].json["run_id"]
    edited = {"to": "b@x.org", "body": "hello"}
    frames = await resumed(client, run_id, decision(args=edited))
    assert frames[-1].json["status"] == "completed"
    assert outbox.sent == [edited]
    await settled(tether_app, run_id)
    session_id = (await client.get(f"/runs/{run_id}")).json()["session_id"]
    session = (await client.get(f"/sessions/{session_id}")).json()
    [call] = [c for m in session["messages"] for c in m["tool_calls"]]
    assert (call["args"], call["status"], call["result"]) == (edited, "ok", "sent to b@x.org")


async def test_cancel_while_paused_ends_the_run_at_once_and_the_next_message_works(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    model = mail_script(text("Next answer."))
    register(tether_app, model, outbox)
    started = await start_paused(client)
    run_id, session_id = started[0].json["run_id"], started[0].json["session_id"]
    response = await client.post(f"/runs/{run_id}/cancel", json={})
    assert response.json() == {
        "run_id": run_id,
        "accepted": True,
        "status": "cancelled",
        "reason": "user",
    }
    again = await client.post(f"/runs/{run_id}/cancel", json={"wait": True})
    assert (again.json()["accepted"], again.json()["status"]) == (False, "cancelled")
    body = (await client.get(f"/runs/{run_id}")).json()
    assert (body["status"], body["reason"], body["awaiting_approval"]) == ("cancelled", "user", [])
    assert body["approval_expires_at"] is None
    frames = parse((await replay(client, run_id)).text)
    assert frames[: len(started)] == started
    assert [f.seq for f in frames] == list(range(len(frames)))
    closing = frames[len(started) :]
    assert [(f.event, f.json.get("status")) for f in closing] == [
        ("stop_requested", None),
        ("tool_call_finished", "cancelled"),
        ("run_finished", "cancelled"),
    ]
    assert (await replay(client, run_id, frames[-1].seq)).status_code == 204
    assert assert_problem(await resume(client, run_id, decision()), 409)["run_status"] == (
        "cancelled"
    )

    body = {"message": "and now?", "session_id": session_id}
    nxt = parse((await client.post("/agents/mailer/runs", json=body)).text)
    assert nxt[-1].json["status"] == "completed"
    validate_history(model.received[-1])
    assert outbox.sent == []


async def test_resuming_a_run_that_is_not_paused_is_a_conflict_naming_its_status(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    register(tether_app, mail_script(), outbox)
    run_id = (await start_paused(client))[-1].json["run_id"]
    assert (await resumed(client, run_id, decision()))[-1].json["status"] == "completed"
    await settled(tether_app, run_id)
    problem = assert_problem(await resume(client, run_id, decision()), 409)
    assert (problem["run_id"], problem["run_status"]) == (run_id, "completed")


async def test_decisions_that_do_not_answer_the_waiting_calls_are_refused_and_change_nothing(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    register(tether_app, mail_script(), outbox)
    run_id = (await start_paused(client))[-1].json["run_id"]
    await settled(tether_app, run_id)
    missing = assert_problem(await resume(client, run_id), 422)
    assert missing["awaiting"] == [CALL]
    assert "no decision for call_send_email" in missing["detail"]
    unknown = assert_problem(
        await resume(client, run_id, decision(), {"call_id": "nope", "approved": True}), 422
    )
    assert unknown["awaiting"] == [CALL]
    twice = await resume(client, run_id, decision(), decision())
    assert_problem(twice, 422)
    assert_problem(await resume(client, run_id, decision(approved=False, args={"to": "x"})), 422)
    too_long = decision(approved=False, message="x" * (Settings().max_message_chars + 1))
    assert_problem(await resume(client, run_id, too_long), 422)
    for body in (
        {},
        {"decisions": [{"call_id": CALL}]},
        {"decisions": [decision()], "on_disconnect": "ignore"},
        {"decisions": [decision(extra=1)]},
        {"decisions": [decision(args="not an object")]},
    ):
        assert_problem(await client.post(f"/runs/{run_id}/resume", json=body), 422)
    assert_problem(await resume(client, "run_missing", decision()), 404)
    body = (await client.get(f"/runs/{run_id}")).json()
    assert (body["status"], len(body["awaiting_approval"])) == ("paused", 1)
    assert outbox.sent == []


async def test_another_users_paused_run_is_not_found(
    keyed_client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    register(tether_app, mail_script(), outbox)
    run_id = (await start_paused(keyed_client, headers=ALICE))[-1].json["run_id"]
    await settled(tether_app, run_id)
    assert_problem(await resume(keyed_client, run_id, decision(), headers=BOB), 404)
    assert_problem(await keyed_client.get(f"/runs/{run_id}", headers=BOB), 404)
    assert_problem(await keyed_client.post(f"/runs/{run_id}/cancel", headers=BOB), 404)
    assert_problem(await resume(keyed_client, run_id, decision()), 401)
    frames = parse((await resume(keyed_client, run_id, decision(), headers=ALICE)).text)
    assert frames[-1].json["status"] == "completed"


async def test_a_new_message_while_paused_is_refused_naming_the_paused_run(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    register(tether_app, mail_script(), outbox)
    started = await start_paused(client)
    run_id, session_id = started[0].json["run_id"], started[0].json["session_id"]
    response = await client.post(
        "/agents/mailer/runs", json={"message": "hello?", "session_id": session_id}
    )
    assert assert_problem(response, 409)["active_run_id"] == run_id
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "paused"


async def test_interrupting_a_paused_run_cancels_it_superseded(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    model = mail_script(text("Next answer."))
    register(tether_app, model, outbox)
    started = await start_paused(client)
    run_id, session_id = started[0].json["run_id"], started[0].json["session_id"]
    body = {"message": "never mind", "session_id": session_id, "if_busy": "interrupt"}
    frames = parse((await client.post("/agents/mailer/runs", json=body)).text)
    assert frames[-1].json["status"] == "completed"
    paused = (await client.get(f"/runs/{run_id}")).json()
    assert (paused["status"], paused["reason"], paused["cancel"]["reason"]) == (
        "cancelled",
        "superseded",
        "superseded",
    )
    ended = parse((await replay(client, run_id)).text)
    assert (ended[-1].event, ended[-1].json["reason"]) == ("run_finished", "superseded")
    validate_history(model.received[-1])
    assert outbox.sent == []


# --- replays --------------------------------------------------------------------------------


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


async def assert_replays(client: httpx.AsyncClient, run_id: str, expected: list[Frame]) -> None:
    """From the start and from every event on: exactly the rest, then the stream closes."""
    assert parse((await replay(client, run_id)).text) == expected
    for k in range(len(expected) - 1):
        assert parse((await replay(client, run_id, expected[k].seq)).text) == expected[k + 1 :]
    assert (await replay(client, run_id, expected[-1].seq)).status_code == 204


async def test_a_paused_run_replays_up_to_run_paused_and_closes(
    stored_client: tuple[Tether, httpx.AsyncClient], outbox: Outbox
) -> None:
    tether_app, client = stored_client
    register(tether_app, mail_script(), outbox)
    live = await start_paused(client)
    run_id = live[0].json["run_id"]
    await settled(tether_app, run_id)
    with anyio.fail_after(5):
        await assert_replays(client, run_id, live)


async def test_a_replay_across_a_pause_and_resume_goes_on_to_the_end(
    stored_client: tuple[Tether, httpx.AsyncClient], outbox: Outbox
) -> None:
    tether_app, client = stored_client
    model = scripted(
        [text("One."), tool_call("send_email", ARGS, call_id="c1")],
        [text("Two."), tool_call("send_email", ARGS, call_id="c2")],
        [text("Done.")],
    )
    register(tether_app, model, outbox)
    first = await start_paused(client)
    run_id = first[0].json["run_id"]
    second = await resumed(client, run_id, {"call_id": "c1", "approved": True})
    assert second[-1].event == "run_paused"  # it paused again
    await settled(tether_app, run_id)
    third = await resumed(client, run_id, {"call_id": "c2", "approved": False})
    assert third[-1].json["status"] == "completed"
    await settled(tether_app, run_id)
    full = first + second + third
    assert [f.seq for f in full] == list(range(len(full)))
    assert kinds(full).count("run_paused") == 2
    with anyio.fail_after(10):
        await assert_replays(client, run_id, full)


async def test_a_viewer_of_a_run_resumed_here_gets_what_came_before_then_follows_it_live(
    client: httpx.AsyncClient, tether_app: Tether, outbox: Outbox
) -> None:
    gate = Gate()
    register(tether_app, mail_script(text("Sent, "), gate, text("done.")), outbox)
    before = await start_paused(client)
    run_id = before[0].json["run_id"]
    await settled(tether_app, run_id)
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, f"/runs/{run_id}/resume", {"decisions": [decision()]})
        with anyio.fail_after(5):
            await gate.reached.wait()
        viewers = {
            after: get_in_task(tg, client, f"/runs/{run_id}/events?after={after}")
            for after in (-1, 1, before[-1].seq)
        }
        await anyio.wait_all_tasks_blocked()
        gate.open()
        full = before + await stream.frames()
        assert [f.seq for f in full] == list(range(len(full)))
        for after, viewer in viewers.items():
            assert await viewer.frames() == full[after + 1 :]


@pytest.mark.parametrize("shared_bus", [True, False], ids=["shared-bus", "store-only"])
async def test_a_viewer_on_another_worker_stops_at_the_pause_but_not_after_the_resume(
    shared_bus: bool, outbox: Outbox
) -> None:
    """Worker A drives the run; worker B (same store) streams it to a client."""
    store, bus = MemoryStore(), MemoryEventBus()
    settings = Settings(database_url="memory", flush_interval_s=0.01)
    worker_a = Tether(store=store, event_bus=bus, settings=settings)
    worker_b = Tether(
        store=store, event_bus=bus if shared_bus else MemoryEventBus(), settings=settings
    )
    gate = Gate()
    register(worker_a, mail_script(text("Sent, "), gate, text("done.")), outbox)
    app_b = create_app(worker_b)
    transport = httpx.ASGITransport(app_b)
    async with (
        worker_a,
        app_b.router.lifespan_context(app_b),
        httpx.AsyncClient(transport=transport, base_url="http://b") as client,
        anyio.create_task_group() as tg,
    ):
        run = await worker_a.start("mailer", "mail a@x.org")
        before = await frames_of_handle(run)
        assert before[-1].event == "run_paused"
        with anyio.fail_after(5):
            await run.settled()
            assert parse((await replay(client, run.run_id)).text) == before
        again = await worker_a.resume(run.run_id, [ToolDecision(call_id=CALL, approved=True)])
        with anyio.fail_after(5):
            await gate.reached.wait()
        viewer = get_in_task(tg, client, f"/runs/{run.run_id}/events?after=0")
        await anyio.wait_all_tasks_blocked()
        gate.open()
        after = await frames_of_handle(again)
        full = before + after
        assert await viewer.frames() == full[1:]
        assert [f.seq for f in full] == list(range(len(full)))


# --- workers, and clients that leave ----------------------------------------------------------


async def test_a_run_paused_on_one_worker_is_resumed_on_another(
    tmp_path: Path, outbox: Outbox
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    model = mail_script()
    workers = [
        Tether(settings=Settings(database_url=url, data_dir=tmp_path, worker_id=worker))
        for worker in ("a", "b")
    ]
    for worker in workers:
        register(worker, model, outbox)
    worker_a, worker_b = workers
    app_a, app_b = create_app(worker_a), create_app(worker_b)
    async with (
        app_a.router.lifespan_context(app_a),
        app_b.router.lifespan_context(app_b),
        httpx.AsyncClient(transport=httpx.ASGITransport(app_a), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app_b), base_url="http://b") as b,
    ):
        before = await start_paused(a)
        run_id = before[0].json["run_id"]
        await settled(worker_a, run_id)
        assert (await b.get(f"/runs/{run_id}")).json()["status"] == "paused"
        after = await resumed(b, run_id, decision())
        assert after[-1].json["status"] == "completed"
        assert outbox.sent == [ARGS]
        await settled(worker_b, run_id)
        body = (await a.get(f"/runs/{run_id}")).json()
        assert (body["status"], body["awaiting_approval"]) == ("completed", [])
        assert parse((await replay(a, run_id)).text) == before + after
        assert_problem(await resume(a, run_id, decision()), 409)


async def has_no_stream_clients(http: httpx.AsyncClient) -> bool:
    metrics = (await http.get("/metrics")).text
    return "\ntether_stream_clients 0.0\n" in metrics


@pytest.mark.e2e
async def test_a_client_that_drops_a_resumed_stream_stops_the_run_unless_asked_not_to(
    tether_app: Tether, outbox: Outbox
) -> None:
    gates = [Gate(), Gate()]
    model = scripted(
        [text("One."), tool_call("send_email", ARGS, call_id="c1")],
        [text("Sent "), gates[0], text("never")],
        [text("Two."), tool_call("send_email", ARGS, call_id="c2")],
        [text("Sent "), gates[1], text("too.")],
    )
    register(tether_app, model, outbox)
    async with (
        serving(create_app(tether_app)) as base_url,
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        for gate, on_disconnect, call_id in zip(
            gates, ["cancel", "continue"], ["c1", "c2"], strict=True
        ):
            # The start stream ends at the pause: leaving then does not cancel the run.
            frames = await start_paused(http, f"mail ({on_disconnect})")
            run_id = frames[0].json["run_id"]
            await settled(tether_app, run_id)
            body = {
                "decisions": [{"call_id": call_id, "approved": True}],
                "on_disconnect": on_disconnect,
            }
            async with http.stream("POST", f"/runs/{run_id}/resume", json=body) as response:
                assert response.status_code == 200
                async for frame in frames_of(response.aiter_text()):
                    if frame.event == "run_resumed":
                        break
                with anyio.fail_after(5):
                    await gate.reached.wait()
            # The response is closed unread: the connection drops while the run is parked.
            await eventually(functools.partial(has_no_stream_clients, http))
            # Read from the store: a run stopped by the disconnect may already be stored and
            # let go (its ending is written at the stop, while its runtime tears down).
            if on_disconnect == "continue":
                gate.open()
            with anyio.fail_after(5):
                outcome = await tether_app.engine.wait_terminal(RunId(run_id))
            expected = (
                ("cancelled", "disconnect") if on_disconnect == "cancel" else ("completed", None)
            )
            assert (outcome.status, outcome.reason) == expected
    assert len(outbox.sent) == 2
