"""``Driver``: the runs this worker holds, from the moment they are made to their final write.

``new_run`` makes a run (and the children a runtime drives inside their parent); ``drive`` is
the task a started or resumed run gets in the engine's task group: it drives the turn, then
stores how the run ended: its last events and its ending in one transaction (written by the
recorder, which retries a failing store). Only once that write has landed does the run leave
the engine's table of runs, whose leases the heartbeat keeps renewing until then: a held run is
never recovered (so never given a second ending) while its worker lives.

Pause path: when the runtime returns ``Paused``, the run emits ``RunPaused``, its state is
flushed, its row becomes ``paused`` (no owner; the lease column holds the approval deadline)
and the worker forgets it. ``Engine.resume`` claims the row back and drives it again.
"""

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

import anyio
from anyio.abc import TaskGroup

from tether.bus.base import CancelBus, EventBus
from tether.ending import Cause, Completed, Failed, Stopped, StorageLost
from tether.engine import approvals
from tether.engine.cancel import CancelToken
from tether.engine.config import FINAL_WRITE_TIMEOUT_S, EngineConfig
from tether.engine.context import AgentContext
from tether.engine.policies import BudgetMeter, RunLimits
from tether.engine.recorder import Recorder
from tether.engine.registry import AgentSpec
from tether.engine.run import Resumption, Run
from tether.engine.session_history import TurnInput, session_history
from tether.errors import StorageError, UsageError
from tether.ids import RunId, new_id
from tether.records import CancelRequest, RunRecord, utcnow
from tether.runtimes.base import Continuation, KnowsContextWindow, Paused, Runtime, Turn
from tether.storage.store import Store, stored

log = logging.getLogger(__name__)


class Driver:
    """Makes this worker's runs and drives each one to its stored ending."""

    def __init__(
        self,
        *,
        store: Store,
        cancel_bus: CancelBus,
        event_bus: EventBus,
        recorder: Recorder,
        runtimes: Sequence[Runtime],
        config: EngineConfig,
        runs: dict[RunId, Run],
        task_group: TaskGroup,
        on_settled: Callable[[Run], None],
    ) -> None:
        self._store = store
        self._cancel_bus = cancel_bus
        self._event_bus = event_bus
        self._recorder = recorder
        self._runtimes = runtimes
        self._config = config
        self._runs = runs
        """The engine's table, shared: a run is in it from ``new_run`` to its final write."""
        self._task_group = task_group
        self._on_settled = on_settled
        """Told once a run's end (or pause) is stored."""

    # --- making runs ---------------------------------------------------------------------

    def new_run(
        self,
        record: RunRecord,
        spec: AgentSpec,
        limits: RunLimits | None,
        resume: Resumption | None = None,
    ) -> Run:
        limits = self._config.limits.merged(spec.limits).merged(limits)
        token = CancelToken(grace_s=self._config.stop_grace_s)
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
            event_bus=self._event_bus,
            wake_recorder=self._recorder.wake,
            open_child=self._open_child,
            resume=resume,
        )
        run.approval_timeout_s = limits.approval_timeout_s
        if limits.timeout_s is not None:
            token.stop_after(limits.timeout_s, CancelRequest(reason="timeout", by="policy"))
        self._runs[run.run_id] = run
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
            owner=self._config.worker_id,
            lease_expires_at=now + timedelta(seconds=self._config.lease_s),
        )
        spec = AgentSpec(name=name, description="", factory=lambda ctx: None)
        child = self.new_run(record, spec, None)
        child.is_driven_by_parent = True
        child.buffer.is_ready = False
        parent.child_started(child, None)
        self._task_group.start_soon(
            self._persist_child, child, record, name=f"child {record.run_id}"
        )
        return child

    async def _persist_child(self, child: Run, record: RunRecord) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S):
                await self._store.create_run(record, None)
            child.buffer.is_ready = True
            self._recorder.wake()
            await child.wait()
            await self._persist(child)

    def _storage_lost(self, record: RunRecord, why: str) -> None:
        if run := self._runs.get(record.run_id):
            if run.finish(StorageLost(why=why)) is not None:
                # Deliberate: no commit point to wait for, the store is known to be gone; the
                # clients are told now, and the ending lands whenever the store is back.
                run.release_terminal()
            # Ended for its viewers; now stop the model too (the terminal event is already out).
            run.token.request_stop(CancelRequest(reason="error", by="storage"))

    # --- driving -------------------------------------------------------------------------

    async def drive(
        self,
        run: Run,
        spec: AgentSpec,
        prompt: str,
        ctx: AgentContext,
        resume: Continuation | None = None,
    ) -> None:
        # What we record if anything escapes.
        cause: Cause = Failed(error="interrupted")
        paused: Paused | None = None
        # Deliberate: an immediate stop ends the run for its viewers right away. From that
        # moment the sink is closed, so nothing more is emitted or recorded and the outcome is
        # fixed; the runtime's teardown (closing the model stream, cancelling tool tasks) and
        # the durable write still complete below, in this task, before `wait_persisted`.
        run.token.on_stop_now(functools.partial(self._finish_on_stop, run))
        try:
            async with self._cancel_bus.watch(run.run_id, functools.partial(_stop, run)):
                with anyio.CancelScope() as scope:
                    paused = await self._drive_turn(run, spec, prompt, ctx, scope, resume)
            cause = Completed()
            if paused is not None and run.parent_run_id is not None:
                paused = None
                cause = Failed(error="a sub-agent can't wait for approval")
        except Exception as exc:  # noqa: BLE001  # any failure of agent code ends the run `failed`
            if run.token.request is None:
                log.warning("run %s failed: %r", run.run_id, exc)
                cause = Failed(error=f"{type(exc).__name__}: {exc}")
        except BaseException:
            # Deliberate: an outer cancellation (shutdown) still records the run, then propagates.
            cause = Stopped(request=CancelRequest(reason="shutdown", by=self._config.worker_id))
            raise
        finally:
            if (request := run.token.request) is not None and not isinstance(cause, Failed):
                cause = Stopped(request=request)
            if paused is not None and isinstance(cause, Completed):
                await self._pause(run, paused, ctx)
            else:
                run.finish(cause)
                await self._persist(run)

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
        agent = spec.factory(ctx)
        run.built_agent = agent
        runtime = self._runtime_for(agent, spec)
        given = TurnInput(history=[], prompt=prompt)
        if run.parent_run_id is None:
            window = spec.context_tokens
            if window is None and isinstance(runtime, KnowsContextWindow):
                window = runtime.context_window(agent)
            given = await session_history(
                self._store,
                run.session_id,
                prompt=prompt,
                rules=self._config.history,
                window_tokens=window,
                summariser=spec.summariser,
            )
        loop = asyncio.get_running_loop()
        if runtime.handles_stop:
            # The runtime stops itself (and cleanly); cancelling its scope is only the backstop.
            def backstop() -> None:
                loop.call_later(self._config.hard_stop_s, scope.cancel)

            run.token.on_stop_now(backstop)
        else:
            run.token.on_stop_now(scope.cancel)
        turn = Turn(
            run_id=run.run_id,
            session_id=run.session_id,
            prompt=given.prompt if resume is None else prompt,
            history=given.history,
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

    # --- the final write -----------------------------------------------------------------

    async def _persist(self, run: Run) -> None:
        """Store the run's last state and its ending, in one transaction, once.

        The run stays in the engine's table (so the heartbeat keeps renewing its lease, and no
        recovery can end it a second time) until that write has landed. The recorder retries a
        failing store with backoff; after ``give_up_s`` without landing, the run ends ``failed``
        instead (storage lost; no viewer has seen the first ending, so this is the only one
        any viewer gets), its waiters are released, and the write of that ending keeps being
        retried until it lands or the worker shuts down.
        """
        if run.is_persisting:  # started at the stop; the drive task just waits for it
            await run.wait_persisted()
            return
        run.is_persisting = True
        ending = run.ending
        assert ending is not None
        give_up_s = self._recorder.give_up_s
        try:
            with anyio.move_on_after(give_up_s, shield=True):
                for child in run.children:  # a parent is stored as ended only after its children
                    await child.wait_persisted()
            run.buffer.end(stored(ending)[0])
            landed = False
            with anyio.CancelScope(shield=True):
                landed = await self._recorder.close(run.buffer, timeout_s=give_up_s)
                if not landed:
                    why = f"storage lost: the run's ending was not stored within {give_up_s:g} s"
                    await self._recorder.change_unlanded(
                        run.buffer, functools.partial(run.end_instead, StorageLost(why=why))
                    )
            if not landed:
                log.warning(
                    "run %s: ending not stored after %g s; still retrying", run.run_id, give_up_s
                )
                # Viewers get their terminal event (the store may disagree until the write
                # lands); waiters for the stored end keep waiting.
                run.release_terminal()
                await self._recorder.close(run.buffer, timeout_s=None)
        finally:
            self._runs.pop(run.run_id, None)
            run.token.close()
            run.mark_persisted()
            self._on_settled(run)

    async def _pause(self, run: Run, paused: Paused, ctx: AgentContext) -> None:
        """Emit the pause, store it, and let go of the run (shielded, bounded)."""
        timeout_s = run.approval_timeout_s
        expires_at = utcnow() + timedelta(seconds=timeout_s) if timeout_s is not None else None
        if run.pause(paused.calls, expires_at) is None:  # a stop ended it first
            await self._persist(run)
            return
        context = ctx.context.model_dump(mode="json") if ctx.context is not None else None
        with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S, shield=True):
            await self._recorder.close(run.buffer, timeout_s=None)
            try:
                is_paused = await self._store.pause_run(
                    run.run_id,
                    owner=self._config.worker_id,
                    expires_at=expires_at,
                    state=approvals.resume_state(context, paused.state),
                )
                if not is_paused:
                    log.warning("run %s: pause not stored, the run ended meanwhile", run.run_id)
            except StorageError as exc:
                log.warning("run %s: pause not stored: %s", run.run_id, exc)
        self._runs.pop(run.run_id, None)
        run.token.close()
        run.mark_persisted()
        self._on_settled(run)

    def _finish_on_stop(self, run: Run) -> None:
        request = run.token.request
        assert request is not None
        if run.finish(Stopped(request=request)) is not None:
            # The sink is closed: nothing more is recorded, so the ending is written now,
            # while the runtime tears down (the terminal event waits for this write only).
            self._task_group.start_soon(self._persist, run, name=f"end {run.run_id}")


def _stop(run: Run, request: CancelRequest) -> None:
    run.stop(request)
