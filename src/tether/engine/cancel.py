"""``CancelToken``: one run's stop request, deliverable from any thread.

Guarantees:
- The first request decides reason and action; a later ``now`` only escalates an
  ``after_turn`` request (it never changes why the run stopped).
- ``now`` runs the registered stop callbacks on the run's event loop, synchronously when the
  request is made on that loop, so a stop lands before the caller's next await.
- ``after_turn`` escalates to ``now`` after ``grace_s`` by itself.

Deliberately not done here: deciding the outcome or writing anything. The token only carries
the intent; ``engine/run.py`` turns it into the one terminal state.
"""

import asyncio
import threading
from collections.abc import Callable

from tether.records import CancelRequest


class CancelToken:
    """One run's stop request: set once from any thread, delivered on the run's loop."""

    def __init__(self, *, grace_s: float = 10.0) -> None:
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._request: CancelRequest | None = None
        self._is_now = False
        self._callbacks: list[Callable[[], None]] = []
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def request(self) -> CancelRequest | None:
        """The stop request that decides the outcome, if any."""
        return self._request

    @property
    def is_after_turn_requested(self) -> bool:
        return self._request is not None

    @property
    def is_now(self) -> bool:
        return self._is_now

    def on_stop_now(self, callback: Callable[[], None]) -> None:
        """Register ``callback``; called at once if an immediate stop was already requested."""
        with self._lock:
            self._callbacks.append(callback)
            fire = self._is_now
        if fire:
            callback()

    def request_stop(self, request: CancelRequest) -> bool:
        """Ask the run to stop; thread-safe. Returns False if a stop was already requested."""
        with self._lock:
            is_first = self._request is None
            if is_first:
                self._request = request
            escalate = request.mode == "now" and not self._is_now
        if escalate:
            self._deliver_now()
        elif is_first:
            self._call_on_loop(self._start_grace_timer)
        return is_first

    def stop_after(self, delay_s: float, request: CancelRequest) -> None:
        """Request ``request`` after ``delay_s`` unless the run is over by then (a deadline)."""
        self._deadline = self._loop.call_later(delay_s, self.request_stop, request)

    def cancel_timers(self) -> None:
        """The run has ended: no deadline or grace period may fire any more."""
        for timer in (self._timer, self._deadline):
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        """The run is over and torn down: drop callbacks and timers."""
        with self._lock:
            self._callbacks.clear()
        self.cancel_timers()

    def _start_grace_timer(self) -> None:
        if not self._is_now:
            self._timer = self._loop.call_later(self._grace_s, self._escalate)

    def _escalate(self) -> None:
        with self._lock:
            escalate = not self._is_now
        if escalate:
            self._deliver_now()

    def _deliver_now(self) -> None:
        with self._lock:
            self._is_now = True
        self._call_on_loop(self._run_callbacks)

    def _run_callbacks(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def _call_on_loop(self, fn: Callable[[], None]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)
