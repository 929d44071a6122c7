"""The queries behind ``SqlStore``'s reads of messages and history: a constant number each.

Each function runs inside the caller's unit of work (one session, one transaction); the
``SqlStore`` method around it owns the transaction and its retries.
"""

from collections.abc import Sequence
from typing import Final

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from tether.events import TERMINAL_STATUSES
from tether.ids import RunId, SessionId
from tether.records import HistoryTurn, MessageRecord, ToolCallRecord
from tether.storage.tables import MessageRow, RunRow, ToolCallRow

KEPT: Final = RunRow.discarded_at.is_(None)
"""Runs whose turn was not rolled back: the only ones a session's reads show."""
_IN_HISTORY: Final = (
    RunRow.parent_run_id.is_(None),
    RunRow.status.in_(TERMINAL_STATUSES),
    KEPT,
)


async def run_messages(db: AsyncSession, run_id: RunId) -> list[MessageRecord]:
    run = await db.get(RunRow, run_id)
    if run is None:
        return []
    return await load_messages(db, SessionId(run.session_id), run_filter=(RunRow.run_id == run_id,))


async def history(db: AsyncSession, session_id: SessionId) -> list[HistoryTurn]:
    runs_stmt = (
        select(RunRow)
        .where(RunRow.session_id == session_id, *_IN_HISTORY)
        .order_by(RunRow.started_at, RunRow.run_id)
    )
    runs = [r.to_record() for r in await db.scalars(runs_stmt)]
    by_run: dict[RunId, list[MessageRecord]] = {r.run_id: [] for r in runs}
    for message in await load_messages(db, session_id, run_filter=_IN_HISTORY):
        if (bucket := by_run.get(message.run_id)) is not None:
            bucket.append(message)
    return [HistoryTurn(run=r, messages=tuple(by_run[r.run_id])) for r in runs]


async def load_messages(
    db: AsyncSession, session_id: SessionId, *, run_filter: Sequence[ColumnElement[bool]] = ()
) -> list[MessageRecord]:
    """The session's messages in order with their tool calls: two queries, whatever the count.

    ``run_filter`` restricts them to the messages of runs matching it.
    """
    messages = select(MessageRow).where(MessageRow.session_id == session_id)
    calls = (
        select(ToolCallRow)
        .join(MessageRow, ToolCallRow.message_id == MessageRow.message_id)
        .where(MessageRow.session_id == session_id)
    )
    if run_filter:
        messages = messages.join(RunRow, RunRow.run_id == MessageRow.run_id).where(*run_filter)
        calls = calls.join(RunRow, RunRow.run_id == MessageRow.run_id).where(*run_filter)
    by_message: dict[str, list[ToolCallRecord]] = {}
    for call in await db.scalars(calls.order_by(ToolCallRow.started_at, ToolCallRow.call_id)):
        by_message.setdefault(call.message_id, []).append(call.to_record())
    ordered = messages.order_by(MessageRow.created_at, MessageRow.message_id)
    return [m.to_record(tuple(by_message.get(m.message_id, ()))) for m in await db.scalars(ordered)]
