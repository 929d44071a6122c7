"""What the chat-protocol routes (OpenAI, AI SDK, AG-UI) share: starting a run, and streaming it.

Each protocol module is only an encoder from tether's own events to its wire format; the run
itself is started, tracked, stopped on disconnect and served through the same machinery as the
native ``POST /agents/{agent}/runs`` (``HttpState.track``, ``sse.event_stream``), so the stop
semantics, history and storage are the native route's: exactly one ending, partial text kept
and labelled, stored == streamed. What a protocol adds is the session naming (a client-chosen
chat or thread id becomes a tether session, created on first use and owned by the caller).
"""

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import cast

from sse_starlette import EventSourceResponse

from tether.app import RunHandle
from tether.errors import NotFound, UsageError
from tether.events import RunEvent, ToolDecision, parse_event
from tether.http.sse import STORE_PAGE, event_stream, stored_pages
from tether.http.state import HttpState
from tether.ids import RunId, SessionId, UserId
from tether.records import SessionRecord


async def _ensure_session(state: HttpState, agent: str, *, session_id: str, user: UserId) -> None:
    """Create the session ``session_id`` for ``user`` on first use (a client-chosen chat id).

    Another user's session with that id answers 404 when the run starts (the engine checks).
    """
    store = state.engine.store
    if await store.get_session(SessionId(session_id)) is None:
        record = SessionRecord(session_id=SessionId(session_id), user_id=user, agent=agent)
        await store.create_session(record)


async def start_chat_run(
    state: HttpState,
    agent: str,
    message: str,
    *,
    user: UserId,
    session_id: str | None,
) -> RunHandle:
    """Start a run of ``agent`` on ``message`` the way the native start route does.

    ``session_id`` is the client's chat or thread id: the session is created on first use,
    once the request is valid and the worker admits the run (a refusal writes nothing).

    Raises:
        NotFound: no such agent (or session of this user).
        UsageError: the message is empty or too long.
        Overloaded: this worker can't carry another run now.
        Conflict: the session already has an active run.
    """
    if agent not in state.tether.agents:
        raise NotFound(f"no agent {agent!r}", agent=agent)
    limit = state.settings.max_message_chars
    if not message:
        raise UsageError("the message is empty")
    if len(message) > limit:
        raise UsageError(f"the message is longer than {limit} characters", limit=limit)
    if (refused := state.engine.admission.refusal()) is not None:
        raise refused
    if session_id is not None:
        await _ensure_session(state, agent, session_id=session_id, user=user)
    handle = await state.tether.start(agent, message, user_id=user, session_id=session_id)
    state.track(handle, user=user, client_request_id=None)
    return handle


async def resume_chat_run(
    state: HttpState, *, session_id: str, decisions: Sequence[ToolDecision], user: UserId
) -> RunHandle:
    """Resume the session's paused run with ``decisions``, as ``POST /runs/{id}/resume`` does.

    Raises:
        NotFound: the session has no active run of this user.
        Conflict: its active run is not paused.
        UsageError: a denial's message is too long, or the decisions don't answer exactly the
            calls that wait.
    """
    record = await state.engine.store.active_run(SessionId(session_id))
    if record is None or record.user_id != user:
        raise NotFound(f"no paused run in session {session_id}", session_id=session_id)
    # Deliberate: no status check here. A run that just sent its pause may not be stored
    # `paused` yet; the engine waits for that write, then refuses a run that isn't paused.
    limit = state.settings.max_message_chars
    if any(d.message is not None and len(d.message) > limit for d in decisions):
        raise UsageError(f"a denial message is longer than {limit} characters", limit=limit)
    state.require_running()
    handle = await state.tether.resume(record.run_id, decisions, user_id=user)
    state.track(handle, user=user, client_request_id=None, is_resumed=True)
    return handle


async def replayed_events(state: HttpState, run_id: RunId) -> AsyncGenerator[RunEvent, None]:
    """A run's events from its first, then live, through its ending or pause, wherever it runs.

    A run this process drives: what the store holds from before its in-memory events (a resumed
    run keeps only those from its ``run_resumed`` on), then those, live. A run driven by another
    worker: the store, then the event bus (``stored_pages``), as ``GET /runs/{id}/events``
    serves it. Stored events are parsed back (validated): a reconnect path, not a per-token one.
    """
    engine = state.engine
    run = engine.runs.get(run_id)
    if run is None:
        async for page in stored_pages(engine, run_id, -1):
            for stored in page:
                yield parse_event(stored.payload)
        return
    after = -1
    async with aclosing(cast("AsyncGenerator[RunEvent, None]", run.events())) as live:
        async for event in live:
            while event.seq > after + 1:  # only before a resumed run's first event
                page = await engine.store.events_after(run_id, after, limit=STORE_PAGE)
                page = [e for e in page if e.seq < event.seq]
                if not page:
                    break
                for stored in page:
                    yield parse_event(stored.payload)
                after = page[-1].seq
            after = event.seq
            yield event


def chat_stream(
    state: HttpState,
    handle: RunHandle,
    frames: AsyncGenerator[bytes, None],
    *,
    user: UserId,
    cancel_on_gone: bool = True,
    headers: Mapping[str, str] | None = None,
) -> EventSourceResponse:
    """An SSE response of ``frames`` (encoded from ``handle``'s events) with native semantics.

    A client that leaves before the last frame cancels the run (reason ``disconnect``) unless
    ``cancel_on_gone`` is false, or the run waits for approval (a person, not this client).
    """
    cancel_on_disconnect = state.disconnect_canceller(handle, user=user)
    return event_stream(
        frames,
        metrics=state.metrics,
        on_shutdown=state.stop_for_shutdown,
        on_gone=cancel_on_disconnect if cancel_on_gone else None,
        headers={"x-tether-run-id": handle.run_id, **(headers or {})},
    )


async def cancel_for_disconnect(state: HttpState, handle: RunHandle, *, user: UserId) -> None:
    """Cancel a run whose (non-streaming) client left, as a streaming disconnect does."""
    requested_at = time.perf_counter()
    driven = state.engine.runs.get(handle.run_id)
    result = await state.tether.cancel(handle.run_id, reason="disconnect", by=user)
    if result.accepted:
        state.time_stop(driven, reason="disconnect", requested_at=requested_at)
