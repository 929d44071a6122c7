"""Run events as Server-Sent Events, resumable from any ``Last-Event-ID``.

Frame: ``id: <seq>``, ``event: <kind>``, ``data: <the event's JSON>`` — one ``data:`` line, since
event JSON never contains a raw CR or LF. A client that reconnects with the last id it saw gets
every later event exactly once: ``seq`` strictly increases per run, and each source below yields
only events after the last seq it yielded. Seqs are contiguous, except before the terminal event
of a run whose worker died: what it streamed but never stored is gone, and recovery gives that
event a seq ``RECOVERY_SEQ_GAP`` past everything stored or on the event bus, so it is new to
every viewer, with or without Redis (``Store.interrupt_expired``), and publishes it there, so
viewers waiting on the bus end at once. A run's terminal event is the commit point: a run held
here shows it only once its ending is stored (``Run.release_terminal``).

Sources:
- a run this process drives: its in-memory event list (``Run.events``), live; a resumed run's
  events from before its ``run_resumed`` come from the store first (``driven_frames``);
- any other run: the store's ``events_after`` in pages, then the event bus (which can serve
  recent events of runs on other workers), falling back to polling the store when the bus
  can't; until ``run_finished``. A run the store says is over but whose terminal event was
  never stored gets a terminal frame built from its record, so every stream ends.

A run that waits for approval ends every stream at its ``run_paused``, for now: only when that
is its last event and it is ``paused`` (``is_paused_at``), so a pause since resumed ends nothing.

Guarantees of every response: keep-alive comments every ``PING_S``; a client that goes away is
noticed at once (the response listens for ``http.disconnect``, not only on failed writes); a
send that blocks for ``SEND_TIMEOUT_S`` ends the stream (noticed within ``SEND_CHECK_S`` more:
one watchdog per stream, not a cancel scope and a timer around every frame's send); on server
shutdown the app's runs are
stopped (reason ``shutdown``) and streams get ``SHUTDOWN_GRACE_S`` to deliver their terminal
event. What a disconnect means for the run is the caller's ``on_gone``, never this module's.
"""

import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Final, Literal, cast

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from tether.bus.base import EventBus
from tether.ending import Recorded, RunState, decide
from tether.engine.engine import Engine
from tether.engine.run import Run
from tether.events import RunEvent, RunStatus, TerminalStatus, event_json
from tether.http.metrics import HttpMetrics
from tether.ids import RunId
from tether.records import utcnow
from tether.storage.store import Store, StoredEvent

PING_S: Final = 15.0
SEND_TIMEOUT_S: Final = 30.0
SEND_CHECK_S: Final = 5.0
SHUTDOWN_GRACE_S: Final = 5.0
GONE_TIMEOUT_S: Final = 5.0
STORE_PAGE: Final = 500
BUS_WAIT_S: Final = 10.0
STORE_POLL_S: Final = 0.25
MAX_SEQ: Final = 2**62
"""The largest seq the API admits (``?after=``, ``Last-Event-ID``); storage holds 64 bits."""
LAST_EVENT_ID_PATTERN: Final = r"^[0-9]{1,19}$"
"""What ``Last-Event-ID`` may be: a seq in decimal (at most ``MAX_SEQ``, checked on use)."""


def frame(seq: int, kind: str, data: str) -> bytes:
    """One SSE frame; ``data`` must be one line (event JSON always is)."""
    return f"id: {seq}\r\nevent: {kind}\r\ndata: {data}\r\n\r\n".encode()


def resume_after(last_event_id: str | None, after: int | None) -> int:
    """The seq to resume after: ``Last-Event-ID`` wins over ``?after=``; -1 means from the start.

    Raises:
        HTTPException: 400, ``Last-Event-ID`` is not a seq.
    """
    if last_event_id is None:
        return -1 if after is None else after
    value = last_event_id.strip()
    if not re.fullmatch(LAST_EVENT_ID_PATTERN, value) or int(value) > MAX_SEQ:
        raise HTTPException(400, "Last-Event-ID must be the id of an event of this run")
    return int(value)


async def run_frames(events: AsyncIterator[RunEvent]) -> AsyncGenerator[bytes, None]:
    """Frames of a run this process drives (``Run.events``), live, through its terminal event."""
    assert isinstance(events, AsyncGenerator)
    async with aclosing(cast("AsyncGenerator[RunEvent, None]", events)) as live:
        async for event in live:
            yield frame(event.seq, event.kind, event_json(event))


async def driven_frames(store: Store, run: Run, after_seq: int) -> AsyncGenerator[bytes, None]:
    """Frames of a run this process drives after ``after_seq``, live, like ``run_frames``.

    A resumed run holds only the events from its ``run_resumed`` on; the earlier ones were all
    stored before it could be resumed, so they come from the store first.
    """
    events = cast("AsyncGenerator[RunEvent, None]", run.events(after_seq))
    async with aclosing(events) as live:
        async for event in live:
            while event.seq > after_seq + 1:  # only before a resumed run's first event
                page = await store.events_after(run.run_id, after_seq, limit=STORE_PAGE)
                page = [e for e in page if e.seq < event.seq]
                if not page:
                    break
                after_seq = page[-1].seq
                yield b"".join(frame(e.seq, e.kind, e.payload) for e in page)
            after_seq = event.seq
            yield frame(event.seq, event.kind, event_json(event))


async def stored_frames(
    engine: Engine, run_id: RunId, after_seq: int
) -> AsyncGenerator[bytes, None]:
    """Frames of any run from the store and the event bus, through its terminal event or pause.

    Each chunk holds every frame available at that moment (a replay sends pages, not events).
    """
    async for page in stored_pages(engine, run_id, after_seq):
        yield b"".join(frame(e.seq, e.kind, e.payload) for e in page)


async def stored_pages(
    engine: Engine, run_id: RunId, after_seq: int
) -> AsyncGenerator[list[StoredEvent], None]:
    """The events ``stored_frames`` sends, as stored: each page contiguous and never empty."""
    source = _StoredEvents(engine.store, engine.event_bus, run_id, after_seq=after_seq)
    while page := await source.next_page():
        yield page


class _StoredEvents:
    def __init__(self, store: Store, bus: EventBus, run_id: RunId, *, after_seq: int) -> None:
        self._store = store
        self._bus = bus
        self._run_id = run_id
        self._after = after_seq
        self._is_over = False
        self._is_at_pause = False
        """The last event taken is a ``run_paused``."""

    async def next_page(self) -> list[StoredEvent]:
        """The next events, waiting for them if need be; empty once the run is over (or paused)."""
        while not self._is_over:
            page = await self._store.events_after(self._run_id, self._after, limit=STORE_PAGE)
            if page:
                return self._take(page)
            if self._is_at_pause and await is_paused_at(self._store, self._run_id, self._after):
                self._is_over = True
                break
            # At a pause not stored as such yet (or just resumed): look again soon.
            wait_s = STORE_POLL_S if self._is_at_pause else BUS_WAIT_S
            live = await self._bus.read(self._run_id, self._after, timeout_s=wait_s)
            if live and live[0].seq == self._after + 1:
                return self._take(live)
            if live:
                # A gap (the bus dropped events): they are in the store, or soon will be.
                await anyio.sleep(STORE_POLL_S)
                continue
            # Nothing new: the bus can't serve this run (None) or had nothing for a while ([]).
            match await _check_end(self._store, self._run_id, self._after):
                case "live":
                    if live is None:
                        await anyio.sleep(STORE_POLL_S)
                case "more":
                    pass
                case "over":
                    self._is_over = True
                case terminal:
                    self._is_over = True
                    return [terminal]
        return []

    def _take(self, events: list[StoredEvent]) -> list[StoredEvent]:
        taken: list[StoredEvent] = []
        for event in events:
            if event.seq != self._after + 1 and taken:
                break  # keep the page contiguous; the rest comes from the next read
            taken.append(event)
            self._after = event.seq
            self._is_at_pause = event.kind == "run_paused"
            if event.kind == "run_finished":
                self._is_over = True
                break
        return taken


async def _check_end(
    store: Store, run_id: RunId, after: int
) -> Literal["live", "more", "over"] | StoredEvent:
    """Whether a run with nothing new after ``after`` is still going, and if not how it ends.

    ``more``: events were stored meanwhile; ``over``: the client has the terminal event, or the
    run is gone, or paused with nothing after ``after``; an event: the run is over but its
    terminal event was never stored, so here is one built from its record.
    """
    record = await store.get_run(run_id)
    if record is None:
        return "over"
    if record.status == "paused":  # all it emitted is stored: over for now, or more to read
        return "more" if await store.events_after(run_id, after, limit=1) else "over"
    status = _terminal(record.status)
    if status is None:
        return "live"
    if await store.events_after(run_id, after, limit=1):
        return "more"
    if await is_seen_to_end(store, run_id, after):
        return "over"
    state = RunState(
        run_id=run_id, next_seq=after + 1, usage=record.usage, now=record.finished_at or utcnow()
    )
    terminal = decide(
        state, Recorded(status=status, reason=record.reason, error=record.error)
    ).terminal
    return StoredEvent(
        run_id=run_id, seq=terminal.seq, kind=terminal.kind, payload=event_json(terminal)
    )


async def is_seen_to_end(store: Store, run_id: RunId, after: int) -> bool:
    """Whether the run's stored terminal event has seq ``after``, or one before it.

    Then the client got that event: recovery gives its terminal event a seq past any a viewer
    may have seen (``RECOVERY_SEQ_GAP``). A client past the end has nothing more to get either:
    no terminal event is invented for it.
    """
    if after < 0:
        return False
    last = await store.last_seq(run_id)
    if last < 0 or last > after:
        return False
    seen = await store.events_after(run_id, last - 1, limit=1)
    return bool(seen) and seen[0].kind == "run_finished"


async def is_paused_at(store: Store, run_id: RunId, seq: int) -> bool:
    """Whether the run waits for approval and the event with seq ``seq`` is its last one.

    Then the client has everything until a resume. Status first: a run that was paused then,
    with nothing stored after ``seq`` since, was paused at ``seq``.
    """
    if seq < 0:
        return False
    record = await store.get_run(run_id)
    if record is None or record.status != "paused":
        return False
    return not await store.events_after(run_id, seq, limit=1)


def _terminal(status: RunStatus) -> TerminalStatus | None:
    match status:
        case "completed" | "cancelled" | "failed" | "interrupted":
            return status
        case _:
            return None


class _WatchedSend:
    """The ASGI ``send`` of one response, noting since when a send has been in flight."""

    __slots__ = ("_send", "sending_since")

    def __init__(self) -> None:
        self._send: Send | None = None
        self.sending_since: float | None = None

    def wrap(self, send: Send) -> Send:
        self._send = send
        return self.send

    async def send(self, message: Message) -> None:
        assert self._send is not None
        self.sending_since = time.monotonic()  # cheaper than anyio.current_time(), same clock
        try:
            await self._send(message)
        finally:
            self.sending_since = None


class _Stream:
    """One SSE response's life: counts it, and tells ``on_gone`` if it ends before its end."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        metrics: HttpMetrics,
        on_gone: Callable[[], Awaitable[None]] | None,
        on_shutdown: Callable[[], Awaitable[None]],
        send_timeout_s: float,
    ) -> None:
        self._frames = frames
        self._metrics = metrics
        self._on_gone = on_gone
        self._on_shutdown = on_shutdown
        self._send_timeout_s = send_timeout_s
        self._is_done = False
        self.shutdown_event = anyio.Event()
        self.sent = _WatchedSend()

    async def body(self) -> AsyncGenerator[bytes, None]:
        self._metrics.stream_clients.inc()
        try:
            async with aclosing(self._frames) as frames:
                async for chunk in frames:
                    yield chunk
            self._is_done = True
        finally:
            self._metrics.stream_clients.dec()
            await self._gone()

    async def on_disconnect(self, message: Message) -> None:
        await self._gone()

    async def watch(self) -> None:
        """End the stream if a send blocks too long; stop the app's runs on server shutdown.

        Raises:
            SendTimeoutError: a send has blocked for ``send_timeout_s`` (the client stopped
                reading); the response ends as sse-starlette's own send timeout ends it.
        """
        check_s = min(SEND_CHECK_S, self._send_timeout_s)
        while True:
            with anyio.move_on_after(check_s):
                await self.shutdown_event.wait()
                break
            since = self.sent.sending_since
            if since is not None and time.monotonic() - since >= self._send_timeout_s:
                raise SendTimeoutError
        self._is_done = True  # from here on, an unfinished stream is the shutdown's doing
        await self._on_shutdown()

    async def _gone(self) -> None:
        if self._is_done or self._on_gone is None:
            return
        self._is_done = True
        # Shielded: this runs while the response is being cancelled because the client left.
        with anyio.move_on_after(GONE_TIMEOUT_S, shield=True):
            await self._on_gone()


class _WatchedEventSourceResponse(EventSourceResponse):
    """sse-starlette's response, its sends watched by the stream instead of each bounded."""

    def __init__(self, stream: _Stream, *, headers: Mapping[str, str] | None) -> None:
        super().__init__(  # pyright: ignore[reportUnknownMemberType] (sse-starlette's dict type)
            stream.body(),
            headers=headers,
            ping=PING_S,
            # Deliberate: no per-send timeout; ``_Stream.watch`` bounds sends (see the module).
            send_timeout=None,
            client_close_handler_callable=stream.on_disconnect,
            data_sender_callable=stream.watch,
            shutdown_event=stream.shutdown_event,
            shutdown_grace_period=SHUTDOWN_GRACE_S,
        )
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, self._stream.sent.wrap(send))


def event_stream(
    frames: AsyncGenerator[bytes, None],
    *,
    metrics: HttpMetrics,
    on_shutdown: Callable[[], Awaitable[None]],
    on_gone: Callable[[], Awaitable[None]] | None = None,
    headers: Mapping[str, str] | None = None,
    send_timeout_s: float = SEND_TIMEOUT_S,
) -> EventSourceResponse:
    """An SSE response streaming ``frames``.

    Args:
        frames: Encoded frames (an async generator), ending after the terminal event.
        metrics: Where the stream is counted.
        on_shutdown: Called when the server starts shutting down (stops this app's runs).
        on_gone: Called once if the client leaves (or stops reading) before the last frame.
        headers: Extra response headers.
        send_timeout_s: How long one send may block (the client not reading) before the
            stream ends.
    """
    stream = _Stream(
        frames,
        metrics=metrics,
        on_gone=on_gone,
        on_shutdown=on_shutdown,
        send_timeout_s=send_timeout_s,
    )
    return _WatchedEventSourceResponse(stream, headers=headers)
