"""Registered agents: a name, a factory called per run, and the limits that apply to it."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic

from tether.engine.policies import Pricing, RunLimits
from tether.engine.session_history import Summariser
from tether.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """A registered agent: its name, factory, context model and limits."""

    name: str
    description: str
    factory: Callable[[Any], object]
    """Called with the run's ``AgentContext``; returns a framework agent (Pydantic AI, Agno)."""
    context_model: type[pydantic.BaseModel] | None = None
    limits: RunLimits = field(default_factory=RunLimits)
    pricing: Pricing = field(default_factory=Pricing)
    context_tokens: int | None = None
    """The history budget's window in tokens; None: the model's own, if its runtime knows it."""
    summariser: Summariser | None = None
    """Folds the turns dropped to fit into the session's running summary."""
    unavailable: str | None = None
    """Why the agent can't run in this install (a missing optional dependency, and its fix);
    it is still listed, and a run of it is refused with this reason."""

    def validate_context(self, context: object) -> pydantic.BaseModel | None:
        """Validate request context before any run starts.

        Raises:
            UsageError: the agent takes no context but got some, or it does not validate.
        """
        if self.context_model is None:
            if context not in (None, {}):
                raise UsageError(f"agent {self.name!r} takes no context", agent=self.name)
            return None
        try:
            return self.context_model.model_validate(context or {})
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'context'}: {e['msg']}"
                for e in exc.errors()
            )
            raise UsageError(
                f"invalid context for agent {self.name!r}: {problems}",
                agent=self.name,
                errors=exc.errors(include_url=False, include_context=False, include_input=False),
            ) from exc
