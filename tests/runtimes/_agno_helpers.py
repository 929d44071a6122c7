"""A recording sink and a hand-driven stop signal, to drive ``AgnoRuntime`` without the engine."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agno.agent import Agent
from agno.team import Team
from pydantic import JsonValue

from tether.events import Usage
from tether.runtimes.agno_events import ChildStatus


@dataclass
class RecordingSink:
    """Records every sink call in order; ``child_run`` opens a recording child."""

    name: str = "top"
    calls: list[tuple[object, ...]] = field(default_factory=list[tuple[object, ...]])
    children: list["RecordingSink"] = field(default_factory=list["RecordingSink"])
    status: ChildStatus | None = None
    last_usage: Usage | None = None
    on_text: Callable[[str], None] | None = None

    @property
    def text_deltas(self) -> list[str]:
        return [str(c[1]) for c in self.calls if c[0] == "text"]

    @property
    def tool_calls(self) -> list[tuple[object, ...]]:
        return [c for c in self.calls if c[0] in ("tool_started", "tool_finished")]

    def response_started(self) -> None:
        self.calls.append(("response_started",))

    def text(self, delta: str) -> None:
        self.calls.append(("text", delta))
        if self.on_text is not None:
            self.on_text(delta)

    def tool_started(self, call_id: str, tool: str, args: Mapping[str, JsonValue]) -> None:
        self.calls.append(("tool_started", call_id, tool, dict(args)))

    def tool_finished(
        self, call_id: str, *, ok: bool, result: JsonValue = None, error: str | None = None
    ) -> None:
        self.calls.append(("tool_finished", call_id, ok, result, error))

    def usage(self, usage: Usage) -> None:
        self.last_usage = usage

    def queued(self, resource: str) -> None:
        self.calls.append(("queued", resource))

    def finished(self, status: ChildStatus) -> None:
        assert self.status is None, "a child run ends once"
        self.status = status

    def child(self, name: str) -> "RecordingSink":
        (child,) = [c for c in self.children if c.name == name]
        return child


@dataclass
class ChildRecordingSink(RecordingSink):
    """A recording sink that also offers child runs (as the engine will)."""

    def child_run(self, agent_name: str) -> "ChildRecordingSink":
        child = ChildRecordingSink(name=agent_name)
        self.children.append(child)
        return child


@dataclass
class ManualSignal:
    """A ``StopSignal`` the test pulls by hand."""

    is_after_turn_requested: bool = False
    callbacks: list[Callable[[], None]] = field(default_factory=list[Callable[[], None]])
    is_now: bool = False

    def on_stop_now(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)
        if self.is_now:
            callback()

    def stop_now(self) -> None:
        self.is_after_turn_requested = self.is_now = True
        for callback in self.callbacks:
            callback()

    def stop_after_turn(self) -> None:
        self.is_after_turn_requested = True


async def run_agno(target: Agent | Team, prompt: str, **kwargs: Any) -> list[object]:
    """Run an Agno agent or team to its end, streaming; return its events."""
    runner: Any = target  # Agno's run signatures use bare generics
    return [event async for event in runner.arun(prompt, stream=True, **kwargs)]


def additional_input(target: Agent | Team) -> list[Any] | None:
    source: Any = target
    return source.additional_input
