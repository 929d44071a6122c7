"""A run that pauses for approval, as each chat protocol carries it (#17)."""

import json
from typing import Any

import httpx
import pytest

from tests.approvals import Outbox
from tests.http.conftest import ALICE, BOB
from tests.scripted import scripted, text, tool_call
from tether import Tether

pytestmark = pytest.mark.anyio
CALL = {"to": "ann@example.com", "body": "hi"}


def approval_agent(tether_app: Tether, outbox: Outbox, *after: list[Any]) -> None:
    model = scripted([tool_call("send_email", CALL, call_id="call-1")], *after)
    tether_app.agent("a")(lambda ctx: model.agent(tools=[outbox.tool()]))


def data_lines(raw: str) -> list[Any]:
    lines = [x[len("data: ") :] for x in raw.split("\n") if x.startswith("data: ")]
    return [x if x == "[DONE]" else json.loads(x) for x in lines]


async def test_openai_answers_409_naming_the_resume_route_and_the_run_stays_paused(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    outbox = Outbox()
    approval_agent(tether_app, outbox)
    body = {"model": "a", "messages": [{"role": "user", "content": "mail ann"}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"
    run_id = response.headers["x-tether-run-id"]
    assert f"/runs/{run_id}/resume" in response.json()["error"]["message"]
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "paused"


async def test_openai_streaming_ends_with_an_error_event_at_a_pause(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    approval_agent(tether_app, Outbox())
    body = {"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": True}
    events = data_lines((await client.post("/v1/chat/completions", json=body)).text)
    assert events[-1]["error"]["code"] == "run_paused"
    assert "tool_calls" not in json.dumps(events)


async def test_ai_sdk_sends_a_tool_approval_request_and_ends_the_step(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    approval_agent(tether_app, Outbox())
    user = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "mail ann"}]}
    body = {"id": "chat-p", "messages": [user], "trigger": "submit-message"}
    parts = data_lines((await client.post("/agents/a/chat", json=body)).text)
    kinds = [p if isinstance(p, str) else p["type"] for p in parts]
    assert kinds[-5:] == [
        "tool-input-available",
        "tool-approval-request",
        "finish-step",
        "finish",
        "[DONE]",
    ]
    assert parts[-4] == {
        "type": "tool-approval-request",
        "approvalId": "call-1",
        "toolCallId": "call-1",
    }
    assert parts[-2] == {"type": "finish", "finishReason": "tool-calls"}


def responded(approval: dict[str, Any]) -> dict[str, Any]:
    """The assistant message ``addToolApprovalResponse`` leaves, as the AI SDK sends it back."""
    part = {
        "type": "tool-send_email",
        "toolCallId": "call-1",
        "state": "approval-responded",
        "input": CALL,
        "approval": approval,
    }
    return {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, part]}


async def paused_chat(client: httpx.AsyncClient, chat_id: str) -> str:
    user = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "mail ann"}]}
    body = {"id": chat_id, "messages": [user], "trigger": "submit-message"}
    response = await client.post("/agents/a/chat", json=body)
    run_id = response.headers["x-tether-run-id"]
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "paused"
    return run_id


async def test_ai_sdk_approval_response_resumes_the_paused_run_and_streams_the_rest(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    outbox = Outbox()
    approval_agent(tether_app, outbox, [text("sent")])
    run_id = await paused_chat(client, "chat-ok")
    user = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "mail ann"}]}
    messages = [user, responded({"id": "call-1", "approved": True})]
    body = {"id": "chat-ok", "messages": messages, "trigger": "submit-message"}
    response = await client.post("/agents/a/chat", json=body)
    assert response.headers["x-tether-run-id"] == run_id
    parts = data_lines(response.text)
    assert parts[0] == {"type": "start", "messageId": run_id}
    assert {
        "type": "tool-output-available",
        "toolCallId": "call-1",
        "output": "sent to ann@example.com",
    } in parts
    assert [p["delta"] for p in parts if p != "[DONE]" and p["type"] == "text-delta"] == ["sent"]
    assert [p if isinstance(p, str) else p["type"] for p in parts][-3:] == [
        "finish-step",
        "finish",
        "[DONE]",
    ]
    assert outbox.sent == [CALL]
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "completed"


async def test_ai_sdk_denial_resumes_the_run_with_the_reason_and_the_part_ends_denied(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    outbox = Outbox()
    approval_agent(tether_app, outbox, [text("ok, not sent")])
    run_id = await paused_chat(client, "chat-no")
    denial = responded({"id": "call-1", "approved": False, "reason": "not now"})
    body = {"id": "chat-no", "messages": [denial], "trigger": "submit-message"}
    parts = data_lines((await client.post("/agents/a/chat", json=body)).text)
    assert {"type": "tool-output-denied", "toolCallId": "call-1"} in parts
    assert outbox.sent == []
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "completed"


async def test_ai_sdk_bad_approval_responses_answer_problems_and_the_run_stays_paused(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    approval_agent(tether_app, Outbox())
    run_id = await paused_chat(client, "chat-bad")
    wrong_call = responded({"id": "call-9", "approved": True})
    no_answer = responded({"id": "call-1"})
    plain = {"id": "a2", "role": "assistant", "parts": [{"type": "text", "text": "hm"}]}
    for message in (wrong_call, no_answer, plain):
        body = {"id": "chat-bad", "messages": [message], "trigger": "submit-message"}
        response = await client.post("/agents/a/chat", json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "paused"
    nothing_paused = {"id": "chat-none", "messages": [wrong_call], "trigger": "submit-message"}
    assert (await client.post("/agents/a/chat", json=nothing_paused)).status_code == 404


async def test_ag_ui_interrupts_then_resume_approves_and_finishes(
    client: httpx.AsyncClient, tether_app: Tether
) -> None:
    outbox = Outbox()
    approval_agent(tether_app, outbox, [text("sent")])
    base: dict[str, Any] = {
        "threadId": "th-p",
        "state": None,
        "tools": [],
        "context": [],
        "forwardedProps": None,
    }
    first = {
        **base,
        "runId": "r1",
        "messages": [{"id": "u1", "role": "user", "content": "mail ann"}],
        "protocolVersion": "1.0",
    }
    events = data_lines((await client.post("/agents/a/agui", json=first)).text)
    outcome = events[-1]["outcome"]
    assert outcome["type"] == "interrupt"
    assert [i["id"] for i in outcome["interrupts"]] == ["call-1"]
    assert outbox.sent == []
    resume = {
        **base,
        "runId": "r2",
        "messages": [],
        "resume": [{"interruptId": "call-1", "status": "resolved"}],
    }
    events = data_lines((await client.post("/agents/a/agui", json=resume)).text)
    assert events[-1]["type"] == "RUN_FINISHED"
    assert events[-1]["outcome"] == {"type": "success"}
    assert outbox.sent == [CALL]


async def test_another_users_chat_or_thread_answers_404(
    keyed_client: httpx.AsyncClient, tether_app: Tether
) -> None:
    model = scripted([text("hi alice")])
    tether_app.agent("a")(lambda ctx: model.agent())
    user = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    body = {"id": "alice-chat", "messages": [user], "trigger": "submit-message"}
    alice = await keyed_client.post("/agents/a/chat", json=body, headers=ALICE)
    assert alice.status_code == 200
    assert (await keyed_client.post("/agents/a/chat", json=body, headers=BOB)).status_code == 404
    stop = await keyed_client.post("/agents/a/chat/alice-chat/stop", headers=BOB)
    assert stop.status_code == 404
    thread = {
        "threadId": "alice-chat",
        "runId": "r",
        "messages": [{"id": "u", "role": "user", "content": "hi"}],
        "state": None,
        "tools": [],
        "context": [],
        "forwardedProps": None,
    }
    assert (await keyed_client.post("/agents/a/agui", json=thread, headers=BOB)).status_code == 404
    openai_body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    headers = {**BOB, "x-tether-session-id": "alice-chat"}
    response = await keyed_client.post("/v1/chat/completions", json=openai_body, headers=headers)
    assert response.status_code == 404
    assert (await keyed_client.get("/v1/models")).status_code == 401
