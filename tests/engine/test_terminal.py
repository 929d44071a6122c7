"""Exactly one terminal state and event, whatever races."""

import anyio
import anyio.lowlevel
import pytest

from tests.engine._helpers import all_events
from tests.scripted import Gate, fail, scripted, text, tool_call
from tether import RunFinished, Settings, Tether, ToolCallFinished
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


async def test_cancel_of_a_finished_run_reports_its_final_status(app: Tether) -> None:
    model = scripted([text("done")])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    assert (await run.outcome()).status == "completed"
    result = await app.cancel(run.run_id)
    assert (result.accepted, result.status, result.reason) == (False, "completed", None)


async def test_double_cancel_is_idempotent_and_the_first_reason_wins(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("a"), gate])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    with anyio.fail_after(5):
        await gate.reached.wait()
    first = await run.cancel(reason="user")
    second = await run.cancel(reason="timeout")
    assert first.accepted
    assert not second.accepted
    outcome = await run.outcome()
    assert (outcome.status, outcome.reason) == ("cancelled", "user")
    record = await app.store.get_run(run.run_id)
    assert record is not None
    assert record.cancel is not None
    assert record.cancel.reason == "user"


async def test_cancel_racing_completion_leaves_one_terminal_event(app: Tether) -> None:
    statuses: set[str] = set()
    for steps in range(0, 600, 15):
        model = scripted([text("x")])
        app.agents.pop("a", None)
        app.agent("a")(lambda ctx, m=model: m.agent())
        run = await app.start("a", "hi")
        for _ in range(steps):
            await (
                anyio.lowlevel.checkpoint()
            )  # Deliberate: lets the run get `steps` scheduler turns ahead
        await run.cancel()
        outcome = await run.outcome()
        statuses.add(outcome.status)
        events = await all_events(run)
        terminals = [e for e in events if isinstance(e, RunFinished)]
        assert len(terminals) == 1
        assert events[-1] is terminals[0]
        record = await app.store.get_run(run.run_id)
        assert record is not None
        assert record.status == terminals[0].status
    assert statuses == {"cancelled", "completed"}, "the race was not exercised both ways"


async def test_model_error_fails_the_run_once(app: Tether) -> None:
    model = scripted([text("partial "), fail("provider exploded")])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    outcome = await run.outcome()
    assert (outcome.status, outcome.reason, outcome.text) == ("failed", "error", "partial ")
    assert outcome.error is not None
    assert "provider exploded" in outcome.error
    messages = await app.store.messages(run.session_id)
    assert messages[-1].status == "error"


async def test_tool_error_fails_the_run_and_closes_the_call(app: Tether) -> None:
    model = scripted([tool_call("boom")])

    async def boom() -> str:
        raise ValueError("tool broke")

    app.agent("a")(lambda ctx: model.agent(tools=[boom]))
    run = await app.start("a", "hi")
    outcome = await run.outcome()
    assert outcome.status == "failed"
    events = await all_events(run)
    closed = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.call_id, e.status) for e in closed] == [("call_boom", "error")]


async def test_unknown_agent_and_bad_context_fail_before_any_run() -> None:
    import pydantic

    from tether import UsageError
    from tether.ids import UserId

    class Ctx(pydantic.BaseModel):
        team: str

    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    app.agent("a", context=Ctx)(lambda ctx: scripted().agent())
    async with app:
        with pytest.raises(UsageError, match="unknown agent"):
            await app.start("nope", "hi")
        with pytest.raises(UsageError, match="invalid context"):
            await app.start("a", "hi", context={"team": 3})
        # Issue #18: the message names the field, not just "1 error(s)".
        with pytest.raises(UsageError, match="invalid context for agent 'a': team: Field required"):
            await app.start("a", "hi")
        assert await app.store.list_sessions(UserId("local"), None, limit=10) == []


async def test_shutdown_records_running_runs_as_cancelled_shutdown() -> None:
    store = MemoryStore()
    app = Tether(store=store, settings=Settings(database_url="memory"))
    gate = Gate()
    model = scripted([text("partial"), gate])
    app.agent("a")(lambda ctx: model.agent())
    async with app:
        run = await app.start("a", "hi")
        with anyio.fail_after(5):
            await gate.reached.wait()
    record = await store.get_run(run.run_id)
    assert record is not None
    assert (record.status, record.reason) == ("cancelled", "shutdown")
    messages = await store.messages(run.session_id)
    assert (messages[-1].content, messages[-1].status) == ("partial", "interrupted")


async def test_outer_cancellation_still_records_the_run() -> None:
    store = MemoryStore()
    app = Tether(store=store, settings=Settings(database_url="memory"))
    gate = Gate()
    model = scripted([text("partial"), gate])
    app.agent("a")(lambda ctx: model.agent())
    run_id = None
    with anyio.CancelScope() as outer:
        async with app:
            run = await app.start("a", "hi")
            run_id = run.run_id
            with anyio.fail_after(5):
                await gate.reached.wait()
            outer.cancel()
            await anyio.sleep_forever()
    assert run_id is not None
    record = await store.get_run(run_id)
    assert record is not None
    assert record.status == "cancelled"


async def test_events_after_the_terminal_event_end_at_once(app: Tether) -> None:
    model = scripted([text("done")])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "hi")
    events = await all_events(run)
    with anyio.fail_after(1):
        assert [e async for e in run.events(after_seq=events[-1].seq)] == []
        assert [e async for e in run.events(after_seq=events[-1].seq + 5)] == []


async def test_a_held_stop_only_stops_its_own_users_run(app: Tether) -> None:
    """A stop pressed before the run id was known (POST /sessions/{id}/cancel) is per user."""
    from tether.ids import UserId
    from tether.records import CancelRequest

    model = scripted([text("one")], [text("two")])
    app.agent("a")(lambda ctx: model.agent())
    stop = CancelRequest(reason="user", by="mallory")
    await app.engine.stop_pending("req-1", stop, user_id=UserId("mallory"))
    mine = await app.start("a", "hi", user_id="alice", client_request_id="req-1")
    assert (await mine.outcome()).status == "completed"
    await app.engine.stop_pending("req-2", stop, user_id=UserId("alice"))
    held = await app.start("a", "hi", user_id="alice", client_request_id="req-2")
    assert (await held.outcome()).status == "cancelled"
