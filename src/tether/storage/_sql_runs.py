"""The statements behind ``SqlStore``'s changes to run rows: create, claim, CAS, leases.

Each function runs inside the caller's unit of work (one session, one transaction); the
``SqlStore`` method around it owns the transaction, its retries, and whether a unit whose
commit failed may be replayed.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tether.errors import Conflict, NotFound
from tether.events import ACTIVE_STATUSES
from tether.ids import RunId, SessionId
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


async def discard_turn(
    db: AsyncSession, session_id: SessionId, run_id: RunId, now: datetime
) -> str:
    """Mark the session's last turn, ``run_id`` (and its sub-agent runs), rolled back.

    Returns its user message's text (see ``Store.discard_turn``).
    """
    run = await db.get(RunRow, run_id)
    if (
        run is None
        or run.session_id != session_id
        or run.parent_run_id is not None
        or run.discarded_at is not None
    ):
        raise NotFound(f"no turn {run_id} in session {session_id}", run_id=run_id)
    top_level = (
        RunRow.session_id == session_id,
        RunRow.parent_run_id.is_(None),
        RunRow.discarded_at.is_(None),
    )
    active = await db.scalar(select(RunRow.run_id).where(*top_level, IS_ACTIVE).limit(1))
    if active is not None:
        raise Conflict(
            f"session {session_id} has an active run {active}: stop it first",
            active_run_id=active,
        )
    newest = select(RunRow.run_id).where(*top_level)
    last = await db.scalar(newest.order_by(RunRow.started_at.desc(), RunRow.run_id.desc()).limit(1))
    if last != run_id:
        raise Conflict(f"run {run_id} is not the session's last turn", last_run_id=last)
    await db.execute(
        update(RunRow)
        .where(or_(RunRow.run_id == run_id, RunRow.parent_run_id == run_id))
        .values(discarded_at=now)
    )
    asked = select(MessageRow.content).where(MessageRow.run_id == run_id, MessageRow.role == "user")
    return await db.scalar(asked.order_by(MessageRow.created_at).limit(1)) or ""


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
