"""In-process buses: the default for a single worker."""

from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager

import anyio

from tether.bus.base import StopCallback
from tether.ids import RunId, SessionId
from tether.records import CancelRequest
from tether.storage.store import StoredEvent


class MemoryCancelBus:
    """Delivers stops to watchers in this process; remembers stops sent before the watch."""

    def __init__(self) -> None:
        self._watchers: dict[RunId, list[StopCallback]] = {}
        self._requested: dict[RunId, CancelRequest] = {}

    async def request_stop(self, run_id: RunId, request: CancelRequest) -> None:
        self._requested.setdefault(run_id, request)
        for on_stop in list(self._watchers.get(run_id, ())):
            on_stop(request)

    @asynccontextmanager
    async def watch(self, run_id: RunId, on_stop: StopCallback) -> AsyncGenerator[None]:
        self._watchers.setdefault(run_id, []).append(on_stop)
        try:
            if (early := self._requested.get(run_id)) is not None:
                on_stop(early)
            yield
        finally:
            watchers = self._watchers.get(run_id, [])
            watchers.remove(on_stop)
            if not watchers:
                self._watchers.pop(run_id, None)
                self._requested.pop(run_id, None)


class _RunLog:
    """One run's events: a list while it is live; two tuples of strings once it has finished.

    Deliberate: a finished run's log holds no object the garbage collector tracks (a tuple of
    ``str`` is untracked), so up to ``max_runs`` finished runs cost no time in collections; the
    few readers of a finished run get its events rebuilt (``StoredEvent`` objects) on read.
    """

    __slots__ = ("changed", "events", "first_seq", "kinds", "payloads")

    def __init__(self, first_seq: int) -> None:
        self.events: list[StoredEvent] | None = []
        self.kinds: tuple[str, ...] = ()
        self.payloads: tuple[str, ...] = ()
        self.first_seq = first_seq
        self.changed = anyio.Event()

    @property
    def length(self) -> int:
        return len(self.events) if self.events is not None else len(self.kinds)

    def after(self, run_id: RunId, start: int) -> list[StoredEvent]:
        if self.events is not None:
            return self.events[start:]
        return [
            StoredEvent(run_id=run_id, seq=self.first_seq + start + i, kind=kind, payload=payload)
            for i, (kind, payload) in enumerate(
                zip(self.kinds[start:], self.payloads[start:], strict=True)
            )
        ]

    def compact(self) -> None:
        assert self.events is not None
        self.kinds = tuple(e.kind for e in self.events)
        self.payloads = tuple(e.payload for e in self.events)
        self.events = None


class MemoryEventBus:
    """Keeps the events of the most recent runs in memory, readable from any seq.

    Bounded: at most ``max_runs`` run logs are kept (oldest dropped first); a reader asking for
    a dropped run gets ``None`` and reads the store instead. A finished run's log is compact.
    """

    def __init__(self, *, max_runs: int = 1024) -> None:
        self._logs: dict[RunId, _RunLog] = {}
        self._max_runs = max_runs

    def publish(self, event: StoredEvent) -> None:
        log = self._logs.get(event.run_id)
        if log is not None:
            next_seq = log.first_seq + log.length
            if event.seq < next_seq:
                return  # already kept: the first write wins, as with Redis entry ids
            if event.seq > next_seq or log.events is None:
                # A gap (a lost run's terminal event after events that never reached this bus),
                # or more after a finished log (a resumed run): start the log over at this
                # event, so reads stay contiguous, and wake readers of the old one, who then
                # read the store.
                del self._logs[event.run_id]
                log.changed.set()
                log = None
        if log is None:
            if len(self._logs) >= self._max_runs:
                del self._logs[next(iter(self._logs))]
            log = self._logs[event.run_id] = _RunLog(first_seq=event.seq)
        assert log.events is not None
        log.events.append(event)
        if event.kind == "run_finished":
            log.compact()
        # Only a log someone waits on needs a new event (one allocation less per token).
        if log.changed.statistics().tasks_waiting:
            changed, log.changed = log.changed, anyio.Event()
            changed.set()

    async def read(
        self, run_id: RunId, after_seq: int, *, timeout_s: float
    ) -> list[StoredEvent] | None:
        log = self._logs.get(run_id)
        if log is None or after_seq + 1 < log.first_seq:
            return None
        start = after_seq + 1 - log.first_seq
        if start >= log.length:
            with anyio.move_on_after(timeout_s):
                await log.changed.wait()
            if self._logs.get(run_id) is not log:
                return None
        return log.after(run_id, start)

    async def last_seqs(self, run_ids: Sequence[RunId]) -> dict[RunId, int]:
        return {
            run_id: log.first_seq + log.length - 1
            for run_id in run_ids
            if (log := self._logs.get(run_id)) is not None
        }


class MemorySessionWatch:
    """One watcher's flag: set by a signal, cleared by the ``wait`` that returns."""

    __slots__ = ("_signalled",)

    def __init__(self) -> None:
        self._signalled = anyio.Event()

    async def wait(self, *, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await self._signalled.wait()
        # Deliberate: no await between the return of `wait` and the new event, so a signal
        # sent while the caller reads the store sets the new one and is never lost.
        if self._signalled.is_set():
            self._signalled = anyio.Event()

    def wake(self) -> None:
        self._signalled.set()


class MemorySessionSignals:
    """Signals the watchers of a session in this process (also the local half of Redis's)."""

    def __init__(self) -> None:
        self._watchers: dict[SessionId, set[MemorySessionWatch]] = {}

    def notify(self, session_id: SessionId) -> None:
        for watch in self._watchers.get(session_id, ()):
            watch.wake()

    @asynccontextmanager
    async def watch(self, session_id: SessionId) -> AsyncGenerator[MemorySessionWatch]:
        watch = MemorySessionWatch()
        watchers = self._watchers.setdefault(session_id, set())
        watchers.add(watch)
        try:
            yield watch
        finally:
            watchers.discard(watch)
            if not watchers:
                self._watchers.pop(session_id, None)
