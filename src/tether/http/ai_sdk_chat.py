"""The AI SDK UI message stream (``x-vercel-ai-ui-message-stream: v1``), for ``useChat``.

- ``POST /agents/{agent}/chat``: the body ``DefaultChatTransport`` sends (``id`` = chat id = the
  tether session, created on first use; ``messages``; ``trigger``). tether keeps the history,
  so only the last message is taken: a user's message starts a run; an assistant message whose
  tool parts carry approval responses (``addToolApprovalResponse``: state
  ``approval-responded``, ``approval: {id, approved, reason}``) resumes the chat's paused run
  with those decisions, as ``POST /runs/{run_id}/resume`` does, and streams the rest.
  ``resumable: true`` in the body (the transport's ``body`` option) marks a resumable chat: a
  client that drops the response leaves the run going (resume it with the GET below, stop it
  with the stop endpoint); otherwise a drop cancels the run (reason ``disconnect``).
- ``GET /agents/{agent}/chat/{chat_id}/stream``: the session's active run from its first
  event, then live, on any worker (from the store and the event bus when another one drives
  it); 204 when nothing streams (no active run, or it waits for approval).
- ``POST /agents/{agent}/chat/{chat_id}/stop``: stop the session's active run (reason ``user``).

Endings: completed → ``text-end``, ``finish-step``, ``finish``, ``[DONE]``; cancelled or
interrupted → open text closed, ``abort`` with the reason, no ``finish``, ``[DONE]``; failed →
``error``, ``[DONE]``; paused for approval → ``tool-approval-request`` per waiting call (its
``approvalId`` is the call id), ``finish-step``, ``finish`` (reason ``tool-calls``, as the AI
SDK's own server ends a step that waits for approval) and ``[DONE]``. A denied call's part ends
``tool-output-denied``. In a replay, a pause since resumed is a step boundary, not an ending.
A refusal comes before the stream, as problem+json (which ``useChat`` shows as its error): 503
with ``Retry-After`` when the worker can't carry another run, and then nothing is written.
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from tether.app import RunHandle
from tether.errors import NotFound, UsageError
from tether.events import (
    RunEvent,
    RunFinished,
    RunPaused,
    RunResumed,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolDecision,
)
from tether.http.auth import Authenticator
from tether.http.chat_runs import (
    chat_stream,
    replayed_events,
    resume_chat_run,
    start_chat_run,
)
from tether.http.problems import problem_responses
from tether.http.schemas import CancelRunOut
from tether.http.sse import event_stream
from tether.http.state import HttpState
from tether.ids import SessionId, UserId
from tether.records import RunRecord

HEADERS: Final = {"x-vercel-ai-ui-message-stream": "v1"}
ChatId = Annotated[str, Path(min_length=1, max_length=128)]
AgentName = Annotated[str, Path(min_length=1, max_length=128)]


class ToolApprovalIn(BaseModel):
    """A person's answer to a tool-approval request, on an AI SDK tool part."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=128)
    approved: bool | None = None
    reason: str | None = None


class UIMessagePartIn(BaseModel):
    """One part of an AI SDK UI message; only text parts are read."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    state: str | None = None
    approval: ToolApprovalIn | None = None


class UIMessageIn(BaseModel):
    """An AI SDK UI message as ``DefaultChatTransport`` sends it."""

    model_config = ConfigDict(extra="allow")
    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[UIMessagePartIn] = Field(default_factory=list[UIMessagePartIn], max_length=1000)


class ChatRequestIn(BaseModel):
    """The body ``DefaultChatTransport`` posts: the chat id and its messages."""

    model_config = ConfigDict(extra="allow")  # messageId and the app's own body fields
    id: str = Field(min_length=1, max_length=128)
    messages: list[UIMessageIn] = Field(min_length=1, max_length=1000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    resumable: bool = False


def ai_sdk_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    """The AI SDK UI message stream routes under ``/agents/{agent}/chat``."""
    user_dep = Depends(authenticate)
    router = APIRouter(prefix="/agents/{agent}/chat", tags=["ai-sdk"])

    @router.post("", response_class=EventSourceResponse, responses=problem_responses(404, 409, 503))
    async def chat(
        agent: AgentName, body: ChatRequestIn, user: Annotated[UserId, user_dep]
    ) -> EventSourceResponse:
        """Send chat `id`'s new user message, or its approval responses; stream the answer."""
        last = body.messages[-1]
        if body.trigger != "submit-message":
            raise UsageError("only a new message can be sent", trigger=body.trigger)
        if last.role == "assistant" and (decisions := approval_decisions(last)):
            handle = await resume_chat_run(
                state, session_id=body.id, decisions=decisions, user=user
            )
        elif last.role == "user":
            handle = await _start(state, agent, body, user=user)
        else:
            raise UsageError("only a user message or approval responses can be sent")
        frames = ui_message_frames(handle.run_id, handle.events())
        return chat_stream(
            state, handle, frames, user=user, cancel_on_gone=not body.resumable, headers=HEADERS
        )

    @router.get(
        "/{chat_id}/stream",
        responses={204: {"description": "Nothing streams."}, **problem_responses(404)},
    )
    async def resume_stream(
        agent: AgentName, chat_id: ChatId, user: Annotated[UserId, user_dep]
    ) -> Response:
        """The chat's active run from its start, then live (`DefaultChatTransport` resume)."""
        record = await _active_record(state, chat_id, user=user)
        if record is None or record.status == "paused":
            return Response(status_code=204)
        frames = ui_message_frames(record.run_id, replayed_events(state, record.run_id))
        # A viewer, not the run: leaving ends this stream only.
        return event_stream(
            frames,
            metrics=state.metrics,
            on_shutdown=state.stop_for_shutdown,
            headers={"x-tether-run-id": record.run_id, **HEADERS},
        )

    @router.post("/{chat_id}/stop", responses=problem_responses(404))
    async def stop_chat(
        agent: AgentName, chat_id: ChatId, user: Annotated[UserId, user_dep]
    ) -> CancelRunOut:
        """Stop the chat's active run (the stop endpoint of resumable chats)."""
        record = await _active_record(state, chat_id, user=user)
        if record is None:
            raise NotFound(f"no active run in chat {chat_id}", session_id=chat_id)
        result = await state.tether.cancel(record.run_id, reason="user", by=user)
        return CancelRunOut(
            run_id=result.run_id,
            accepted=result.accepted,
            status=result.status,
            reason=result.reason,
        )

    return router


async def _active_record(state: HttpState, chat_id: str, *, user: UserId) -> RunRecord | None:
    store = state.engine.store
    session = await store.get_session(SessionId(chat_id))
    if session is None or session.user_id != user:
        raise NotFound(f"no chat {chat_id}", session_id=chat_id)
    return await store.active_run(SessionId(chat_id))


async def _start(state: HttpState, agent: str, body: ChatRequestIn, *, user: UserId) -> RunHandle:
    message = "".join(p.text or "" for p in body.messages[-1].parts if p.type == "text")
    return await start_chat_run(state, agent, message, user=user, session_id=body.id)


def approval_decisions(message: UIMessageIn) -> list[ToolDecision]:
    """The decisions in ``message``'s tool parts that carry an approval response."""
    decisions: list[ToolDecision] = []
    for part in message.parts:
        is_tool = part.type.startswith("tool-") or part.type == "dynamic-tool"
        approval = part.approval
        if not is_tool or part.state != "approval-responded" or approval is None:
            continue
        if approval.approved is None:
            raise UsageError("an approval response must say approved", approval_id=approval.id)
        reason = None if approval.approved else approval.reason
        decisions.append(
            ToolDecision(call_id=approval.id, approved=approval.approved, message=reason)
        )
    return decisions


def _part(part: Mapping[str, object]) -> bytes:
    return f"data: {json.dumps(part, separators=(',', ':'))}\n\n".encode()


async def ui_message_frames(
    message_id: str, events: AsyncIterator[RunEvent]
) -> AsyncGenerator[bytes, None]:
    """A run's events as UI message stream parts, ending as the module docstring says."""
    yield _part({"type": "start", "messageId": message_id})
    yield _part({"type": "start-step"})
    text_id: str | None = None
    is_paused = False
    async for event in events:
        if text_id is not None and not isinstance(event, TextDelta):
            yield _part({"type": "text-end", "id": text_id})
            text_id = None
        match event:
            case TextDelta(text=text, seq=seq):
                if text_id is None:
                    text_id = f"text-{seq}"
                    yield _part({"type": "text-start", "id": text_id})
                yield _part({"type": "text-delta", "id": text_id, "delta": text})
            case RunFinished():
                for part in _ending(event):
                    yield part
                break
            case _:
                for part in _step_parts(event, is_paused=is_paused):
                    yield part
                if isinstance(event, RunPaused | RunResumed):
                    is_paused = isinstance(event, RunPaused)
    if is_paused:  # the stream of a run that waits for approval ends at its pause
        yield _part({"type": "finish", "finishReason": "tool-calls"})
    yield b"data: [DONE]\n\n"


def _step_parts(event: RunEvent, *, is_paused: bool) -> list[bytes]:
    match event:
        case ToolCallStarted() | ToolCallFinished():
            return [_tool_part(event)]
        case RunPaused(calls=calls):
            requests = [
                _part(
                    {
                        "type": "tool-approval-request",
                        "approvalId": c.call_id,
                        "toolCallId": c.call_id,
                    }
                )
                for c in calls
            ]
            return [*requests, _part({"type": "finish-step"})]
        case RunResumed() if is_paused:  # a replay goes on past a pause since resumed
            return [_part({"type": "start-step"})]
        case _:
            return []


def _tool_part(event: ToolCallStarted | ToolCallFinished) -> bytes:
    match event:
        case ToolCallStarted(call_id=call_id, tool=tool, args=args):
            input_: dict[str, JsonValue] = dict(args)
            part: dict[str, JsonValue] = {"type": "tool-input-available", "toolCallId": call_id}
            return _part(part | {"toolName": tool, "input": input_})
        case ToolCallFinished(call_id=call_id, status="ok", result=result):
            return _part({"type": "tool-output-available", "toolCallId": call_id, "output": result})
        case ToolCallFinished(call_id=call_id, status="denied"):
            return _part({"type": "tool-output-denied", "toolCallId": call_id})
        case ToolCallFinished(call_id=call_id, error=error, status=status):
            text = error or f"the tool call was {status}"
            return _part({"type": "tool-output-error", "toolCallId": call_id, "errorText": text})


def _ending(event: RunFinished) -> list[bytes]:
    match event:
        case RunFinished(status="completed"):
            return [_part({"type": "finish-step"}), _part({"type": "finish"})]
        case RunFinished(status="failed", error=error):
            return [_part({"type": "error", "errorText": error or "the run failed"})]
        case RunFinished(reason=reason):
            return [_part({"type": "abort", "reason": reason or "interrupted"})]
