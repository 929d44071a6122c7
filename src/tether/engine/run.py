"""One run: the sink runtimes report to, the events it emits, and its one terminal state.

Guarantees:
- ``seq`` strictly increases from 0; ``RunStarted`` is first and exactly one ``RunFinished`` is
  last. After the terminal event the sink is closed: late reports (a sync tool's thread that
  returns after the stop, a runtime that keeps going) are dropped and logged.
- What the recorder stores is fed from the same calls that emit events, so the recorded
  assistant text is byte-for-byte the concatenation of the ``text_delta`` events.
- Every tool call is closed before the terminal event: ``cancelled`` on a stop, ``error`` on a
  failure.
- The terminal event is the commit point: it is recorded at once, but reaches viewers (``events``,
  the event bus) only once the run's ending is stored with it (``release_terminal``), so
  whoever saw it reads the same ending from the store.

The hot path (``text``) appends to lists and sets an event: no I/O, no await, no validation.
"""

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import anyio
from pydantic import JsonValue

from tether.bus.base import EventBus
from tether.ending import (
    Cause,
    Completed,
    Failed,
    RunEnding,
    RunState,
    Stopped,
    StorageLost,
    decide,
)
from tether.engine.cancel import CancelToken
from tether.engine.policies import BudgetMeter
from tether.engine.recorder import RunBuffer
from tether.events import (
    DEFAULT_DENIAL,
    ChildRunFinished,
    ChildRunStarted,
    PendingCall,
    RunEvent,
    RunFinished,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
    StopReason,
    StopRequested,
    TerminalStatus,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolDecision,
    Usage,
    event_json,
)
from tether.ids import RunId, SessionId, UserId
from tether.records import CancelRequest, ToolCallRecord, utcnow
from tether.storage.store import StoredEvent, stored

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumption:
    """How a paused run continues: from ``seq``, with these decisions."""

    seq: int
    decisions: tuple[ToolDecision, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """How a run ended."""

    run_id: RunId
    status: TerminalStatus
    reason: StopReason | None = None
    error: str | None = None
    usage: Usage
    text: str
    """The assistant text the run streamed (partial if it was stopped)."""


class Run:
    """The engine's side of one run; implements the runtimes' ``RunSink``."""

    def __init__(
        self,
        *,
        run_id: RunId,
        session_id: SessionId,
        user_id: UserId,
        agent: str,
        parent_run_id: RunId | None,
        token: CancelToken,
        buffer: RunBuffer,
        meter: BudgetMeter,
        event_bus: EventBus,
        wake_recorder: Callable[[], None],
        open_child: "Callable[[Run, str], Run] | None" = None,
        resume: Resumption | None = None,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.user_id = user_id
        self.agent = agent
        self.parent_run_id = parent_run_id
        self.token = token
        self.buffer = buffer
        self.meter = meter
        self.children: list[Run] = []
        self._reported_children: set[RunId] = set()
        self._bus = event_bus
        self._wake_recorder = wake_recorder
        self._open_child = open_child
        self._usage_probe: Callable[[], Usage] | None = None
        self.built_agent: object = None
        """What the agent's factory built for this run (a title is asked of its model)."""
        self.approval_timeout_s: float | None = None
        """How long the run waits for approval if it pauses (None: for ever)."""
        self.is_persisting = False
        """True once the driver started storing the run's end (it does so once)."""
        self.is_driven_by_parent = False
        """True for a child the parent's runtime reports into (an Agno member or step)."""
        self._events: list[RunEvent] = []
        self._first_seq = 0 if resume is None else resume.seq
        """A resumed run's events continue the stored ones: ``_events[0]`` has this seq."""
        self._changed = anyio.Event()
        self._open_calls: set[str] = set()
        self._adopted_calls: set[str] = set()
        self._finished: RunFinished | None = None
        self._closed: RunFinished | RunPaused | None = None
        """The event after which the sink takes nothing more: the terminal one, or a pause."""
        self._done = anyio.Event()
        self._persisted = anyio.Event()
        self._pending_terminal: tuple[RunFinished, StoredEvent] | None = None
        """The terminal event, recorded but not yet shown to viewers (its write is pending)."""
        self.outcome: RunOutcome | None = None
        self.ending: RunEnding | None = None
        """How the run ended, as ``tether.ending.decide`` ruled (what its store is given)."""
        self.paused: RunPaused | None = None
        if resume is None:
            self._emit(
                RunStarted(
                    run_id=run_id,
                    seq=0,
                    session_id=session_id,
                    agent=agent,
                    parent_run_id=parent_run_id,
                )
            )
        else:
            self._emit(RunResumed(run_id=run_id, seq=resume.seq, decisions=resume.decisions))

    # --- RunSink -------------------------------------------------------------------------

    def response_started(self) -> None:
        if self._closed is None:
            self.buffer.response_started()

    def text(self, delta: str) -> None:
        if self._closed is not None or not delta:
            return
        self.buffer.text_delta(delta)
        self._emit(TextDelta(run_id=self.run_id, seq=self._next_seq(), text=delta))
        if self.meter.is_limited and (reason := self.meter.streamed(len(delta))):
            self.stop(CancelRequest(reason=reason, by="policy"))

    def tool_started(self, call_id: str, tool: str, args: Mapping[str, JsonValue]) -> None:
        if (
            self._closed is not None
            or call_id in self._open_calls
            or call_id in self._adopted_calls
        ):
            # A resumed run's paused call, which its runtime announces again.
            return
        self._open_calls.add(call_id)
        self.buffer.tool_started(call_id, tool, args)
        seq = self._next_seq()
        self._emit(
            ToolCallStarted(run_id=self.run_id, seq=seq, call_id=call_id, tool=tool, args=args)
        )
        self._wake_recorder()

    def tool_finished(
        self, call_id: str, *, ok: bool, result: JsonValue = None, error: str | None = None
    ) -> None:
        if self._closed is not None:
            log.info("run %s: late result of tool call %s discarded", self.run_id, call_id)
            return
        self._close_call(call_id, "ok" if ok else "error", result, error)

    def probe_usage(self, probe: Callable[[], Usage]) -> None:
        self._usage_probe = probe

    def usage(self, usage: Usage) -> None:
        if self._closed is not None:
            return
        reason = self.meter.report(usage)
        self.buffer.usage(self.meter.usage())
        if reason is not None:
            self.stop(CancelRequest(reason=reason, by="policy"))

    def queued(self, resource: str) -> None:
        if self._closed is None:
            self._emit(RunQueued(run_id=self.run_id, seq=self._next_seq(), resource=resource))

    # --- children ------------------------------------------------------------------------

    def child_run(self, agent_name: str) -> "Run":
        """Open a child run that this run's runtime reports into (a team member, a step)."""
        assert self._open_child is not None
        return self._open_child(self, agent_name)

    def finished(self, status: Literal["completed", "cancelled", "failed"]) -> None:
        """End a child run driven by its parent's runtime; later calls are ignored."""
        request = self.token.request
        match status:
            case "completed":
                self.finish(Completed())
            case "cancelled":
                self.finish(Stopped(request=request or CancelRequest(reason="parent")))
            case "failed":
                self.finish(Failed(error="the member or step failed"))

    def child_started(self, child: "Run", call_id: str | None) -> None:
        self.children.append(child)
        if self._closed is None:
            seq = self._next_seq()
            self._emit(
                ChildRunStarted(
                    run_id=self.run_id,
                    seq=seq,
                    child_run_id=child.run_id,
                    agent=child.agent,
                    call_id=call_id,
                )
            )

    def child_finished(self, outcome: RunOutcome) -> None:
        if self._closed is None and outcome.run_id not in self._reported_children:
            self._reported_children.add(outcome.run_id)
            seq = self._next_seq()
            self._emit(
                ChildRunFinished(
                    run_id=self.run_id,
                    seq=seq,
                    child_run_id=outcome.run_id,
                    status=outcome.status,
                    reason=outcome.reason,
                )
            )

    def open_call_ids(self) -> frozenset[str]:
        return frozenset(self._open_calls)

    # --- stopping and finishing ----------------------------------------------------------

    def stop(self, request: CancelRequest) -> bool:
        """Ask the run to stop (any thread for the token; events only on the loop)."""
        if self._closed is not None:
            return False
        # Called on the loop only, so nothing can slip in between this check and the request.
        is_first = self.token.request is None
        if is_first:
            self._emit(
                StopRequested(
                    run_id=self.run_id,
                    seq=self._next_seq(),
                    reason=request.reason,
                    mode=request.mode,
                    action=request.action,
                    by=request.by,
                )
            )
        # Children first, so their ends are reported before ours; delivering ``now`` may
        # finish this run synchronously, which is why StopRequested went out above.
        for child in self.children:
            child.stop(CancelRequest(reason="parent", mode="now", by=self.run_id))
        self.token.request_stop(request)
        return is_first

    @property
    def is_finished(self) -> bool:
        return self._finished is not None

    def finish(self, cause: Cause) -> RunFinished | None:
        """End the run for ``cause`` as ``tether.ending.decide`` rules (None if already done).

        Closes open tool calls and the last response, emits their events, and records the one
        terminal event: viewers get it from ``release_terminal``, once it is stored.
        """
        if self._closed is not None:
            return None
        for child in self.children:
            if child.outcome is None and child.is_driven_by_parent:
                # Nobody else will end it: it ends with its parent.
                child.finished("completed" if isinstance(cause, Completed) else "cancelled")
            if child.outcome is not None:
                self.child_finished(child.outcome)
        if self._usage_probe is not None:
            # A stop mid-response: what the model used so far is known only to the runtime.
            try:
                self.meter.report(self._usage_probe())
            except Exception as exc:  # noqa: BLE001  # the ending must not depend on a probe
                log.warning("run %s: usage probe failed: %r", self.run_id, exc)
        state = RunState(
            run_id=self.run_id,
            next_seq=self._next_seq(),
            usage=self.meter.usage(),
            messages=self.buffer.open_messages(),
            open_calls=self.buffer.calls(sorted(self._open_calls)),
            stop=self.token.request,
            now=utcnow(),
        )
        ending = decide(state, cause)
        self._open_calls.clear()
        self.buffer.close_records(ending.messages, ending.tool_calls)
        self.buffer.usage(ending.usage)
        for event in ending.events[:-1]:
            assert event.seq == self._next_seq()
            self._emit(event)
        if ending.tool_calls:
            self._wake_recorder()
        terminal = ending.terminal
        # The commit point: the terminal event goes to the store now, and to viewers only
        # once the run's ending is stored with it (``release_terminal``).
        self._pending_terminal = (terminal, self._record(terminal))
        self._finished = self._closed = terminal
        self.ending = ending
        # Timers only: the stop callbacks must still reach the runtime when a run ends
        # without a stop (storage lost), so it stops producing into a closed sink.
        self.token.cancel_timers()
        self.outcome = self._outcome(ending)
        self._done.set()
        return terminal

    def end_instead(self, cause: StorageLost) -> bool:
        """Replace an ending no viewer has seen yet (its write never landed); False if shown.

        Only the run's terminal fields and event change: the records the first ending closed
        stay closed. Call it while no write of the run is in flight (``Recorder.change_unlanded``).
        """
        if (pending := self._pending_terminal) is None or self.ending is None:
            return False
        old_terminal, old_stored = pending
        state = RunState(
            run_id=self.run_id,
            next_seq=old_terminal.seq,
            usage=self.ending.usage,
            stop=self.ending.cancel,
            now=utcnow(),
        )
        ending = self.ending = decide(state, cause)
        new_stored = self._record_later(ending.terminal)
        self.buffer.replace_terminal(old_stored, new_stored, stored(ending)[0])
        self._pending_terminal = (ending.terminal, new_stored)
        self._finished = self._closed = ending.terminal
        self.outcome = self._outcome(ending)
        return True

    def _outcome(self, ending: RunEnding) -> RunOutcome:
        return RunOutcome(
            run_id=self.run_id,
            status=ending.status,
            reason=ending.reason,
            error=ending.error,
            usage=ending.usage,
            text=self.buffer.text,
        )

    def pause(self, calls: Sequence[PendingCall], expires_at: datetime | None) -> RunPaused | None:
        """Wait for approval of ``calls``: record them as such, emit ``RunPaused``, close the sink.

        Returns None if the run already ended (a stop won the race).
        """
        if self._closed is not None:
            return None
        for call in calls:
            if call.call_id not in self._open_calls:
                self._open_calls.add(call.call_id)
                self.buffer.tool_started(call.call_id, call.tool, call.args)
            self.buffer.tool_finished(
                call.call_id, status="awaiting_approval", result=None, error=None, at=None
            )
        self.buffer.finish("complete")
        self.buffer.usage(self.meter.usage())
        paused = RunPaused(
            run_id=self.run_id, seq=self._next_seq(), calls=tuple(calls), expires_at=expires_at
        )
        self._emit(paused)
        self._closed = self.paused = paused
        self.token.cancel_timers()
        self._done.set()
        return paused

    def adopt_pending(
        self, calls: Sequence[ToolCallRecord], decisions: Sequence[ToolDecision]
    ) -> None:
        """A resumed run takes over its paused calls: denied ones end here, approved ones run.

        ``decisions`` must answer exactly ``calls`` (the engine checks before resuming).
        """
        by_id = {d.call_id: d for d in decisions}
        for call in calls:
            decision = by_id[call.call_id]
            args = call.args if decision.args is None else decision.args
            self.buffer.adopt_call(dataclasses.replace(call, args=args, status="running"))
            self._open_calls.add(call.call_id)
            self._adopted_calls.add(call.call_id)
            if not decision.approved:
                self._close_call(call.call_id, "denied", decision.message or DEFAULT_DENIAL, None)

    async def wait(self) -> RunOutcome:
        """Wait for the terminal event (the fastest way to learn the outcome)."""
        await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    def release_terminal(self) -> None:
        """Show the terminal event to viewers: its ending is stored (or storage was given up)."""
        if (pending := self._pending_terminal) is not None:
            self._pending_terminal = None
            self._show(*pending)

    def mark_persisted(self) -> None:
        """The terminal state or the pause is stored (or the worker gave up on storing it)."""
        self.release_terminal()
        self._persisted.set()

    async def wait_persisted(self) -> RunOutcome | RunPaused:
        """Wait until the run's end, or its pause, is stored: then the store agrees with us."""
        await self._persisted.wait()
        settled = self.outcome or self.paused
        assert settled is not None
        return settled

    # --- reading -------------------------------------------------------------------------

    async def events(self, after_seq: int = -1) -> AsyncIterator[RunEvent]:
        """This run's events after ``after_seq``, live, ending with the terminal event or a pause.

        A resumed run holds only the events from its ``RunResumed`` on; the earlier ones are in
        the store.
        """
        index = max(after_seq + 1 - self._first_seq, 0)
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if isinstance(event, RunFinished | RunPaused):
                    return
            if self._closed is not None and self._pending_terminal is None:
                return  # asked for more than the run will ever emit
            await self._changed.wait()

    def _next_seq(self) -> int:
        return self._first_seq + len(self._events)

    def _close_call(
        self,
        call_id: str,
        status: Literal["ok", "error", "cancelled", "denied"],
        result: JsonValue,
        error: str | None,
    ) -> None:
        if call_id not in self._open_calls:
            return
        self._open_calls.discard(call_id)
        self.buffer.tool_finished(call_id, status=status, result=result, error=error, at=utcnow())
        self._emit(
            ToolCallFinished(
                run_id=self.run_id,
                seq=self._next_seq(),
                call_id=call_id,
                status=status,
                result=result,
                error=error,
            )
        )
        self._wake_recorder()

    def _emit(self, event: RunEvent) -> None:
        self._show(event, self._record(event))

    def _record(self, event: RunEvent) -> StoredEvent:
        stored = self._record_later(event)
        self.buffer.event(stored)
        return stored

    def _record_later(self, event: RunEvent) -> StoredEvent:
        return StoredEvent(
            run_id=self.run_id, seq=event.seq, kind=event.kind, payload=event_json(event)
        )

    def _show(self, event: RunEvent, stored: StoredEvent) -> None:
        self._events.append(event)
        self._bus.publish(stored)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
