"""Issue #18's session routes on every store: all sessions, rollback, busy, hand-set titles.

Another user's session answers 404 on each, exactly like a missing one.
"""

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from tests.http._sse import parse
from tests.http._streams import post_in_task
from tests.scripted import Gate, scripted, text
from tether import Settings, Tether
from tether.http import create_app
from tether.storage.store import Store

pytestmark = pytest.mark.anyio

ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
BUSY = "This chat is still answering. Stop it or wait for it to finish."


@pytest.fixture
def tether_app(store: Store) -> Tether:
    settings = Settings(database_url="memory", api_keys="key-alice:alice,key-bob:bob")
    return Tether(store=store, settings=settings)


@pytest.fixture
async def client(tether_app: Tether) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(tether_app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=ALICE
        ) as client:
            yield client


async def run(client: httpx.AsyncClient, agent: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run to the end; the ``run_started`` payload."""
    response = await client.post(f"/agents/{agent}/runs", json=body)
    assert response.status_code == 200, response.text
    return parse(response.text)[0].json


async def test_all_sessions_lists_every_agents_sessions_newest_first_in_pages(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted(*([text("ok")] for _ in range(3)))
    tether_app.agent("a")(lambda ctx: model.agent())
    tether_app.agent("b")(lambda ctx: model.agent())
    first = await run(client, "a", {"message": "Plan a trip to Lisbon"})
    second = await run(client, "b", {"message": "Fix my bike"})
    third = await run(
        client, "a", {"message": "More about Lisbon", "session_id": first["session_id"]}
    )
    assert third["session_id"] == first["session_id"]

    page = (await client.get("/sessions", params={"limit": 1})).json()
    rest = (await client.get("/sessions", params={"before": page["next_before"]})).json()
    bobs = (await client.get("/sessions", headers=BOB)).json()

    listed = page["sessions"] + rest["sessions"]
    assert [(s["session_id"], s["agent"], s["title"]) for s in listed] == [
        (first["session_id"], "a", "Plan a trip to Lisbon"),
        (second["session_id"], "b", "Fix my bike"),
    ]
    assert all(s["updated_at"] >= s["created_at"] for s in listed)
    assert rest["next_before"] is None
    assert bobs == {"sessions": [], "next_before": None}


async def test_rollback_discards_the_last_turn_and_returns_its_message(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("Paris.")], [text("Rome?")], [text("Berlin.")])
    tether_app.agent("a")(lambda ctx: model.agent())
    first = await run(client, "a", {"message": "Capital of France?"})
    session_id = first["session_id"]
    second = await run(client, "a", {"message": "Capital of Germany?", "session_id": session_id})

    response = await client.post(
        f"/sessions/{session_id}/rollback", json={"run_id": second["run_id"]}
    )
    detail = (await client.get(f"/sessions/{session_id}")).json()
    # Regenerate: the same question again; the model must not see the discarded turn.
    await run(client, "a", {"message": "Capital of Germany?", "session_id": session_id})

    assert response.status_code == 200, response.text
    assert response.json() == {"run_id": second["run_id"], "message": "Capital of Germany?"}
    assert [m["content"] for m in detail["messages"]] == ["Capital of France?", "Paris."]
    assert [r["run_id"] for r in detail["runs"]] == [first["run_id"]]
    seen = [str(m) for m in model.received[2]]
    assert any("Paris." in m for m in seen)
    assert not any("Rome?" in m for m in seen)


async def test_rollback_of_an_earlier_turn_or_twice_is_refused(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("one")], [text("two")])
    tether_app.agent("a")(lambda ctx: model.agent())
    first = await run(client, "a", {"message": "1"})
    session_id = first["session_id"]
    second = await run(client, "a", {"message": "2", "session_id": session_id})
    path = f"/sessions/{session_id}/rollback"

    earlier = await client.post(path, json={"run_id": first["run_id"]})
    last = await client.post(path, json={"run_id": second["run_id"]})
    again = await client.post(path, json={"run_id": second["run_id"]})

    assert earlier.status_code == 409
    assert earlier.headers["content-type"] == "application/problem+json"
    assert "not the session's last turn" in earlier.json()["detail"]
    assert last.status_code == 200
    assert again.status_code == 404


async def test_rollback_while_a_run_is_active_is_a_conflict(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("one")], [text("two"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    first = await run(client, "a", {"message": "1"})
    session_id = first["session_id"]
    async with anyio.create_task_group() as tg:
        stream = post_in_task(
            tg, client, "/agents/a/runs", {"message": "2", "session_id": session_id}
        )
        with anyio.fail_after(5):
            await gate.reached.wait()
        refused = await client.post(
            f"/sessions/{session_id}/rollback", json={"run_id": first["run_id"]}
        )
        (active,) = tether_app.engine.runs.values()
        assert refused.status_code == 409
        assert refused.json()["active_run_id"] == active.run_id
        gate.open()
        await stream.frames()
    assert len((await client.get(f"/sessions/{session_id}")).json()["messages"]) == 4


async def test_a_message_to_a_busy_chat_is_refused_in_words_with_the_active_run(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    gate = Gate()
    model = scripted([text("one"), gate])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with anyio.create_task_group() as tg:
        stream = post_in_task(tg, client, "/agents/a/runs", {"message": "1"})
        with anyio.fail_after(5):
            await gate.reached.wait()
        (active,) = tether_app.engine.runs.values()
        busy = await client.post(
            "/agents/a/runs", json={"message": "2", "session_id": active.session_id}
        )
        gate.open()
        await stream.frames()
        assert busy.status_code == 409
        assert busy.headers["content-type"] == "application/problem+json"
        assert busy.json()["detail"] == BUSY
        assert busy.json()["active_run_id"] == active.run_id


async def test_another_users_session_is_not_found_on_every_new_route(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("ok")])
    tether_app.agent("a")(lambda ctx: model.agent())
    mine = await run(client, "a", {"message": "private"})
    session_id = mine["session_id"]

    rollback = await client.post(
        f"/sessions/{session_id}/rollback", json={"run_id": mine["run_id"]}, headers=BOB
    )
    feed = await client.get(f"/sessions/{session_id}/events", headers=BOB)
    rename = await client.patch(f"/sessions/{session_id}", json={"title": "x"}, headers=BOB)

    assert [rollback.status_code, feed.status_code, rename.status_code] == [404, 404, 404]
    assert len((await client.get(f"/sessions/{session_id}")).json()["messages"]) == 2
