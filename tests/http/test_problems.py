"""Every bad input is a problem+json 4xx; health and metrics."""

from typing import Any

import anyio
import httpx
import pydantic
import pytest

from tests.http._sse import parse
from tests.http._streams import post_in_task
from tests.scripted import Gate, scripted, text
from tether import Settings, Tether
from tether.http import create_app
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


class Ctx(pydantic.BaseModel):
    tenant: str
    limit: int = 3


@pytest.fixture
def agents(tether_app: Tether) -> None:
    model = scripted(*([text("ok")] for _ in range(3)))
    tether_app.agent("a")(lambda ctx: model.agent())
    tether_app.agent("b")(lambda ctx: model.agent())
    tether_app.agent("with_ctx", context=Ctx)(lambda ctx: model.agent())


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:tether:problem:")
    assert body["title"]
    assert isinstance(body["detail"], str)
    return body


@pytest.mark.usefixtures("agents")
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/agents/nope/runs", {"message": "hi"}, 404),
        ("/agents/a/runs", {"message": "hi", "session_id": "ses_missing"}, 404),
        ("/agents/a/runs", {"message": ""}, 422),
        ("/agents/a/runs", {}, 422),
        ("/agents/a/runs", {"message": 3}, 422),
        ("/agents/a/runs", {"message": "hi", "sessionId": "x"}, 422),
        ("/agents/a/runs", {"message": "hi", "if_busy": "queue"}, 422),
        ("/agents/a/runs", {"message": "hi", "on_disconnect": "ignore"}, 422),
        ("/agents/a/runs", {"message": "hi", "context": {"tenant": "t"}}, 422),
        ("/agents/a/runs", {"message": "hi", "context": "text"}, 422),
        ("/agents/with_ctx/runs", {"message": "hi", "context": {"limit": 2}}, 422),
        ("/agents/with_ctx/runs", {"message": "hi", "context": {"tenant": 1}}, 422),
        ("/agents/a/runs", {"message": "hi", "client_request_id": "x" * 500}, 422),
        ("/runs/run_missing/cancel", {}, 404),
        ("/runs/run_missing/cancel", {"reason": "shutdown"}, 422),
        ("/runs/run_missing/cancel", {"mode": "later"}, 422),
        ("/sessions/ses_missing/cancel", {}, 404),
    ],
)
async def test_bad_posts_are_problems(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int
) -> None:
    assert_problem(await client.post(path, json=body), status)


@pytest.mark.usefixtures("agents")
async def test_invalid_context_says_what_is_wrong(client: httpx.AsyncClient) -> None:
    body = {"message": "hi", "context": {"limit": "many"}}
    problem = assert_problem(await client.post("/agents/with_ctx/runs", json=body), 422)
    assert {tuple(e["loc"]) for e in problem["errors"]} == {("tenant",), ("limit",)}


@pytest.mark.usefixtures("agents")
async def test_a_valid_context_is_accepted(client: httpx.AsyncClient) -> None:
    body = {"message": "hi", "context": {"tenant": "acme"}}
    response = await client.post("/agents/with_ctx/runs", json=body)
    assert parse(response.text)[-1].json["status"] == "completed"


@pytest.mark.usefixtures("agents")
async def test_an_oversize_message_is_refused(tether_app: Tether) -> None:
    app = create_app(tether_app, settings=Settings(database_url="memory", max_message_chars=10))
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        problem = assert_problem(
            await client.post("/agents/a/runs", json={"message": "x" * 11}), 422
        )
        assert problem["limit"] == 10
        ok = await client.post("/agents/a/runs", json={"message": "x" * 10})
        assert ok.status_code == 200


@pytest.mark.usefixtures("agents")
@pytest.mark.parametrize(
    "content",
    [b"{bad", b'{"message": "hi"', b"", b"\xff\xfe"],
    ids=["bad", "cut", "empty", "binary"],
)
async def test_malformed_json_is_a_bad_request(client: httpx.AsyncClient, content: bytes) -> None:
    headers = {"content-type": "application/json"}
    response = await client.post("/agents/a/runs", content=content, headers=headers)
    assert response.status_code in (400, 422)
    assert_problem(response, response.status_code)
    if content:
        assert response.status_code == 400


@pytest.mark.usefixtures("agents")
async def test_a_session_of_another_agent_is_a_conflict(client: httpx.AsyncClient) -> None:
    started = parse((await client.post("/agents/a/runs", json={"message": "hi"})).text)
    body = {"message": "hi", "session_id": started[0].json["session_id"]}
    assert_problem(await client.post("/agents/b/runs", json=body), 409)


@pytest.mark.usefixtures("agents")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/runs/run_missing"),
        ("GET", "/runs/run_missing/events"),
        ("GET", "/sessions/ses_missing"),
        ("DELETE", "/sessions/ses_missing"),
        ("GET", "/agents/nope/sessions"),
        ("GET", "/no/such/route"),
    ],
)
async def test_unknown_ids_and_routes_are_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_problem(await client.request(method, path), 404)


@pytest.mark.usefixtures("agents")
async def test_renaming_an_unknown_session_is_not_found(client: httpx.AsyncClient) -> None:
    assert_problem(await client.patch("/sessions/ses_missing", json={"title": "x"}), 404)
    assert_problem(await client.patch("/sessions/ses_missing", json={"title": ""}), 422)


async def test_a_wrong_method_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/agents"), 405)


@pytest.mark.usefixtures("agents")
@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({b"Last-Event-ID": b"abc"}, {}),
        ({b"Last-Event-ID": b"-1"}, {}),
        ({b"Last-Event-ID": b"1.5"}, {}),
        ({b"Last-Event-ID": b"9" * 40}, {}),
        ({b"Last-Event-ID": "١٢".encode()}, {}),
        ({}, {"after": "abc"}),
        ({}, {"after": "-2"}),
    ],
)
async def test_a_bad_resume_point_is_a_bad_request(
    client: httpx.AsyncClient, headers: dict[bytes, bytes], params: dict[str, str]
) -> None:
    started = parse((await client.post("/agents/a/runs", json={"message": "hi"})).text)
    path = f"/runs/{started[0].json['run_id']}/events"
    assert_problem(await client.get(path, headers=headers, params=params), 400)


@pytest.mark.usefixtures("agents")
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "x"},
        {"before": "yesterday"},
        {"before": "2024-01-01T00:00:00"},
    ],
)
async def test_bad_listing_parameters_are_bad_requests(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    assert_problem(await client.get("/agents/a/sessions", params=params), 400)


async def test_health_is_unavailable_outside_the_lifespan() -> None:
    tether_app = Tether(store=MemoryStore())
    tether_app.agent("a")(lambda ctx: scripted().agent())
    app = create_app(tether_app)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert_problem(await client.get("/healthz"), 503)
        assert_problem(await client.get("/agents/a/sessions"), 503)
        assert (await client.get("/config")).status_code == 200


async def test_health_is_ok_while_running(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_metrics_count_runs_stops_and_streams(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("ok")], [text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    await client.post("/agents/a/runs", json={"message": "hi"})
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "hi"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        live = (await client.get("/metrics")).text
        assert "tether_active_runs 1.0" in live
        assert "tether_stream_clients 1.0" in live
        (run_id,) = tether_app.engine.runs
        await client.post(f"/runs/{run_id}/cancel", json={"wait": True})
        await stream.frames()
    await anyio.wait_all_tasks_blocked()  # the watcher tasks have seen the runs end
    text_ = (await client.get("/metrics")).text
    assert 'tether_stop_latency_seconds_count{reason="user"} 1.0' in text_
    assert 'tether_runs_started_total{agent="a"} 2.0' in text_
    assert 'tether_runs_finished_total{reason="none",status="completed"} 1.0' in text_
    assert 'tether_runs_finished_total{reason="user",status="cancelled"} 1.0' in text_
    assert "tether_active_runs 0.0" in text_
    assert "tether_stream_clients 0.0" in text_


async def test_the_ui_is_served_or_replaced_by_a_pointer_to_the_docs(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
