"""What the OpenAPI says is what the server takes (issue #15, item 7)."""

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_cancel_wait_must_be_a_boolean(client: httpx.AsyncClient) -> None:
    response = await client.post("/runs/run_x/cancel", json={"wait": 0})
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "wait"]]


async def test_sessions_before_must_be_iso_8601(client: httpx.AsyncClient) -> None:
    numeric = await client.get("/agents/assistant/sessions", params={"before": "0.5"})
    assert numeric.status_code == 400, numeric.text
    assert numeric.json()["errors"][0]["loc"] == ["query", "before"]
    iso = await client.get("/agents/assistant/sessions", params={"before": "2026-01-01T00:00Z"})
    assert iso.status_code != 400, iso.text


async def test_last_event_id_schema_matches_what_the_server_takes(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    parameters = spec["paths"]["/runs/{run_id}/events"]["get"]["parameters"]
    (header,) = [p for p in parameters if p["name"].lower() == "last-event-id"]
    schema = header["schema"]
    assert (schema["maxLength"], schema["pattern"]) == (19, "^[0-9]{1,19}$")
    after = next(p for p in parameters if p["name"] == "after")["schema"]["anyOf"][0]
    assert after["maximum"] == 2**62
    too_long = await client.get("/runs/run_x/events", headers={"Last-Event-ID": "9" * 20})
    assert too_long.status_code == 400, too_long.text


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/sessions/s1", "DELETE, GET, PATCH"), ("/runs/r1/cancel", "POST")],
)
async def test_method_not_allowed_lists_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    response = await client.request("OPTIONS", path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
