"""The live feed of one session, ``GET /sessions/{id}/events``: what other tabs need to follow it.

Frames carry an ``event:`` name and JSON ``data`` (no ids: the feed starts "now", there is
nothing to resume):

- ``run_started`` ``{"run_id", "agent"}``: a new top-level run, from any tab, client or worker;
- ``run_finished`` ``{"run_id", "status", "reason"}``: it ended, and that ending is stored;
- ``session_updated``: the session (``SessionOut``) after its title changed.

The store is the record: each wake-up re-reads the session and its runs and reports what changed
since the previous read, so what the feed says always agrees with the store. Wake-ups come from
the engine's session signals (this worker at once, others through Redis when configured) and
every ``FEED_POLL_S`` anyway, so a change no signal carried (a dead worker's run recovered, an
approval that timed out) still arrives, late. The feed ends when the session is deleted or the
server shuts down; keep-alive comments and disconnects are handled as for run streams.
"""

import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Final

from sse_starlette import EventSourceResponse

from tether.bus.base import SessionSignals, SessionWatch
from tether.events import TERMINAL_STATUSES, RunStatus
from tether.http.metrics import HttpMetrics
from tether.http.sse import event_stream
from tether.ids import RunId, SessionId
from tether.records import RunRecord, SessionRecord
from tether.storage.store import Store

FEED_POLL_S: Final = 5.0
"""The longest a change no signal announced waits to reach a feed."""


def feed_frame(kind: str, data: str) -> bytes:
    """One feed frame; ``data`` is compact JSON, so one line."""
    return f"event: {kind}\r\ndata: {data}\r\n\r\n".encode()


@dataclass
class _Seen:
    """What the feed has reported so far."""

    runs: dict[RunId, RunStatus] = field(default_factory=dict[RunId, RunStatus])
    title: str | None = None

    def changes(
        self,
        session: SessionRecord,
        runs: list[RunRecord],
        session_json: Callable[[SessionRecord], str],
    ) -> list[bytes]:
        """The frames for what changed since the last call, and remember it."""
        frames: list[bytes] = []
        for run in runs:
            if run.parent_run_id is not None:
                continue
            before = self.runs.get(run.run_id)
            if before is None:
                started = {"run_id": run.run_id, "agent": run.agent}
                frames.append(feed_frame("run_started", _json(started)))
            if run.status in TERMINAL_STATUSES and before not in TERMINAL_STATUSES:
                ended = {"run_id": run.run_id, "status": run.status, "reason": run.reason}
                frames.append(feed_frame("run_finished", _json(ended)))
            self.runs[run.run_id] = run.status
        if session.title != self.title:
            self.title = session.title
            frames.append(feed_frame("session_updated", session_json(session)))
        return frames


class SessionFeed:
    """One feed response: follows a session until it is deleted, the client leaves or shutdown."""

    def __init__(
        self,
        store: Store,
        signals: SessionSignals,
        *,
        session_json: Callable[[SessionRecord], str],
    ) -> None:
        self._store = store
        self._signals = signals
        self._session_json = session_json
        self._watch: SessionWatch | None = None
        self._is_closing = False

    async def open(self, session: SessionRecord, metrics: HttpMetrics) -> EventSourceResponse:
        """The response, reporting what changes after this call returns."""
        seen = _Seen(title=session.title)
        seen.changes(session, await self._store.session_runs(session.session_id), str)
        frames = self._frames(session.session_id, seen)
        return event_stream(frames, metrics=metrics, on_shutdown=self._close)

    async def _close(self) -> None:
        self._is_closing = True
        if self._watch is not None:
            self._watch.wake()

    async def _frames(self, session_id: SessionId, seen: _Seen) -> AsyncGenerator[bytes, None]:
        async with self._signals.watch(session_id) as watch:
            self._watch = watch
            # Read once at once: what changed between the first read and this watch was
            # signalled to nobody; from here on every change is.
            while not self._is_closing:
                session = await self._store.get_session(session_id)
                if session is None:
                    return  # deleted
                runs = await self._store.session_runs(session_id)
                for frame in seen.changes(session, runs, self._session_json):
                    yield frame
                await watch.wait(timeout_s=FEED_POLL_S)


def _json(value: dict[str, str | None]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
