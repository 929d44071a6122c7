"""``Stopper``: the engine's stop path, for runs held here, elsewhere, paused, or not made yet.

``cancel`` delivers to a run in this process directly (no I/O before the stop lands), then
records the intent durably; a run owned by another worker gets the intent written to its row
first and then pushed over the cancel bus, and its owner's heartbeat also reads the row, so a
lost push still stops it. A paused run is owned by nobody: its end is written to the store
directly (``engine/approvals.py``), by ``cancel`` or, once its approval deadline passed, by
``expire_paused``. A stop pressed before the client knew the run id is held in the store for a
few seconds (``stop_pending``), per user, and taken by the run it was meant for when that run
starts, on whichever worker.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from tether.bus.base import CancelBus, EventBus
from tether.engine import approvals
from tether.engine.run import Run
from tether.errors import NotFound, StorageError
from tether.events import TERMINAL_STATUSES, RunPaused, RunStatus, StopReason
from tether.ids import RunId, SessionId, UserId
from tether.records import CancelRequest, RunRecord, utcnow
from tether.storage.store import Store

log = logging.getLogger(__name__)

REMOTE_ACCEPT_WAIT_S = 2.0
"""How long a cancel of a run driven elsewhere waits for its ending to say who stopped it."""

NOTE_WAIT_S = 0.5
"""How long a cancel of a run held here waits for its durable note before it answers."""

EARLY_STOP_TTL_S = 10.0
"""How long ``stop_pending`` holds a stop: a stop pressed before the client knew the run id
still wins, while a stray second click can't stop a run started much later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResult:
    """The answer to a stop: whether this request stopped the run, and the run's state now."""

    run_id: RunId
    accepted: bool
    """True if this request is the one that stops the run."""
    status: RunStatus
    reason: StopReason | None


class Stopper:
    """Decides where a stop goes (here, another worker, a paused run, a run not made yet)."""

    def __init__(
        self,
        *,
        store: Store,
        cancel_bus: CancelBus,
        event_bus: EventBus,
        runs: Mapping[RunId, Run],
        worker_id: str,
        task_group: TaskGroup,
    ) -> None:
        self._store = store
        self._cancel_bus = cancel_bus
        self._event_bus = event_bus
        self._runs = runs
        """The engine's table of the runs held here (read only)."""
        self._worker_id = worker_id
        self._task_group = task_group
        """The engine's: durable notes of stops outlive the request that made them."""

    async def cancel(self, run_id: RunId, request: CancelRequest, *, wait: bool) -> CancelResult:
        accepted = False
        if (run := self._runs.get(run_id)) is not None and run.paused is not None:
            await run.wait_persisted()  # its pause is being stored: then end it there
            run = None
        if run is not None:
            accepted = run.stop(request)
            if not run.is_finished:
                # It goes on for a while (``after_turn``): note the intent durably. A run that
                # ended at once is not noted: its ending, being written, records the stop, and a
                # note written first would delay that write (issue #13, stop latency: SQLite
                # takes one writer at a time).
                await self._note_briefly(run_id, run.token.request or request)
            # A run that takes the stop ends: it can no longer pause.
            outcome = await run.wait_persisted() if wait else run.outcome
            assert not isinstance(outcome, RunPaused)
            status = outcome.status if outcome else "running"
            return CancelResult(
                run_id=run_id,
                accepted=accepted,
                status=status,
                reason=outcome.reason if outcome else None,
            )
        else:
            # One round trip: the intent is written (first one wins) and the run read back.
            record = await self._store.request_cancel(run_id, request)
            if record.status == "paused":
                record = await self.end_paused(record, request)
            if record.status not in TERMINAL_STATUSES:  # running elsewhere (or just resumed)
                try:
                    await self._cancel_bus.request_stop(run_id, request)
                except StorageError as exc:
                    # The intent is on the run's row, which its owner's heartbeat reads: the
                    # stop still lands, within a beat instead of at once.
                    log.warning("run %s: stop not pushed, left to the heartbeat: %s", run_id, exc)
            record = await self._settle_remotely(record)
            accepted = record.cancel == request
        if wait:
            record = await self.wait_terminal(run_id)
        return CancelResult(
            run_id=run_id, accepted=accepted, status=record.status, reason=record.reason
        )

    async def _note_briefly(self, run_id: RunId, request: CancelRequest) -> None:
        # Let the run's viewers send the stop's frames before the durable note's I/O.
        await anyio.lowlevel.checkpoint()
        noted = anyio.Event()
        self._task_group.start_soon(self._note, run_id, request, noted, name=f"note {run_id}")
        # The stop has landed: the answer waits for its note only briefly (a database outage
        # must not hold it; the run's ending records the stop anyway).
        with anyio.move_on_after(NOTE_WAIT_S):
            await noted.wait()

    async def _note(self, run_id: RunId, request: CancelRequest, noted: anyio.Event) -> None:
        """Record a stop that landed here durably, for other workers' cancels to read."""
        try:
            with anyio.CancelScope(shield=True):
                await self._store.request_cancel(run_id, request)
        except StorageError as exc:
            log.warning("run %s: stop recorded in memory only: %s", run_id, exc)
        finally:
            noted.set()

    async def _settle_remotely(self, record: RunRecord) -> RunRecord:
        """The run as it ended, or as it is after a brief wait: it says which stop won.

        A run driven elsewhere may already have been stopped there (a disconnect, a cancel sent
        to its worker) before our intent reached its row: its owner writes the stop it ended
        with over that intent, with its ending. So the answer waits, briefly, for that ending;
        a run whose owner does not finish in time is judged by the intent its row holds now.
        Exactly one request then finds itself on the row (issue #15).
        """
        if record.status not in TERMINAL_STATUSES:
            with anyio.move_on_after(REMOTE_ACCEPT_WAIT_S):
                record = await self.wait_terminal(record.run_id)
        return record

    async def end_paused(self, record: RunRecord, request: CancelRequest) -> RunRecord:
        messages = await self._store.run_messages(record.run_id)
        last_seq = await self._store.last_seq(record.run_id)
        finish, batch = approvals.ending(record, messages, request, last_seq=last_seq, now=utcnow())
        ended = await self._store.end_paused(record.run_id, finish, cancel=request, batch=batch)
        if ended is None:
            current = await self._store.get_run(record.run_id)
            assert current is not None
            return current
        for event in batch.events:
            self._event_bus.publish(event)
        return ended

    async def expire_paused(self) -> list[RunRecord]:
        ended: list[RunRecord] = []
        for record in await self._store.expired_paused(utcnow()):
            request = CancelRequest(reason="timeout", by="policy")
            now = await self.end_paused(record, request)
            if now.status == "cancelled" and now.reason == "timeout":
                ended.append(now)
        return ended

    async def stop_pending(self, key: str, request: CancelRequest, *, user_id: UserId) -> None:
        """Hold ``request`` in the store, so the run is stopped whichever worker starts it."""
        held_until = request.requested_at + timedelta(seconds=EARLY_STOP_TTL_S)
        await self._store.hold_stop(user_id, key, request, held_until=held_until)

    async def take_early_stop(
        self, client_request_id: str | None, session_id: SessionId, user_id: UserId
    ) -> CancelRequest | None:
        """The stop held for a run ``user_id`` starts now, if any (it is held no longer).

        A store that fails here costs the held stop only: the run starts, and is logged.
        """
        keys = [key for key in (client_request_id, session_id) if key]
        try:
            return await self._store.take_held_stop(user_id, keys, now=utcnow())
        except StorageError as exc:
            log.warning("session %s: held stops not read: %s", session_id, exc)
            return None

    async def wait_terminal(self, run_id: RunId) -> RunRecord:
        if (run := self._runs.get(run_id)) is not None:
            await run.wait_persisted()
        while True:
            record = await self._store.get_run(run_id)
            if record is None:
                raise NotFound(f"no run {run_id}", run_id=run_id)
            if record.status in TERMINAL_STATUSES:
                return record
            if (run := self._runs.get(run_id)) is not None:
                await run.wait_persisted()
            else:
                await anyio.sleep(0.05)

    async def shutdown(self, *, timeout_s: float) -> None:
        """Stop every run held here, and those that start meanwhile; wait for their ends."""
        request = CancelRequest(reason="shutdown", by=self._worker_id)
        # By identity (kept alive here, so no id is reused): a run let go and taken up again
        # is a new Run, and is stopped too.
        stopped: dict[int, Run] = {}
        with anyio.move_on_after(timeout_s):
            while runs := [run for run in self._runs.values() if id(run) not in stopped]:
                stopped.update((id(run), run) for run in runs)
                for run in runs:
                    run.stop(request)
                for run in runs:
                    await run.wait_persisted()
