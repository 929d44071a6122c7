"""Registered agents: a name, a factory called per run, and the limits that apply to it."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic

from tether.engine.policies import Pricing, RunLimits
from tether.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    name: str
    description: str
    factory: Callable[[Any], object]
    """Called with the run's ``AgentContext``; returns a framework agent (Pydantic AI, Agno)."""
    context_model: type[pydantic.BaseModel] | None = None
    limits: RunLimits = field(default_factory=RunLimits)
    pricing: Pricing = field(default_factory=Pricing)
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
            raise UsageError(
                f"invalid context for agent {self.name!r}: {exc.error_count()} error(s)",
                agent=self.name,
                errors=exc.errors(include_url=False, include_context=False, include_input=False),
            ) from exc
