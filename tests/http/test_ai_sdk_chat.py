"""The AI SDK UI message stream (#17) on a real server: turn, drop, resumable drop, stop, resume.

Each test checks the wire (the parts ``readUIMessageStream`` reads) and tether's record.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from tests.approvals import Outbox
from tests.http._server import serving
from tests.scripted import Gate, scripted, text, tool_call
from tether import Settings, Tether
from tether.http import create_app
from tether.ids import RunId, SessionId
from tether.records import RunRecord
from tether.storage.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def tether_app() -> Tether:
    return Tether(store=MemoryStore(), settings=Settings(database_url="memory"))


@pytest.fixture
async def http(tether_app: Tether) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(tether_app)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


def body(chat_id: str, message: str, **extra: Any) -> dict[str, Any]:
    parts = [{"type": "text", "text": message}]
    user = {"id": "m1", "role": "user", "parts": parts}
    return {"id": chat_id, "messages": [user], "trigger": "submit-message", **extra}


def parts_of(raw: str) -> list[Any]:
    lines = [x[len("data: ") :] for x in raw.split("\n") if x.startswith("data: ")]
    return [x if x == "[DONE]" else json.loads(x) for x in lines]


async def read_parts(lines: AsyncIterator[str], until: str) -> list[Any]:
    seen: list[Any] = []
    with anyio.fail_after(5):
        async for line in lines:
            if line.startswith("data: "):
                seen.extend(parts_of(line))
                if types(seen[-1:]) == [until]:
                    return seen
    raise AssertionError(f"no {until}: {seen}")


async def terminal(tether_app: Tether, run_id: str) -> RunRecord:
    with anyio.fail_after(5):
        return await tether_app.engine.wait_terminal(RunId(run_id))


def types(parts: list[Any]) -> list[str]:
    return [p if isinstance(p, str) else p["type"] for p in parts]


async def test_a_turn_streams_text_and_finish_and_stores_it(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    model = scripted([text("Hello "), text("world")])
    tether_app.agent("a")(lambda ctx: model.agent())
    response = await http.post("/agents/a/chat", json=body("chat-1", "hi"))
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = parts_of(response.text)
    assert types(parts) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
        "[DONE]",
    ]
    run_id = response.headers["x-tether-run-id"]
    assert parts[0]["messageId"] == run_id
    assert (await terminal(tether_app, run_id)).status == "completed"
    stored = await tether_app.engine.store.messages(SessionId("chat-1"))
    assert [m.content for m in stored if m.role == "assistant"] == ["Hello world"]


async def test_a_dropped_response_cancels_the_run_and_the_next_turn_sees_the_partial_text(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")], [text("ok")])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with http.stream("POST", "/agents/a/chat", json=body("chat-2", "hi")) as response:
        await read_parts(response.aiter_lines(), "text-delta")
        run_id = response.headers["x-tether-run-id"]
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "disconnect")
    second = parts_of((await http.post("/agents/a/chat", json=body("chat-2", "again"))).text)
    assert types(second)[-2:] == ["finish", "[DONE]"]
    assert "Hello " in repr(model.received[1])


async def test_a_resumable_chat_survives_a_drop_resumes_and_stops_at_the_stop_endpoint(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    gate = Gate()
    model = scripted([text("Hello "), gate, text("never")])
    tether_app.agent("a")(lambda ctx: model.agent())
    request = body("chat-3", "hi", resumable=True)
    async with http.stream("POST", "/agents/a/chat", json=request) as response:
        first = await read_parts(response.aiter_lines(), "text-delta")
        run_id = response.headers["x-tether-run-id"]
    with anyio.fail_after(5):
        await gate.reached.wait()
    assert tether_app.handle(run_id) is not None  # the run goes on
    async with http.stream("GET", "/agents/a/chat/chat-3/stream") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        replayed = await read_parts(lines, "text-delta")
        assert replayed == first
        stop = await http.post("/agents/a/chat/chat-3/stop")
        assert stop.json()["accepted"] is True
        with anyio.fail_after(5):
            rest = parts_of("\n".join([line async for line in lines]))
    assert types(rest) == ["text-end", "abort", "[DONE]"]
    assert rest[1]["reason"] == "user"
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "user")
    assert (await http.get("/agents/a/chat/chat-3/stream")).status_code == 204


async def test_resuming_the_stream_of_a_run_resumed_after_approval_replays_both_legs(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    """A reconnect rebuilds the whole message: tool call, approval, result, then the text."""
    outbox, gate = Outbox(), Gate()
    call = {"to": "ann@example.com", "body": "hi"}
    model = scripted([tool_call("send_email", call, call_id="call-1")], [text("Sent. "), gate])
    tether_app.agent("a")(lambda ctx: model.agent(tools=[outbox.tool()]))
    paused = parts_of((await http.post("/agents/a/chat", json=body("chat-4", "mail ann"))).text)
    part = {"type": "tool-send_email", "toolCallId": "call-1", "state": "approval-responded"}
    answered = {
        "id": paused[0]["messageId"],
        "role": "assistant",
        "parts": [{**part, "input": call, "approval": {"id": "call-1", "approved": True}}],
    }
    approval = {"id": "chat-4", "messages": [answered], "trigger": "submit-message"}
    async with http.stream("POST", "/agents/a/chat", json={**approval, "resumable": True}):
        with anyio.fail_after(5):
            await gate.reached.wait()
    async with http.stream("GET", "/agents/a/chat/chat-4/stream") as response:
        lines = response.aiter_lines()
        replayed = await read_parts(lines, "text-delta")
        gate.open()
        with anyio.fail_after(5):
            rest = parts_of("\n".join([line async for line in lines]))
    assert types(replayed) == [
        "start",
        "start-step",
        "tool-input-available",
        "tool-approval-request",
        "finish-step",
        "start-step",
        "tool-output-available",
        "text-start",
        "text-delta",
    ]
    assert types(rest) == ["text-end", "finish-step", "finish", "[DONE]"]
    assert outbox.sent == [call]


async def test_an_approval_response_while_the_run_streams_answers_409(
    tether_app: Tether, http: httpx.AsyncClient
) -> None:
    model = scripted([text("Hello "), Gate()])
    tether_app.agent("a")(lambda ctx: model.agent())
    async with http.stream("POST", "/agents/a/chat", json=body("chat-5", "hi")) as response:
        await read_parts(response.aiter_lines(), "text-delta")
        run_id = response.headers["x-tether-run-id"]
        part = {"type": "tool-x", "toolCallId": "c", "state": "approval-responded"}
        answered = {
            "id": "a",
            "role": "assistant",
            "parts": [{**part, "approval": {"id": "c", "approved": True}}],
        }
        approval = {"id": "chat-5", "messages": [answered], "trigger": "submit-message"}
        refused = await http.post("/agents/a/chat", json=approval)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert (await http.post("/agents/a/chat/chat-5/stop")).json()["accepted"] is True
    record = await terminal(tether_app, run_id)
    assert (record.status, record.reason) == ("cancelled", "user")


async def test_another_users_chat_is_not_found(tether_app: Tether, http: httpx.AsyncClient) -> None:
    assert (await http.post("/agents/a/chat/nope/stop")).status_code == 404
    assert (await http.get("/agents/a/chat/nope/stream")).status_code == 404
    bad: dict[str, Any] = {"id": "c", "messages": [], "trigger": "submit-message"}
    assert (await http.post("/agents/a/chat", json=bad)).status_code == 422
