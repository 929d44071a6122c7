"""A message sent behind a run paused for approval gets an answer at once (issue #15).

``if_busy: enqueue`` used to wait 30 s for a run only a person can end, then answer 500. Now it
is a 409 naming the paused run; ``interrupt`` cancels it (reason ``superseded``) and starts the
new run. SQLite and PostgreSQL.
"""

import anyio
import httpx
import pytest

from tests.http._sse import parse
from tests.http.conftest import ALICE
from tests.storage.test_unstorable_input import client

__all__ = ["client"]  # the fixture, shared with the other HTTP-on-SQL tests

pytestmark = pytest.mark.anyio


async def start_paused(client: httpx.AsyncClient) -> tuple[str, str]:
    response = await client.post(
        "/agents/records-clerk/runs", json={"message": "delete R-7"}, headers=ALICE
    )
    frames = parse(response.text)
    assert frames[-1].event == "run_paused", frames[-1]
    return frames[0].json["run_id"], frames[0].json["session_id"]


async def test_enqueue_behind_a_paused_run_is_a_409_naming_it(client: httpx.AsyncClient) -> None:
    run_id, session_id = await start_paused(client)
    body = {"message": "next", "session_id": session_id, "if_busy": "enqueue"}
    with anyio.fail_after(5):
        response = await client.post("/agents/records-clerk/runs", json=body, headers=ALICE)
    assert response.status_code == 409, response.text
    problem = response.json()
    assert (problem["active_run_id"], problem["run_status"]) == (run_id, "paused")
    assert "approval" in problem["detail"]
    run = (await client.get(f"/runs/{run_id}", headers=ALICE)).json()
    assert run["status"] == "paused"


async def test_interrupt_behind_a_paused_run_cancels_it_and_starts(
    client: httpx.AsyncClient,
) -> None:
    run_id, session_id = await start_paused(client)
    body = {"message": "delete R-8", "session_id": session_id, "if_busy": "interrupt"}
    with anyio.fail_after(5):
        response = await client.post("/agents/records-clerk/runs", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    assert parse(response.text)[-1].event == "run_paused"
    run = (await client.get(f"/runs/{run_id}", headers=ALICE)).json()
    assert (run["status"], run["reason"]) == ("cancelled", "superseded")
