"""``Engine``: starts runs, drives them in its task group, stops them, and records them.

The engine admits a run (``engine/admission.py``: this worker can carry it; then its session,
and ``if_busy`` when the session has an active run) and launches it; its methods are the entry
points the app, the HTTP layer and the heartbeat call.
Making a run, the task that drives it and its final write (its end or its pause) live in
``engine/driver.py``. The stop path (a run here or on another worker, a paused run, a stop
sent before its run exists, shutdown) lives in ``engine/stopping.py``.

Sessions: the engine signals a session (``SessionSignals``, for its live feed) when a top-level
run starts and when its end or pause is stored; once a new session's first answer is stored,
``Titler`` writes the session's title in the background (``EngineConfig.generate_titles``).

Pause path: a run that pauses is stored ``paused`` and let go (``engine/driver.py``).
``resume`` claims the row back (compare-and-set, so two workers can't both resume it) and
drives it again from the store's records.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from datetime import timedelta
from typing import Final, Literal

import anyio
from anyio.abc import TaskGroup

from tether.bus.base import CancelBus, EventBus, SessionSignals
from tether.engine import approvals
from tether.engine.admission import Admission
from tether.engine.config import EngineConfig
from tether.engine.context import AgentContext
from tether.engine.driver import Driver
from tether.engine.history import paused_turn_items
from tether.engine.policies import RunLimits
from tether.engine.recorder import Recorder
from tether.engine.registry import AgentSpec
from tether.engine.run import Resumption, Run, RunOutcome
from tether.engine.stopping import CancelResult, Stopper
from tether.engine.titles import Titler, title_from
from tether.errors import Conflict, NotFound, StorageError, UsageError
from tether.events import TERMINAL_STATUSES, StopAction, StopMode, StopReason, ToolDecision
from tether.ids import MessageId, RunId, SessionId, UserId, new_id
from tether.records import CancelRequest, MessageRecord, RunRecord, SessionRecord, utcnow
from tether.runtimes.base import Continuation, Runtime
from tether.storage.store import Store

__all__ = ["CancelResult", "Engine", "EngineConfig", "IfBusy"]

IfBusy = Literal["reject", "interrupt", "enqueue"]
"""What ``start`` does when the session already has an active run."""
BUSY: Final = "This chat is still answering. Stop it or wait for it to finish."
"""Why a message sent to a session with an active run is refused (``if_busy="reject"``)."""
BUSY_PAUSED: Final = "This chat is waiting for your approval. Answer it or stop it first."
"""The same for a session whose run waits for a person's decision."""
BUSY_POLL_S: Final = 0.05
"""How often ``enqueue`` looks again at a run another worker drives."""


class Engine:
    """One worker's runs: admits, starts, resumes, stops and recovers them."""

    def __init__(
        self,
        *,
        store: Store,
        cancel_bus: CancelBus,
        event_bus: EventBus,
        session_signals: SessionSignals,
        recorder: Recorder,
        runtimes: Sequence[Runtime],
        agents: dict[str, AgentSpec],
        config: EngineConfig,
        task_group: TaskGroup,
    ) -> None:
        self.store = store
        self.event_bus = event_bus
        self.session_signals = session_signals
        """Told of every change in a session (runs, title), for its live feed."""
        self.recorder = recorder
        self._agents = agents
        self.config = config
        self.task_group = task_group
        self.runs: dict[RunId, Run] = {}
        self.admission = Admission(runs=self.runs, recorder=recorder, config=config)
        self._driver = Driver(
            store=store,
            cancel_bus=cancel_bus,
            event_bus=event_bus,
            recorder=recorder,
            runtimes=runtimes,
            config=config,
            runs=self.runs,
            task_group=task_group,
            on_settled=self._settled,
        )
        self._titler = (
            Titler(store=store, signals=session_signals, task_group=task_group)
            if config.generate_titles
            else None
        )
        self._first_turns: dict[RunId, str] = {}
        """Runs that opened their session, with its first message: titled once answered."""
        self._stopper = Stopper(
            store=store,
            cancel_bus=cancel_bus,
            event_bus=event_bus,
            runs=self.runs,
            worker_id=config.worker_id,
            task_group=task_group,
        )

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
        """Create a run (its row, and its session's if new) and drive it in the background.

        Raises:
            Overloaded: this worker can't carry another run now; nothing was written.
            UsageError: unknown or unavailable agent, or invalid context.
            NotFound: no such session for this user.
            Conflict: the session is busy (``if_busy``).
            StorageError: this worker's writes are failing (refused at once, not after the
                store's retries: a run it can't store would fail anyway), or the store failed.
        """
        # A child run is part of a run already admitted: refusing it would fail its parent's tool
        # call, not shed load.
        admitted = self.admission.slot() if parent is None else contextlib.nullcontext()
        with admitted:
            # After admission: a worker whose writes fall behind says so (``Overloaded``) before
            # its writes count as failing.
            if self.recorder.is_failing and parent is None:
                raise StorageError("this worker's writes to the database are failing")
            run = await self._start(
                agent,
                message,
                user_id=user_id,
                session_id=session_id,
                context=context,
                limits=limits,
                if_busy=if_busy,
                client_request_id=client_request_id,
                parent=parent,
                call_id=call_id,
            )
        if self.admission.is_draining:  # admitted just before the drain began
            run.stop(CancelRequest(reason="shutdown", by=self.config.worker_id))
        return run

    async def _start(
        self,
        agent: str,
        message: str,
        *,
        user_id: UserId,
        session_id: SessionId | None,
        context: object,
        limits: RunLimits | None,
        if_busy: IfBusy,
        client_request_id: str | None,
        parent: Run | None,
        call_id: str | None,
    ) -> Run:
        spec = self.spec(agent)
        validated = spec.validate_context(context)
        session_id, new_session = await self._session_for(
            spec, user_id, session_id, is_child=parent is not None
        )
        if new_session is not None and new_session.title is None:
            # Titled from its first message at once, so no session lists as "Untitled".
            new_session = dataclasses.replace(
                new_session, title=title_from(message), title_source="message"
            )
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
        await self._create(record, user_message, if_busy, new_session)
        if parent is None:
            self.session_signals.notify(session_id)
            if new_session is not None and self._titler is not None:
                self._first_turns[run_id] = message
        run = self._driver.new_run(record, spec, limits)
        if parent is not None:
            parent.child_started(run, call_id)
        # After the run is stored: a stop held meanwhile is either taken here or finds the run
        # (``stop_pending``'s caller looks again). A new session's id was unknown to everyone.
        if client_request_id is not None or new_session is None:
            early = await self._stopper.take_early_stop(client_request_id, session_id, user_id)
            if early is not None:
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
        self.task_group.start_soon(
            self._driver.drive, run, spec, message, ctx, name=f"run {run_id}"
        )
        return run

    def _settled(self, run: Run) -> None:
        """A run's end or pause is stored: tell the session's viewers, title a first answer."""
        if run.parent_run_id is not None:
            return
        self.session_signals.notify(run.session_id)
        question = self._first_turns.pop(run.run_id, None)
        outcome = run.outcome
        if question is None or self._titler is None or outcome is None:
            return
        if outcome.status == "completed" and outcome.text:
            self._titler.start(
                run.session_id, agent=run.built_agent, question=question, answer=outcome.text
            )

    def spec(self, agent: str) -> AgentSpec:
        try:
            spec = self._agents[agent]
        except KeyError:
            raise UsageError(f"unknown agent {agent!r}", agent=agent) from None
        if spec.unavailable is not None:
            raise UsageError(f"agent {agent!r} is unavailable: {spec.unavailable}", agent=agent)
        return spec

    async def _session_for(
        self, spec: AgentSpec, user_id: UserId, session_id: SessionId | None, *, is_child: bool
    ) -> tuple[SessionId, SessionRecord | None]:
        """The run's session, and the record to create with the run if it is a new one."""
        if session_id is None:
            session = SessionRecord(
                session_id=SessionId(new_id("ses")), user_id=user_id, agent=spec.name
            )
            return session.session_id, session
        session = await self.store.get_session(session_id)
        if session is None or session.user_id != user_id:
            raise NotFound(f"no session {session_id}", session_id=session_id)
        if session.agent != spec.name and not is_child:
            raise Conflict(
                f"session {session_id} belongs to agent {session.agent!r}", session_id=session_id
            )
        return session_id, None

    async def _create(
        self,
        record: RunRecord,
        message: MessageRecord,
        if_busy: IfBusy,
        new_session: SessionRecord | None,
    ) -> None:
        if record.parent_run_id is not None or new_session is not None:
            # One transaction; a new session has no run to be busy with.
            await self.store.create_run(record, message, new_session=new_session)
            return
        if if_busy == "reject":
            await self._create_or_refuse(record, message)
            return
        busy_with: RunId | None = None
        try:
            with anyio.fail_after(self.config.busy_wait_s):
                while True:
                    try:
                        await self.store.create_run(record, message)
                        return
                    except Conflict as exc:
                        busy_with = RunId(exc.details["active_run_id"])
                        if if_busy == "interrupt":
                            await self.cancel(busy_with, reason="superseded", by=record.user_id)
                        await self._wait_ended(busy_with)
        except TimeoutError:
            # Issue #15: a 409 that says why, never a 500 after the wait.
            wait_s = self.config.busy_wait_s
            raise Conflict(
                f"session {record.session_id} is still busy with run {busy_with} after"
                f" {wait_s:g} s",
                session_id=record.session_id,
                active_run_id=busy_with,
            ) from None

    async def _create_or_refuse(self, record: RunRecord, message: MessageRecord) -> None:
        """``create_run``, refusing (``Conflict``) while the session has an active run."""
        try:
            await self.store.create_run(record, message)
        except Conflict as exc:
            # A run that already emitted its terminal event is over for the client, which
            # may send the next message before the final write lands: wait for it, once.
            # One no longer held here may have been stored and let go meanwhile: try once
            # more (a run active elsewhere conflicts again).
            active = self.runs.get(RunId(exc.details["active_run_id"]))
            if active is not None and not active.is_finished:
                raise await self._busy(record, exc) from exc
            if active is not None:
                await active.wait_persisted()
            try:
                await self.store.create_run(record, message)
            except Conflict as again:
                raise await self._busy(record, again) from again

    async def _busy(self, record: RunRecord, exc: Conflict) -> Conflict:
        """A busy session's refusal in words a person reads (``active_run_id`` kept)."""
        active_run_id = exc.details.get("active_run_id")
        if active_run_id is None:
            return Conflict(str(exc), **exc.details)
        active = await self.store.get_run(RunId(str(active_run_id)))
        waits = active is not None and active.status == "paused"
        return Conflict(
            BUSY_PAUSED if waits else BUSY,
            session_id=record.session_id,
            active_run_id=active_run_id,
        )

    async def _wait_ended(self, run_id: RunId) -> None:
        """Wait until the run is over.

        Raises:
            Conflict: it waits for approval (now or once it pauses): only a person ends that
                wait, so a message queued behind it would wait for them (issue #15).
        """
        while True:
            if (run := self.runs.get(run_id)) is not None:
                await run.wait_persisted()
            record = await self.store.get_run(run_id)
            if record is None or record.status in TERMINAL_STATUSES:
                return
            if record.status == "paused":
                raise Conflict(
                    f"run {run_id} waits for approval: resume or cancel it first, or send the"
                    " message with if_busy=interrupt",
                    session_id=record.session_id,
                    active_run_id=run_id,
                    status=record.status,
                )
            if run is None:
                await anyio.sleep(BUSY_POLL_S)  # Deliberate: driven by another worker

    # --- resuming ------------------------------------------------------------------------

    async def resume(
        self, run_id: RunId, decisions: Sequence[ToolDecision], *, user_id: UserId
    ) -> Run:
        """Continue a paused run with a decision for each call awaiting approval.

        Raises:
            Overloaded: this worker can't carry another run now; nothing was written.
            NotFound: no such run for this user.
            Conflict: the run is not paused (it was resumed, stopped or timed out).
            UsageError: the decisions don't answer exactly the calls that wait.
        """
        with self.admission.slot():
            return await self._resume(run_id, decisions, user_id=user_id)

    async def _resume(
        self, run_id: RunId, decisions: Sequence[ToolDecision], *, user_id: UserId
    ) -> Run:
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
        run = self._driver.new_run(
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
            self._driver.drive, run, spec, prompt, ctx, resume, name=f"run {run_id} (resumed)"
        )
        return run

    # --- sub-agents ----------------------------------------------------------------------

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
        return await self._stopper.cancel(run_id, request, wait=wait)

    async def stop_pending(self, key: str, request: CancelRequest, *, user_id: UserId) -> None:
        """Stop the run ``user_id`` is about to create for ``key`` (session or request id).

        Held in the store for ``EARLY_STOP_TTL_S``, for whichever worker starts the run: a
        stop pressed before the client knew the run id still wins, while a stray second click
        can't stop a run started much later. A run created while this was being held may have
        missed it: the caller looks for that run again, and takes the stop back
        (``take_pending``) to deliver it.
        """
        await self._stopper.stop_pending(key, request, user_id=user_id)

    async def take_pending(self, key: str, *, user_id: UserId) -> CancelRequest | None:
        """Take back the stop ``user_id`` holds under ``key``; None if a run took it first."""
        return await self.store.take_held_stop(user_id, [key], now=utcnow())

    async def end_paused(self, record: RunRecord, request: CancelRequest) -> RunRecord:
        """End a paused run ``cancelled`` for ``request``; return the run as it now is.

        Only a run that is still paused changes; its end's events go to live viewers too.
        """
        return await self._stopper.end_paused(record, request)

    async def expire_paused(self) -> list[RunRecord]:
        """End the paused runs whose approval deadline passed (reason ``timeout``)."""
        return await self._stopper.expire_paused()

    async def wait_terminal(self, run_id: RunId) -> RunRecord:
        """Wait until the run is terminal in the store, and return it."""
        return await self._stopper.wait_terminal(run_id)

    async def shutdown(self) -> None:
        """Drain: refuse new runs, stop every run here (reason ``shutdown``), store their ends.

        Waits until every run's end is stored, runs started meanwhile included, but no longer
        than ``drain_s`` after the first call (later calls share that deadline).
        """
        now = anyio.current_time()
        deadline = self.admission.drain(now + self.config.drain_s)
        await self._stopper.shutdown(timeout_s=max(0.0, deadline - now))


def _child_result(outcome: RunOutcome) -> str:
    if outcome.status == "completed":
        return outcome.text
    why = outcome.reason or outcome.status
    return f"[The sub-agent run {outcome.status} ({why}). Partial answer:] {outcome.text}"
