"""Bus protocols: how stop intents and live events travel between workers.

``CancelBus``: a stop for a run reaches the worker that owns it. Durable first, then pushed:
``request_stop`` records the intent where ``watch`` will find it even if it subscribes late.

``SessionSignals``: "something changed in session X" (a run started or ended, its title
changed), pushed to every worker's watchers of that session. A hint, not a record: watchers read
the store for what changed, and poll it anyway now and then, so a lost signal only delays them.

``EventBus``: a run's live events, readable from any seq while the run is recent, so a viewer
on any worker can follow a run without a gap. It is not the system of record: the store is, and
readers fall back to it for anything the bus no longer has. It may hold events the store never
got (a worker killed before its flush): recovery asks it for each lost run's last seq, so the
stored terminal event comes after everything a viewer may have seen, and publishes that event.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from tether.ids import RunId, SessionId
from tether.records import CancelRequest
from tether.storage.store import StoredEvent

StopCallback = Callable[[CancelRequest], None]


class CancelBus(Protocol):
    """Carries stop intents to the worker that drives the run: durable first, then pushed."""

    async def request_stop(self, run_id: RunId, request: CancelRequest) -> None: ...

    def watch(self, run_id: RunId, on_stop: StopCallback) -> AbstractAsyncContextManager[None]:
        """Call ``on_stop`` on the loop for a stop of ``run_id``, including one sent earlier."""
        ...


class EventBus(Protocol):
    """A run's live events, readable from any seq on any worker while the run is recent."""

    def publish(self, event: StoredEvent) -> None:
        """Hand an event to the bus without waiting (the streaming hot path calls this).

        Seqs must increase per run: one at or below the run's last is ignored (the first write
        wins); one after a gap is kept, but no read returns events across the gap (one that
        starts inside it returns ``None``).
        """
        ...

    async def read(
        self, run_id: RunId, after_seq: int, *, timeout_s: float
    ) -> list[StoredEvent] | None:
        """Events after ``after_seq``, waiting up to ``timeout_s`` for the first one.

        Returns ``[]`` on timeout and ``None`` when the bus cannot serve ``after_seq + 1``
        (unknown run, or events already dropped): read the store instead.
        """
        ...

    async def last_seqs(self, run_ids: Sequence[RunId]) -> dict[RunId, int]:
        """The highest seq the bus holds for each of ``run_ids`` it knows (others are left out).

        Best effort and never raises: while the bus can't answer, it returns ``{}``. An event
        published here but still on its way (the Redis outbox) may not count yet.
        """
        ...


class SessionWatch(Protocol):
    """One watcher of a session's signals (``SessionSignals.watch``)."""

    async def wait(self, *, timeout_s: float) -> None:
        """Return once the session was signalled since the last return, or after ``timeout_s``."""
        ...

    def wake(self) -> None:
        """Make the current (or next) ``wait`` return at once."""
        ...


class SessionSignals(Protocol):
    """Wakes a session's live feeds, on every worker, when something happens in it."""

    def notify(self, session_id: SessionId) -> None:
        """Wake every watcher of the session, on every worker, without waiting."""
        ...

    def watch(self, session_id: SessionId) -> AbstractAsyncContextManager[SessionWatch]:
        """Watch the session: signals sent from here on are remembered until ``wait``."""
        ...
