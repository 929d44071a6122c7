"""What the routes of one app share: the tether app, settings, metrics, and the lifespan.

The lifespan owns a task group that outlives the tether app inside it: the small watcher tasks
the routes start (one per run started here, one per accepted stop, for metrics and bookkeeping)
live there, and end when their run does; whatever is left is cancelled after the app stopped
its runs.
"""

import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup
from starlette.exceptions import HTTPException

from tether.app import RunHandle, Tether
from tether.engine import approvals
from tether.engine.engine import Engine
from tether.engine.run import Run
from tether.errors import NotFound
from tether.events import TERMINAL_STATUSES, PendingCall, RunPaused
from tether.http.metrics import HttpMetrics
from tether.ids import RunId, UserId
from tether.records import RunRecord
from tether.settings import Settings


class HttpState:
    """What the routes of one app share: the tether app, settings and metrics."""

    def __init__(self, tether: Tether, settings: Settings) -> None:
        self.tether = tether
        self.settings = settings
        self.metrics = HttpMetrics(active_runs=self._active_runs)
        self.runs_by_request: dict[tuple[UserId, str], RunId] = {}
        """Live runs started here, by user and ``client_request_id`` (for stops sent before the
        run id reached the client). Per user: another user's same id is another key."""
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[None, None]:
        """Run the tether app (and this app's watcher tasks) for the lifespan of the server."""
        async with anyio.create_task_group() as tg:
            async with self.tether:
                self._tg = tg
                try:
                    yield
                finally:
                    self._tg = None
            # The tether app stopped its runs on exit; watchers of runs it gave up on go too.
            tg.cancel_scope.cancel()

    @property
    def engine(self) -> Engine:
        """The running engine.

        Raises:
            HTTPException: 503, the app is not running (outside its lifespan).
        """
        self.require_running()
        return self.tether.engine

    def require_running(self) -> None:
        """Check the app is running (inside its lifespan).

        Raises:
            HTTPException: 503, it is not.
        """
        if self._tg is None:
            raise HTTPException(503, "tether is not running")

    async def run_of(self, run_id: str, user: UserId) -> Run | None:
        """Check ``user`` may see the run; return it if this process drives it (no I/O then).

        Raises:
            NotFound: no such run, or not ``user``'s.
        """
        engine = self.engine
        if (run := engine.runs.get(RunId(run_id))) is not None:
            if run.user_id != user:
                raise NotFound(f"no run {run_id}", run_id=run_id)
            return run
        await self.record_of(run_id, user)
        return None

    async def record_of(self, run_id: str, user: UserId) -> RunRecord:
        """The stored run, if it is ``user``'s.

        Raises:
            NotFound: no such run, or not ``user``'s.
        """
        record = await self.engine.store.get_run(RunId(run_id))
        if record is None or record.user_id != user:
            raise NotFound(f"no run {run_id}", run_id=run_id)
        return record

    def current(self, record: RunRecord) -> RunRecord:
        """``record`` with the outcome of its run if this process ended it but hasn't stored it yet.

        The terminal event (or ``run_paused``) goes out before the final write, so a client that
        just saw it must not read "running" back.
        """
        run = self._driven(record.run_id)
        if run is None or record.status in TERMINAL_STATUSES or record.status == "paused":
            return record
        if (outcome := run.outcome) is not None:
            return dataclasses.replace(
                record,
                status=outcome.status,
                reason=outcome.reason,
                error=outcome.error,
                usage=outcome.usage,
            )
        if (paused := run.paused) is not None:  # likewise, its pause is being stored
            return dataclasses.replace(record, status="paused", lease_expires_at=paused.expires_at)
        return record

    async def awaiting_approval(self, record: RunRecord) -> tuple[PendingCall, ...]:
        """The calls a paused run waits on (none unless ``record`` is ``paused``)."""
        if record.status != "paused":
            return ()
        if (run := self._driven(record.run_id)) is not None and run.paused is not None:
            return run.paused.calls  # its pause may not be stored yet
        messages = await self.engine.store.run_messages(record.run_id)
        return tuple(
            PendingCall(call_id=c.call_id, tool=c.tool, args=c.args)
            for c in approvals.awaiting_calls(messages)
        )

    def track(
        self,
        handle: RunHandle,
        *,
        user: UserId,
        client_request_id: str | None,
        is_resumed: bool = False,
    ) -> None:
        """Count a run started here and index it by its client request id until it settles.

        A resumed run is counted when it ends (by the worker that ends it), not again as started.
        """
        assert self._tg is not None
        if not is_resumed:
            self.metrics.runs_started.labels(handle.agent).inc()
        if client_request_id is not None:
            self.runs_by_request[(user, client_request_id)] = handle.run_id
        self._tg.start_soon(self._watch_run, handle, client_request_id, user)

    def time_stop(self, run: Run | None, *, reason: str, requested_at: float) -> None:
        """Time the stop of ``run``, driven here, from ``requested_at`` (perf_counter).

        ``run`` is looked up before the stop (it may be let go of meanwhile); None: it is
        driven elsewhere, and not timed. Nor is a run that had paused: its end is written to the
        store by the stop itself, and the paused ``Run`` never ends.
        """
        if self._tg is None or run is None or run.paused is not None:
            return
        if run.outcome is not None:  # the stop ended the run on the spot
            self._observe_stop(reason, requested_at)
        else:
            self._tg.start_soon(self._watch_stop, run, reason, requested_at)

    def disconnect_canceller(
        self, handle: RunHandle, *, user: UserId
    ) -> Callable[[], Awaitable[None]]:
        """What a stream of ``handle`` calls when its client leaves: cancel (``disconnect``).

        Deliberate: bound to the `Run` the stream follows now, not whatever runs under its id
        later. Once it paused, a client that leaves leaves a run that waits for a person, not for
        this client; and its resumed continuation (a new `Run`) belongs to the resuming stream.
        """
        run = self.tether.engine.runs.get(handle.run_id)

        async def cancel_on_disconnect() -> None:
            if run is None or run.paused is not None:
                return
            requested_at = time.perf_counter()
            result = await self.tether.cancel(handle.run_id, reason="disconnect", by=user)
            if result.accepted:
                self.time_stop(run, reason="disconnect", requested_at=requested_at)

        return cancel_on_disconnect

    async def stop_for_shutdown(self) -> None:
        """The server is shutting down: stop this worker's runs now, so streams can end."""
        if self._tg is not None:
            await self.tether.engine.shutdown()

    async def _watch_run(
        self, handle: RunHandle, client_request_id: str | None, user: UserId
    ) -> None:
        try:
            settled = await handle.settled()
            if not isinstance(settled, RunPaused):  # a paused run ends later, maybe elsewhere
                self.metrics.runs_finished.labels(settled.status, settled.reason or "none").inc()
        finally:
            key = (user, client_request_id or "")
            if client_request_id is not None and self.runs_by_request.get(key) == handle.run_id:
                del self.runs_by_request[key]

    async def _watch_stop(self, run: Run, reason: str, requested_at: float) -> None:
        await run.wait()
        self._observe_stop(reason, requested_at)

    def _observe_stop(self, reason: str, requested_at: float) -> None:
        self.metrics.stop_latency.labels(reason).observe(time.perf_counter() - requested_at)

    def _driven(self, run_id: RunId) -> Run | None:
        return self.tether.engine.runs.get(run_id) if self._tg is not None else None

    def _active_runs(self) -> float:
        return len(self.tether.engine.runs) if self._tg is not None else 0
