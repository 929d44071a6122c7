"""Bus protocols: how stop intents and live events travel between workers.

``CancelBus``: a stop for a run reaches the worker that owns it. Durable first, then pushed:
``request_stop`` records the intent where ``watch`` will find it even if it subscribes late.

``EventBus``: a run's live events, readable from any seq while the run is recent, so a viewer
on any worker can follow a run without a gap. It is not the system of record: the store is, and
readers fall back to it for anything the bus no longer has.
"""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from tether.ids import RunId
from tether.records import CancelRequest
from tether.storage.store import StoredEvent

StopCallback = Callable[[CancelRequest], None]


class CancelBus(Protocol):
    async def request_stop(self, run_id: RunId, request: CancelRequest) -> None: ...

    def watch(self, run_id: RunId, on_stop: StopCallback) -> AbstractAsyncContextManager[None]:
        """Call ``on_stop`` on the loop for a stop of ``run_id``, including one sent earlier."""
        ...


class EventBus(Protocol):
    def publish(self, event: StoredEvent) -> None:
        """Hand an event to the bus without waiting (the streaming hot path calls this)."""
        ...

    async def read(
        self, run_id: RunId, after_seq: int, *, timeout_s: float
    ) -> list[StoredEvent] | None:
        """Events after ``after_seq``, waiting up to ``timeout_s`` for the first one.

        Returns ``[]`` on timeout and ``None`` when the bus cannot serve ``after_seq + 1``
        (unknown run, or events already dropped): read the store instead.
        """
        ...
