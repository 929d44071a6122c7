"""Agent and session routes: list agents, list and read sessions, rename, delete, stop, roll back.

A session (or run) of another user is reported as not found, exactly like a missing one.
"""

import re
import time
from datetime import datetime
from typing import Annotated, Any, Final

import anyio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BeforeValidator
from sse_starlette import EventSourceResponse

from tether.errors import NotFound
from tether.events import ACTIVE_STATUSES
from tether.http.auth import Authenticator
from tether.http.problems import problem_responses
from tether.http.schemas import (
    AgentOut,
    CancelSessionIn,
    CancelSessionOut,
    MessageOut,
    RenameSessionIn,
    RollbackIn,
    RollbackOut,
    RunBriefOut,
    SessionDetailOut,
    SessionOut,
    SessionPageOut,
)
from tether.http.session_feed import SessionFeed
from tether.http.state import HttpState
from tether.ids import RunId, SessionId, UserId
from tether.records import CancelRequest, SessionRecord

_ISO_8601: Final = re.compile(r"\d{4}-\d{2}-\d{2}[T ]")

_FEED_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "Server-Sent Events until the session is deleted (see `session_feed.py`).",
        "content": {
            "text/event-stream": {
                "schema": {
                    "description": "One event (OpenAPI < 3.2: the schema describes each event).",
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {
                            "type": "string",
                            "enum": ["run_started", "run_finished", "session_updated"],
                        },
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

DELETE_WAIT_S: Final = 10.0
"""How long deleting a session waits for its stopped run to end before hiding the session."""

AgentName = Annotated[str, Path(min_length=1, max_length=128)]
SessionIdPath = Annotated[str, Path(min_length=1, max_length=128)]


def sessions_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    """The agent and session routes."""
    user_dep = Depends(authenticate)
    router = APIRouter(tags=["sessions"])

    @router.get("/agents")
    async def list_agents(user: Annotated[UserId, user_dep]) -> list[AgentOut]:
        """The registered agents."""
        agents = state.tether.agents.values()
        return [
            AgentOut(
                name=a.name,
                description=a.description,
                available=a.unavailable is None,
                unavailable_reason=a.unavailable,
                context_schema=(
                    a.context_model.model_json_schema() if a.context_model is not None else None
                ),
            )
            for a in agents
        ]

    @router.get("/agents/{agent}/sessions", responses=problem_responses(404))
    async def list_sessions(
        agent: AgentName,
        user: Annotated[UserId, user_dep],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        before: Annotated[AwareDatetime | None, Query(), BeforeValidator(_iso_8601)] = None,
    ) -> SessionPageOut:
        """The caller's sessions with `agent`, most recently active first."""
        return await _list_sessions(state, agent, user=user, limit=limit, before=before)

    @router.get("/sessions")
    async def list_all_sessions(
        user: Annotated[UserId, user_dep],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        before: Annotated[AwareDatetime | None, Query(), BeforeValidator(_iso_8601)] = None,
    ) -> SessionPageOut:
        """The caller's sessions with every agent, most recently active first."""
        return await _list_sessions(state, None, user=user, limit=limit, before=before)

    @router.get("/sessions/{session_id}", responses=problem_responses(404))
    async def get_session(
        session_id: SessionIdPath, user: Annotated[UserId, user_dep]
    ) -> SessionDetailOut:
        """A session with its messages (and their tool calls) and its runs."""
        return await _session_detail(state, await _owned(state, session_id, user))

    @router.get(
        "/sessions/{session_id}/events",
        response_class=EventSourceResponse,
        responses={**_FEED_DOC, **problem_responses(404)},
    )
    async def session_events(
        session_id: SessionIdPath, user: Annotated[UserId, user_dep]
    ) -> EventSourceResponse:
        """The session's live feed (SSE), from now on, whichever tab, client or worker acts.

        `run_started` `{run_id, agent}`, `run_finished` `{run_id, status, reason}` once the
        ending is stored, and `session_updated` (the session) when its title changes.
        """
        session = await _owned(state, session_id, user)
        engine = state.engine
        feed = SessionFeed(
            engine.store,
            engine.session_signals,
            session_json=lambda s: _session_out(s).model_dump_json(),
        )
        return await feed.open(session, state.metrics)

    @router.patch("/sessions/{session_id}", responses=problem_responses(404))
    async def rename_session(
        session_id: SessionIdPath, body: RenameSessionIn, user: Annotated[UserId, user_dep]
    ) -> SessionOut:
        """Set a session's title."""
        session = await _owned(state, session_id, user)
        await state.engine.store.rename_session(session.session_id, body.title)
        state.engine.session_signals.notify(session.session_id)
        return _session_out(await _owned(state, session_id, user))

    @router.delete("/sessions/{session_id}", status_code=204, responses=problem_responses(404))
    async def delete_session(
        session_id: SessionIdPath, user: Annotated[UserId, user_dep]
    ) -> Response:
        """Stop the session's active run, then hide the session."""
        await _delete_session(state, await _owned(state, session_id, user), user=user)
        return Response(status_code=204)

    @router.post("/sessions/{session_id}/rollback", responses=problem_responses(404, 409))
    async def rollback_session(
        session_id: SessionIdPath, body: RollbackIn, user: Annotated[UserId, user_dep]
    ) -> RollbackOut:
        """Discard the session's last turn: its user message and everything after it.

        Answers with that message's text, to send again (regenerate) or to edit and send.
        409 if `run_id` is not the session's last turn, or a run of the session is active.
        """
        session = await _owned(state, session_id, user)
        store = state.engine.store
        message = await store.discard_turn(session.session_id, RunId(body.run_id))
        state.engine.session_signals.notify(session.session_id)
        return RollbackOut(run_id=body.run_id, message=message)

    @router.post("/sessions/{session_id}/cancel", responses=problem_responses(404))
    async def cancel_session(
        session_id: SessionIdPath,
        user: Annotated[UserId, user_dep],
        body: CancelSessionIn | None = None,
    ) -> CancelSessionOut:
        """Stop the session's active run, or the run of `client_request_id`.

        If that run does not exist yet, the stop is held for it: a stop pressed before the
        client learnt the run id (or a new session's id) still wins.
        """
        request_id = body.client_request_id if body else None
        return await _cancel_session(state, session_id, request_id=request_id, user=user)

    return router


async def _owned(state: HttpState, session_id: str, user: UserId) -> SessionRecord:
    session = await state.engine.store.get_session(SessionId(session_id))
    if session is None or session.user_id != user:
        raise NotFound(f"no session {session_id}", session_id=session_id)
    return session


async def _list_sessions(
    state: HttpState, agent: str | None, *, user: UserId, limit: int, before: datetime | None
) -> SessionPageOut:
    if agent is not None and agent not in state.tether.agents:
        raise NotFound(f"no agent {agent!r}", agent=agent)
    found = await state.engine.store.list_sessions(user, agent, limit=limit, before=before)
    return SessionPageOut(
        sessions=[_session_out(s) for s in found],
        next_before=found[-1].updated_at if len(found) == limit else None,
    )


async def _session_detail(state: HttpState, session: SessionRecord) -> SessionDetailOut:
    store = state.engine.store
    messages = await store.messages(session.session_id)
    runs = [state.current(r) for r in await store.session_runs(session.session_id)]
    active = next(
        (r for r in runs if r.parent_run_id is None and r.status in ACTIVE_STATUSES), None
    )
    return SessionDetailOut(
        **_session_out(session).model_dump(),
        messages=[MessageOut.of(m) for m in messages],
        runs=[RunBriefOut.of(r) for r in runs],
        active_run_id=active.run_id if active else None,
    )


async def _delete_session(state: HttpState, session: SessionRecord, *, user: UserId) -> None:
    engine = state.engine
    if (active := await engine.store.active_run(session.session_id)) is not None:
        await state.tether.cancel(active.run_id, reason="user", by=user)
        with anyio.move_on_after(DELETE_WAIT_S):
            await engine.wait_terminal(active.run_id)
    await engine.store.delete_session(session.session_id)
    engine.session_signals.notify(session.session_id)  # its feeds end


async def _cancel_session(
    state: HttpState, session_id: str, *, request_id: str | None, user: UserId
) -> CancelSessionOut:
    requested_at = time.perf_counter()
    engine = state.engine
    session = await engine.store.get_session(SessionId(session_id))
    # A session not created yet is fine with a request id: a new session's first run.
    if (session is not None and session.user_id != user) or (session is None and not request_id):
        raise NotFound(f"no session {session_id}", session_id=session_id)
    run_id = await _target(state, session, request_id=request_id, user=user)
    request = CancelRequest(reason="user", by=user)
    if run_id is None:
        # Deliberate: held under one key only, the request id if there is one, so a leftover
        # session-keyed stop can't hit a later run of the session.
        key = request_id or session_id
        await engine.stop_pending(key, request, user_id=user)
        # The run may have been stored meanwhile (on any worker) and looked for held stops
        # before this one was: look again, and deliver the stop if it is still held.
        run_id = await _target(state, session, request_id=request_id, user=user)
        if run_id is None:
            return CancelSessionOut(session_id=session_id, run_id=None, accepted=True, status=None)
        if await engine.take_pending(key, user_id=user) is None:
            # The run took it when it started: this request is the stop it got.
            found = await engine.store.get_run(run_id)
            status = found.status if found is not None else None
            return CancelSessionOut(
                session_id=session_id, run_id=run_id, accepted=True, status=status
            )
    driven = engine.runs.get(run_id)
    result = await state.tether.cancel(run_id, reason="user", by=user)
    if result.accepted:
        state.time_stop(driven, reason="user", requested_at=requested_at)
    return CancelSessionOut(
        session_id=session_id, run_id=run_id, accepted=result.accepted, status=result.status
    )


async def _target(
    state: HttpState, session: SessionRecord | None, *, request_id: str | None, user: UserId
) -> RunId | None:
    """The run a session stop is for: the request id's run if given, else the active one."""
    store = state.engine.store
    if request_id is not None:
        if (known := state.runs_by_request.get((user, request_id))) is not None:
            return known
        found = await store.request_runs(user, request_id)  # started on any worker
        return found[-1].run_id if found else None
    assert session is not None
    active = await store.active_run(session.session_id)
    return active.run_id if active is not None else None


def _session_out(session: SessionRecord) -> SessionOut:
    return SessionOut(
        session_id=session.session_id,
        agent=session.agent,
        title=session.title,
        created_at=session.created_at,
        updated_at=session.updated_at,
    )


def _iso_8601(value: object) -> object:
    # Deliberate: pydantic also reads a bare number as Unix time ("0.5"); the API says ISO 8601.
    if isinstance(value, str) and not _ISO_8601.match(value):
        raise ValueError("before must be an ISO 8601 timestamp with a time zone")
    return value
