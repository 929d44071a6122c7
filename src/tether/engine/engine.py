"""``Engine``: starts runs, drives them in its task group, stops them, and records them.

Stop path: ``cancel`` delivers to a run in this process directly (no I/O before the stop
lands), then records the intent durably; a run owned by another worker gets the intent written
to its row first and then pushed over the cancel bus, and its owner's heartbeat also reads the
row, so a lost push still stops it. A paused run is owned by nobody: its end is written to the
store directly (``engine/approvals.py``).

Pause path: when the runtime returns ``Paused``, the run emits ``RunPaused``, its state is
flushed, its row becomes ``paused`` (no owner; the lease column holds the approval deadline)
and the worker forgets it. ``resume`` claims the row back (compare-and-set, so two workers
can't both resume it) and drives it again from the store's records.
"""

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from tether.bus.base import CancelBus, EventBus
from tether.engine import approvals
from tether.engine.cancel import CancelToken
from tether.engine.context import AgentContext
from tether.engine.history import HistoryRules, build_history, paused_turn_items
from tether.engine.policies import BudgetMeter, RunLimits
from tether.engine.recorder import Recorder
from tether.engine.registry import AgentSpec
from tether.engine.run import Resumption, Run, RunOutcome
from tether.errors import Conflict, NotFound, StorageError, UsageError
from tether.events import (
    TERMINAL_STATUSES,
    RunPaused,
    RunStatus,
    StopAction,
    StopMode,
    StopReason,
    ToolDecision,
)
from tether.ids import MessageId, RunId, SessionId, UserId, new_id
from tether.records import CancelRequest, MessageRecord, RunRecord, SessionRecord, utcnow
from tether.runtimes.base import Continuation, Paused, Runtime, Turn
from tether.storage.store import Finish, Store

log = logging.getLogger(__name__)

FINAL_WRITE_TIMEOUT_S = 5.0
EARLY_STOP_TTL_S = 10.0
IfBusy = str  # "reject" | "interrupt" | "enqueue"


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    worker_id: str
    lease_s: float = 10.0
    heartbeat_s: float = 1.0
    stop_grace_s: float = 10.0
    """How long ``after_turn`` waits for the turn to end before stopping ``now``."""
    hard_stop_s: float = 2.0
    """How long a runtime that stops itself gets before the engine cancels it outright."""
    busy_wait_s: float = 30.0
    history: HistoryRules = field(default_factory=HistoryRules)
    limits: RunLimits = field(default_factory=RunLimits)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelResult:
    run_id: RunId
    accepted: bool
    """True if this request is the one that stops the run."""
    status: RunStatus
    reason: StopReason | None


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        cancel_bus: CancelBus,
        event_bus: EventBus,
        recorder: Recorder,
        runtimes: Sequence[Runtime],
        agents: dict[str, AgentSpec],
        config: EngineConfig,
        task_group: TaskGroup,
    ) -> None:
        self.store = store
        self.event_bus = event_bus
        self._cancel_bus = cancel_bus
        self._recorder = recorder
        self._runtimes = runtimes
        self._agents = agents
        self.config = config
        self.task_group = task_group
        self.runs: dict[RunId, Run] = {}
        self._early_stops: dict[str, tuple[CancelRequest, UserId, float]] = {}

    # --- starting ------------------------------------------------------------------------

    async def start(
        self,
        agent: str,
        message: str,
        *,
        user_id: UserId,
        session_id: SessionId | None = None,
        context: object = None,
        limits: RunLimits | None = None,
        if_busy: IfBusy = "reject",
        client_request_id: str | None = None,
        parent: Run | None = None,
        call_id: str | None = None,
    ) -> Run:
        spec = self.spec(agent)
        validated = spec.validate_context(context)
        session_id = await self._session_for(spec, user_id, session_id, is_child=parent is not None)
        run_id = RunId(new_id("run"))
        now = utcnow()
        record = RunRecord(
            run_id=run_id,
            session_id=session_id,
            agent=agent,
            user_id=user_id,
            parent_run_id=parent.run_id if parent else None,
            status="running",
            started_at=now,
            owner=self.config.worker_id,
            lease_expires_at=now + timedelta(seconds=self.config.lease_s),
            client_request_id=client_request_id,
        )
        user_message = MessageRecord(
            message_id=MessageId(new_id("msg")),
            session_id=session_id,
            run_id=run_id,
            role="user",
            content=message,
            created_at=now,
            completed_at=now,
        )
        await self._create(record, user_message, if_busy)
        run = self._new_run(record, spec, limits)
        if parent is not None:
            parent.child_started(run, call_id)
        if (early := self._take_early_stop(client_request_id, session_id, user_id)) is not None:
            run.stop(early)
        ctx = AgentContext(
            run_id=run_id,
            session_id=session_id,
            user_id=user_id,
            agent=agent,
            context=validated,
            parent_run_id=record.parent_run_id,
            _delegate=functools.partial(self._delegate, run),
            _queued=run.queued,
        )
        self.task_group.start_soon(self._drive, run, spec, message, ctx, name=f"run {run_id}")
        return run

    def spec(self, agent: str) -> AgentSpec:
        try:
            return self._agents[agent]
        except KeyError:
            raise UsageError(f"unknown agent {agent!r}", agent=agent) from None

    async def _session_for(
        self, spec: AgentSpec, user_id: UserId, session_id: SessionId | None, *, is_child: bool
    ) -> SessionId:
        if session_id is None:
            session = SessionRecord(
                session_id=SessionId(new_id("ses")), user_id=user_id, agent=spec.name
            )
            await self.store.create_session(session)
            return session.session_id
        session = await self.store.get_session(session_id)
        if session is None or session.user_id != user_id:
            raise NotFound(f"no session {session_id}", session_id=session_id)
        if session.agent != spec.name and not is_child:
            raise Conflict(
                f"session {session_id} belongs to agent {session.agent!r}", session_id=session_id
            )
        return session_id

    async def _create(self, record: RunRecord, message: MessageRecord, if_busy: IfBusy) -> None:
        if record.parent_run_id is not None:
            await self.store.create_run(record, message)
            return
        if if_busy == "reject":
            try:
                await self.store.create_run(record, message)
            except Conflict as exc:
                # A run that already emitted its terminal event is over for the client, which
                # may send the next message before the final write lands: wait for it, once.
                # One no longer held here may have been stored and let go meanwhile: try once
                # more (a run active elsewhere conflicts again).
                active = self.runs.get(RunId(exc.details["active_run_id"]))
                if active is not None and not active.is_finished:
                    raise
                if active is not None:
                    await active.wait_persisted()
                await self.store.create_run(record, message)
            return
        with anyio.fail_after(self.config.busy_wait_s):
            while True:
                try:
                    await self.store.create_run(record, message)
                    return
                except Conflict as exc:
                    active = RunId(exc.details["active_run_id"])
                    if if_busy == "interrupt":
                        await self.cancel(active, reason="superseded", by=record.user_id)
                    await self.wait_terminal(active)

    def _new_run(
        self,
        record: RunRecord,
        spec: AgentSpec,
        limits: RunLimits | None,
        resume: Resumption | None = None,
    ) -> Run:
        limits = self.config.limits.merged(spec.limits).merged(limits)
        token = CancelToken(grace_s=self.config.stop_grace_s)
        run = Run(
            run_id=record.run_id,
            session_id=record.session_id,
            user_id=record.user_id,
            agent=record.agent,
            parent_run_id=record.parent_run_id,
            token=token,
            buffer=self._recorder.open(
                record.run_id, record.session_id, functools.partial(self._storage_lost, record)
            ),
            meter=BudgetMeter(limits, spec.pricing, before=record.usage),
            event_bus=self.event_bus,
            wake_recorder=self._recorder.wake,
            open_child=self._open_child,
            resume=resume,
        )
        run.approval_timeout_s = limits.approval_timeout_s
        if limits.timeout_s is not None:
            token.stop_after(limits.timeout_s, CancelRequest(reason="timeout", by="policy"))
        self.runs[run.run_id] = run
        return run

    def _open_child(self, parent: Run, name: str) -> Run:
        """A child run the parent's runtime drives: its row is written in the background."""
        now = utcnow()
        record = RunRecord(
            run_id=RunId(new_id("run")),
            session_id=parent.session_id,
            agent=name,
            user_id=parent.user_id,
            parent_run_id=parent.run_id,
            status="running",
            started_at=now,
            owner=self.config.worker_id,
            lease_expires_at=now + timedelta(seconds=self.config.lease_s),
        )
        spec = AgentSpec(name=name, description="", factory=lambda ctx: None)
        child = self._new_run(record, spec, None)
        child.is_driven_by_parent = True
        child.buffer.is_ready = False
        parent.child_started(child, None)
        self.task_group.start_soon(
            self._persist_child, child, record, name=f"child {record.run_id}"
        )
        return child

    async def _persist_child(self, child: Run, record: RunRecord) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S):
                await self.store.create_run(record, None)
            child.buffer.is_ready = True
            self._recorder.wake()
            await child.wait()
            await self._persist(child)

    def _storage_lost(self, record: RunRecord, why: str) -> None:
        if run := self.runs.get(record.run_id):
            run.finish("failed", "error", why)
            # Ended for its viewers; now stop the model too (the terminal event is already out).
            run.token.request_stop(CancelRequest(reason="error", by="storage"))

    # --- driving -------------------------------------------------------------------------

    async def _drive(
        self,
        run: Run,
        spec: AgentSpec,
        prompt: str,
        ctx: AgentContext,
        resume: Continuation | None = None,
    ) -> None:
        status: Any = "failed"
        reason: StopReason | None = "error"
        error: str | None = "interrupted"
        paused: Paused | None = None
        # Deliberate: an immediate stop ends the run for its viewers right away. From that
        # moment the sink is closed, so nothing more is emitted or recorded and the outcome is
        # fixed; the runtime's teardown (closing the model stream, cancelling tool tasks) and
        # the durable write still complete below, in this task, before `wait_persisted`.
        run.token.on_stop_now(functools.partial(_finish_on_stop, run))
        try:
            async with self._cancel_bus.watch(run.run_id, functools.partial(_stop, run)):
                with anyio.CancelScope() as scope:
                    paused = await self._drive_turn(run, spec, prompt, ctx, scope, resume)
            status, reason, error = "completed", None, None
            if paused is not None and run.parent_run_id is not None:
                paused = None
                status, reason, error = "failed", "error", "a sub-agent can't wait for approval"
        except Exception as exc:  # noqa: BLE001  # any failure of agent code ends the run `failed`
            if run.token.request is None:
                log.warning("run %s failed: %r", run.run_id, exc)
                status, reason, error = "failed", "error", f"{type(exc).__name__}: {exc}"
        except BaseException:
            # Deliberate: an outer cancellation (shutdown) still records the run, then propagates.
            status, reason, error = "cancelled", "shutdown", None
            raise
        finally:
            if (request := run.token.request) is not None and status != "failed":
                status, reason, error = "cancelled", request.reason, None
            if paused is not None and status == "completed":
                await self._pause(run, paused, ctx)
            else:
                await self._finish(run, status, reason, error)

    async def _drive_turn(
        self,
        run: Run,
        spec: AgentSpec,
        prompt: str,
        ctx: AgentContext,
        scope: anyio.CancelScope,
        resume: Continuation | None,
    ) -> Paused | None:
        if run.token.is_now:
            return None
        history = []
        if run.parent_run_id is None:
            history = build_history(await self.store.history(run.session_id), self.config.history)
        agent = spec.factory(ctx)
        runtime = self._runtime_for(agent, spec)
        loop = asyncio.get_running_loop()
        if runtime.handles_stop:
            # The runtime stops itself (and cleanly); cancelling its scope is only the backstop.
            def backstop() -> None:
                loop.call_later(self.config.hard_stop_s, scope.cancel)

            run.token.on_stop_now(backstop)
        else:
            run.token.on_stop_now(scope.cancel)
        turn = Turn(
            run_id=run.run_id,
            session_id=run.session_id,
            prompt=prompt,
            history=history,
            resume=resume,
        )
        return await runtime.drive(agent, turn, run, run.token)

    def _runtime_for(self, agent: object, spec: AgentSpec) -> Runtime:
        for runtime in self._runtimes:
            if runtime.accepts(agent):
                return runtime
        raise UsageError(
            f"agent {spec.name!r}: no runtime drives a {type(agent).__name__}", agent=spec.name
        )

    async def _finish(
        self, run: Run, status: Any, reason: StopReason | None, error: str | None
    ) -> None:
        run.finish(status, reason, error)
        await self._persist(run)

    async def _persist(self, run: Run) -> None:
        """Write the run's last state and its terminal status (shielded, bounded)."""
        outcome = run.outcome
        assert outcome is not None
        with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S, shield=True):
            for child in run.children:  # a parent is stored as ended only after its children
                await child.wait_persisted()
            await self._recorder.close(run.buffer)
            # Compare-and-set: if recovery already marked the run, its verdict stands.
            try:
                if (request := run.token.request) is not None:
                    # Who stopped it and why, recorded before the run leaves the active states
                    # (the canceller's own note may come later, and then finds it finished).
                    await self.store.request_cancel(run.run_id, request)
                await self.store.finish_run(
                    run.run_id,
                    Finish(
                        status=outcome.status,
                        reason=outcome.reason,
                        error=outcome.error,
                        usage=outcome.usage,
                        finished_at=utcnow(),
                    ),
                )
            except StorageError as exc:
                # Like the time bound: give up on this write, never take the engine down with it.
                log.warning("run %s: terminal state not stored: %s", run.run_id, exc)
        self.runs.pop(run.run_id, None)
        run.token.close()
        run.mark_persisted()

    # --- pausing and resuming ------------------------------------------------------------

    async def _pause(self, run: Run, paused: Paused, ctx: AgentContext) -> None:
        """Emit the pause, store it, and let go of the run (shielded, bounded)."""
        timeout_s = run.approval_timeout_s
        expires_at = utcnow() + timedelta(seconds=timeout_s) if timeout_s is not None else None
        if run.pause(paused.calls, expires_at) is None:  # a stop ended it first
            await self._persist(run)
            return
        context = ctx.context.model_dump(mode="json") if ctx.context is not None else None
        with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S, shield=True):
            await self._recorder.close(run.buffer)
            try:
                is_paused = await self.store.pause_run(
                    run.run_id,
                    owner=self.config.worker_id,
                    expires_at=expires_at,
                    state=approvals.resume_state(context, paused.state),
                )
                if not is_paused:
                    log.warning("run %s: pause not stored, the run ended meanwhile", run.run_id)
            except StorageError as exc:
                log.warning("run %s: pause not stored: %s", run.run_id, exc)
        self.runs.pop(run.run_id, None)
        run.token.close()
        run.mark_persisted()

    async def resume(
        self, run_id: RunId, decisions: Sequence[ToolDecision], *, user_id: UserId
    ) -> Run:
        """Continue a paused run with a decision for each call awaiting approval.

        Raises:
            NotFound: no such run for this user.
            Conflict: the run is not paused (it was resumed, stopped or timed out).
            UsageError: the decisions don't answer exactly the calls that wait.
        """
        if (held := self.runs.get(run_id)) is not None and held.paused is not None:
            await held.wait_persisted()  # its pause is being stored right now
        record = await self.store.get_run(run_id)
        if record is None or record.user_id != user_id:
            raise NotFound(f"no run {run_id}", run_id=run_id)
        if record.status != "paused":
            raise Conflict(f"run {run_id} is {record.status}", run_id=run_id, status=record.status)
        messages = await self.store.run_messages(run_id)
        waiting = approvals.awaiting_calls(messages)
        approvals.check_decisions(run_id, waiting, decisions)
        spec = self.spec(record.agent)
        context, runtime_state = approvals.split_resume_state(record.resume_state)
        validated = spec.validate_context(context)
        last_seq = await self.store.last_seq(run_id)
        claimed = await self.store.resume_run(
            run_id,
            owner=self.config.worker_id,
            lease_expires_at=utcnow() + timedelta(seconds=self.config.lease_s),
        )
        if claimed is None:
            now = await self.store.get_run(run_id)
            status = now.status if now is not None else "gone"
            raise Conflict(f"run {run_id} is {status}", run_id=run_id, status=status)
        run = self._new_run(
            claimed, spec, None, Resumption(seq=last_seq + 1, decisions=tuple(decisions))
        )
        run.adopt_pending(waiting, decisions)
        ctx = AgentContext(
            run_id=run_id,
            session_id=record.session_id,
            user_id=user_id,
            agent=record.agent,
            context=validated,
            parent_run_id=None,
            _delegate=functools.partial(self._delegate, run),
            _queued=run.queued,
        )
        turn = paused_turn_items(messages, self.config.history)
        resume = Continuation(items=turn, decisions=tuple(decisions), state=runtime_state)
        prompt = next((m.content for m in messages if m.role == "user"), "")
        self.task_group.start_soon(
            self._drive, run, spec, prompt, ctx, resume, name=f"run {run_id} (resumed)"
        )
        return run

    async def end_paused(self, record: RunRecord, request: CancelRequest) -> RunRecord:
        """End a paused run ``cancelled`` for ``request``; return the run as it now is.

        Only a run that is still paused changes; its end's events go to live viewers too.
        """
        messages = await self.store.run_messages(record.run_id)
        last_seq = await self.store.last_seq(record.run_id)
        finish, batch = approvals.ending(record, messages, request, last_seq=last_seq, now=utcnow())
        ended = await self.store.end_paused(record.run_id, finish, cancel=request, batch=batch)
        if ended is None:
            current = await self.store.get_run(record.run_id)
            assert current is not None
            return current
        for event in batch.events:
            self.event_bus.publish(event)
        return ended

    async def expire_paused(self) -> list[RunRecord]:
        """End the paused runs whose approval deadline passed (reason ``timeout``)."""
        ended: list[RunRecord] = []
        for record in await self.store.expired_paused(utcnow()):
            request = CancelRequest(reason="timeout", by="policy")
            now = await self.end_paused(record, request)
            if now.status == "cancelled" and now.reason == "timeout":
                ended.append(now)
        return ended

    async def _delegate(self, parent: Run, agent: str, prompt: str, call_id: str | None) -> str:
        if call_id is None and len(open_calls := parent.open_call_ids()) == 1:
            call_id = next(iter(open_calls))
        child = await self.start(
            agent,
            prompt,
            user_id=parent.user_id,
            session_id=parent.session_id,
            parent=parent,
            call_id=call_id,
        )
        try:
            outcome = await child.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                child.stop(CancelRequest(reason="parent", by=parent.run_id))
                await child.wait_persisted()
            raise
        finally:
            if child.outcome is not None:
                parent.child_finished(child.outcome)
        return _child_result(outcome)

    # --- stopping ------------------------------------------------------------------------

    async def cancel(
        self,
        run_id: RunId,
        *,
        reason: StopReason = "user",
        mode: StopMode = "now",
        action: StopAction = "keep",
        by: str | None = None,
        wait: bool = False,
    ) -> CancelResult:
        """Stop a run wherever it runs; idempotent, and honest about what happened.

        Raises:
            NotFound: no such run.
        """
        request = CancelRequest(reason=reason, mode=mode, action=action, by=by)
        accepted = False
        if (run := self.runs.get(run_id)) is not None and run.paused is not None:
            await run.wait_persisted()  # its pause is being stored: then end it there
            run = None
        if run is not None:
            accepted = run.stop(request)
            # Let the run's viewers send the stop's frames before the durable note's I/O.
            await anyio.lowlevel.checkpoint()
            try:
                with anyio.CancelScope(shield=True):
                    await self.store.request_cancel(run_id, run.token.request or request)
            except StorageError as exc:
                # The stop has landed; only its durable note is late (the run's end records it).
                log.warning("run %s: stop recorded in memory only: %s", run_id, exc)
            # A run that takes the stop ends: it can no longer pause.
            outcome = await run.wait_persisted() if wait else run.outcome
            assert not isinstance(outcome, RunPaused)
            status = outcome.status if outcome else "running"
            return CancelResult(
                run_id=run_id,
                accepted=accepted,
                status=status,
                reason=outcome.reason if outcome else None,
            )
        else:
            # One round trip: the intent is written (first one wins) and the run read back.
            record = await self.store.request_cancel(run_id, request)
            if record.status == "paused":
                record = await self.end_paused(record, request)
            if record.status not in TERMINAL_STATUSES:  # running elsewhere (or just resumed)
                try:
                    await self._cancel_bus.request_stop(run_id, request)
                except StorageError as exc:
                    # The intent is on the run's row, which its owner's heartbeat reads: the
                    # stop still lands, within a beat instead of at once.
                    log.warning("run %s: stop not pushed, left to the heartbeat: %s", run_id, exc)
            accepted = record.cancel == request
        if wait:
            record = await self.wait_terminal(run_id)
        return CancelResult(
            run_id=run_id, accepted=accepted, status=record.status, reason=record.reason
        )

    def stop_pending(self, key: str, request: CancelRequest, *, user_id: UserId) -> None:
        """Stop the run ``user_id`` is about to create for ``key`` (session or request id).

        Held for ``EARLY_STOP_TTL_S``: a stop pressed before the client knew the run id still
        wins, while a stray second click can't stop a run started much later.
        """
        now = anyio.current_time()
        self._early_stops = {
            k: held for k, held in self._early_stops.items() if now - held[2] < EARLY_STOP_TTL_S
        }
        self._early_stops[key] = (request, user_id, now)

    def _take_early_stop(
        self, client_request_id: str | None, session_id: SessionId, user_id: UserId
    ) -> CancelRequest | None:
        found: CancelRequest | None = None
        now = anyio.current_time()
        for key in (client_request_id, session_id):
            held = self._early_stops.pop(key, None) if key else None
            if held is not None and held[1] == user_id and now - held[2] < EARLY_STOP_TTL_S:
                found = found or held[0]
        return found

    async def wait_terminal(self, run_id: RunId) -> RunRecord:
        """Wait until the run is terminal in the store, and return it."""
        if (run := self.runs.get(run_id)) is not None:
            await run.wait_persisted()
        while True:
            record = await self.store.get_run(run_id)
            if record is None:
                raise NotFound(f"no run {run_id}", run_id=run_id)
            if record.status in TERMINAL_STATUSES:
                return record
            if (run := self.runs.get(run_id)) is not None:
                await run.wait_persisted()
            else:
                await anyio.sleep(0.05)

    async def shutdown(self) -> None:
        """Stop every run of this worker with reason ``shutdown`` and wait for them (bounded)."""
        runs = list(self.runs.values())
        for run in runs:
            run.stop(CancelRequest(reason="shutdown", by=self.config.worker_id))
        with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S):
            for run in runs:
                await run.wait_persisted()


def _stop(run: Run, request: CancelRequest) -> None:
    run.stop(request)


def _finish_on_stop(run: Run) -> None:
    request = run.token.request
    assert request is not None
    run.finish("cancelled", request.reason, None)


def _child_result(outcome: RunOutcome) -> str:
    if outcome.status == "completed":
        return outcome.text
    why = outcome.reason or outcome.status
    return f"[The sub-agent run {outcome.status} ({why}). Partial answer:] {outcome.text}"
