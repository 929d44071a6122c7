"""OpenAI-compatible chat completions: ``GET /v1/models`` and ``POST /v1/chat/completions``.

The ``model`` is the agent's name. The request's ``messages`` are the conversation: the last one
must be the user's, and is the run's message; earlier ones (a client that keeps its own history)
are given to the agent as a labelled transcript before it, in a new session. With the header
``x-tether-session-id`` tether keeps the history instead: only the last user message is taken,
in that session (created on first use). The run id is in ``x-tether-run-id`` and in every
chunk's ``id``.

Endings (every final chunk and every completion also carries a ``tether`` object with the run's
``status`` and ``reason``, so a client can always tell a stop from a completion):

- completed: ``finish_reason: "stop"``, a usage chunk if ``stream_options.include_usage``, then
  ``[DONE]``;
- cancelled or interrupted: ``finish_reason: "stop"`` (the only value strict clients accept for
  an ending without tool calls or a length cut) with ``tether.status`` ``cancelled`` and its
  reason, then ``[DONE]``: the partial text is what the client got, and what tether keeps;
- failed: an ``{"error": {...}}`` event, which the ``openai`` SDKs raise as ``APIError``;
- paused for approval: not supported here. Non-streaming: 409 naming the native resume route;
  streaming: an error event saying the same (the run stays paused for the native route).

A worker that can't carry another run answers 503 with ``Retry-After`` and an ``error`` object
(``code: "overloaded"``) before anything is written; the ``openai`` SDKs retry it on their own.

Tools run inside tether, so no response carries ``tool_calls`` (that would ask the client to
run them). A client that drops the response cancels the run (reason ``disconnect``).
"""

import json
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Annotated, Any, Final, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from tether.app import RunHandle
from tether.errors import Overloaded, UsageError
from tether.events import RunFinished, RunPaused, TextDelta
from tether.http.auth import Authenticator
from tether.http.chat_runs import cancel_for_disconnect, chat_stream
from tether.http.chat_runs import start_chat_run as start_run
from tether.http.problems import problem, problem_responses, retry_after
from tether.http.state import HttpState
from tether.ids import UserId

MAX_MESSAGES: Final = 1000
_DONE: Final = b"data: [DONE]\n\n"


class ContentPart(BaseModel):
    """One part of an OpenAI message's content; only text parts are read."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    """One OpenAI chat message."""

    model_config = ConfigDict(extra="allow")  # name, tool_calls, refusal …: read, not used
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptionsIn(BaseModel):
    """OpenAI ``stream_options``: ``include_usage`` adds a final usage chunk."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """An OpenAI chat completion request; ``model`` names the agent."""

    # Deliberate: sampling options (temperature, max_tokens …) are accepted and ignored: the
    # agent's own configuration decides them, and clients send them by default.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=128)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptionsIn | None = None


def openai_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    """The OpenAI-compatible routes under ``/v1``."""
    user_dep = Depends(authenticate)
    router = APIRouter(prefix="/v1", tags=["openai"])

    @router.get("/models")
    async def list_models(user: Annotated[UserId, user_dep]) -> dict[str, Any]:
        """The agents, as OpenAI models."""
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "tether"}
            for name in sorted(state.tether.agents)
        ]
        return {"object": "list", "data": data}

    @router.post("/chat/completions", responses=problem_responses(404, 409, 503))
    async def chat_completions(
        body: ChatCompletionIn,
        request: Request,
        user: Annotated[UserId, user_dep],
        x_tether_session_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> Response:
        """Run the agent `model` on the conversation; OpenAI chunks (SSE) or one completion."""
        message = _message_of(body.messages, is_session=x_tether_session_id is not None)
        try:
            handle = await start_run(
                state, body.model, message, user=user, session_id=x_tether_session_id
            )
        except Overloaded as exc:
            return _overloaded_response(exc)
        headers = {"x-tether-session-id": handle.session_id}
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            frames = _chunks(handle, include_usage=include_usage)
            return chat_stream(state, handle, frames, user=user, headers=headers)
        return await _complete(state, handle, request=request, user=user)

    return router


def _message_of(messages: list[ChatMessageIn], *, is_session: bool) -> str:
    """The run's message: the last user message, after a transcript of the earlier ones."""
    last = messages[-1]
    if last.role != "user":
        raise UsageError("the last message must be the user's", role=last.role)
    if is_session or len(messages) == 1:
        return last.text()
    transcript = "\n\n".join(f"[{m.role}]\n{m.text()}" for m in messages[:-1] if m.text())
    if not transcript:
        return last.text()
    return f"Conversation so far:\n\n{transcript}\n\n[user]\n{last.text()}"


def _tether_of(end: RunFinished | RunPaused) -> dict[str, Any]:
    if isinstance(end, RunPaused):
        return {"run_id": end.run_id, "status": "paused", "reason": None}
    return {"run_id": end.run_id, "status": end.status, "reason": end.reason, "error": end.error}


def _paused_error(end: RunPaused) -> dict[str, Any]:
    return {
        "message": (
            f"run {end.run_id} paused for approval, which OpenAI chat completions cannot carry:"
            f" continue it with POST /runs/{end.run_id}/resume"
        ),
        "type": "invalid_request_error",
        "code": "run_paused",
        "param": None,
    }


def _usage(end: RunFinished) -> dict[str, int]:
    u = end.usage
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    }


async def _chunks(handle: RunHandle, *, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The run's events as ``chat.completion.chunk`` SSE frames, through its ending."""
    created = int(time.time())
    head = f'{{"id":{json.dumps(handle.run_id)},"object":"chat.completion.chunk",'
    head += f'"created":{created},"model":{json.dumps(handle.agent)},'

    def chunk(choices: str, extra: str = "") -> bytes:
        return f'data: {head}"choices":[{choices}]{extra}}}\n\n'.encode()

    yield chunk('{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}')
    async for event in handle.events():
        match event:
            case TextDelta(text=text):
                delta = json.dumps(text)
                yield chunk(f'{{"index":0,"delta":{{"content":{delta}}},"finish_reason":null}}')
            case RunPaused():
                yield f"data: {json.dumps({'error': _paused_error(event)})}\n\n".encode()
                return
            case RunFinished(status="failed"):
                yield f"data: {json.dumps({'error': _failed_error(event)})}\n\n".encode()
                return
            case RunFinished():
                tether = json.dumps(_tether_of(event))
                yield chunk('{"index":0,"delta":{},"finish_reason":"stop"}', f',"tether":{tether}')
                if include_usage:
                    yield chunk("", f',"usage":{json.dumps(_usage(event))}')
                yield _DONE
                return
            case _:
                pass  # tools run in tether: their calls are not the client's to run


async def _complete(
    state: HttpState, handle: RunHandle, *, request: Request, user: UserId
) -> Response:
    """Wait for the run's ending and answer with the ``chat.completion``.

    A client that leaves first cancels the run (reason ``disconnect``). A paused run answers 409
    naming the native resume route; a failed one 502. Both say ``x-should-retry: false``: the
    OpenAI SDKs retry 409 and 5xx otherwise, which would start the run again.
    """
    texts: list[str] = []
    end: RunFinished | RunPaused | None = None
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            await cancel_for_disconnect(state, handle, user=user)

        tg.start_soon(watch_disconnect)
        async for event in handle.events():
            if isinstance(event, TextDelta):
                texts.append(event.text)
            elif isinstance(event, RunFinished | RunPaused):
                end = event
        tg.cancel_scope.cancel()
    assert end is not None
    headers = {"x-tether-run-id": handle.run_id, "x-tether-session-id": handle.session_id}
    if isinstance(end, RunPaused) or end.status == "failed":
        return _error_response(end, headers=headers)
    completion = {
        "id": handle.run_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": handle.agent,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(texts), "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(end),
        "tether": _tether_of(end),
    }
    return JSONResponse(completion, headers=headers)


def _error_response(end: RunFinished | RunPaused, *, headers: Mapping[str, str]) -> Response:
    """problem+json, with the ``error`` object OpenAI clients read their message from."""
    if isinstance(end, RunPaused):
        error, status, slug = _paused_error(end), 409, "conflict"
    else:
        error, status, slug = _failed_error(end), 502, "run-failed"
    body = {
        "type": f"urn:tether:problem:{slug}",
        "title": error["code"],
        "status": status,
        "detail": error["message"],
        "run_id": end.run_id,
        "error": error,
    }
    return JSONResponse(
        body,
        status_code=status,
        media_type="application/problem+json",
        headers={**headers, "x-should-retry": "false"},
    )


def _overloaded_response(exc: Overloaded) -> Response:
    """503 problem+json with OpenAI's ``error`` object; the SDKs retry it after ``Retry-After``."""
    error = {"message": exc.message, "type": "server_error", "code": "overloaded", "param": None}
    return problem(
        503,
        exc.message,
        slug="overloaded",
        extra={**exc.details, "error": error},
        headers={"Retry-After": retry_after(exc)},
    )


def _failed_error(end: RunFinished) -> dict[str, Any]:
    message = end.error or "the run failed"
    return {"message": message, "type": "server_error", "code": "run_failed", "param": None}
