"""``MemoryStore``: the in-process Store, for tests and for embedding tether without a database."""

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from pydantic import JsonValue

from tether.ending import Cause, Recorded, RunState, WorkerLost, decide
from tether.errors import Conflict, NotFound
from tether.events import (
    ACTIVE_STATUSES,
    LEASED_STATUSES,
    RUN_EVENTS,
    TERMINAL_STATUSES,
    RunFinished,
)
from tether.ids import MessageId, RunId, SessionId, UserId
from tether.records import (
    CancelRequest,
    HistoryTurn,
    MessageRecord,
    RunRecord,
    SessionRecord,
    ToolCallRecord,
)
from tether.storage.store import (
    RECOVERY_SEQ_GAP,
    Finish,
    LiveEvents,
    StoredEvent,
    WriteBatch,
    stored,
)


class MemoryStore:
    """Keeps everything in dicts; single event loop, so no locking is needed."""

    def __init__(self) -> None:
        self._sessions: dict[SessionId, SessionRecord] = {}
        self._runs: dict[RunId, RunRecord] = {}
        self._messages: dict[MessageId, MessageRecord] = {}
        self._tool_calls: dict[tuple[RunId, str], ToolCallRecord] = {}
        self._events: dict[RunId, dict[int, StoredEvent]] = {}
        self._discarded: set[RunId] = set()
        self._held: dict[tuple[UserId, str], tuple[CancelRequest, datetime]] = {}

    async def create_session(self, session: SessionRecord) -> None:
        self._sessions[session.session_id] = session

    async def get_session(self, session_id: SessionId) -> SessionRecord | None:
        session = self._sessions.get(session_id)
        return session if session is not None and session.is_active else None

    async def list_sessions(
        self,
        user_id: UserId,
        agent: str | None,
        *,
        limit: int,
        before: datetime | None = None,
    ) -> list[SessionRecord]:
        found = [
            s
            for s in self._sessions.values()
            if s.is_active
            and s.user_id == user_id
            and (agent is None or s.agent == agent)
            and (before is None or s.updated_at < before)
        ]
        found.sort(key=lambda s: (s.updated_at, s.session_id), reverse=True)
        return found[:limit]

    async def rename_session(self, session_id: SessionId, title: str) -> None:
        session = self._require_session(session_id)
        self._sessions[session_id] = dataclasses.replace(session, title=title, title_source="user")

    async def set_generated_title(self, session_id: SessionId, title: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None or not session.is_active or session.title_source == "user":
            return False
        self._sessions[session_id] = dataclasses.replace(
            session, title=title, title_source="generated"
        )
        return True

    async def discard_turn(self, session_id: SessionId, run_id: RunId) -> str:
        run = self._runs.get(run_id)
        if (
            run is None
            or run.session_id != session_id
            or run.parent_run_id is not None
            or run_id in self._discarded
        ):
            raise NotFound(f"no turn {run_id} in session {session_id}", run_id=run_id)
        if (active := await self.active_run(session_id)) is not None:
            raise Conflict(
                f"session {session_id} has an active run {active.run_id}: stop it first",
                active_run_id=active.run_id,
            )
        turns = [r for r in await self.session_runs(session_id) if r.parent_run_id is None]
        if turns[-1].run_id != run_id:
            raise Conflict(
                f"run {run_id} is not the session's last turn", last_run_id=turns[-1].run_id
            )
        self._discarded |= {run_id, *(r.run_id for r in await self.child_runs(run_id))}
        asked = [m for m in await self.run_messages(run_id) if m.role == "user"]
        return asked[0].content if asked else ""

    async def set_summary(self, session_id: SessionId, summary: str, *, through: RunId) -> None:
        session = self._require_session(session_id)
        self._sessions[session_id] = dataclasses.replace(
            session, summary=summary, summary_through=through
        )

    async def delete_session(self, session_id: SessionId) -> None:
        session = self._require_session(session_id)
        self._sessions[session_id] = dataclasses.replace(session, is_active=False)

    async def create_run(
        self,
        run: RunRecord,
        user_message: MessageRecord | None,
        *,
        new_session: SessionRecord | None = None,
    ) -> None:
        if new_session is not None:
            await self.create_session(new_session)
        if run.parent_run_id is None and (active := await self.active_run(run.session_id)):
            raise Conflict(
                f"session {run.session_id} already has an active run {active.run_id}",
                active_run_id=active.run_id,
            )
        self._runs[run.run_id] = run
        if user_message is not None:
            self._messages[user_message.message_id] = user_message
        if session := self._sessions.get(run.session_id):
            self._sessions[run.session_id] = dataclasses.replace(session, updated_at=run.started_at)

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        return self._runs.get(run_id)

    async def active_run(self, session_id: SessionId) -> RunRecord | None:
        for run in self._runs.values():
            if (
                run.session_id == session_id
                and run.parent_run_id is None
                and run.status in ACTIVE_STATUSES
            ):
                return run
        return None

    async def child_runs(self, run_id: RunId) -> list[RunRecord]:
        return [r for r in self._runs.values() if r.parent_run_id == run_id]

    async def request_runs(self, user_id: UserId, client_request_id: str) -> list[RunRecord]:
        return sorted(
            (
                r
                for r in self._runs.values()
                if r.user_id == user_id and r.client_request_id == client_request_id
            ),
            key=lambda r: (r.started_at, r.run_id),
        )

    async def session_runs(self, session_id: SessionId) -> list[RunRecord]:
        return sorted(
            (
                r
                for r in self._runs.values()
                if r.session_id == session_id and r.run_id not in self._discarded
            ),
            key=lambda r: (r.started_at, r.run_id),
        )

    async def claim_run(self, run_id: RunId, *, owner: str, lease_expires_at: datetime) -> bool:
        run = self._require_run(run_id)
        if run.status != "pending":
            return False
        self._runs[run_id] = dataclasses.replace(
            run, status="running", owner=owner, lease_expires_at=lease_expires_at
        )
        return True

    async def finish_run(self, run_id: RunId, finish: Finish) -> RunRecord:
        run = self._require_run(run_id)
        if run.status in TERMINAL_STATUSES:
            return run
        run = dataclasses.replace(
            run,
            status=finish.status,
            reason=finish.reason,
            error=finish.error,
            usage=finish.usage,
            finished_at=finish.finished_at,
            lease_expires_at=None,
            cancel=finish.cancel or run.cancel,
        )
        self._runs[run_id] = run
        return run

    async def request_cancel(self, run_id: RunId, request: CancelRequest) -> RunRecord:
        run = self._require_run(run_id)
        if run.status in TERMINAL_STATUSES or run.cancel is not None:
            return run
        run = dataclasses.replace(run, cancel=request)
        self._runs[run_id] = run
        return run

    async def renew_leases(
        self, owner: str, run_ids: Sequence[RunId], *, lease_expires_at: datetime
    ) -> list[RunRecord]:
        cancelled: list[RunRecord] = []
        for run_id in run_ids:
            run = self._runs.get(run_id)
            if run is None or run.owner != owner or run.status in TERMINAL_STATUSES:
                continue
            run = self._runs[run_id] = dataclasses.replace(run, lease_expires_at=lease_expires_at)
            if run.cancel is not None:
                cancelled.append(run)
        return cancelled

    async def interrupt_expired(
        self,
        now: datetime,
        *,
        live: LiveEvents | None = None,
        spare: Collection[RunId] = (),
    ) -> list[RunRecord]:
        def is_expired(r: RunRecord) -> bool:
            return (
                r.run_id not in spare
                and r.status in LEASED_STATUSES
                and r.lease_expires_at is not None
                and r.lease_expires_at < now
            )

        expired = [r for r in self._runs.values() if is_expired(r)]
        published: dict[RunId, int] = {}
        if live is not None and expired:
            published = await live.last_seqs([r.run_id for r in expired])
        # Checked again: other tasks ran during that await.
        expired = [r for e in expired if (r := self._runs.get(e.run_id)) and is_expired(r)]
        new_events: list[StoredEvent] = []
        for run in expired:
            ending = decide(self._lost_state(run, now, published), self._lost_cause(run))
            self._runs[run.run_id] = dataclasses.replace(
                run,
                status=ending.status,
                reason=ending.reason,
                error=ending.error,
                usage=ending.usage,
                finished_at=ending.finished_at,
                lease_expires_at=None,
            )
            batch = stored(ending)[1]
            await self.write(batch)
            new_events.extend(batch.events)
        if live is not None:
            for event in new_events:
                live.publish(event)
        return [self._runs[r.run_id] for r in expired]

    def _lost_cause(self, run: RunRecord) -> Cause:
        """Adopt the run's stored terminal event (its final write was cut short), if any."""
        events = self._events.get(run.run_id, {})
        stored_end = next((e for e in events.values() if e.kind == "run_finished"), None)
        if stored_end is None:
            return WorkerLost()
        terminal = RUN_EVENTS.validate_json(stored_end.payload)
        assert isinstance(terminal, RunFinished)
        return Recorded(
            status=terminal.status,
            reason=terminal.reason,
            error=terminal.error,
            usage=terminal.usage,
        )

    def _lost_state(
        self, run: RunRecord, now: datetime, published: Mapping[RunId, int]
    ) -> RunState:
        """What the store holds of a lost run: its open records and where its events end."""
        events = self._events.get(run.run_id, {})
        last = max(max(events, default=-1), published.get(run.run_id, -1))
        terminal_seq = next((s for s, e in events.items() if e.kind == "run_finished"), None)
        messages = sorted(
            (m for m in self._messages.values() if m.run_id == run.run_id),
            key=lambda m: (m.created_at, m.message_id),
        )
        calls = sorted(
            (c for c in self._tool_calls.values() if c.run_id == run.run_id),
            key=lambda c: (c.started_at, c.call_id),
        )
        return RunState(
            run_id=run.run_id,
            next_seq=last + RECOVERY_SEQ_GAP if terminal_seq is None else terminal_seq,
            usage=run.usage,
            messages=[m for m in messages if m.status == "streaming"],
            open_calls=[c for c in calls if c.status == "running"],
            stop=run.cancel,
            now=now,
        )

    async def pause_run(
        self, run_id: RunId, *, owner: str, expires_at: datetime | None, state: JsonValue
    ) -> bool:
        run = self._require_run(run_id)
        if run.status != "running" or run.owner != owner:
            return False
        self._runs[run_id] = dataclasses.replace(
            run, status="paused", owner=None, lease_expires_at=expires_at, resume_state=state
        )
        return True

    async def resume_run(
        self, run_id: RunId, *, owner: str, lease_expires_at: datetime
    ) -> RunRecord | None:
        run = self._require_run(run_id)
        if run.status != "paused":
            return None
        resumed = dataclasses.replace(
            run, status="running", owner=owner, lease_expires_at=lease_expires_at
        )
        self._runs[run_id] = resumed
        return resumed

    async def end_paused(
        self, run_id: RunId, finish: Finish, *, cancel: CancelRequest, batch: WriteBatch
    ) -> RunRecord | None:
        run = self._require_run(run_id)
        if run.status != "paused":
            return None
        self._runs[run_id] = dataclasses.replace(run, cancel=run.cancel or cancel)
        await self.write(batch)
        ended = await self.finish_run(run_id, finish)
        self._runs[run_id] = ended = dataclasses.replace(ended, owner=None, resume_state=None)
        return ended

    async def expired_paused(self, now: datetime) -> list[RunRecord]:
        return [
            r
            for r in self._runs.values()
            if r.status == "paused" and r.lease_expires_at is not None and r.lease_expires_at < now
        ]

    async def last_seq(self, run_id: RunId) -> int:
        return max(self._events.get(run_id, {}), default=-1)

    async def run_messages(self, run_id: RunId) -> list[MessageRecord]:
        if (run := self._runs.get(run_id)) is None:
            return []
        return [m for m in self._session_messages(run.session_id) if m.run_id == run_id]

    async def hold_stop(
        self, user_id: UserId, key: str, request: CancelRequest, *, held_until: datetime
    ) -> None:
        now = request.requested_at
        self._held = {k: held for k, held in self._held.items() if held[1] >= now}
        self._held[user_id, key] = (request, held_until)

    async def take_held_stop(
        self, user_id: UserId, keys: Sequence[str], *, now: datetime
    ) -> CancelRequest | None:
        taken = [held for key in keys if (held := self._held.pop((user_id, key), None))]
        alive = [request for request, until in taken if until >= now]
        return min(alive, key=lambda r: r.requested_at, default=None)

    async def write(self, batch: WriteBatch) -> None:
        for message in batch.messages:
            self._messages[message.message_id] = message
        for call in batch.tool_calls:
            self._tool_calls[call.run_id, call.call_id] = call
        for event in batch.events:
            events = self._events.setdefault(event.run_id, {})
            if event.kind == "run_finished" and any(
                e.kind == "run_finished" for e in events.values()
            ):
                continue  # one ending per run, like the SQL schema's unique index
            events.setdefault(event.seq, event)
        for run_id, usage in batch.usage.items():
            if run := self._runs.get(run_id):
                self._runs[run_id] = dataclasses.replace(run, usage=usage)
        for run_id, ending in batch.endings.items():
            if ending.cancel is not None:
                await self.request_cancel(run_id, ending.cancel)
            await self.finish_run(run_id, ending.finish)

    async def events_after(self, run_id: RunId, after_seq: int, *, limit: int) -> list[StoredEvent]:
        events = self._events.get(run_id, {})
        return [events[s] for s in sorted(events) if s > after_seq][:limit]

    async def messages(self, session_id: SessionId) -> list[MessageRecord]:
        return [m for m in self._session_messages(session_id) if m.run_id not in self._discarded]

    def _session_messages(self, session_id: SessionId) -> list[MessageRecord]:
        found = [m for m in self._messages.values() if m.session_id == session_id]
        found.sort(key=lambda m: (m.created_at, m.message_id))
        return [self._with_tool_calls(m) for m in found]

    async def history(self, session_id: SessionId) -> list[HistoryTurn]:
        messages = await self.messages(session_id)
        return [
            HistoryTurn(run=run, messages=tuple(m for m in messages if m.run_id == run.run_id))
            for run in await self.session_runs(session_id)
            if run.parent_run_id is None and run.status in TERMINAL_STATUSES
        ]

    async def ping(self) -> None:
        return

    async def close(self) -> None:
        return None

    def _with_tool_calls(self, message: MessageRecord) -> MessageRecord:
        calls = tuple(
            sorted(
                (c for c in self._tool_calls.values() if c.message_id == message.message_id),
                key=lambda c: (c.started_at, c.call_id),
            )
        )
        return dataclasses.replace(message, tool_calls=calls)

    def _require_run(self, run_id: RunId) -> RunRecord:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}", run_id=run_id)
        return run

    def _require_session(self, session_id: SessionId) -> SessionRecord:
        session = self._sessions.get(session_id)
        if session is None or not session.is_active:
            raise NotFound(f"no session {session_id}", session_id=session_id)
        return session
