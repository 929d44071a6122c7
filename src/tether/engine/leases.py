"""The lease heartbeat: keeps this worker's runs owned, and finds other workers' lost runs.

Every ``heartbeat_s`` (at most ``lease_s / 3``) the worker renews the leases of its running
runs; the same query returns runs with a stop recorded on their row, which are stopped here — so
a stop whose push was lost (or sent while the bus was down) still lands within one beat. Every
beat also marks runs whose owner stopped renewing (a crashed worker) ``interrupted`` with
reason ``worker_lost``. The event bus takes part: the run's terminal event gets a seq after the
last one the dead worker got onto the bus (viewers elsewhere may have seen events it never
stored), and is published there, so those viewers' streams end at once, with it. Last, the beat
ends paused runs whose approval deadline passed (``cancelled``, reason ``timeout``).
"""

import logging
from datetime import timedelta

import anyio

from tether.engine.engine import Engine
from tether.errors import StorageError
from tether.records import utcnow

log = logging.getLogger(__name__)


async def heartbeat(engine: Engine) -> None:
    """Beat every ``heartbeat_s`` (at most a third of the lease) until cancelled."""
    interval_s = min(engine.config.heartbeat_s, engine.config.lease_s / 3)
    while True:
        # Shielded and bounded: a shutdown lands between beats, never inside a query (a
        # cancelled driver call can outlive the event loop in its worker thread).
        with anyio.CancelScope(shield=True), anyio.move_on_after(engine.config.lease_s):
            try:
                await beat(engine)
            except StorageError as exc:
                log.warning("lease heartbeat failed; will retry: %s", exc)
        await anyio.sleep(interval_s)


async def beat(engine: Engine) -> None:
    """One beat: renew this worker's leases, stop runs with a stored stop, recover lost runs."""
    now = utcnow()
    # Every run this worker still holds, finished ones too: until its final write lands, a run
    # that ended must keep its lease, or recovery would overwrite its outcome.
    run_ids = list(engine.runs)
    if run_ids:
        until = now + timedelta(seconds=engine.config.lease_s)
        for record in await engine.store.renew_leases(
            engine.config.worker_id, run_ids, lease_expires_at=until
        ):
            run = engine.runs.get(record.run_id)
            if run is not None and record.cancel is not None:
                run.stop(record.cancel)
    # This worker's own runs are alive, however late their renewal: only others' are recovered.
    spare = list(engine.runs)
    for record in await engine.store.interrupt_expired(now, live=engine.event_bus, spare=spare):
        log.warning("run %s: its worker was lost; marked interrupted", record.run_id)
    for record in await engine.expire_paused():
        log.info("run %s: its approval request timed out; cancelled", record.run_id)
