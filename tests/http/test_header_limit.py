"""Oversized request headers are refused with 431 problem+json; ordinary ones pass (issue #15).

And a started run's answer says where the run is (``Location``), for clients and schemathesis.
"""

import httpx
import pytest

from tests.http.contract_app import AGENT, echo_agent
from tether import Tether
from tether.http.limits import MAX_HEADER_BYTES

pytestmark = pytest.mark.anyio


@pytest.fixture
def tether_app(tether_app: Tether) -> Tether:
    tether_app.agent(AGENT)(echo_agent)
    return tether_app


async def test_100_kb_of_headers_answer_431(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Big": "a" * 100_000})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 431


async def test_headers_just_under_the_limit_pass(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Big": "a" * (MAX_HEADER_BYTES // 2)})
    assert response.status_code == 200


async def test_a_started_run_says_where_it_is(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/agents/{AGENT}/runs", json={"message": "hi"})
    assert response.status_code == 200, response.text
    assert response.headers["location"] == f"/runs/{response.headers['x-run-id']}"
    run = await client.get(response.headers["location"])
    assert run.json()["session_id"] == response.headers["x-session-id"]
