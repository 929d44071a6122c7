"""The ``Runtime`` protocol: drive one agent turn as sink calls, honouring the stop signal.

A runtime never creates events, sequence numbers or records itself: it reports what happens
to the ``RunSink`` and the engine turns that into events, persistence and policy checks. It
returns normally when the turn completes or when it stopped because the signal asked it to
(None), or when the model called tools that need a person's approval first (``Paused``); it
raises on failure. A paused turn is continued later, maybe by another process, with a
``Turn`` whose ``resume`` carries the decisions.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from tether.events import PendingCall, ToolDecision, Usage
from tether.ids import RunId, SessionId
from tether.records import HistoryItem


class RunSink(Protocol):
    """Where a runtime reports what happens; the engine makes events of it."""

    def response_started(self) -> None:
        """A new model response begins (the next text belongs to a new assistant message)."""
        ...

    def text(self, delta: str) -> None: ...
    def tool_started(self, call_id: str, tool: str, args: Mapping[str, JsonValue]) -> None: ...
    def tool_finished(
        self, call_id: str, *, ok: bool, result: JsonValue = None, error: str | None = None
    ) -> None: ...
    def usage(self, usage: Usage) -> None:
        """Report the run's cumulative token usage so far (budgets are checked on it)."""
        ...

    def queued(self, resource: str) -> None:
        """The run waits for a shared resource before it can go on."""
        ...


class StopSignal(Protocol):
    """The stop signal a runtime honours: ``now`` callbacks and the after-turn flag."""

    @property
    def is_after_turn_requested(self) -> bool:
        """A stop after the current model turn was requested: stop at the next step boundary."""
        ...

    def on_stop_now(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the event loop as soon as an immediate stop is requested."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Paused:
    """The turn waits for a person to approve or deny ``calls``."""

    calls: tuple[PendingCall, ...]
    state: JsonValue = None
    """What this runtime needs to continue the turn, stored with the run (opaque to tether)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Continuation:
    """How to continue a paused turn."""

    items: Sequence[HistoryItem]
    """The turn so far: its user message, then its responses; the calls that wait for a
    decision are the ``is_pending`` exchanges of the last one."""
    decisions: Sequence[ToolDecision]
    state: JsonValue = None
    """What the runtime returned in ``Paused.state``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One turn to drive: the prompt, the history before it, and maybe a continuation."""

    run_id: RunId
    session_id: SessionId
    prompt: str
    history: Sequence[HistoryItem]
    """The session's earlier turns."""
    resume: Continuation | None = None
    """Set when the turn continues after a pause (``prompt`` is then already in ``items``)."""


class Runtime(Protocol):
    """Drives one agent turn of a kind of agent (Pydantic AI, Agno) and honours the stop signal."""

    name: str
    handles_stop: bool
    """True if ``drive`` stops by itself on ``signal.on_stop_now`` (returning normally); the
    engine then cancels it outright only if it hasn't stopped within a grace period. False: the
    engine cancels the ``drive`` call's scope at once on a stop."""

    def accepts(self, agent: object) -> bool:
        """Whether this runtime drives agents of this type."""
        ...

    async def drive(
        self, agent: object, turn: Turn, sink: RunSink, signal: StopSignal
    ) -> Paused | None: ...


@runtime_checkable
class KnowsContextWindow(Protocol):
    """A runtime that can tell an agent's context window (e.g. the embedded model's)."""

    def context_window(self, agent: object) -> int | None:
        """The agent's model's context window in tokens, or None if unknown."""
        ...


@runtime_checkable
class ProbesUsage(Protocol):
    """A sink that can read the runtime's live usage when the run ends mid-response."""

    def probe_usage(self, probe: Callable[[], Usage]) -> None:
        """Read ``probe`` if the run ends before the runtime reports usage again.

        ``probe`` returns cumulative usage, as passed to ``usage``; it is read e.g. on an
        immediate stop mid-stream.
        """
        ...
