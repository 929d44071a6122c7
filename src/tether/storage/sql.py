"""``SqlStore``: the ``Store`` over one SQLAlchemy ``AsyncEngine`` (SQLite or PostgreSQL).

Guarantees, beyond the ``Store`` contract:

- Every method is one unit of work: one session, one transaction. State changes are
  compare-and-set ``UPDATE ... WHERE status IN (...)``, checked through ``RETURNING``.
- Transient failures (connection lost, database locked, serialization failure, deadlock) are
  retried with exponential backoff for up to ``retry_budget_s``, then raised as
  ``StorageError``. A failure while committing is retried only where replaying the unit is
  harmless; elsewhere it is raised at once, since the commit may or may not have happened.
  (Engine creation, connection setup and the retry loop live in ``_engine.py``.)
- Reads of several tables (``messages``, ``history``) take a constant number of queries.

The longer units' statements live next to this module, each run inside the unit its method
opens: ``_sql_runs.py`` (run rows), ``_sql_recovery.py`` (runs of a lost worker),
``_sql_writes.py`` (what runs streamed; paused runs) and ``_sql_reads.py`` (messages, history).

Deliberately not done: no ORM relationships and no identity map shared between calls; every
record returned is a fresh, frozen copy of what the database held.
"""

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar

import anyio
from pydantic import JsonValue
from sqlalchemy import ColumnElement, Select, Table, or_, select, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.selectable import TypedReturnsRows

from tether.errors import Conflict, NotFound, StorageError, StorageRejected, UsageError
from tether.events import LEASED_STATUSES
from tether.ids import RunId, SessionId, UserId
from tether.records import (
    CancelRequest,
    HistoryTurn,
    MessageRecord,
    RunRecord,
    SessionRecord,
    utcnow,
)
from tether.storage import _sql_held as _held
from tether.storage import _sql_reads as _reads
from tether.storage import _sql_recovery as _recovery
from tether.storage import _sql_runs as _runs
from tether.storage import _sql_writes as _writes
from tether.storage._engine import DEFAULT_RETRY_BUDGET_S, WRITE_OPTION, open_engine, run_unit
from tether.storage._writer_turns import WriterTurns
from tether.storage.store import Finish, LiveEvents, StoredEvent, WriteBatch
from tether.storage.tables import Base, RunEventRow, RunRow, SessionRow

__all__ = ["DEFAULT_RETRY_BUDGET_S", "WRITE_OPTION", "SqlStore", "open_engine"]

_CREATE_RUN_ATTEMPTS: Final = 3
FAILING_RETRY_BUDGET_S: Final = 0.5
"""How long a unit retries while the database is known to be failing (see ``is_failing``), or
once it finds the database unreachable: an outage answers 503 within a second, not after the
full budget (issue #15). A busy or locked database still gets the full budget."""
_T = TypeVar("_T")
_Row = TypeVar("_Row", bound=Base)


class SqlStore:
    """The ``Store`` over one ``AsyncEngine``, which it owns and disposes of on ``close()``."""

    def __init__(
        self, engine: AsyncEngine, *, retry_budget_s: float = DEFAULT_RETRY_BUDGET_S
    ) -> None:
        backend = engine.dialect.name
        if backend not in ("sqlite", "postgresql"):
            raise UsageError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
        self._engine = engine
        self._is_postgres = backend == "postgresql"
        self._retry_budget_s = retry_budget_s
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(
            engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        # SQLite has one writer at a time. This process's writers queue here, rather than poll
        # the file lock: under load a write transaction spans many loop turns, and writers
        # polling with busy_timeout ran out of retries (503s on start, lease renewals lost).
        # Creating a run or session goes first (``WriterTurns``). Other processes on the same
        # file still meet busy_timeout.
        self._writers = None if self._is_postgres else WriterTurns()
        self._failing_since: float | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
    ) -> "SqlStore":
        """A store on a new engine for ``url`` (see ``open_engine``); nothing connects yet.

        Raises:
            UsageError: an unsupported database or schema.
        """
        return cls(open_engine(url, schema=schema), retry_budget_s=retry_budget_s)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    # Sessions

    async def create_session(self, session: SessionRecord) -> None:
        values = SessionRow.values(session)
        stmt = self._insert(SessionRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[SessionRow.session_id],
            set_={k: v for k, v in stmt.excluded.items() if k != "id"},
        )

        async def work(db: AsyncSession) -> None:
            await db.execute(stmt)

        await self._unit(work, is_write=True, is_urgent=True)

    async def get_session(self, session_id: SessionId) -> SessionRecord | None:
        row = await self._get(SessionRow, session_id)
        return row.to_record() if row is not None and row.is_active else None

    async def list_sessions(
        self, user_id: UserId, agent: str | None, *, limit: int, before: datetime | None = None
    ) -> list[SessionRecord]:
        stmt = select(SessionRow).where(SessionRow.user_id == user_id, SessionRow.is_active)
        if agent is not None:
            stmt = stmt.where(SessionRow.agent == agent)
        if before is not None:
            stmt = stmt.where(SessionRow.updated_at < before)
        stmt = stmt.order_by(SessionRow.updated_at.desc(), SessionRow.session_id.desc())
        return [r.to_record() for r in await self._scalars(stmt.limit(limit))]

    async def rename_session(self, session_id: SessionId, title: str) -> None:
        await self._update_session(session_id, title=title, title_source="user")

    async def set_generated_title(self, session_id: SessionId, title: str) -> bool:
        stmt = (
            update(SessionRow)
            .where(
                SessionRow.session_id == session_id,
                SessionRow.is_active,
                # Compare-and-set: a rename landing first wins, whatever the order of writes.
                or_(SessionRow.title_source.is_(None), SessionRow.title_source != "user"),
            )
            .values(title=title, title_source="generated")
            .returning(SessionRow.session_id)
        )
        return bool(await self._scalars(stmt, is_write=True))

    async def set_summary(self, session_id: SessionId, summary: str, *, through: RunId) -> None:
        await self._update_session(session_id, summary=summary, summary_through=through)

    async def delete_session(self, session_id: SessionId) -> None:
        await self._update_session(session_id, is_active=False)

    async def _update_session(self, session_id: SessionId, **values: Any) -> None:
        stmt = (
            update(SessionRow)
            .where(SessionRow.session_id == session_id, SessionRow.is_active)
            .values(**values)
            .returning(SessionRow.session_id)
        )
        if not await self._scalars(stmt, is_write=True):
            raise NotFound(f"no session {session_id}", session_id=session_id)

    # Runs

    async def create_run(
        self,
        run: RunRecord,
        user_message: MessageRecord | None,
        *,
        new_session: SessionRecord | None = None,
    ) -> None:
        work = partial(_runs.create, run=run, user_message=user_message, new_session=new_session)
        for attempt in range(_CREATE_RUN_ATTEMPTS):
            try:
                # Deliberate: not replayed after a failed commit, which may have succeeded; the
                # replay would then report the run as conflicting with itself.
                await self._unit(work, is_write=True, is_idempotent=False, is_urgent=True)
            except IntegrityError as exc:
                cause = await self._create_run_conflict(run)
                if cause is not None:
                    raise cause from exc
                # Nothing explains it any more: the active run finished meanwhile. Try again.
                if attempt == _CREATE_RUN_ATTEMPTS - 1:
                    raise Conflict(
                        f"cannot create run {run.run_id}: {exc.orig}", run_id=run.run_id
                    ) from exc
            else:
                return

    async def _create_run_conflict(self, run: RunRecord) -> Conflict | NotFound | None:
        if run.parent_run_id is None and (active := await self.active_run(run.session_id)):
            return Conflict(
                f"session {run.session_id} already has an active run {active.run_id}",
                active_run_id=active.run_id,
            )
        return await self._unit(partial(_runs.create_conflict, run=run))

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        row = await self._get(RunRow, run_id)
        return row.to_record() if row is not None else None

    async def active_run(self, session_id: SessionId) -> RunRecord | None:
        stmt = select(RunRow).where(
            RunRow.session_id == session_id, RunRow.parent_run_id.is_(None), _runs.IS_ACTIVE
        )
        found = await self._select_runs(stmt.limit(1))
        return found[0] if found else None

    async def child_runs(self, run_id: RunId) -> list[RunRecord]:
        return await self._select_runs(select(RunRow).where(RunRow.parent_run_id == run_id))

    async def session_runs(self, session_id: SessionId) -> list[RunRecord]:
        stmt = select(RunRow).where(RunRow.session_id == session_id, _reads.KEPT)
        return await self._select_runs(stmt)

    async def discard_turn(self, session_id: SessionId, run_id: RunId) -> str:
        work = partial(_runs.discard_turn, session_id=session_id, run_id=run_id, now=utcnow())
        # Deliberate: a replay after a commit that did succeed would answer NotFound.
        return await self._unit(work, is_write=True, is_idempotent=False)

    async def request_runs(self, user_id: UserId, client_request_id: str) -> list[RunRecord]:
        stmt = select(RunRow).where(
            RunRow.user_id == user_id, RunRow.client_request_id == client_request_id
        )
        return await self._select_runs(stmt)

    async def _select_runs(self, stmt: Select[RunRow]) -> list[RunRecord]:
        ordered = stmt.order_by(RunRow.started_at, RunRow.run_id)
        return [r.to_record() for r in await self._scalars(ordered)]

    async def claim_run(self, run_id: RunId, *, owner: str, lease_expires_at: datetime) -> bool:
        work = partial(_runs.claim, run_id=run_id, owner=owner, lease_expires_at=lease_expires_at)
        # Deliberate: a replay after a commit that did succeed would answer False.
        return await self._unit(work, is_write=True, is_idempotent=False)

    async def finish_run(self, run_id: RunId, finish: Finish) -> RunRecord:
        return await self._update_active_run(
            run_id,
            (),
            status=finish.status,
            reason=finish.reason,
            error=finish.error,
            finished_at=finish.finished_at,
            lease_expires_at=None,
            **RunRow.usage_values(finish.usage),
            **(RunRow.cancel_values(finish.cancel) if finish.cancel is not None else {}),
        )

    async def request_cancel(self, run_id: RunId, request: CancelRequest) -> RunRecord:
        return await self._update_active_run(
            run_id, (RunRow.cancel_requested_at.is_(None),), **RunRow.cancel_values(request)
        )

    async def _update_active_run(
        self, run_id: RunId, where: Sequence[ColumnElement[bool]], **values: Any
    ) -> RunRecord:
        work = partial(_runs.update_active, run_id=run_id, where=where, values=values)
        return await self._unit(work, is_write=True)

    async def renew_leases(
        self, owner: str, run_ids: Sequence[RunId], *, lease_expires_at: datetime
    ) -> list[RunRecord]:
        if not run_ids:
            return []
        work = partial(
            _runs.renew_leases, owner=owner, run_ids=run_ids, lease_expires_at=lease_expires_at
        )
        renewed = await self._unit(work, is_write=True)
        order = {run_id: i for i, run_id in enumerate(run_ids)}
        return sorted((r for r in renewed if r.cancel is not None), key=lambda r: order[r.run_id])

    async def interrupt_expired(
        self,
        now: datetime,
        *,
        live: LiveEvents | None = None,
        spare: Collection[RunId] = (),
    ) -> list[RunRecord]:
        is_expired: list[ColumnElement[bool]] = [
            RunRow.status.in_(LEASED_STATUSES),
            RunRow.lease_expires_at < now,
        ]
        if spare:
            is_expired.append(RunRow.run_id.not_in(list(spare)))
        published: dict[RunId, int] = {}
        if live is not None:
            # Asked before the transaction, so no row stays locked across a bus round trip; the
            # UPDATE is then limited to these runs (any other is found at the next beat).
            found = await self._scalars(select(RunRow.run_id).where(*is_expired))
            candidates = [RunId(run_id) for run_id in found]
            if not candidates:
                return []
            published = await live.last_seqs(candidates)
            is_expired.append(RunRow.run_id.in_(candidates))
        work = partial(
            _recovery.interrupt,
            where=is_expired,
            now=now,
            published=published,
            insert=self._insert,
        )
        # Deliberate: a replay after a commit that did succeed would find nothing and return [],
        # losing the caller's list of runs to announce.
        runs, terminals = await self._unit(work, is_write=True, is_idempotent=False)
        if live is not None:
            for event in terminals:  # only once committed: a viewer that got one ends for good
                live.publish(event)
        return runs

    # What the run streamed

    async def write(self, batch: WriteBatch) -> None:
        if batch.is_empty():
            return
        at = utcnow()

        async def work(db: AsyncSession) -> None:
            await _writes.write_batch(db, batch, insert=self._insert, at=at)

        await self._unit(work, is_write=True)

    # Paused runs

    async def pause_run(
        self, run_id: RunId, *, owner: str, expires_at: datetime | None, state: JsonValue
    ) -> bool:
        work = partial(
            _writes.pause, run_id=run_id, owner=owner, expires_at=expires_at, state=state
        )
        # Deliberate: a replay after a commit that did succeed would answer False.
        return await self._unit(work, is_write=True, is_idempotent=False)

    async def resume_run(
        self, run_id: RunId, *, owner: str, lease_expires_at: datetime
    ) -> RunRecord | None:
        async def work(db: AsyncSession) -> RunRecord | None:
            found = await _writes.resume(db, run_id, owner=owner, lease_expires_at=lease_expires_at)
            if found is None and await db.get(RunRow, run_id) is None:
                raise NotFound(f"no run {run_id}", run_id=run_id)
            return found

        # Deliberate: a replay after a commit that did succeed would answer None.
        return await self._unit(work, is_write=True, is_idempotent=False)

    async def end_paused(
        self, run_id: RunId, finish: Finish, *, cancel: CancelRequest, batch: WriteBatch
    ) -> RunRecord | None:
        async def work(db: AsyncSession) -> RunRecord | None:
            ended = await _writes.end_paused(
                db, run_id, finish, cancel=cancel, batch=batch, insert=self._insert
            )
            if ended is None and await db.get(RunRow, run_id) is None:
                raise NotFound(f"no run {run_id}", run_id=run_id)
            return ended

        return await self._unit(work, is_write=True)

    async def expired_paused(self, now: datetime) -> list[RunRecord]:
        stmt = select(RunRow).where(RunRow.status == "paused", RunRow.lease_expires_at < now)
        return await self._select_runs(stmt)

    async def last_seq(self, run_id: RunId) -> int:
        return await self._unit(partial(_writes.last_seq, run_id=run_id))

    # Stops held before their run exists

    async def hold_stop(
        self, user_id: UserId, key: str, request: CancelRequest, *, held_until: datetime
    ) -> None:
        work = partial(
            _held.hold,
            user_id=user_id,
            key=key,
            request=request,
            held_until=held_until,
            insert=self._insert,
        )
        await self._unit(work, is_write=True)

    async def take_held_stop(
        self, user_id: UserId, keys: Sequence[str], *, now: datetime
    ) -> CancelRequest | None:
        where = _held.held(user_id, keys, now)
        # A read first: nearly every run has no held stop, and a read takes no write lock.
        if not await self._unit(partial(_held.is_held, where=where)):
            return None
        # Deliberate: a replay after a commit that did succeed would find nothing.
        return await self._unit(
            partial(_held.take, where=where), is_write=True, is_idempotent=False
        )

    # Messages, events and history

    async def run_messages(self, run_id: RunId) -> list[MessageRecord]:
        return await self._unit(partial(_reads.run_messages, run_id=run_id))

    async def events_after(self, run_id: RunId, after_seq: int, *, limit: int) -> list[StoredEvent]:
        stmt = (
            select(RunEventRow)
            .where(RunEventRow.run_id == run_id, RunEventRow.seq > after_seq)
            .order_by(RunEventRow.seq)
            .limit(limit)
        )
        return [r.to_stored() for r in await self._scalars(stmt)]

    async def messages(self, session_id: SessionId) -> list[MessageRecord]:
        work = partial(_reads.load_messages, session_id=session_id, run_filter=(_reads.KEPT,))
        return await self._unit(work)

    async def history(self, session_id: SessionId) -> list[HistoryTurn]:
        return await self._unit(partial(_reads.history, session_id=session_id))

    # Plumbing

    def _insert(self, entity: type[Base] | Table) -> PgInsert | SqliteInsert:
        return pg_insert(entity) if self._is_postgres else sqlite_insert(entity)

    async def _get(self, entity: type[_Row], key: str) -> _Row | None:
        async def work(db: AsyncSession) -> _Row | None:
            return await db.get(entity, key)

        return await self._unit(work)

    async def _scalars(self, stmt: TypedReturnsRows[_T], *, is_write: bool = False) -> list[_T]:
        async def work(db: AsyncSession) -> list[_T]:
            return list(await db.scalars(stmt))

        return await self._unit(work, is_write=is_write)

    async def ping(self) -> None:
        """One ``SELECT 1``, tried once (no retries): is the database reachable now?

        Raises:
            StorageError: it is not.
        """

        async def work(db: AsyncSession) -> None:
            await db.execute(select(1))

        await self._unit(work, retry_budget_s=0.0)

    @property
    def is_failing(self) -> bool:
        """The last unit of work failed for want of a database (not for its data)."""
        return self._failing_since is not None

    async def _unit(
        self,
        work: Callable[[AsyncSession], Awaitable[_T]],
        *,
        is_write: bool = False,
        is_idempotent: bool = True,
        is_urgent: bool = False,
        retry_budget_s: float | None = None,
    ) -> _T:
        """Run ``work`` in one session and transaction, retrying transient failures.

        ``is_urgent``: a write a client waits on to begin (creating a run or a session); on
        SQLite it takes the writer before queued ordinary writes.

        While the database is failing, or once this unit finds it unreachable, retries stop
        after ``FAILING_RETRY_BUDGET_S``: callers learn of an outage at once, not after the full
        budget each.

        Raises:
            StorageError: a transient failure outlasted the retry budget, or struck the commit
                of a unit that must not be replayed, or the database failed for good.
        """
        budget_s = self._retry_budget_s if retry_budget_s is None else retry_budget_s
        if self._failing_since is not None:
            budget_s = min(budget_s, FAILING_RETRY_BUDGET_S)
        sessions = self._write if is_write else self._read
        unit = partial(
            run_unit,
            sessions,
            work,
            retry_budget_s=budget_s,
            unreachable_budget_s=min(budget_s, FAILING_RETRY_BUDGET_S),
            is_idempotent=is_idempotent,
        )
        try:
            if is_write and self._writers is not None:
                async with self._writers.turn(is_urgent=is_urgent):
                    result = await unit()
            else:
                result = await unit()
        except StorageRejected:
            raise
        except StorageError:
            if self._failing_since is None:
                self._failing_since = anyio.current_time()
            raise
        self._failing_since = None
        return result
