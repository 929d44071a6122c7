"""Run routes: start, resume (both streamed), stop and read runs, and replay their events.

Starting and resuming validate before the response starts, so every refusal (unknown agent, bad
context, busy session, a run that is not paused, decisions that don't answer its calls) is a
proper problem+json, and the stream then begins at ``run_started`` (``run_resumed``). A stream
ends at ``run_finished``, or at ``run_paused`` when the run waits for a person: the run is not
over, and ``POST /runs/{run_id}/resume`` continues it, on any worker. The stop path does no I/O
before the stop lands on a run this process drives.
"""

import time
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import anyio
import anyio.lowlevel
from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import Response
from pydantic import WithJsonSchema
from sse_starlette import EventSourceResponse

from tether.app import RunHandle
from tether.errors import NotFound, UsageError
from tether.events import TERMINAL_STATUSES
from tether.http.auth import Authenticator
from tether.http.problems import problem_responses
from tether.http.schemas import CancelRunIn, CancelRunOut, ResumeRunIn, RunOut, StartRunIn
from tether.http.sse import (
    LAST_EVENT_ID_PATTERN,
    MAX_SEQ,
    driven_frames,
    event_stream,
    is_paused_at,
    is_seen_to_end,
    resume_after,
    run_frames,
    stored_frames,
)
from tether.http.state import HttpState
from tether.ids import RunId, UserId

WAIT_LIMIT_S: Final = 30.0
"""The longest ``wait: true`` holds a cancel request before answering with the current state."""

AgentName = Annotated[str, Path(min_length=1, max_length=128)]
RunIdPath = Annotated[str, Path(min_length=1, max_length=128)]
_SSE_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": (
            "Server-Sent Events, ending after `run_finished`, or after `run_paused` when the run"
            " waits for approval (`POST /runs/{run_id}/resume` continues it)."
        ),
        "content": {
            "text/event-stream": {
                "schema": {
                    "description": "One event (OpenAPI < 3.2: the schema describes each event).",
                    "type": "object",
                    "required": ["id", "event", "data"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "seq"},
                        "event": {"type": "string", "description": "the event's kind"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "description": "the event as JSON, on one line",
                        },
                    },
                }
            }
        },
    }
}


def _link(path: str, method: str, **parameters: str) -> dict[str, Any]:
    return {"operationRef": f"#/paths/{path.replace('/', '~1')}/{method}", "parameters": parameters}


_RUN_ID: Final = "$response.header.X-Run-Id"
_SESSION_ID: Final = "$response.header.X-Session-Id"
_STARTED_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        **_SSE_DOC[200],
        "headers": {
            "Location": {
                "description": "The new run: `/runs/{run_id}`.",
                "schema": {"type": "string"},
            },
            "X-Run-Id": {"description": "The new run's id.", "schema": {"type": "string"}},
            "X-Session-Id": {
                "description": "The run's session (new unless `session_id` was given).",
                "schema": {"type": "string"},
            },
        },
        "links": {
            "GetRun": _link("/runs/{run_id}", "get", run_id=_RUN_ID),
            "RunEvents": _link("/runs/{run_id}/events", "get", run_id=_RUN_ID),
            "CancelRun": _link("/runs/{run_id}/cancel", "post", run_id=_RUN_ID),
            "ResumeRun": _link("/runs/{run_id}/resume", "post", run_id=_RUN_ID),
            "GetSession": _link("/sessions/{session_id}", "get", session_id=_SESSION_ID),
            "RenameSession": _link("/sessions/{session_id}", "patch", session_id=_SESSION_ID),
            "DeleteSession": _link("/sessions/{session_id}", "delete", session_id=_SESSION_ID),
            "CancelSession": _link("/sessions/{session_id}/cancel", "post", session_id=_SESSION_ID),
        },
    }
}


def runs_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    """The run routes: start, resume, cancel, read, and replay events."""
    user_dep = Depends(authenticate)
    router = APIRouter(tags=["runs"])

    @router.post(
        "/agents/{agent}/runs",
        response_class=EventSourceResponse,
        responses={**_STARTED_DOC, **problem_responses(404, 409)},
    )
    async def start_run(
        agent: AgentName, body: StartRunIn, user: Annotated[UserId, user_dep]
    ) -> EventSourceResponse:
        """Start a run and stream its events, from `run_started` to `run_finished`.

        The run's id is in `X-Run-Id` and `Location`, its session's in `X-Session-Id`.

        A run that calls a tool needing approval pauses: its stream ends with `run_paused`.
        """
        return await _start_run(state, agent, body=body, user=user)

    @router.post(
        "/runs/{run_id}/resume",
        response_class=EventSourceResponse,
        responses={**_SSE_DOC, **problem_responses(404, 409)},
    )
    async def resume_run(
        run_id: RunIdPath, body: ResumeRunIn, user: Annotated[UserId, user_dep]
    ) -> EventSourceResponse:
        """Continue a paused run with a decision for each call it waits on, and stream the rest.

        The stream starts with `run_resumed` (its seq follows `run_paused`) and ends with
        `run_finished`, or `run_paused` if the run pauses again. 409 (with the run's `run_status`):
        the run is not paused; 422 (with the `awaiting` call ids): the decisions don't answer
        exactly the calls that wait.
        """
        return await _resume_run(state, run_id, body=body, user=user)

    @router.post("/runs/{run_id}/cancel", responses=problem_responses(404))
    async def cancel_run(
        run_id: RunIdPath, user: Annotated[UserId, user_dep], body: CancelRunIn | None = None
    ) -> CancelRunOut:
        """Stop a run; idempotent. `accepted` is true only for the request that stopped it.

        A paused run ends at once (`cancelled`), wherever it paused.
        """
        return await _cancel_run(state, run_id, body=body or CancelRunIn(), user=user)

    @router.get("/runs/{run_id}", responses=problem_responses(404))
    async def get_run(run_id: RunIdPath, user: Annotated[UserId, user_dep]) -> RunOut:
        """A run's state: status, timings, usage, children and how it was stopped.

        While it is paused: the calls it waits on, and until when.
        """
        record = state.current(await state.record_of(run_id, user))
        children = await state.engine.store.child_runs(record.run_id)
        awaiting = await state.awaiting_approval(record)
        return RunOut.of(record, [state.current(c) for c in children], awaiting=awaiting)

    @router.get(
        "/runs/{run_id}/events",
        response_class=EventSourceResponse,
        responses={
            **_SSE_DOC,
            204: {
                "description": (
                    "The client already has the run's last event (its `run_finished`, or the"
                    " `run_paused` of a run that waits for approval)."
                )
            },
            **problem_responses(404),
        },
    )
    async def run_events(
        run_id: RunIdPath,
        user: Annotated[UserId, user_dep],
        after: Annotated[int | None, Query(ge=-1, le=MAX_SEQ)] = None,
        last_event_id: Annotated[
            str | None,
            Header(max_length=19, pattern=LAST_EVENT_ID_PATTERN),
            # Deliberate: an absent header is None; a header is never sent as JSON null.
            WithJsonSchema({"type": "string", "maxLength": 19, "pattern": LAST_EVENT_ID_PATTERN}),
        ] = None,
    ) -> Response:
        """Replay a run's events after `Last-Event-ID` (or `?after=`), then follow it live.

        The stream ends at `run_finished`, or at `run_paused` if that is the run's last event
        and the run waits for approval (an earlier pause, since resumed, doesn't end it).
        """
        after_seq = resume_after(last_event_id, after)
        return await _run_events(state, run_id, after_seq=after_seq, user=user)

    return router


async def _start_run(
    state: HttpState, agent: str, *, body: StartRunIn, user: UserId
) -> EventSourceResponse:
    if agent not in state.tether.agents:
        raise NotFound(f"no agent {agent!r}", agent=agent)
    limit = state.settings.max_message_chars
    if len(body.message) > limit:
        raise UsageError(f"the message is longer than {limit} characters", limit=limit)
    state.require_running()
    handle = await state.tether.start(
        agent,
        body.message,
        user_id=user,
        session_id=body.session_id,
        context=body.context,
        if_busy=body.if_busy,
        client_request_id=body.client_request_id,
    )
    state.track(handle, user=user, client_request_id=body.client_request_id)
    return _handle_stream(
        state,
        handle,
        user=user,
        on_disconnect=body.on_disconnect,
        headers={"Location": f"/runs/{handle.run_id}"},
    )


async def _resume_run(
    state: HttpState, run_id: str, *, body: ResumeRunIn, user: UserId
) -> EventSourceResponse:
    limit = state.settings.max_message_chars
    if any(d.message is not None and len(d.message) > limit for d in body.decisions):
        raise UsageError(f"a denial message is longer than {limit} characters", limit=limit)
    state.require_running()
    decisions = [d.decision() for d in body.decisions]
    handle = await state.tether.resume(run_id, decisions, user_id=user)
    state.track(handle, user=user, client_request_id=None, is_resumed=True)
    return _handle_stream(state, handle, user=user, on_disconnect=body.on_disconnect)


def _handle_stream(
    state: HttpState,
    handle: RunHandle,
    *,
    user: UserId,
    on_disconnect: Literal["cancel", "continue"],
    headers: Mapping[str, str] | None = None,
) -> EventSourceResponse:
    """The stream of a run this process just started or resumed, from its first event."""
    cancel_on_disconnect = state.disconnect_canceller(handle, user=user)
    return event_stream(
        run_frames(handle.events()),
        metrics=state.metrics,
        on_shutdown=state.stop_for_shutdown,
        on_gone=cancel_on_disconnect if on_disconnect == "cancel" else None,
        headers={"X-Run-Id": handle.run_id, "X-Session-Id": handle.session_id, **(headers or {})},
    )


async def _cancel_run(
    state: HttpState, run_id: str, *, body: CancelRunIn, user: UserId
) -> CancelRunOut:
    requested_at = time.perf_counter()
    driven = await state.run_of(run_id, user)
    result = await state.tether.cancel(
        run_id, reason=body.reason, mode=body.mode, action=body.action, by=user
    )
    if result.accepted:
        state.time_stop(driven, reason=body.reason, requested_at=requested_at)
    # Deliberate: let the run's streams send the frames the stop produced before this answer
    # is built and sent; the stop's own latency is what the user feels, not the answer's.
    await anyio.lowlevel.checkpoint()
    status, reason = result.status, result.reason
    if body.wait and status not in TERMINAL_STATUSES:
        with anyio.move_on_after(WAIT_LIMIT_S):
            record = await state.engine.wait_terminal(result.run_id)
            status, reason = record.status, record.reason
    return CancelRunOut(run_id=run_id, accepted=result.accepted, status=status, reason=reason)


async def _run_events(state: HttpState, run_id: str, *, after_seq: int, user: UserId) -> Response:
    engine = state.engine
    run = await state.run_of(run_id, user)
    if run is not None and not run.is_finished:
        if run.paused is not None and after_seq >= run.paused.seq:
            return Response(status_code=204)  # nothing follows until a resume
        frames = driven_frames(engine.store, run, after_seq)
    else:
        # Driven elsewhere, paused, or over: the store, and the bus for what the store lacks yet.
        store, stored_id = engine.store, RunId(run_id)
        if await is_seen_to_end(store, stored_id, after_seq) or await is_paused_at(
            store, stored_id, after_seq
        ):
            return Response(status_code=204)
        frames = stored_frames(engine, stored_id, after_seq)
    return event_stream(frames, metrics=state.metrics, on_shutdown=state.stop_for_shutdown)
