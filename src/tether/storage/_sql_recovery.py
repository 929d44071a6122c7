"""The statements behind ``SqlStore.interrupt_expired``: ending the runs of a lost worker.

They run inside the caller's unit of work (one session, one transaction); the ``SqlStore``
method around them picks the expired runs, asks the bus what it published for them, owns the
transaction and its retries, and publishes the terminal events once they are committed.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tether.events import RunFinished, event_json
from tether.ids import RunId
from tether.records import RunRecord
from tether.storage._sql_writes import Inserter
from tether.storage.store import StoredEvent
from tether.storage.tables import MessageRow, RunEventRow, RunRow, ToolCallRow


async def interrupt(
    db: AsyncSession,
    *,
    where: Sequence[ColumnElement[bool]],
    now: datetime,
    published: Mapping[RunId, int],
    insert: Inserter,
) -> tuple[list[RunRecord], list[StoredEvent]]:
    """Mark the runs matching ``where`` interrupted and close them.

    Returns them, oldest first, and the terminal events stored for them.
    """
    # The CAS: a concurrent recoverer (or the owner finishing late) changes each run at
    # most once, because the second UPDATE no longer matches once the first commits.
    expired = await db.scalars(
        update(RunRow)
        .where(*where)
        .values(
            status="interrupted",
            reason="worker_lost",
            error=None,
            finished_at=now,
            lease_expires_at=None,
        )
        .returning(RunRow)
    )
    runs = sorted((r.to_record() for r in expired), key=lambda r: (r.started_at, r.run_id))
    terminals = await _close_lost_runs(
        db, [r.run_id for r in runs], now=now, published=published, insert=insert
    )
    return runs, terminals


async def _close_lost_runs(
    db: AsyncSession,
    run_ids: list[RunId],
    *,
    now: datetime,
    published: Mapping[RunId, int],
    insert: Inserter,
) -> list[StoredEvent]:
    """Close the runs' messages and tool calls; append their terminal events and return them.

    A terminal event's seq follows both the run's last stored event and the last one
    ``published`` on the bus, which viewers may have seen though it was never stored.
    """
    if not run_ids:
        return []
    await db.execute(
        update(MessageRow)
        .where(MessageRow.run_id.in_(run_ids), MessageRow.status == "streaming")
        .values(status="interrupted", completed_at=now)
    )
    await db.execute(
        update(ToolCallRow)
        .where(ToolCallRow.run_id.in_(run_ids), ToolCallRow.status == "running")
        .values(status="cancelled", error="worker lost", finished_at=now)
    )
    max_seqs = await db.execute(
        select(RunEventRow.run_id, func.max(RunEventRow.seq))
        .where(RunEventRow.run_id.in_(run_ids))
        .group_by(RunEventRow.run_id)
    )
    last = dict(max_seqs.all())
    terminals: dict[RunId, StoredEvent] = {}
    for run_id in run_ids:
        seq = max(last.get(run_id, -1), published.get(run_id, -1)) + 1
        terminal = RunFinished(run_id=run_id, seq=seq, status="interrupted", reason="worker_lost")
        terminals[run_id] = StoredEvent(
            run_id=run_id, seq=seq, kind=terminal.kind, payload=event_json(terminal)
        )
    # Deliberate: if the lost worker is still alive and appended at this seq in between, its
    # event stays and this one is dropped rather than failing the whole recovery; only the
    # ones stored are returned, to be published.
    inserted = await db.scalars(
        insert(RunEventRow).on_conflict_do_nothing().returning(RunEventRow.run_id),
        [RunEventRow.values(t, at=now) for t in terminals.values()],
    )
    return [terminals[RunId(run_id)] for run_id in inserted]
