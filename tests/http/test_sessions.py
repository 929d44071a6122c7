"""Agents, sessions and their history over HTTP; stopping a session's run."""

from typing import Any

import anyio
import httpx
import pydantic
import pytest

from tests.http._sse import parse
from tests.http._streams import post_in_task
from tests.scripted import Gate, parked_tool, scripted, text, tool_call
from tether import Tether

pytestmark = pytest.mark.anyio


async def start(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Run to the end; the ``run_started`` payload."""
    response = await client.post("/agents/a/runs", json=body)
    assert response.status_code == 200, response.text
    return parse(response.text)[0].json


async def test_agents_are_listed_with_their_descriptions(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    tether_app.agent("a", description="Answers")(lambda ctx: scripted().agent())
    tether_app.agent("b")(lambda ctx: scripted().agent())
    response = await client.get("/agents")
    assert response.json() == [
        {
            "name": "a",
            "description": "Answers",
            "available": True,
            "unavailable_reason": None,
            "context_schema": None,
        },
        {
            "name": "b",
            "description": "",
            "available": True,
            "unavailable_reason": None,
            "context_schema": None,
        },
    ]


async def test_an_agent_with_a_context_model_lists_its_json_schema(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    """Issue #18: the UI renders a form for the context from this schema."""

    class Customer(pydantic.BaseModel):
        customer_id: str = pydantic.Field(description="Whose account")
        tier: int = 1

    tether_app.agent("support", context=Customer)(lambda ctx: scripted().agent())
    (listed,) = (await client.get("/agents")).json()
    assert listed["context_schema"] == Customer.model_json_schema()
    assert listed["context_schema"]["required"] == ["customer_id"]


async def test_an_unavailable_agent_is_listed_with_its_fix_and_its_runs_are_refused(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    why = "the embedded model is not installed: pip install 'tether[local]'"
    tether_app.agent("local", unavailable=why)(lambda ctx: scripted().agent())
    listed = (await client.get("/agents")).json()
    started = await client.post("/agents/local/runs", json={"message": "hi"})

    assert listed == [
        {
            "name": "local",
            "description": "",
            "available": False,
            "unavailable_reason": why,
            "context_schema": None,
        }
    ]
    assert started.status_code == 422
    assert started.headers["content-type"] == "application/problem+json"
    assert why in started.json()["detail"]
    assert (await client.get("/agents/local/sessions")).json()["sessions"] == []


async def test_sessions_are_listed_newest_first_in_pages(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted(*([text("ok")] for _ in range(5)))
    tether_app.agent("a")(lambda ctx: model.agent())
    started = [await start(client, {"message": f"m{i}"}) for i in range(5)]
    newest_first = [s["session_id"] for s in reversed(started)]
    first = (await client.get("/agents/a/sessions", params={"limit": 2})).json()
    assert [s["session_id"] for s in first["sessions"]] == newest_first[:2]
    assert first["next_before"] is not None
    params = {"limit": 2, "before": first["next_before"]}
    second = (await client.get("/agents/a/sessions", params=params)).json()
    assert [s["session_id"] for s in second["sessions"]] == newest_first[2:4]
    params = {"limit": 2, "before": second["next_before"]}
    third = (await client.get("/agents/a/sessions", params=params)).json()
    assert [s["session_id"] for s in third["sessions"]] == newest_first[4:]
    assert third["next_before"] is None


async def test_session_detail_has_messages_tool_calls_and_runs(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    def lookup(q: str) -> str:
        return f"found {q}"

    model = scripted([text("Checking."), tool_call("lookup", {"q": "x"})], [text("Done.")])
    tether_app.agent("a")(lambda ctx: model.agent(tools=[lookup]))
    started = await start(client, {"message": "find x"})
    body = (await client.get(f"/sessions/{started['session_id']}")).json()
    assert (body["agent"], body["active_run_id"]) == ("a", None)
    assert [(m["role"], m["content"], m["status"]) for m in body["messages"]] == [
        ("user", "find x", "complete"),
        ("assistant", "Checking.", "complete"),
        ("assistant", "Done.", "complete"),
    ]
    assert body["messages"][1]["tool_calls"] == [
        {
            "call_id": "call_lookup",
            "tool": "lookup",
            "args": {"q": "x"},
            "status": "ok",
            "result": "found x",
            "error": None,
        }
    ]
    assert body["runs"] == [
        {
            "run_id": started["run_id"],
            "status": "completed",
            "reason": None,
            "parent_run_id": None,
            "error": None,
        }
    ]


async def test_session_detail_names_the_active_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run,) = tether_app.engine.runs.values()
        body = (await client.get(f"/sessions/{run.session_id}")).json()
        gate.open()
        await stream.frames()
        assert body["active_run_id"] == run.run_id


async def test_rename_sets_the_title(client: httpx.AsyncClient, tether_app: Tether) -> None:
    model = scripted([text("ok")])
    tether_app.agent("a")(lambda ctx: model.agent())
    session_id = (await start(client, {"message": "hi"}))["session_id"]
    response = await client.patch(f"/sessions/{session_id}", json={"title": "Plans"})
    assert response.json()["title"] == "Plans"
    assert (await client.get(f"/sessions/{session_id}")).json()["title"] == "Plans"


async def test_delete_stops_the_active_run_then_hides_the_session(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run,) = tether_app.engine.runs.values()
        response = await client.delete(f"/sessions/{run.session_id}")
        frames = await stream.frames()
        assert response.status_code == 204
        assert (frames[-1].json["status"], frames[-1].json["reason"]) == ("cancelled", "user")
        assert (await client.get(f"/sessions/{run.session_id}")).status_code == 404
        listed = (await client.get("/agents/a/sessions")).json()["sessions"]
        assert listed == []


async def test_session_cancel_stops_the_active_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("Checking."), tool_call("lookup")])
    tether_app.agent("a")(lambda ctx: model.agent(tools=[parked_tool("lookup", gate)]))
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run,) = tether_app.engine.runs.values()
        response = await client.post(f"/sessions/{run.session_id}/cancel")
        frames = await stream.frames()
        await run.wait_persisted()
        again = await client.post(f"/sessions/{run.session_id}/cancel")
        assert response.json() == {
            "session_id": run.session_id,
            "run_id": run.run_id,
            "accepted": True,
            "status": "cancelled",
        }
        assert frames[-1].json["status"] == "cancelled"
        # Nothing active any more: the stop is held for the session's next run.
        assert (again.json()["run_id"], again.json()["accepted"]) == (None, True)


async def test_session_cancel_before_the_run_exists_stops_it_at_once(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("one")], [text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    session_id = (await start(client, {"message": "hi"}))["session_id"]
    body = {"client_request_id": "req-1"}
    held = await client.post(f"/sessions/{session_id}/cancel", json=body)
    assert held.json() == {
        "session_id": session_id,
        "run_id": None,
        "accepted": True,
        "status": None,
    }
    run_body = {"message": "two", "session_id": session_id, "client_request_id": "req-1"}
    frames = parse((await client.post("/agents/a/runs", json=run_body)).text)
    assert [f.event for f in frames] == ["run_started", "stop_requested", "run_finished"]
    assert (frames[-1].json["status"], frames[-1].json["reason"]) == ("cancelled", "user")
    assert len(model.received) == 1  # the stopped run never reached the model


async def test_session_cancel_of_a_new_session_uses_the_request_id(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    held = await client.post("/sessions/not-created-yet/cancel", json={"client_request_id": "r"})
    assert held.status_code == 200
    frames = parse(
        (await client.post("/agents/a/runs", json={"message": "hi", "client_request_id": "r"})).text
    )
    assert frames[-1].json["status"] == "cancelled"
    assert model.received == []


async def test_session_cancel_by_request_id_finds_a_started_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        body = {"message": "hi", "client_request_id": "req-7"}
        stream = post_in_task(tg, client, "/agents/a/runs", body)
        with anyio.fail_after(5):
            await gate.reached.wait()
        (run,) = tether_app.engine.runs.values()
        response = await client.post(
            "/sessions/unknown/cancel", json={"client_request_id": "req-7"}
        )
        frames = await stream.frames()
        assert response.json()["run_id"] == run.run_id
        assert response.json()["accepted"] is True
        assert frames[-1].json["status"] == "cancelled"
        await run.wait_persisted()
        # After the run, the same request id is answered honestly from the store.
        late = await client.post(
            f"/sessions/{run.session_id}/cancel", json={"client_request_id": "req-7"}
        )
        assert late.json() == {
            "session_id": run.session_id,
            "run_id": run.run_id,
            "accepted": False,
            "status": "cancelled",
        }
