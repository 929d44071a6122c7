"""Deadlines and budgets stop runs mid-generation and keep the partial output."""

import anyio
import pytest

from tests.scripted import Delay, Gate, scripted, text
from tether import Pricing, RunLimits, Tether

pytestmark = pytest.mark.anyio


async def test_timeout_stops_the_run_with_reason_timeout(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("slow "), gate])
    app.agent("a", limits=RunLimits(timeout_s=0.5))(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
        outcome = await run.outcome()
    assert (outcome.status, outcome.reason, outcome.text) == ("cancelled", "timeout", "slow ")


async def test_token_budget_stops_mid_generation(app: Tether) -> None:
    # Each chunk is ~10 tokens by estimate; the budget is crossed by the third chunk, long
    # before the provider would report usage at the end of the response.
    chunks = [text("x" * 40) for _ in range(50)]
    model = scripted(chunks)
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi", limits=RunLimits(token_budget=25))
    outcome = await run.outcome()
    assert (outcome.status, outcome.reason) == ("cancelled", "token_budget")
    assert 0 < len(outcome.text) < 40 * 50


async def test_cost_budget_stops_mid_generation(app: Tether) -> None:
    model = scripted([text("y" * 400) for _ in range(20)])
    pricing = Pricing(output_usd_per_mtok=10_000.0)  # 1 cent per token
    app.agent("a", pricing=pricing)(lambda ctx: model.agent())
    run = await app.start("a", "hi", limits=RunLimits(cost_budget_usd=2.0))
    outcome = await run.outcome()
    assert (outcome.status, outcome.reason) == ("cancelled", "cost_budget")
    assert len(outcome.text) < 400 * 20


async def test_run_limits_override_the_agents(app: Tether) -> None:
    model = scripted([text("ok"), Delay(0.01)])
    app.agent("a", limits=RunLimits(timeout_s=0.001))(lambda ctx: model.agent())
    run = await app.start("a", "hi", limits=RunLimits(timeout_s=30))
    assert (await run.outcome()).status == "completed"
