"""Run policies: wall-clock deadline, token and cost budgets.

Budgets are checked while the model streams, not only between requests: providers usually
report usage at the end of a response, so in between we add an estimate for the text streamed
since the last report (``chars / CHARS_PER_TOKEN``). Once usage is reported it replaces the
estimate, so a run is never charged twice for the same text.
"""

from dataclasses import dataclass

from tether.events import StopReason, Usage

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Pricing:
    """Prices in US dollars per million tokens, used for cost budgets and reported cost."""

    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLimits:
    """Limits for one run; ``None`` means unlimited. All end the run ``cancelled``."""

    timeout_s: float | None = None
    """Wall-clock time the run may stream; it starts again when a paused run resumes."""
    token_budget: int | None = None
    """Input plus output tokens."""
    cost_budget_usd: float | None = None
    approval_timeout_s: float | None = None
    """How long a paused run waits for approval before it ends ``cancelled`` (``timeout``)."""

    def merged(self, override: "RunLimits | None") -> "RunLimits":
        """These limits with every field ``override`` sets taking precedence."""
        if override is None:
            return self
        return RunLimits(
            timeout_s=override.timeout_s if override.timeout_s is not None else self.timeout_s,
            token_budget=(
                override.token_budget if override.token_budget is not None else self.token_budget
            ),
            cost_budget_usd=(
                override.cost_budget_usd
                if override.cost_budget_usd is not None
                else self.cost_budget_usd
            ),
            approval_timeout_s=(
                override.approval_timeout_s
                if override.approval_timeout_s is not None
                else self.approval_timeout_s
            ),
        )


class BudgetMeter:
    """Tracks a run's usage and says when a budget is exceeded."""

    __slots__ = ("_before", "_limits", "_pricing", "_reported", "_streamed_chars")

    def __init__(self, limits: RunLimits, pricing: Pricing, *, before: Usage | None = None) -> None:
        self._limits = limits
        self._pricing = pricing
        self._before = before or Usage()
        """What the run used before it paused: a resumed run's budget counts it."""
        self._reported = self._before
        self._streamed_chars = 0

    @property
    def is_limited(self) -> bool:
        return self._limits.token_budget is not None or self._limits.cost_budget_usd is not None

    def report(self, usage: Usage) -> StopReason | None:
        """Take the runtime's cumulative usage (replaces the streaming estimate)."""
        before = self._before
        self._reported = Usage(
            input_tokens=before.input_tokens + usage.input_tokens,
            output_tokens=before.output_tokens + usage.output_tokens,
            requests=before.requests + usage.requests,
        )
        self._streamed_chars = 0
        return self.check()

    def streamed(self, chars: int) -> StopReason | None:
        self._streamed_chars += chars
        return self.check()

    def usage(self) -> Usage:
        """Usage as reported so far, with its cost."""
        u = self._reported
        cost = self._pricing.cost_usd(u.input_tokens, u.output_tokens)
        return Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            requests=u.requests,
            cost_usd=cost,
        )

    def check(self) -> StopReason | None:
        u = self._reported
        output = u.output_tokens + self._streamed_chars // CHARS_PER_TOKEN
        budget = self._limits.token_budget
        if budget is not None and u.input_tokens + output > budget:
            return "token_budget"
        cost_budget = self._limits.cost_budget_usd
        if cost_budget is not None and self._pricing.cost_usd(u.input_tokens, output) > cost_budget:
            return "cost_budget"
        return None
