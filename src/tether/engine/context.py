"""``AgentContext``: what an agent factory (and its tools) know about the run they serve."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.ids import RunId, SessionId, UserId

Delegate = Callable[[str, str, str | None], Awaitable[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentContext:
    """What an agent factory (and its tools, via ``deps``) knows about the run it serves."""

    run_id: RunId
    session_id: SessionId
    user_id: UserId
    agent: str
    context: Any = None
    """The request context, validated against the agent's ``context`` model (or None)."""
    parent_run_id: RunId | None = None
    _delegate: Delegate = field(repr=False)
    _queued: Callable[[str], None] = field(repr=False)

    def queued(self, resource: str) -> None:
        """Tell the run's viewers it waits for a shared ``resource`` (emits ``RunQueued``).

        For models and tools that serve one run at a time, e.g. the embedded model.
        """
        self._queued(resource)

    async def delegate(self, agent: str, prompt: str, *, call_id: str | None = None) -> str:
        """Run another registered agent as a child of this run and return its answer.

        The child has ``parent_run_id`` set to this run; stopping this run stops it too. If the
        child is stopped or fails, the returned text says so, with its partial answer, so the
        calling tool can hand it to the model as a result.

        Args:
            agent: The registered agent to run.
            prompt: The child's user message.
            call_id: The tool call this delegation serves (defaults to this run's only open
                tool call, if there is exactly one).

        Raises:
            UsageError: no agent by that name.
        """
        return await self._delegate(agent, prompt, call_id)
