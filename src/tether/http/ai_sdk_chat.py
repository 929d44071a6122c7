"""The AI SDK UI message stream (``x-vercel-ai-ui-message-stream: v1``), for ``useChat``.

- ``POST /agents/{agent}/chat``: the body ``DefaultChatTransport`` sends (``id`` = chat id = the
  tether session, created on first use; ``messages``; ``trigger``). tether keeps the history,
  so only the last message, the user's, is taken. ``resumable: true`` in the body (the
  transport's ``body`` option) marks a resumable chat: a client that drops the response leaves
  the run going (resume it with the GET below, stop it with the stop endpoint); otherwise a
  drop cancels the run (reason ``disconnect``).
- ``GET /agents/{agent}/chat/{chat_id}/stream``: the session's active run from its first
  event, then live; 204 when nothing streams (or the run is driven by another worker).
- ``POST /agents/{agent}/chat/{chat_id}/stop``: stop the session's active run (reason ``user``).

Endings: completed → ``text-end``, ``finish-step``, ``finish``, ``[DONE]``; cancelled or
interrupted → open text closed, ``abort`` with the reason, no ``finish``, ``[DONE]``; failed →
``error``, ``[DONE]``; paused for approval → ``tool-approval-request`` per waiting call, then
``finish-step`` and ``[DONE]`` (the run waits; ``POST /runs/{run_id}/resume`` continues it).
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
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from tether.http.auth import Authenticator
from tether.http.chat_runs import chat_stream, start_chat_run
from tether.http.problems import problem_responses
from tether.http.schemas import CancelRunOut
from tether.http.state import HttpState
from tether.ids import SessionId, UserId
from tether.records import RunRecord

HEADERS: Final = {"x-vercel-ai-ui-message-stream": "v1"}
ChatId = Annotated[str, Path(min_length=1, max_length=128)]
AgentName = Annotated[str, Path(min_length=1, max_length=128)]


class UIMessagePartIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class UIMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[UIMessagePartIn] = Field(default_factory=list[UIMessagePartIn], max_length=1000)


class ChatRequestIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # messageId and the app's own body fields
    id: str = Field(min_length=1, max_length=128)
    messages: list[UIMessageIn] = Field(min_length=1, max_length=1000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    resumable: bool = False


def ai_sdk_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    user_dep = Depends(authenticate)
    router = APIRouter(prefix="/agents/{agent}/chat", tags=["ai-sdk"])

    @router.post("", response_class=EventSourceResponse, responses=problem_responses(404, 409, 503))
    async def chat(
        agent: AgentName, body: ChatRequestIn, user: Annotated[UserId, user_dep]
    ) -> EventSourceResponse:
        """Send the last user message of chat `id` and stream the answer (UI message stream)."""
        last = body.messages[-1]
        if last.role != "user" or body.trigger != "submit-message":
            raise UsageError("only a new user message can be sent", role=last.role)
        message = "".join(p.text or "" for p in last.parts if p.type == "text")
        handle = await start_chat_run(state, agent, message, user=user, session_id=body.id)
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
        handle = await _active_handle(state, chat_id, user=user)
        if handle is None:
            return Response(status_code=204)
        frames = ui_message_frames(handle.run_id, handle.events())
        return chat_stream(state, handle, frames, user=user, cancel_on_gone=False, headers=HEADERS)

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


async def _active_handle(state: HttpState, chat_id: str, *, user: UserId) -> RunHandle | None:
    record = await _active_record(state, chat_id, user=user)
    if record is None or record.status == "paused":
        return None
    return state.tether.handle(record.run_id)


def _part(part: Mapping[str, object]) -> bytes:
    return f"data: {json.dumps(part, separators=(',', ':'))}\n\n".encode()


async def ui_message_frames(
    message_id: str, events: AsyncIterator[RunEvent]
) -> AsyncGenerator[bytes, None]:
    """A run's events as UI message stream parts, ending as the module docstring says."""
    yield _part({"type": "start", "messageId": message_id})
    yield _part({"type": "start-step"})
    text_id: str | None = None
    async for event in events:
        if text_id is not None and not isinstance(event, TextDelta):
            yield _part({"type": "text-end", "id": text_id})
            text_id = None
        if isinstance(event, TextDelta):
            if text_id is None:
                text_id = f"text-{event.seq}"
                yield _part({"type": "text-start", "id": text_id})
            yield _part({"type": "text-delta", "id": text_id, "delta": event.text})
        elif isinstance(event, ToolCallStarted | ToolCallFinished):
            yield _tool_part(event)
        elif isinstance(event, RunPaused | RunFinished):
            for part in _ending(event):
                yield part
            break
    yield b"data: [DONE]\n\n"


def _tool_part(event: ToolCallStarted | ToolCallFinished) -> bytes:
    match event:
        case ToolCallStarted(call_id=call_id, tool=tool, args=args):
            input_: dict[str, JsonValue] = dict(args)
            part: dict[str, JsonValue] = {"type": "tool-input-available", "toolCallId": call_id}
            return _part(part | {"toolName": tool, "input": input_})
        case ToolCallFinished(call_id=call_id, status="ok", result=result):
            return _part({"type": "tool-output-available", "toolCallId": call_id, "output": result})
        case ToolCallFinished(call_id=call_id, error=error, status=status):
            text = error or f"the tool call was {status}"
            return _part({"type": "tool-output-error", "toolCallId": call_id, "errorText": text})


def _ending(event: RunPaused | RunFinished) -> list[bytes]:
    match event:
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
        case RunFinished(status="completed"):
            return [_part({"type": "finish-step"}), _part({"type": "finish"})]
        case RunFinished(status="failed", error=error):
            return [_part({"type": "error", "errorText": error or "the run failed"})]
        case RunFinished(reason=reason):
            return [_part({"type": "abort", "reason": reason or "interrupted"})]
