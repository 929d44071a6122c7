"""The statements behind ``SqlStore``'s writes of what runs streamed and of paused runs.

Each function runs inside the caller's unit of work (one session, one transaction); the
``SqlStore`` method around it owns the transaction and its retries.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, cast

from pydantic import JsonValue
from sqlalchemy import Table, case, func, literal, select, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncSession

from tether.events import ACTIVE_STATUSES
from tether.ids import RunId
from tether.records import CancelRequest, RunRecord
from tether.storage.store import Ending, Finish, WriteBatch
from tether.storage.tables import Base, MessageRow, RunEventRow, RunRow, ToolCallRow

Inserter = Callable[[type[Base] | Table], PgInsert | SqliteInsert]

MESSAGES: Final = cast(Table, MessageRow.__table__)
TOOL_CALLS: Final = cast(Table, ToolCallRow.__table__)
RUN_EVENTS: Final = cast(Table, RunEventRow.__table__)
_MESSAGE_UPDATES: Final = ("content", "status", "completed_at")
_TOOL_CALL_UPDATES: Final = ("args", "status", "result", "error", "finished_at")


async def write_batch(
    db: AsyncSession, batch: WriteBatch, *, insert: Inserter, at: datetime
) -> None:
    """Upsert messages and tool calls, append events (idempotent), set usage, end runs.

    Core ``executemany`` on the tables, not ORM bulk inserts on the mapped classes: a flush
    carries a row per streamed event, and the ORM's per-row bookkeeping cost more than the
    database's own work (``bench/write_path.py``).
    """
    if batch.messages:
        messages = insert(MESSAGES)
        await db.execute(
            messages.on_conflict_do_update(
                index_elements=[MESSAGES.c.id],
                set_={k: messages.excluded[k] for k in _MESSAGE_UPDATES},
            ),
            [MessageRow.columns(m) for m in batch.messages],
        )
    if batch.tool_calls:
        calls = insert(TOOL_CALLS)
        await db.execute(
            calls.on_conflict_do_update(
                index_elements=[TOOL_CALLS.c.run_id, TOOL_CALLS.c.call_id],
                set_={k: calls.excluded[k] for k in _TOOL_CALL_UPDATES},
            ),
            [ToolCallRow.values(c) for c in batch.tool_calls],
        )
    if batch.events:
        await db.execute(
            insert(RUN_EVENTS).on_conflict_do_nothing(),
            [RunEventRow.values(e, at=at) for e in batch.events],
        )
    # One statement per run: a batch carries one run's usage, or a few with children. A run
    # that ends with this batch gets its usage with its ending (one statement fewer).
    for run_id, usage in batch.usage.items():
        if run_id in batch.endings:
            continue
        await db.execute(
            update(RunRow).where(RunRow.run_id == run_id).values(**RunRow.usage_values(usage))
        )
    for run_id, ending in batch.endings.items():
        await _end(db, run_id, ending)


async def _end(db: AsyncSession, run_id: RunId, ending: Ending) -> None:
    """The CAS active -> terminal, with the stop that caused it.

    One statement: the final write is what a stopped run's terminal event waits for. The stop
    the run ended with (``finish.cancel``, decided by its owner) replaces an intent that reached
    the row first but lost, so the stored cancel fields agree with the ending and a remote
    canceller reads that it was not the one (issue #15). A run that is no longer active
    (recovery ended it) keeps its ending; the terminal event this batch carried was then
    dropped by the one-terminal index.
    """
    finish = ending.finish
    values: dict[str, Any] = {
        "status": finish.status,
        "reason": finish.reason,
        "error": finish.error,
        "finished_at": finish.finished_at,
        "lease_expires_at": None,
        **RunRow.usage_values(finish.usage),
    }
    if ending.cancel is not None:  # an intent: recorded only if the row has none yet
        has_no_stop = RunRow.cancel_requested_at.is_(None)
        for key, value in RunRow.cancel_values(ending.cancel).items():
            column = getattr(RunRow, key)
            values[key] = case((has_no_stop, literal(value, column.type)), else_=column)
    if finish.cancel is not None:  # the stop it ended with: replaces a losing intent
        values |= RunRow.cancel_values(finish.cancel)
    await db.execute(
        update(RunRow)
        .where(RunRow.run_id == run_id, RunRow.status.in_(ACTIVE_STATUSES))
        .values(**values)
    )


async def pause(
    db: AsyncSession, run_id: RunId, *, owner: str, expires_at: datetime | None, state: JsonValue
) -> bool:
    stmt = (
        update(RunRow)
        .where(RunRow.run_id == run_id, RunRow.status == "running", RunRow.owner == owner)
        .values(status="paused", owner=None, lease_expires_at=expires_at, resume_state=state)
        .returning(RunRow.run_id)
    )
    return (await db.execute(stmt)).scalar_one_or_none() is not None


async def resume(
    db: AsyncSession, run_id: RunId, *, owner: str, lease_expires_at: datetime
) -> RunRecord | None:
    """The CAS paused -> running (the resume state stays until the run pauses again or ends)."""
    stmt = (
        update(RunRow)
        .where(RunRow.run_id == run_id, RunRow.status == "paused")
        .values(status="running", owner=owner, lease_expires_at=lease_expires_at)
        .returning(RunRow)
    )
    row = (await db.scalars(stmt)).one_or_none()
    return row.to_record() if row is not None else None


async def end_paused(
    db: AsyncSession,
    run_id: RunId,
    finish: Finish,
    *,
    cancel: CancelRequest,
    batch: WriteBatch,
    insert: Inserter,
) -> RunRecord | None:
    """The CAS paused -> terminal, with the batch; None if the run was not paused."""
    stmt = (
        update(RunRow)
        .where(RunRow.run_id == run_id, RunRow.status == "paused")
        .values(
            status=finish.status,
            reason=finish.reason,
            error=finish.error,
            finished_at=finish.finished_at,
            lease_expires_at=None,
            resume_state=None,
            **RunRow.usage_values(finish.usage),
        )
        .returning(RunRow)
    )
    row = (await db.scalars(stmt)).one_or_none()
    if row is None:
        return None
    if row.cancel_requested_at is None:
        await db.execute(
            update(RunRow).where(RunRow.run_id == run_id).values(**RunRow.cancel_values(cancel))
        )
    await write_batch(db, batch, insert=insert, at=finish.finished_at)
    await db.refresh(row)
    return row.to_record()


async def last_seq(db: AsyncSession, run_id: RunId) -> int:
    stmt = select(func.max(RunEventRow.seq)).where(RunEventRow.run_id == run_id)
    found = (await db.execute(stmt)).scalar_one_or_none()
    return -1 if found is None else found
