"""``Tether``: the application — agent registry, engine settings and the process lifecycle.

```python
app = Tether()

@app.agent("meetings", description="Answers questions about meetings")
def meetings(ctx: AgentContext) -> Agent: ...

async with app:
    run = await app.start("meetings", "Summarise my week", user_id="u1")
    async for event in run.events(): ...
```

``async with app`` opens the store and buses, starts the write-behind recorder and the lease
heartbeat, and on exit drains: refuses new runs, stops every run of this worker with reason
``shutdown`` and waits until their ends are stored (at most ``TETHER_DRAIN_S``).
"""

import functools
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.from_thread
import anyio.lowlevel
import pydantic
from anyio.lowlevel import EventLoopToken

from tether.bus.base import CancelBus, EventBus, SessionSignals
from tether.bus.memory import MemoryCancelBus, MemoryEventBus, MemorySessionSignals
from tether.engine.engine import CancelResult, Engine, EngineConfig, IfBusy
from tether.engine.history import HistoryRules
from tether.engine.leases import heartbeat
from tether.engine.policies import Pricing, RunLimits
from tether.engine.recorder import Recorder
from tether.engine.registry import AgentSpec
from tether.engine.run import Run, RunOutcome
from tether.engine.session_history import Summariser
from tether.errors import Conflict, UsageError
from tether.events import RunEvent, RunPaused, StopAction, StopMode, StopReason, ToolDecision
from tether.ids import RunId, SessionId, UserId
from tether.runtimes.base import Runtime
from tether.settings import Settings
from tether.storage.memory import MemoryStore
from tether.storage.store import Store

Factory = Callable[[Any], object]


class RunHandle:
    """A run started by this process: its events, its outcome, and a way to stop it."""

    def __init__(self, run: Run, engine: Engine) -> None:
        self._run = run
        self._engine = engine
        self.run_id: RunId = run.run_id
        self.session_id: SessionId = run.session_id
        self.agent: str = run.agent

    def events(self, after_seq: int = -1) -> AsyncIterator[RunEvent]:
        """Events after ``after_seq`` (all by default), live, ending with ``RunFinished``.

        A run that pauses for approval ends this stream with ``RunPaused`` instead; the
        handle ``Tether.resume`` returns streams the rest.
        """
        return self._run.events(after_seq)

    async def cancel(
        self,
        *,
        reason: StopReason = "user",
        mode: StopMode = "now",
        action: StopAction = "keep",
        by: str | None = None,
        wait: bool = False,
    ) -> CancelResult:
        return await self._engine.cancel(
            self.run_id, reason=reason, mode=mode, action=action, by=by, wait=wait
        )

    async def outcome(self) -> RunOutcome:
        """Wait for the run to end, and for its end to be stored, and return how it ended.

        Raises:
            Conflict: the run paused for approval instead (see ``settled``).
        """
        settled = await self._run.wait_persisted()
        if isinstance(settled, RunPaused):
            raise Conflict(f"run {self.run_id} is paused", run_id=self.run_id, status="paused")
        return settled

    async def settled(self) -> RunOutcome | RunPaused:
        """Wait until the run ended or paused for approval, and that is stored."""
        return await self._run.wait_persisted()


class Tether:
    """The application: register agents, then start, stop, resume and read their runs."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        store: Store | None = None,
        cancel_bus: CancelBus | None = None,
        event_bus: EventBus | None = None,
        session_signals: SessionSignals | None = None,
        runtimes: Sequence[Runtime] | None = None,
        limits: RunLimits | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.agents: dict[str, AgentSpec] = {}
        self._store = store
        self._cancel_bus = cancel_bus
        self._event_bus = event_bus
        self._session_signals = session_signals
        self._runtimes = runtimes
        self._limits = limits or RunLimits()
        self._engine: Engine | None = None
        self._stack: AsyncExitStack | None = None
        self._loop_thread: int | None = None
        self._loop_token: EventLoopToken | None = None

    def agent(
        self,
        name: str,
        *,
        description: str = "",
        context: type[pydantic.BaseModel] | None = None,
        limits: RunLimits | None = None,
        pricing: Pricing | None = None,
        context_tokens: int | None = None,
        summariser: Summariser | None = None,
        unavailable: str | None = None,
    ) -> Callable[[Factory], Factory]:
        """Register an agent factory, called with an ``AgentContext`` for every run.

        ``context_tokens`` is the context window the session's history is fitted to (by
        default the model's own when tether knows it, as for the embedded model); the oldest
        whole turns are dropped to fit. A ``summariser`` then folds them into the session's
        running summary, which the model sees in their place. ``unavailable`` lists the agent
        but refuses its runs with that reason (say how to fix it), for an agent whose optional
        dependency is not installed.

        Raises:
            UsageError: the name is taken.
        """

        def register(factory: Factory) -> Factory:
            if name in self.agents:
                raise UsageError(f"agent {name!r} is already registered", agent=name)
            self.agents[name] = AgentSpec(
                name=name,
                description=description,
                factory=factory,
                context_model=context,
                limits=limits or RunLimits(),
                pricing=pricing or Pricing(),
                context_tokens=context_tokens,
                summariser=summariser,
                unavailable=unavailable,
            )
            return factory

        return register

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise UsageError("tether is not running: use `async with app:` first")
        return self._engine

    @property
    def store(self) -> Store:
        return self.engine.store

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._engine = await self._open(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._loop_thread = threading.get_ident()
        self._loop_token = anyio.lowlevel.current_token()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        try:
            with anyio.CancelScope(shield=True):
                await self.drain()
        finally:
            self._engine = None
            stack, self._stack = self._stack, None
            await stack.__aexit__(exc_type, exc, tb)

    async def _open(self, stack: AsyncExitStack) -> Engine:
        s = self.settings
        store = self._store or await _open_store(s)
        if self._store is None:
            stack.push_async_callback(store.close)
        cancel_bus, event_bus = self._cancel_bus, self._event_bus
        if s.redis_url and (cancel_bus is None or event_bus is None):
            from tether.bus.redis import open_redis_buses

            # A worker starts even while Redis is down: its buses degrade (and recover) as in
            # any later outage, since the database heartbeat still delivers stops.
            redis_cancel, redis_events = await stack.enter_async_context(
                open_redis_buses(s.redis_url, is_down_fatal=False)
            )
            cancel_bus, event_bus = cancel_bus or redis_cancel, event_bus or redis_events
        session_signals = self._session_signals
        if s.redis_url and session_signals is None:
            from tether.bus.redis_sessions import open_redis_session_signals

            session_signals = await stack.enter_async_context(
                open_redis_session_signals(s.redis_url)
            )
        recorder = Recorder(
            store, flush_interval_s=s.flush_interval_s, give_up_s=s.storage_give_up_s
        )
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        engine = Engine(
            store=store,
            cancel_bus=cancel_bus or MemoryCancelBus(),
            event_bus=event_bus or MemoryEventBus(),
            session_signals=session_signals or MemorySessionSignals(),
            recorder=recorder,
            runtimes=self._runtimes or _default_runtimes(),
            agents=self.agents,
            config=EngineConfig(
                worker_id=s.worker_id or f"{socket.gethostname()}:{os.getpid()}",
                lease_s=s.lease_s,
                heartbeat_s=s.heartbeat_s,
                stop_grace_s=s.stop_grace_s,
                hard_stop_s=s.hard_stop_s,
                max_runs=s.max_runs,
                max_write_lag_s=s.max_write_lag_s,
                drain_s=s.drain_s,
                history=HistoryRules(interrupted_marker=s.interrupted_marker),
                limits=RunLimits(approval_timeout_s=s.approval_timeout_s).merged(self._limits),
                generate_titles=s.generate_titles,
            ),
            task_group=tg,
        )
        tg.start_soon(recorder.run, name="tether recorder")
        tg.start_soon(heartbeat, engine, name="tether heartbeat")
        return engine

    async def drain(self) -> None:
        """Refuse new runs, stop every run of this worker (reason ``shutdown``), store their ends.

        Returns once every end is stored, or ``settings.drain_s`` after the first call: what
        leaving ``async with app`` does first. Call it as soon as the process is asked to stop
        (``tether serve`` does on SIGTERM); a start from then on raises ``Overloaded``.
        """
        if self._engine is not None:
            await self._engine.shutdown()

    async def start(
        self,
        agent: str,
        message: str,
        *,
        user_id: str = "local",
        session_id: str | None = None,
        context: object = None,
        limits: RunLimits | None = None,
        if_busy: IfBusy = "reject",
        client_request_id: str | None = None,
    ) -> RunHandle:
        """Start a run of ``agent`` on ``message``; returns once the run exists in the store.

        Raises:
            Overloaded: this worker can't carry another run now (``TETHER_MAX_RUNS``, its
                writes behind, or draining); nothing was written.
            UsageError: unknown agent or invalid context.
            NotFound: no such session for this user.
            Conflict: the session has an active run and ``if_busy`` is ``reject``.
        """
        engine = self.engine
        run = await engine.start(
            agent,
            message,
            user_id=UserId(user_id),
            session_id=SessionId(session_id) if session_id else None,
            context=context,
            limits=limits,
            if_busy=if_busy,
            client_request_id=client_request_id,
        )
        return RunHandle(run, engine)

    async def resume(
        self, run_id: str, decisions: Sequence[ToolDecision], *, user_id: str = "local"
    ) -> RunHandle:
        """Continue a paused run, here, with a decision for each call that awaits approval.

        Raises:
            Overloaded: this worker can't carry another run now; nothing was written.
            NotFound: no such run for this user.
            Conflict: the run is not paused (resumed, stopped or timed out meanwhile).
            UsageError: the decisions don't answer exactly the calls that wait.
        """
        engine = self.engine
        run = await engine.resume(RunId(run_id), decisions, user_id=UserId(user_id))
        return RunHandle(run, engine)

    def handle(self, run_id: str) -> RunHandle | None:
        """The handle of a run this process is running, if it is."""
        run = self.engine.runs.get(RunId(run_id))
        return RunHandle(run, self.engine) if run is not None else None

    async def cancel(
        self,
        run_id: str,
        *,
        reason: StopReason = "user",
        mode: StopMode = "now",
        action: StopAction = "keep",
        by: str | None = None,
        wait: bool = False,
    ) -> CancelResult:
        """Stop a run, wherever it runs (see ``Engine.cancel``).

        Raises:
            NotFound: no such run.
        """
        return await self.engine.cancel(
            RunId(run_id), reason=reason, mode=mode, action=action, by=by, wait=wait
        )

    def cancel_threadsafe(
        self, run_id: str, *, reason: StopReason = "user", mode: StopMode = "now"
    ) -> bool:
        """Stop a run of this process from any thread, without waiting; False if not running here.

        The full ``cancel`` (stop, event, durable intent) runs on the app's loop, in its task group.
        """
        run = self.engine.runs.get(RunId(run_id))
        if run is None:
            return False
        engine = self.engine
        cancel = functools.partial(engine.cancel, run.run_id, reason=reason, mode=mode, by="thread")
        if threading.get_ident() == self._loop_thread:
            engine.task_group.start_soon(cancel)
        else:
            assert self._loop_token is not None
            # Not a bare loop callback: anyio must know which backend it runs on (with sniffio
            # installed it asks sniffio, which finds no task in a plain callback).
            anyio.from_thread.run_sync(engine.task_group.start_soon, cancel, token=self._loop_token)
        return True


async def _open_store(settings: Settings) -> Store:
    url = settings.resolved_database_url()
    if url == "memory":
        return MemoryStore()
    from tether.storage.migrate import check_schema, upgrade_database
    from tether.storage.sql import SqlStore

    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade_database(url)
    elif settings.migrate:
        await upgrade_database(url)
    else:
        await check_schema(url)
    return SqlStore.open(url)


def _default_runtimes() -> list[Runtime]:
    from tether.runtimes.pydantic_ai import PydanticAIRuntime

    runtimes: list[Runtime] = [PydanticAIRuntime()]
    try:
        from tether.runtimes.agno import AgnoRuntime
    except ImportError:  # agno is an optional extra
        return runtimes
    runtimes.append(AgnoRuntime())
    return runtimes
