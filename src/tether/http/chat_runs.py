"""What the chat-protocol routes (OpenAI, AI SDK, AG-UI) share: starting a run, and streaming it.

Each protocol module is only an encoder from tether's own events to its wire format; the run
itself is started, tracked, stopped on disconnect and served through the same machinery as the
native ``POST /agents/{agent}/runs`` (``HttpState.track``, ``sse.event_stream``), so the stop
semantics, history and storage are the native route's: exactly one ending, partial text kept
and labelled, stored == streamed. What a protocol adds is the session naming (a client-chosen
chat or thread id becomes a tether session, created on first use and owned by the caller).
"""

import time
from collections.abc import AsyncGenerator, Mapping

from sse_starlette import EventSourceResponse

from tether.app import RunHandle
from tether.errors import NotFound, UsageError
from tether.http.sse import event_stream
from tether.http.state import HttpState
from tether.ids import SessionId, UserId
from tether.records import SessionRecord


async def ensure_session(state: HttpState, agent: str, *, session_id: str, user: UserId) -> None:
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

    Raises:
        NotFound: no such agent (or session of this user).
        UsageError: the message is empty or too long.
        Conflict: the session already has an active run.
    """
    if agent not in state.tether.agents:
        raise NotFound(f"no agent {agent!r}", agent=agent)
    limit = state.settings.max_message_chars
    if not message:
        raise UsageError("the message is empty")
    if len(message) > limit:
        raise UsageError(f"the message is longer than {limit} characters", limit=limit)
    state.require_running()
    handle = await state.tether.start(agent, message, user_id=user, session_id=session_id)
    state.track(handle, user=user, client_request_id=None)
    return handle


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
