"""API keys, per-user isolation on every route, and local mode's loopback-only guard."""

from typing import Any

import anyio
import httpx
import pytest

from tests.http._sse import parse
from tests.http._streams import post_in_task
from tests.http.conftest import ALICE, BOB, KEYS
from tests.scripted import Gate, scripted, text
from tether import Settings, Tether
from tether.errors import UsageError
from tether.http import check_bind, create_app

pytestmark = pytest.mark.anyio

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/agents", None),
    ("GET", "/agents/a/sessions", None),
    ("POST", "/agents/a/runs", {"message": "hi"}),
    ("POST", "/runs/r/cancel", {}),
    ("GET", "/runs/r", None),
    ("GET", "/runs/r/events", None),
    ("GET", "/sessions/s", None),
    ("PATCH", "/sessions/s", {"title": "t"}),
    ("DELETE", "/sessions/s", None),
    ("POST", "/sessions/s/cancel", {}),
    ("GET", "/sessions", None),
    ("GET", "/sessions/s/events", None),
    ("POST", "/sessions/s/rollback", {"run_id": "r"}),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic a2V5LWFsaWNl"}],
    ids=["none", "bad-key", "not-bearer"],
)
async def test_every_api_route_needs_a_valid_key(
    keyed_client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    response = await keyed_client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_config_and_health_need_no_key(keyed_client: httpx.AsyncClient) -> None:
    assert (await keyed_client.get("/config")).json() == {"auth_required": True}
    assert (await keyed_client.get("/healthz")).json() == {"status": "ok"}


async def test_local_mode_needs_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/config")).json() == {"auth_required": False}
    assert (await client.get("/agents")).status_code == 200


async def test_another_users_runs_and_sessions_are_not_found_on_every_route(
    keyed_client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("done")], [text("a"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    done = await keyed_client.post("/agents/a/runs", json={"message": "hi"}, headers=ALICE)
    finished = parse(done.text)[0].json
    async with anyio.create_task_group() as tg:
        body = {"message": "more", "session_id": finished["session_id"]}
        stream = post_in_task(tg, keyed_client, "/agents/a/runs", body, headers=ALICE)
        with anyio.fail_after(5):
            await gate.reached.wait()
        (live,) = tether_app.engine.runs
        session = finished["session_id"]
        requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", "/agents/a/runs", {"message": "x", "session_id": session}),
            ("POST", f"/runs/{live}/cancel", {}),
            ("POST", f"/runs/{finished['run_id']}/cancel", {}),
            ("GET", f"/runs/{live}", None),
            ("GET", f"/runs/{finished['run_id']}", None),
            ("GET", f"/runs/{live}/events", None),
            ("GET", f"/runs/{finished['run_id']}/events", None),
            ("GET", f"/sessions/{session}", None),
            ("PATCH", f"/sessions/{session}", {"title": "mine now"}),
            ("DELETE", f"/sessions/{session}", None),
            ("POST", f"/sessions/{session}/cancel", {}),
            ("POST", f"/sessions/{session}/cancel", {"client_request_id": "c"}),
            ("GET", f"/sessions/{session}/events", None),
            ("POST", f"/sessions/{session}/rollback", {"run_id": finished["run_id"]}),
        ]
        for method, path, request_body in requests:
            response = await keyed_client.request(method, path, json=request_body, headers=BOB)
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        listed = await keyed_client.get("/agents/a/sessions", headers=BOB)
        assert listed.json() == {"sessions": [], "next_before": None}
        everything = await keyed_client.get("/sessions", headers=BOB)
        assert everything.json() == {"sessions": [], "next_before": None}
        # Nothing Bob did touched Alice's run or session.
        assert tether_app.engine.runs[live].outcome is None
        mine = await keyed_client.get(f"/sessions/{session}", headers=ALICE)
        assert mine.json()["title"] == "hi"  # its first message, not what Bob set
        gate.open()
        frames = await stream.frames()
        assert frames[-1].json["status"] == "completed"
        listed = await keyed_client.get("/agents/a/sessions", headers=ALICE)
        assert [s["session_id"] for s in listed.json()["sessions"]] == [session]


async def test_a_run_is_started_as_the_keys_user(
    keyed_client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("ok")])
    tether_app.agent("a")(lambda ctx: model.agent())
    response = await keyed_client.post("/agents/a/runs", json={"message": "hi"}, headers=BOB)
    record = await tether_app.store.get_run(parse(response.text)[0].json["run_id"])
    assert record is not None
    assert record.user_id == "bob"


async def test_local_mode_refuses_peers_that_are_not_loopback(tether_app: Tether) -> None:
    app = create_app(tether_app)
    transport = httpx.ASGITransport(app, client=("203.0.113.7", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.get("/agents")
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"


async def test_local_mode_serves_remote_peers_when_explicitly_allowed(tether_app: Tether) -> None:
    app = create_app(tether_app, allow_remote=True)
    transport = httpx.ASGITransport(app, client=("203.0.113.7", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        assert (await client.get("/agents")).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_check_bind_allows_loopback_without_keys(host: str) -> None:
    check_bind(host, Settings(), allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_check_bind_refuses_other_hosts_without_keys(host: str) -> None:
    with pytest.raises(UsageError, match="without API keys"):
        check_bind(host, Settings(), allow_remote=False)


def test_check_bind_allows_any_host_with_keys_or_when_allowed() -> None:
    check_bind("0.0.0.0", Settings(api_keys=KEYS), allow_remote=False)
    check_bind("0.0.0.0", Settings(), allow_remote=True)


@pytest.mark.parametrize("spec", ["justakey", "k:", ":user", "k:a,k:b"])
def test_malformed_api_keys_are_refused(spec: str) -> None:
    with pytest.raises(UsageError):
        create_app(Tether(), settings=Settings(api_keys=spec))
