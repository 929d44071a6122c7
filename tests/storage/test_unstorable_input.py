"""One user's awkward text or numbers hurt no one else (issue #15), on SQLite and PostgreSQL.

Over HTTP with two API keys: alice sends random Unicode (NUL, lone surrogates, U+FFFF, emoji)
and numbers (NaN, huge integers) through every text and JSON field she can reach — a message,
a session id, a client request id, a title, a denial message, edited tool arguments — and her
model and tool echo it back as their output. Every answer is a 2xx or a 4xx problem naming the
field, never a 5xx; what alice's runs streamed is what is stored; and bob's runs, between hers,
keep storing their text.
"""

import json
import math
from collections.abc import AsyncIterator, Iterator
from itertools import count
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tests.http._server import eventually
from tests.http._sse import Frame, parse
from tests.http.conftest import ALICE, BOB, KEYS
from tests.storage.conftest import Database
from tether import Settings, Tether
from tether.demo.approvals import register_records_clerk
from tether.http import create_app
from tether.ids import new_id
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore

pytestmark = pytest.mark.anyio

AWKWARD = ["\x00", "\ud800", "\udfff", "\uffff", "\ufffe", "\U0001f600", "\n", '"', "\\"]
awkward_text = st.text(
    st.one_of(st.characters(), st.sampled_from(AWKWARD)), min_size=1, max_size=30
)
awkward_json = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()  # NaN and infinities included
    | st.integers(min_value=-(2**80), max_value=2**80)
    | awkward_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(awkward_text, inner, max_size=3),
    max_leaves=6,
)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)  # pyright: ignore[reportUnknownVariableType]
    return False


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)  # pyright: ignore[reportUnknownVariableType]
    return False


async def _parrot(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """Says back what it was told, then has `inspect` say it back as JSON, then says that."""
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    returns = [p for p in last.parts if isinstance(p, ToolReturnPart)]
    if returns:
        yield f"inspected: {returns[-1].model_response_str()}"
        return
    (prompt,) = [p.content for p in last.parts if isinstance(p, UserPromptPart)]
    assert isinstance(prompt, str)
    yield prompt
    args = json.dumps({"text": prompt})
    yield {0: DeltaToolCall(name="inspect", json_args=args, tool_call_id=new_id("call"))}


def inspect(text: str) -> dict[str, Any]:
    """A tool whose output holds the text, a NaN, an infinity and a 90-bit integer."""
    return {"echo": text, "nan": math.nan, "inf": -math.inf, "big": 2**90, text: [text]}


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    await upgrade_database(database.url, schema=database.schema)
    store = SqlStore.open(database.url, schema=database.schema)
    tether_app = Tether(store=store, settings=Settings(database_url="memory", api_keys=KEYS))
    tether_app.agent("parrot")(
        lambda ctx: Agent(FunctionModel(stream_function=_parrot), tools=[inspect])
    )
    register_records_clerk(tether_app)
    app = create_app(tether_app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
        ):
            yield client
    finally:
        await store.close()


def assert_ok_or_names(response: httpx.Response, *fields: str) -> bool:
    """True on 2xx; else it must be a 422 problem naming one of ``fields``."""
    if response.is_success:
        return True
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    locs = [e["loc"] for e in response.json()["errors"]]
    assert locs, response.text
    assert all(any(f in loc for f in fields) for loc in locs), locs
    return False


def streamed_text(frames: list[Frame]) -> str:
    return "".join(f.json["text"] for f in frames if f.event == "text_delta")


async def stored_assistant_text(
    client: httpx.AsyncClient, session_id: str, user: dict[str, str]
) -> str:
    response = await client.get(f"/sessions/{session_id}", headers=user)
    assert response.status_code == 200, response.text
    messages = response.json()["messages"]
    return "".join(m["content"] for m in messages if m["role"] == "assistant")


async def assert_stored(
    client: httpx.AsyncClient, session_id: str, user: dict[str, str], frames: list[Frame]
) -> None:
    """What the run streamed is what is stored (waited for: the last flush may trail the end)."""
    expected = streamed_text(frames)

    async def stored() -> bool:
        return await stored_assistant_text(client, session_id, user) == expected

    await eventually(stored)


async def bob_runs(client: httpx.AsyncClient, n: int) -> None:
    """Bob's run streams and stores its text, whatever alice did before."""
    response = await client.post(
        "/agents/parrot/runs", json={"message": f"hello from bob {n}"}, headers=BOB
    )
    assert response.status_code == 200, response.text
    frames = parse(response.text)
    assert (frames[-1].event, frames[-1].json["status"]) == ("run_finished", "completed")
    await assert_stored(client, frames[0].json["session_id"], BOB, frames)
    assert f"hello from bob {n}" in streamed_text(frames)


@pytest.fixture
def serial() -> Iterator[int]:
    return count()


async def send(client: httpx.AsyncClient, method: str, url: str, body: Any) -> httpx.Response:
    """Alice's request with ``body`` as JSON, lone surrogates escaped (``\\ud800``), as a browser
    sends them; httpx's own ``json=`` can't encode them."""
    headers = {**ALICE, "content-type": "application/json"}
    return await client.request(method, url, content=json.dumps(body), headers=headers)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=awkward_text, session_id=awkward_text, request_id=awkward_text, title=awkward_text)
async def test_awkward_text_in_runs_and_sessions_hurts_no_one_else(
    client: httpx.AsyncClient,
    serial: Iterator[int],
    message: str,
    session_id: str,
    request_id: str,
    title: str,
) -> None:
    n = next(serial)
    body = {"message": message, "client_request_id": request_id}
    response = await send(client, "POST", "/agents/parrot/runs", body)
    if assert_ok_or_names(response, "message", "client_request_id"):
        assert not _has_surrogate(body)
        frames = parse(response.text)
        assert frames[-1].event == "run_finished", frames[-1]
        assert frames[-1].json["status"] == "completed", frames[-1]
        started = frames[0].json["session_id"]
        await assert_stored(client, started, ALICE, frames)
        renamed = await send(client, "PATCH", f"/sessions/{started}", {"title": title})
        if assert_ok_or_names(renamed, "title"):
            got = await client.get(f"/sessions/{started}", headers=ALICE)
            assert got.json()["title"] == title
        stopped = await send(
            client, "POST", f"/sessions/{started}/cancel", {"client_request_id": request_id}
        )
        assert stopped.status_code == 200, stopped.text
    else:
        assert _has_surrogate(body)
    # An unknown session, however spelt, is not found (or refused, naming the field).
    unknown = await send(
        client, "POST", "/agents/parrot/runs", {"message": "hi", "session_id": session_id}
    )
    if unknown.status_code != 404:
        assert not assert_ok_or_names(unknown, "session_id")
    await bob_runs(client, n)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=awkward_text, args=st.dictionaries(awkward_text, awkward_json, max_size=3))
# A resume refused (a lone surrogate in `args`), then a cancel while the pause is still being
# stored: the stop-latency watcher once waited on the paused run and took the app down.
@example(message="x", args={"\udffe": 1})
async def test_awkward_decisions_hurt_no_one_else(
    client: httpx.AsyncClient, serial: Iterator[int], message: str, args: dict[str, Any]
) -> None:
    n = next(serial)
    for decision in ({"approved": False, "message": message}, {"approved": True, "args": args}):
        started = await client.post(
            "/agents/records-clerk/runs", json={"message": "delete R-1"}, headers=ALICE
        )
        paused = parse(started.text)[-1]
        assert paused.event == "run_paused"
        (call,) = paused.json["calls"]
        body = {"decisions": [{"call_id": call["call_id"], **decision}]}
        # Sent as Python's JSON (NaN and Infinity literals included), as a careless client might.
        response = await client.post(
            f"/runs/{paused.json['run_id']}/resume",
            content=json.dumps(body),
            headers={**ALICE, "content-type": "application/json"},
        )
        if assert_ok_or_names(response, "message", "args"):
            assert not _has_surrogate(body)
            assert not _has_non_finite(body)
            assert parse(response.text)[-1].event == "run_finished"
        else:
            assert _has_surrogate(body) or _has_non_finite(body)
            cancelled = await client.post(
                f"/runs/{paused.json['run_id']}/cancel", json={}, headers=ALICE
            )
            assert cancelled.status_code == 200, cancelled.text
    await bob_runs(client, n)


async def test_nan_in_a_request_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    body = '{"message": "hi", "context": {"n": NaN}}'
    response = await client.post(
        "/agents/parrot/runs",
        content=body,
        headers={**ALICE, "content-type": "application/json"},
    )
    assert not assert_ok_or_names(response, "context")


async def test_seqs_past_32_bits_replay_nothing_rather_than_fail(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/agents/parrot/runs", json={"message": "hi"}, headers=ALICE)
    end = parse(response.text)[-1]
    run_id = end.json["run_id"]

    async def end_is_stored() -> bool:
        # Bounded: until its final write lands, the run is still this worker's to stream.
        with anyio.move_on_after(0.5):
            seen = await client.get(f"/runs/{run_id}/events?after={end.seq}", headers=ALICE)
            return seen.status_code == 204
        return False

    await eventually(end_is_stored)
    after = await client.get(f"/runs/{run_id}/events", params={"after": 2**31}, headers=ALICE)
    assert after.status_code == 204, after.text
    last = await client.get(
        f"/runs/{run_id}/events", headers={**ALICE, "Last-Event-ID": str(2**62)}
    )
    assert last.status_code == 204, last.text
