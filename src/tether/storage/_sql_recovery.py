"""The statements behind ``SqlStore.interrupt_expired``: ending the runs of a lost worker.

The store only reads and writes: it reads each lost run's partial state (its stored terminal
event if any, its open messages and tool calls, its last seq), ``tether.ending.decide`` rules
(adopt the stored ending, else ``interrupted`` / ``worker_lost``), and the store writes what it
returns. They run inside the caller's unit of work (one session, one transaction); the
``SqlStore`` method around them picks the expired runs, asks the bus what it published for them,
owns the transaction and its retries, and publishes the new events once they are committed.
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tether.ending import Cause, Recorded, RunEnding, RunState, WorkerLost, decide
from tether.events import RUN_EVENTS, RunFinished
from tether.ids import RunId
from tether.records import MessageRecord, RunRecord, ToolCallRecord
from tether.storage._sql_writes import Inserter
from tether.storage.store import RECOVERY_SEQ_GAP, StoredEvent, stored
from tether.storage.tables import MessageRow, RunEventRow, RunRow, ToolCallRow


async def interrupt(
    db: AsyncSession,
    *,
    where: Sequence[ColumnElement[bool]],
    now: datetime,
    published: Mapping[RunId, int],
    insert: Inserter,
) -> tuple[list[RunRecord], list[StoredEvent]]:
    """End the runs matching ``where`` as ``decide`` rules for each.

    Returns them, oldest first, and the events stored for them now (to publish).
    """
    lost = [row.to_record() for row in await db.scalars(select(RunRow).where(*where))]
    if not lost:
        return [], []
    state = await _read_state(db, [r.run_id for r in lost])
    runs: list[RunRecord] = []
    events: list[StoredEvent] = []
    for run in lost:
        terminal = state.terminals.get(run.run_id)
        cause: Cause = WorkerLost()
        next_seq = max(state.last_seqs.get(run.run_id, -1), published.get(run.run_id, -1))
        next_seq += RECOVERY_SEQ_GAP
        if terminal is not None:  # its final write was cut short: adopt that ending
            cause = Recorded(
                status=terminal.status,
                reason=terminal.reason,
                error=terminal.error,
                usage=terminal.usage,
            )
            next_seq = terminal.seq
        ending = decide(
            RunState(
                run_id=run.run_id,
                next_seq=next_seq,
                usage=run.usage,
                messages=state.messages[run.run_id],
                open_calls=state.calls[run.run_id],
                stop=run.cancel,
                now=now,
            ),
            cause,
        )
        if (ended := await _apply(db, ending, where=where, insert=insert)) is not None:
            record, new_events = ended
            runs.append(record)
            events.extend(new_events)
    runs.sort(key=lambda r: (r.started_at, r.run_id))
    return runs, events


class _LostState:
    def __init__(self) -> None:
        self.terminals: dict[RunId, RunFinished] = {}
        self.last_seqs: dict[RunId, int] = {}
        self.messages: defaultdict[RunId, list[MessageRecord]] = defaultdict(list)
        self.calls: defaultdict[RunId, list[ToolCallRecord]] = defaultdict(list)


async def _read_state(db: AsyncSession, run_ids: list[RunId]) -> _LostState:
    state = _LostState()
    terminals = await db.scalars(
        select(RunEventRow.payload).where(
            RunEventRow.run_id.in_(run_ids), RunEventRow.kind == "run_finished"
        )
    )
    for payload in terminals:
        terminal = RUN_EVENTS.validate_json(payload)
        assert isinstance(terminal, RunFinished)
        state.terminals[terminal.run_id] = terminal
    last = await db.execute(
        select(RunEventRow.run_id, func.max(RunEventRow.seq))
        .where(RunEventRow.run_id.in_(run_ids))
        .group_by(RunEventRow.run_id)
    )
    state.last_seqs = {RunId(run_id): seq for run_id, seq in last.all()}
    messages = await db.scalars(
        select(MessageRow)
        .where(MessageRow.run_id.in_(run_ids), MessageRow.status == "streaming")
        .order_by(MessageRow.created_at, MessageRow.message_id)
    )
    for message in messages:
        state.messages[RunId(message.run_id)].append(message.to_record())
    calls = await db.scalars(
        select(ToolCallRow)
        .where(ToolCallRow.run_id.in_(run_ids), ToolCallRow.status == "running")
        .order_by(ToolCallRow.started_at, ToolCallRow.call_id)
    )
    for call in calls:
        state.calls[RunId(call.run_id)].append(call.to_record())
    return state


async def _apply(
    db: AsyncSession,
    ending: RunEnding,
    *,
    where: Sequence[ColumnElement[bool]],
    insert: Inserter,
) -> tuple[RunRecord, list[StoredEvent]] | None:
    """Write ``ending``, if the run is still as ``where`` found it (None if it is not).

    The CAS: a concurrent recoverer (or the owner finishing late) changes each run at most
    once, because the second UPDATE no longer matches once the first commits.
    """
    run_id = ending.terminal.run_id
    row = (
        await db.scalars(
            update(RunRow)
            .where(*where, RunRow.run_id == run_id)
            .values(
                status=ending.status,
                reason=ending.reason,
                error=ending.error,
                finished_at=ending.finished_at,
                lease_expires_at=None,
                **RunRow.usage_values(ending.usage),
            )
            .returning(RunRow)
        )
    ).one_or_none()
    if row is None:
        return None
    for message in ending.messages:
        await db.execute(
            update(MessageRow)
            .where(MessageRow.message_id == message.message_id, MessageRow.status == "streaming")
            .values(status=message.status, completed_at=message.completed_at)
        )
    for call in ending.tool_calls:
        await db.execute(
            update(ToolCallRow)
            .where(
                ToolCallRow.run_id == call.run_id,
                ToolCallRow.call_id == call.call_id,
                ToolCallRow.status == "running",
            )
            .values(
                status=call.status,
                result=call.result,
                error=call.error,
                finished_at=call.finished_at,
            )
        )
    batch = stored(ending)[1]
    if not batch.events:
        return row.to_record(), []
    # Deliberate: if the lost worker is still alive and appended at these seqs (or its own
    # terminal event) in between, its events stay and these are dropped rather than failing
    # the whole recovery; only the ones stored are returned, to be published.
    found = await db.execute(
        insert(RunEventRow).on_conflict_do_nothing().returning(RunEventRow.run_id, RunEventRow.seq),
        [RunEventRow.values(e, at=ending.finished_at) for e in batch.events],
    )
    inserted = {(run_id, seq) for run_id, seq in found.all()}
    return row.to_record(), [e for e in batch.events if (e.run_id, e.seq) in inserted]
