"""A stop held before its run exists is the sender's own (issue #15).

Another user sending a stop with the same ``client_request_id`` neither takes nor replaces it:
the first user's run is still stopped when it starts.
"""

import httpx
import pytest
from pydantic_ai import Agent
from pydantic_ai.models.function import FunctionModel

from tests.http._sse import parse
from tests.http.conftest import ALICE, BOB
from tests.storage.test_unstorable_input import _parrot, inspect  # pyright: ignore[reportPrivateUsage]
from tether import Tether

pytestmark = pytest.mark.anyio


@pytest.fixture
def tether_app(tether_app: Tether) -> Tether:
    tether_app.agent("parrot")(
        lambda ctx: Agent(FunctionModel(stream_function=_parrot), tools=[inspect])
    )
    return tether_app


async def test_a_held_stop_is_not_taken_by_another_user_with_the_same_request_id(
    keyed_client: httpx.AsyncClient,
) -> None:
    held = {"client_request_id": "req-1"}
    for user in (ALICE, BOB):
        response = await keyed_client.post("/sessions/new/cancel", json=held, headers=user)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] is True

    bobs = await keyed_client.post(
        "/agents/parrot/runs", json={"message": "hi", **held}, headers=BOB
    )
    alices = await keyed_client.post(
        "/agents/parrot/runs", json={"message": "hi", **held}, headers=ALICE
    )
    for response in (bobs, alices):
        end = parse(response.text)[-1]
        assert (end.event, end.json["status"], end.json["reason"]) == (
            "run_finished",
            "cancelled",
            "user",
        )
