"""The statements behind ``SqlStore``'s held stops: hold one, take one (once).

Each function runs inside the caller's unit of work (one session, one transaction); the
``SqlStore`` method around it owns the transaction and its retries.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tether.ids import UserId
from tether.records import CancelRequest
from tether.storage._sql_writes import Inserter
from tether.storage.tables import HeldStopRow

_UPDATES = ("held_until", "requested_at", "requested_by", "reason", "mode", "action")


async def hold(
    db: AsyncSession,
    user_id: UserId,
    key: str,
    request: CancelRequest,
    *,
    held_until: datetime,
    insert: Inserter,
) -> None:
    """Hold ``request`` under the user's ``key`` (replacing the user's own), forget expired ones."""
    await db.execute(delete(HeldStopRow).where(HeldStopRow.held_until < request.requested_at))
    stmt = insert(HeldStopRow).values(
        HeldStopRow.values(user_id, key, request, held_until=held_until)
    )
    await db.execute(
        stmt.on_conflict_do_update(
            index_elements=[HeldStopRow.user_id, HeldStopRow.key],
            set_={k: stmt.excluded[k] for k in _UPDATES},
        )
    )


def held(user_id: UserId, keys: Sequence[str], now: datetime) -> list[ColumnElement[bool]]:
    """The user's stops held under any of ``keys`` and not yet expired."""
    return [
        HeldStopRow.user_id == user_id,
        HeldStopRow.key.in_(keys),
        HeldStopRow.held_until >= now,
    ]


async def is_held(db: AsyncSession, where: Sequence[ColumnElement[bool]]) -> bool:
    return (await db.scalars(select(HeldStopRow.key).where(*where).limit(1))).first() is not None


async def take(db: AsyncSession, where: Sequence[ColumnElement[bool]]) -> CancelRequest | None:
    """Delete the matching held stops; the earliest one sent, if any (only one caller gets it)."""
    rows = (await db.scalars(delete(HeldStopRow).where(*where).returning(HeldStopRow))).all()
    first = min(rows, key=lambda row: row.requested_at, default=None)
    return first.to_request() if first is not None else None
