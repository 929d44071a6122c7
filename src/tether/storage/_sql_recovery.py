"""The statements behind ``SqlStore.interrupt_expired``: ending the runs of a lost worker.

They run inside the caller's unit of work (one session, one transaction); the ``SqlStore``
method around them picks the expired runs, asks the bus what it published for them, owns the
transaction and its retries, and publishes the terminal events once they are committed.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tether.events import RUN_EVENTS, RunFinished, event_json
from tether.ids import RunId
from tether.records import MessageStatus, RunRecord
from tether.storage._sql_writes import Inserter
from tether.storage.store import RECOVERY_SEQ_GAP, StoredEvent
from tether.storage.tables import MessageRow, RunEventRow, RunRow, ToolCallRow


async def interrupt(
    db: AsyncSession,
    *,
    where: Sequence[ColumnElement[bool]],
    now: datetime,
    published: Mapping[RunId, int],
    insert: Inserter,
) -> tuple[list[RunRecord], list[StoredEvent]]:
    """End the runs matching ``where``: adopt a stored ending, else mark them interrupted.

    Returns them, oldest first, and the terminal events stored for them now.
    """
    adopted = await _adopt_stored_endings(db, where=where, now=now)
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
    lost = [r.to_record() for r in expired]
    terminals = await _close_lost_runs(
        db, [r.run_id for r in lost], now=now, published=published, insert=insert
    )
    runs = sorted([*adopted, *lost], key=lambda r: (r.started_at, r.run_id))
    return runs, terminals


async def _adopt_stored_endings(
    db: AsyncSession, *, where: Sequence[ColumnElement[bool]], now: datetime
) -> list[RunRecord]:
    """Runs whose terminal event is stored end as it says (their final write was cut short).

    Recovery never writes a second ending: whoever saw that event reads the same thing.
    """
    found = await db.execute(
        select(RunEventRow.payload)
        .join(RunRow, RunRow.run_id == RunEventRow.run_id)
        .where(*where, RunEventRow.kind == "run_finished")
    )
    adopted: list[RunRecord] = []
    for (payload,) in found.all():
        terminal = RUN_EVENTS.validate_json(payload)
        assert isinstance(terminal, RunFinished)
        row = (
            await db.scalars(
                update(RunRow)
                .where(*where, RunRow.run_id == terminal.run_id)
                .values(
                    status=terminal.status,
                    reason=terminal.reason,
                    error=terminal.error,
                    finished_at=now,
                    lease_expires_at=None,
                    **RunRow.usage_values(terminal.usage),
                )
                .returning(RunRow)
            )
        ).one_or_none()
        if row is None:
            continue
        is_completed = terminal.status == "completed"
        await _close_open_records(
            db,
            [terminal.run_id],
            now=now,
            message_status="complete" if is_completed else "interrupted",
            call_error=terminal.error or f"run {terminal.status}",
        )
        adopted.append(row.to_record())
    return adopted


async def _close_open_records(
    db: AsyncSession,
    run_ids: list[RunId],
    *,
    now: datetime,
    message_status: MessageStatus,
    call_error: str,
) -> None:
    await db.execute(
        update(MessageRow)
        .where(MessageRow.run_id.in_(run_ids), MessageRow.status == "streaming")
        .values(status=message_status, completed_at=now)
    )
    await db.execute(
        update(ToolCallRow)
        .where(ToolCallRow.run_id.in_(run_ids), ToolCallRow.status == "running")
        .values(status="cancelled", error=call_error, finished_at=now)
    )


async def _close_lost_runs(
    db: AsyncSession,
    run_ids: list[RunId],
    *,
    now: datetime,
    published: Mapping[RunId, int],
    insert: Inserter,
) -> list[StoredEvent]:
    """Close the runs' messages and tool calls; append their terminal events and return them.

    A terminal event's seq is ``RECOVERY_SEQ_GAP`` past both the run's last stored event and
    the last one ``published`` on the bus: viewers may have seen events never stored.
    """
    if not run_ids:
        return []
    await _close_open_records(
        db, run_ids, now=now, message_status="interrupted", call_error="worker lost"
    )
    max_seqs = await db.execute(
        select(RunEventRow.run_id, func.max(RunEventRow.seq))
        .where(RunEventRow.run_id.in_(run_ids))
        .group_by(RunEventRow.run_id)
    )
    last = dict(max_seqs.all())
    terminals: dict[RunId, StoredEvent] = {}
    for run_id in run_ids:
        seq = max(last.get(run_id, -1), published.get(run_id, -1)) + RECOVERY_SEQ_GAP
        terminal = RunFinished(run_id=run_id, seq=seq, status="interrupted", reason="worker_lost")
        terminals[run_id] = StoredEvent(
            run_id=run_id, seq=seq, kind=terminal.kind, payload=event_json(terminal)
        )
    # Deliberate: if the lost worker is still alive and appended at this seq (or its own
    # terminal event) in between, its event stays and this one is dropped rather than failing
    # the whole recovery; only the ones stored are returned, to be published.
    inserted = await db.scalars(
        insert(RunEventRow).on_conflict_do_nothing().returning(RunEventRow.run_id),
        [RunEventRow.values(t, at=now) for t in terminals.values()],
    )
    return [terminals[RunId(run_id)] for run_id in inserted]
