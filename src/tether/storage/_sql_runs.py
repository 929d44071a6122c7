"""The statements behind ``SqlStore``'s changes to run rows: create, claim, CAS, leases.

Each function runs inside the caller's unit of work (one session, one transaction); the
``SqlStore`` method around it owns the transaction, its retries, and whether a unit whose
commit failed may be replayed.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from tether.errors import Conflict, NotFound
from tether.events import ACTIVE_STATUSES
from tether.ids import RunId
from tether.records import MessageRecord, RunRecord, SessionRecord
from tether.storage.tables import MessageRow, RunRow, SessionRow

IS_ACTIVE: Final = RunRow.status.in_(ACTIVE_STATUSES)


async def create(
    db: AsyncSession,
    run: RunRecord,
    user_message: MessageRecord | None,
    new_session: SessionRecord | None,
) -> None:
    """Insert the run and its user message (after its new session), mark the session used."""
    if new_session is not None:
        await db.execute(insert(SessionRow).values(SessionRow.values(new_session)))
    await db.execute(insert(RunRow).values(RunRow.values(run)))
    if user_message is not None:
        await db.execute(insert(MessageRow).values(MessageRow.values(user_message)))
    await db.execute(
        update(SessionRow)
        .where(SessionRow.session_id == run.session_id)
        .values(updated_at=run.started_at)
    )


async def create_conflict(db: AsyncSession, run: RunRecord) -> Conflict | NotFound | None:
    """Why ``create`` may have failed, other than an active run: its session, parent or id."""
    if await db.get(SessionRow, run.session_id) is None:
        return NotFound(f"no session {run.session_id}", session_id=run.session_id)
    if run.parent_run_id is not None and await db.get(RunRow, run.parent_run_id) is None:
        return NotFound(f"no run {run.parent_run_id}", run_id=run.parent_run_id)
    if await db.get(RunRow, run.run_id) is not None:
        return Conflict(f"run {run.run_id} already exists", run_id=run.run_id)
    return None


async def claim(db: AsyncSession, run_id: RunId, *, owner: str, lease_expires_at: datetime) -> bool:
    """The CAS pending -> running; False if the run was not pending."""
    stmt = (
        update(RunRow)
        .where(RunRow.run_id == run_id, RunRow.status == "pending")
        .values(status="running", owner=owner, lease_expires_at=lease_expires_at)
        .returning(RunRow.run_id)
    )
    if (await db.execute(stmt)).scalar_one_or_none() is not None:
        return True
    if await db.get(RunRow, run_id) is None:
        raise NotFound(f"no run {run_id}", run_id=run_id)
    return False


async def update_active(
    db: AsyncSession,
    run_id: RunId,
    *,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
) -> RunRecord:
    """Compare-and-set on an active run; return the run as it now is, whoever won."""
    stmt = (
        update(RunRow)
        .where(RunRow.run_id == run_id, IS_ACTIVE, *where)
        .values(**values)
        .returning(RunRow)
    )
    row = (await db.scalars(stmt)).one_or_none() or await db.get(RunRow, run_id)
    if row is None:
        raise NotFound(f"no run {run_id}", run_id=run_id)
    return row.to_record()


async def renew_leases(
    db: AsyncSession, owner: str, run_ids: Sequence[RunId], *, lease_expires_at: datetime
) -> list[RunRecord]:
    """Extend the leases ``owner`` still holds among ``run_ids``; return those runs."""
    stmt = (
        update(RunRow)
        .where(RunRow.run_id.in_(run_ids), RunRow.owner == owner, IS_ACTIVE)
        .values(lease_expires_at=lease_expires_at)
        .returning(RunRow)
    )
    return [r.to_record() for r in await db.scalars(stmt)]
