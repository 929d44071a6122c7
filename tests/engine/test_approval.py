"""Human in the loop: a run pauses on a tool that needs approval, and every way out is clean.

Issue #9: approve, deny, edit, cancel while paused, timeout while paused, resume on another
worker and after a restart; the next message in the session works whatever happened.
"""

from typing import Any

import anyio
import pytest
from pydantic_ai.messages import ModelRequest, ToolReturnPart

from tests.approvals import Outbox, sql_app
from tests.engine._helpers import all_events
from tests.history_validator import validate_history
from tests.scripted import Gate, ScriptedModel, scripted, text, tool_call
from tether import Settings, Tether
from tether.engine.policies import RunLimits
from tether.errors import Conflict, NotFound, UsageError
from tether.events import (
    PendingCall,
    RunFinished,
    RunPaused,
    RunResumed,
    ToolCallFinished,
    ToolDecision,
)
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


def mail_script(*, after: str = "Done.") -> ScriptedModel:
    return scripted(
        [text("I'll send it."), tool_call("send_email", {"to": "a@x.org", "body": "hi"})],
        [text(after)],
        [text("Next answer.")],
    )


def register(app: Tether, model: ScriptedModel, outbox: Outbox, **kwargs: Any) -> None:
    app.agent("mailer", **kwargs)(lambda ctx: model.agent(tools=[outbox.tool()]))


def returns(model: ScriptedModel, request: int) -> list[ToolReturnPart]:
    return [
        p
        for m in model.received[request]
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    ]


async def pause(app: Tether, message: str = "mail a@x.org", **kwargs: Any) -> RunPaused:
    run = await app.start("mailer", message, **kwargs)
    events = await all_events(run)
    paused = events[-1]
    assert isinstance(paused, RunPaused)
    assert await run.settled() == paused
    return paused


async def test_a_call_needing_approval_pauses_the_run_and_frees_the_worker(app: Tether) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    assert paused.calls == (
        PendingCall(
            call_id="call_send_email", tool="send_email", args={"to": "a@x.org", "body": "hi"}
        ),
    )
    assert paused.expires_at is not None
    record = await app.store.get_run(paused.run_id)
    assert record is not None
    assert (record.status, record.owner) == ("paused", None)
    assert paused.run_id not in app.engine.runs
    assert outbox.sent == []
    [_, answer] = await app.store.run_messages(paused.run_id)
    assert [(c.call_id, c.status) for c in answer.tool_calls] == [
        ("call_send_email", "awaiting_approval")
    ]


async def test_approve_runs_the_tool_and_the_same_run_goes_on(app: Tether) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    decision = ToolDecision(call_id="call_send_email", approved=True)
    run = await app.resume(paused.run_id, [decision])
    events = await all_events(run)
    assert events[0] == RunResumed(run_id=paused.run_id, seq=paused.seq + 1, decisions=(decision,))
    assert [e.seq for e in events] == list(range(paused.seq + 1, paused.seq + 1 + len(events)))
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status == "completed"
    assert outbox.sent == [{"to": "a@x.org", "body": "hi"}]
    assert [r.content for r in returns(model, 1)] == ["sent to a@x.org"]
    validate_history(model.received[1])
    await run.outcome()
    stored = await app.store.events_after(paused.run_id, -1, limit=100)
    assert [e.seq for e in stored] == list(range(len(stored)))
    messages = await app.store.run_messages(paused.run_id)
    assert [c.status for m in messages for c in m.tool_calls] == ["ok"]
    assert messages[-1].content == "Done."


async def test_deny_tells_the_model_and_never_runs_the_tool(app: Tether) -> None:
    model, outbox = mail_script(after="Understood."), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    decision = ToolDecision(call_id="call_send_email", approved=False, message="Not to them.")
    run = await app.resume(paused.run_id, [decision])
    events = await all_events(run)
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.status, e.result) for e in finished] == [("denied", "Not to them.")]
    assert outbox.sent == []
    assert [r.content for r in returns(model, 1)] == ["Not to them."]
    assert (await run.outcome()).status == "completed"
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert (call.status, call.result) == ("denied", "Not to them.")


async def test_edited_arguments_are_what_the_tool_runs_with_and_what_is_stored(
    app: Tether,
) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    edited = {"to": "b@x.org", "body": "hello"}
    run = await app.resume(
        paused.run_id, [ToolDecision(call_id="call_send_email", approved=True, args=edited)]
    )
    assert (await run.outcome()).status == "completed"
    assert outbox.sent == [edited]
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert (call.args, call.status) == (edited, "ok")


async def test_cancel_while_paused_ends_it_at_once_and_the_next_message_works(
    app: Tether,
) -> None:
    model, outbox = mail_script(after="Next answer."), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    result = await app.cancel(paused.run_id, reason="user", by="u")
    assert (result.accepted, result.status, result.reason) == (True, "cancelled", "user")
    stored = await app.store.events_after(paused.run_id, paused.seq, limit=10)
    kinds = [(e.kind, e.seq) for e in stored]
    assert kinds == [
        ("stop_requested", paused.seq + 1),
        ("tool_call_finished", paused.seq + 2),
        ("run_finished", paused.seq + 3),
    ]
    record = await app.store.get_run(paused.run_id)
    assert record is not None
    assert record.cancel is not None
    assert (record.status, record.reason, record.cancel.by) == ("cancelled", "user", "u")
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert call.status == "cancelled"
    again = await app.cancel(paused.run_id)
    assert (again.accepted, again.status) == (False, "cancelled")
    with pytest.raises(Conflict):
        await app.resume(paused.run_id, [ToolDecision(call_id="call_send_email", approved=True)])

    nxt = await app.start("mailer", "and now?", session_id=record.session_id)
    assert (await nxt.outcome()).status == "completed"
    validate_history(model.received[-1])
    assert outbox.sent == []


async def test_a_paused_run_times_out_cancelled_with_reason_timeout() -> None:
    settings = Settings(database_url="memory", heartbeat_s=0.05)
    app = Tether(store=MemoryStore(), settings=settings)
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox, limits=RunLimits(approval_timeout_s=0.01))
    async with app:
        paused = await pause(app)
        # The heartbeat's next beat ends it, and publishes the end to live viewers.
        ending = await app.engine.event_bus.read(paused.run_id, paused.seq, timeout_s=5)
        assert ending is not None
        assert [e.kind for e in ending][-1] == "run_finished"
        record = await app.store.get_run(paused.run_id)
        assert record is not None
        assert (record.status, record.reason) == ("cancelled", "timeout")
        [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
        assert call.status == "cancelled"


async def test_decisions_must_answer_exactly_the_waiting_calls(app: Tether) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    with pytest.raises(UsageError, match="no decision for call_send_email"):
        await app.resume(paused.run_id, [])
    with pytest.raises(UsageError, match="no call awaiting approval named nope"):
        await app.resume(
            paused.run_id,
            [
                ToolDecision(call_id="call_send_email", approved=True),
                ToolDecision(call_id="nope", approved=True),
            ],
        )
    with pytest.raises(NotFound):
        await app.resume(
            paused.run_id, [ToolDecision(call_id="call_send_email", approved=True)], user_id="eve"
        )
    record = await app.store.get_run(paused.run_id)
    assert record is not None
    assert record.status == "paused"


async def test_a_new_message_while_paused_follows_if_busy(app: Tether) -> None:
    model, outbox = mail_script(after="Next answer."), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    record = await app.store.get_run(paused.run_id)
    assert record is not None
    with pytest.raises(Conflict) as refused:
        await app.start("mailer", "hello?", session_id=record.session_id)
    assert refused.value.details["active_run_id"] == paused.run_id
    nxt = await app.start("mailer", "hello?", session_id=record.session_id, if_busy="interrupt")
    assert (await nxt.outcome()).status == "completed"
    ended = await app.store.get_run(paused.run_id)
    assert ended is not None
    assert (ended.status, ended.reason) == ("cancelled", "superseded")
    validate_history(model.received[-1])


async def test_a_stop_during_the_resumed_run_lands_and_keeps_the_tool_s_result(
    app: Tether,
) -> None:
    gate = Gate()
    model = scripted(
        [text("I'll send it."), tool_call("send_email", {"to": "a@x.org", "body": "hi"})],
        [text("Sent. Now "), gate],
        [text("Next answer.")],
    )
    outbox = Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    run = await app.resume(paused.run_id, [ToolDecision(call_id="call_send_email", approved=True)])
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    events = await all_events(run)
    assert [type(e).__name__ for e in events][-2:] == ["StopRequested", "RunFinished"]
    outcome = await run.outcome()
    assert (outcome.status, outcome.reason) == ("cancelled", "user")
    messages = await app.store.run_messages(paused.run_id)
    assert [c.status for m in messages for c in m.tool_calls] == ["ok"]
    assert [m.status for m in messages if m.role == "assistant"] == ["complete", "interrupted"]
    nxt = await app.start("mailer", "and now?", session_id=run.session_id)
    assert (await nxt.outcome()).status == "completed"
    validate_history(model.received[-1])


async def test_resume_on_another_worker(sqlite_url: str) -> None:
    model, outbox = mail_script(), Outbox()
    first, second = sql_app(sqlite_url, "a"), sql_app(sqlite_url, "b")
    register(first, model, outbox)
    register(second, model, outbox)
    async with first, second:
        paused = await pause(first)
        run = await second.resume(
            paused.run_id, [ToolDecision(call_id="call_send_email", approved=True)]
        )
        assert (await run.outcome()).status == "completed"
        record = await first.store.get_run(paused.run_id)
        assert record is not None
        assert (record.status, record.owner) == ("completed", "b")
    assert outbox.sent == [{"to": "a@x.org", "body": "hi"}]


async def test_resume_after_a_restart(sqlite_url: str) -> None:
    model, outbox = mail_script(), Outbox()
    before = sql_app(sqlite_url, "a")
    register(before, model, outbox)
    async with before:
        paused = await pause(before)
    after = sql_app(sqlite_url, "a")
    register(after, model, outbox)
    async with after:
        record = await after.store.get_run(paused.run_id)
        assert record is not None
        assert record.status == "paused"
        run = await after.resume(
            paused.run_id, [ToolDecision(call_id="call_send_email", approved=True)]
        )
        assert (await run.outcome()).status == "completed"
    assert outbox.sent == [{"to": "a@x.org", "body": "hi"}]
