"""The ``Store`` protocol: exactly what the engine and the HTTP layer need from storage.

Contract (checked by ``tests/contract/test_store.py`` against every implementation):

- ``create_run`` writes the run and its user message in one transaction, and refuses a second
  active top-level run in the same session (``Conflict``), even when two workers race.
- ``finish_run`` is compare-and-set: only a non-terminal run changes, so a stop racing completion
  leaves exactly one terminal status; the caller learns which one won.
- ``write`` applies one recorder batch (message and tool-call upserts, appended events, the
  endings of runs that end with it) atomically; replaying the same batch is harmless
  (idempotent on ids and ``(run_id, seq)``).
- One ending per run: a run stores at most one terminal ``run_finished`` event (the schema
  refuses a second one; ``write`` and recovery drop theirs if one is already stored), and
  recovery adopts a stored terminal event instead of writing its own.
- Timestamps come back UTC-aware.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import JsonValue

from tether.ending import RunEnding
from tether.events import StopReason, TerminalStatus, Usage, event_json
from tether.ids import RunId, SessionId, UserId
from tether.records import (
    CancelRequest,
    HistoryTurn,
    MessageRecord,
    RunRecord,
    SessionRecord,
    ToolCallRecord,
)

RECOVERY_SEQ_GAP = 1_000_000
"""How far past the last event stored (or seen on the bus) recovery puts the terminal event it
writes for a lost run.

Deliberate: without a bus that remembers (no Redis), a lost worker's viewers may have seen
events it never stored; the terminal event must come after all of them, or a reconnect with
``Last-Event-ID`` would skip it (issue #13). No run streams this many events between two
flushes, and a seq is only ever compared, never counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event as persisted: its JSON is exactly what was sent to clients."""

    run_id: RunId
    seq: int
    kind: str
    payload: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """The terminal state to record for a run."""

    status: TerminalStatus
    reason: StopReason | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    finished_at: datetime
    cancel: CancelRequest | None = None
    """The stop the run ended with, if any: recorded as its cancel request, replacing one that
    arrived first but lost (so the stored cancel fields agree with the ending)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ending:
    """A live run's end, written in the same transaction as its terminal event."""

    finish: Finish
    cancel: CancelRequest | None = None
    """The stop that ended it, recorded first if the row has none yet (first intent wins)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteBatch:
    """What the recorder flushes in one transaction."""

    messages: Sequence[MessageRecord] = ()
    tool_calls: Sequence[ToolCallRecord] = ()
    events: Sequence[StoredEvent] = ()
    usage: dict[RunId, Usage] = field(default_factory=dict[RunId, Usage])
    endings: dict[RunId, Ending] = field(default_factory=dict[RunId, Ending])
    """Runs that end with this batch: compare-and-set to terminal, like ``finish_run``."""

    def is_empty(self) -> bool:
        return not (self.messages or self.tool_calls or self.events or self.usage or self.endings)


def stored(ending: RunEnding) -> tuple[Ending, WriteBatch]:
    """What a store writes for ``ending``: the run's terminal fields, and its records and events.

    The batch carries no ``endings``: the caller applies the ``Ending`` its own way (a live run's
    with its last flush, a paused run's by compare-and-set from ``paused``).
    """
    finish = Finish(
        status=ending.status,
        reason=ending.reason,
        error=ending.error,
        usage=ending.usage,
        finished_at=ending.finished_at,
        cancel=ending.cancel,
    )
    batch = WriteBatch(
        messages=ending.messages,
        tool_calls=ending.tool_calls,
        events=[
            StoredEvent(run_id=e.run_id, seq=e.seq, kind=e.kind, payload=event_json(e))
            for e in ending.events
        ],
    )
    return Ending(finish=finish, cancel=ending.cancel), batch


class LiveEvents(Protocol):
    """What recovery needs from the live event bus (``tether.bus.base.EventBus`` is one)."""

    async def last_seqs(self, run_ids: Sequence[RunId]) -> dict[RunId, int]: ...
    def publish(self, event: StoredEvent) -> None: ...


class Store(Protocol):
    """Where sessions, messages, runs, tool calls and run events live (see the module contract)."""

    # Sessions
    async def create_session(self, session: SessionRecord) -> None: ...
    async def get_session(self, session_id: SessionId) -> SessionRecord | None: ...
    async def list_sessions(
        self,
        user_id: UserId,
        agent: str | None,
        *,
        limit: int,
        before: datetime | None = None,
    ) -> list[SessionRecord]:
        """A user's active sessions, newest activity first; ``before`` pages by ``updated_at``."""
        ...

    async def rename_session(self, session_id: SessionId, title: str) -> None:
        """Set the title by hand: a generated title never replaces it.

        Raises:
            NotFound: no such session.
        """
        ...

    async def set_generated_title(self, session_id: SessionId, title: str) -> bool:
        """Set a generated title unless a person titled the session; True if it was set."""
        ...

    async def discard_turn(self, session_id: SessionId, run_id: RunId) -> str:
        """Roll back the session's last turn, the top-level run ``run_id``; return its question.

        The run and its sub-agent runs leave the session's ``messages``, ``history`` and
        ``session_runs`` (their rows stay for audit). Returns the text of the run's user message.

        Raises:
            NotFound: no such turn in the session (or it was rolled back already).
            Conflict: a run of the session is active (``details["active_run_id"]``), or a
                later turn exists.
        """
        ...

    async def set_summary(self, session_id: SessionId, summary: str, *, through: RunId) -> None:
        """Keep ``summary`` as the session's running summary of its turns up to ``through``."""
        ...

    async def delete_session(self, session_id: SessionId) -> None:
        """Hide the session from listings and reads; its rows stay for audit."""
        ...

    # Runs
    async def create_run(
        self,
        run: RunRecord,
        user_message: MessageRecord | None,
        *,
        new_session: SessionRecord | None = None,
    ) -> None:
        """Insert the run (and its user message, and its ``new_session``) atomically.

        Raises:
            Conflict: a top-level run is already active in the session
                (``details["active_run_id"]`` names it).
        """
        ...

    async def get_run(self, run_id: RunId) -> RunRecord | None: ...
    async def active_run(self, session_id: SessionId) -> RunRecord | None: ...
    async def child_runs(self, run_id: RunId) -> list[RunRecord]: ...
    async def session_runs(self, session_id: SessionId) -> list[RunRecord]: ...
    async def request_runs(self, user_id: UserId, client_request_id: str) -> list[RunRecord]:
        """The user's runs started with ``client_request_id``, oldest first."""
        ...

    async def claim_run(self, run_id: RunId, *, owner: str, lease_expires_at: datetime) -> bool:
        """Move a pending run to running under ``owner``; False if it is no longer pending."""
        ...

    async def finish_run(self, run_id: RunId, finish: Finish) -> RunRecord:
        """Compare-and-set the terminal state; return the run as it now is (whoever won).

        Raises:
            NotFound: no such run.
        """
        ...

    async def request_cancel(self, run_id: RunId, request: CancelRequest) -> RunRecord:
        """Record a stop intent on an active run (first intent wins); return the run.

        Raises:
            NotFound: no such run.
        """
        ...

    async def renew_leases(
        self, owner: str, run_ids: Sequence[RunId], *, lease_expires_at: datetime
    ) -> list[RunRecord]:
        """Extend the leases of ``owner``'s running runs; return those with a cancel requested."""
        ...

    async def interrupt_expired(
        self,
        now: datetime,
        *,
        live: LiveEvents | None = None,
        spare: Collection[RunId] = (),
    ) -> list[RunRecord]:
        """Mark runs whose lease expired ``interrupted``/``worker_lost``, as one recovery.

        ``spare``: runs the caller is driving, alive whatever their lease says (a worker whose
        renewals were too slow must not end its own runs).

        The store reads each run's partial state and writes what ``tether.ending.decide``
        returns: a stored terminal event is adopted; otherwise the run keeps its flushed partial
        text (its last streaming message becomes ``interrupted``), its open tool calls are closed
        ``cancelled``, each with a ``tool_call_finished`` event, and a terminal ``run_finished``
        event follows so stream replays end. Those seqs follow their last stored event and,
        given ``live``, the last one the bus carried (a dead worker's viewers may have seen
        events it never stored): no viewer has seen them yet. Once committed, the new events
        are published on ``live``, so live viewers end at once.
        """
        ...

    # Paused runs (human in the loop)
    async def pause_run(
        self, run_id: RunId, *, owner: str, expires_at: datetime | None, state: JsonValue
    ) -> bool:
        """Move ``owner``'s running run to ``paused``; False if it is no longer running there.

        A paused run has no owner; ``lease_expires_at`` holds its approval deadline (None: it
        waits for ever) and ``resume_state`` what its runtime needs to continue.
        """
        ...

    async def resume_run(
        self, run_id: RunId, *, owner: str, lease_expires_at: datetime
    ) -> RunRecord | None:
        """Move a paused run to ``running`` under ``owner``; None if it is not paused any more.

        Raises:
            NotFound: no such run.
        """
        ...

    async def end_paused(
        self, run_id: RunId, finish: Finish, *, cancel: CancelRequest, batch: WriteBatch
    ) -> RunRecord | None:
        """End a paused run, recording ``cancel`` and writing ``batch``, all or nothing.

        Compare-and-set: return the ended run, or None if it was not paused (nothing changed).

        Raises:
            NotFound: no such run.
        """
        ...

    async def expired_paused(self, now: datetime) -> list[RunRecord]:
        """Paused runs whose approval deadline is before ``now``."""
        ...

    async def last_seq(self, run_id: RunId) -> int:
        """The seq of the run's last stored event (-1: none)."""
        ...

    async def run_messages(self, run_id: RunId) -> list[MessageRecord]:
        """One run's messages in order, with their tool calls."""
        ...

    # Stops held before their run exists
    async def hold_stop(
        self, user_id: UserId, key: str, request: CancelRequest, *, held_until: datetime
    ) -> None:
        """Hold ``request`` for the run ``user_id`` starts under ``key``, until ``held_until``.

        Replaces the user's own stop held under ``key``, never another user's.
        """
        ...

    async def take_held_stop(
        self, user_id: UserId, keys: Sequence[str], *, now: datetime
    ) -> CancelRequest | None:
        """Take the user's stop held under any of ``keys`` and not expired at ``now``, if any.

        Taken once: of concurrent callers, one gets it.
        """
        ...

    # What the run streamed
    async def write(self, batch: WriteBatch) -> None: ...
    async def events_after(
        self, run_id: RunId, after_seq: int, *, limit: int
    ) -> list[StoredEvent]: ...

    async def messages(self, session_id: SessionId) -> list[MessageRecord]:
        """The session's messages in order, with their tool calls."""
        ...

    async def history(self, session_id: SessionId) -> list[HistoryTurn]:
        """Finished top-level runs of the session, oldest first, with their messages."""
        ...

    async def ping(self) -> None:
        """Check the database answers now, without retrying (readiness probes).

        Raises:
            StorageError: it does not.
        """
        ...

    async def close(self) -> None: ...
