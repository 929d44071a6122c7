"""Agno tools that need confirmation pause the run, and every way out is clean (issue #9).

The Agno twin of ``tests/engine/test_approval.py``: approve, deny, edit, cancel while paused,
stop the resumed run, resume on another worker and after a restart; the model always sees a
result for every call it made.
"""

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from agno.agent import Agent
from agno.models.message import Message
from agno.team import Team
from agno.tools.function import Function
from pydantic import JsonValue

from tests.approvals import sql_app
from tests.engine._helpers import all_events
from tests.runtimes._agno_helpers import ManualSignal, RecordingSink
from tests.runtimes.scripted_agno import ScriptedAgnoModel, scripted_agno
from tests.scripted import Gate, text, tool_call
from tether import Settings, Tether
from tether.errors import UsageError
from tether.events import (
    PendingCall,
    RunFinished,
    RunPaused,
    RunResumed,
    ToolCallFinished,
    ToolCallStarted,
    ToolDecision,
)
from tether.ids import RunId, SessionId, new_id
from tether.runtimes.agno import AgnoRuntime
from tether.runtimes.base import Continuation, Paused, Turn

pytestmark = pytest.mark.anyio

CALL = "call_send_email"
MAIL = {"to": "a@x.org", "body": "hi"}


class Outbox:
    """The side effect a person must approve: what was sent, and with which arguments."""

    def __init__(self, gate: Gate | None = None, *, is_down: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate = gate
        self.is_down = is_down

    def tool(self) -> Function:
        async def send_email(to: str, body: str) -> str:
            """Send an email."""
            if self.gate is not None:
                self.gate.reached.set()
                await self.gate.opened.wait()
            if self.is_down:
                raise ConnectionError("the mail server is down")
            self.sent.append({"to": to, "body": body})
            return f"sent to {to}"

        return Function(name="send_email", entrypoint=send_email, requires_confirmation=True)


async def lookup(q: str) -> str:
    """Look q up."""
    return f"found {q}"


def mail_script(*more: list[Any]) -> ScriptedAgnoModel:
    return scripted_agno(
        [text("I'll send it."), tool_call("send_email", MAIL)],
        *(more or ([text("Done.")],)),
    )


def register(app: Tether, model: ScriptedAgnoModel, outbox: Outbox) -> None:
    def make(ctx: object) -> Agent:
        tools: list[Any] = [outbox.tool(), lookup]
        return Agent(telemetry=False, model=model, tools=tools, instructions="Be brief.")

    app.agent("mailer")(make)


async def pause(app: Tether, message: str = "mail a@x.org", **kwargs: Any) -> RunPaused:
    run = await app.start("mailer", message, **kwargs)
    events = await all_events(run)
    paused = events[-1]
    assert isinstance(paused, RunPaused), events
    assert await run.settled() == paused
    return paused


async def resume(app: Tether, paused: RunPaused, decision: ToolDecision) -> RunFinished:
    run = await app.resume(paused.run_id, [decision])
    events = await all_events(run)
    assert events[0] == RunResumed(run_id=paused.run_id, seq=paused.seq + 1, decisions=(decision,))
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    await run.outcome()  # stored too
    return finished


def tool_results(request: list[Message]) -> list[tuple[str | None, object, bool | None]]:
    return [(m.tool_call_id, m.content, m.tool_call_error) for m in request if m.role == "tool"]


def assert_every_call_answered(request: list[Message]) -> None:
    """Every assistant tool call is answered by a tool message before the next other message."""
    waiting: set[str] = set()
    for index, message in enumerate(request):
        if message.role == "tool":
            assert message.tool_call_id in waiting, f"message {index} answers no open call"
            waiting.discard(message.tool_call_id or "")
            continue
        assert not waiting, f"message {index}: calls {sorted(waiting)} unanswered"
        if message.role == "assistant" and message.tool_calls:
            waiting = {str(call["id"]) for call in message.tool_calls}
    assert not waiting, f"dangling calls at the end: {sorted(waiting)}"


@pytest.fixture
async def app() -> AsyncIterator[Tether]:
    app = Tether(settings=Settings(database_url="memory"))
    async with app:
        yield app


async def test_a_call_needing_confirmation_pauses_the_run_and_runs_nothing(app: Tether) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    assert paused.calls == (PendingCall(call_id=CALL, tool="send_email", args=MAIL),)
    record = await app.store.get_run(paused.run_id)
    assert record is not None
    assert record.status == "paused"
    assert outbox.sent == []
    assert len(model.received) == 1
    [_, answer] = await app.store.run_messages(paused.run_id)
    assert answer.content == "I'll send it."
    assert [(c.call_id, c.status) for c in answer.tool_calls] == [(CALL, "awaiting_approval")]


async def test_approve_runs_the_tool_and_the_model_sees_its_result(app: Tether) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    finished = await resume(app, paused, ToolDecision(call_id=CALL, approved=True))
    assert finished.status == "completed"
    assert outbox.sent == [MAIL]
    request = model.received[1]
    assert [m.role for m in request] == ["system", "user", "assistant", "tool"]
    assert tool_results(request) == [(CALL, "sent to a@x.org", False)]
    messages = await app.store.run_messages(paused.run_id)
    assert [(c.status, c.result) for m in messages for c in m.tool_calls] == [
        ("ok", "sent to a@x.org")
    ]
    assert messages[-1].content == "Done."
    stored = await app.store.events_after(paused.run_id, -1, limit=100)
    assert [e.seq for e in stored] == list(range(len(stored)))
    # The call was announced by run_paused; the resumed run only reports how it ended.
    assert [e.kind for e in stored] == [
        "run_started",
        "text_delta",
        "run_paused",
        "run_resumed",
        "tool_call_finished",
        "text_delta",
        "run_finished",
    ]


@pytest.mark.parametrize(
    ("reason", "seen"),
    [("Not to them.", "Not to them."), (None, "The tool call was denied by the user.")],
)
async def test_deny_never_runs_the_tool_and_the_model_reads_the_denial(
    app: Tether, reason: str | None, seen: str
) -> None:
    model, outbox = mail_script([text("Understood.")]), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    run = await app.resume(
        paused.run_id, [ToolDecision(call_id=CALL, approved=False, message=reason)]
    )
    events = await all_events(run)
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert [(e.status, e.result) for e in finished] == [("denied", seen)]
    assert not [e for e in events if isinstance(e, ToolCallStarted)]
    assert (await run.outcome()).status == "completed"
    assert outbox.sent == []
    assert tool_results(model.received[1]) == [(CALL, seen, True)]
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert (call.status, call.result) == ("denied", seen)


async def test_edited_arguments_are_what_the_tool_runs_with_and_what_is_stored(
    app: Tether,
) -> None:
    model, outbox = mail_script(), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    edited = {"to": "b@x.org", "body": "hello"}
    finished = await resume(app, paused, ToolDecision(call_id=CALL, approved=True, args=edited))
    assert finished.status == "completed"
    assert outbox.sent == [edited]
    assert tool_results(model.received[1]) == [(CALL, "sent to b@x.org", False)]
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert (call.args, call.status) == (edited, "ok")


async def test_an_approved_call_that_fails_is_a_failed_call_the_model_reads(app: Tether) -> None:
    model, outbox = mail_script([text("It failed.")]), Outbox(is_down=True)
    register(app, model, outbox)
    paused = await pause(app)
    finished = await resume(app, paused, ToolDecision(call_id=CALL, approved=True))
    assert finished.status == "completed"
    [(call_id, content, is_error)] = tool_results(model.received[1])
    assert (call_id, is_error) == (CALL, True)
    assert "mail server is down" in str(content)
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert call.status == "error"
    assert "mail server is down" in str(call.error)


async def test_a_resumed_turn_sees_the_session_history_once(app: Tether) -> None:
    model = scripted_agno(
        [text("Hello.")],
        [text("I'll send it."), tool_call("send_email", MAIL)],
        [text("Done.")],
    )
    outbox = Outbox()
    register(app, model, outbox)
    first = await app.start("mailer", "hi")
    assert (await first.outcome()).status == "completed"
    paused = await pause(app, session_id=first.session_id)
    await resume(app, paused, ToolDecision(call_id=CALL, approved=True))
    request = model.received[2]
    assert [(m.role, m.content) for m in request[1:4]] == [
        ("user", "hi"),
        ("assistant", "Hello."),
        ("user", "mail a@x.org"),
    ]
    assert [m.role for m in request].count("system") == 1
    assert_every_call_answered(request)


async def test_other_calls_of_the_paused_response_run_before_the_pause_and_stay_answered(
    app: Tether,
) -> None:
    model = scripted_agno(
        [tool_call("lookup", {"q": "x"}, call_id="c1"), tool_call("send_email", MAIL)],
        [text("Done.")],
    )
    outbox = Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    assert [c.call_id for c in paused.calls] == [CALL]
    await resume(app, paused, ToolDecision(call_id=CALL, approved=True))
    assert tool_results(model.received[1]) == [
        ("c1", "found x", False),
        (CALL, "sent to a@x.org", False),
    ]
    messages = await app.store.run_messages(paused.run_id)
    assert [(c.call_id, c.status) for m in messages for c in m.tool_calls] == [
        ("c1", "ok"),
        (CALL, "ok"),
    ]


async def test_a_resumed_run_can_pause_again_and_go_on(app: Tether) -> None:
    again = {"to": "c@x.org", "body": "also"}
    model = mail_script(
        [text("One more."), tool_call("send_email", again, call_id="c2")],
        [text("Both sent.")],
    )
    outbox = Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    run = await app.resume(paused.run_id, [ToolDecision(call_id=CALL, approved=True)])
    events = await all_events(run)
    second = events[-1]
    assert isinstance(second, RunPaused)
    assert second.calls == (PendingCall(call_id="c2", tool="send_email", args=again),)
    finished = await resume(app, second, ToolDecision(call_id="c2", approved=True))
    assert finished.status == "completed"
    assert outbox.sent == [MAIL, again]
    assert_every_call_answered(model.received[-1])


async def test_cancel_while_paused_then_the_next_message_sees_a_result_for_every_call(
    app: Tether,
) -> None:
    model, outbox = mail_script([text("Next answer.")]), Outbox()
    register(app, model, outbox)
    paused = await pause(app)
    result = await app.cancel(paused.run_id, reason="user", by="u")
    assert (result.accepted, result.status) == (True, "cancelled")
    record = await app.store.get_run(paused.run_id)
    assert record is not None
    nxt = await app.start("mailer", "and now?", session_id=record.session_id)
    assert (await nxt.outcome()).status == "completed"
    request = model.received[-1]
    assert_every_call_answered(request)
    [(call_id, _, is_error)] = tool_results(request)
    assert (call_id, is_error) == (CALL, True)
    assert outbox.sent == []


async def test_a_stop_during_the_resumed_run_lands_and_the_next_message_works(
    app: Tether,
) -> None:
    gate = Gate()
    model, outbox = mail_script([text("Next answer.")]), Outbox(gate)
    register(app, model, outbox)
    paused = await pause(app)
    run = await app.resume(paused.run_id, [ToolDecision(call_id=CALL, approved=True)])
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel(reason="user")
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert (outcome.status, outcome.reason) == ("cancelled", "user")
    assert not gate.opened.is_set()
    assert outbox.sent == []
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert call.status == "cancelled"
    nxt = await app.start("mailer", "and now?", session_id=run.session_id)
    assert (await nxt.outcome()).status == "completed"
    assert len(model.received) == 2  # the stopped run made no request after the tool
    assert_every_call_answered(model.received[-1])


async def test_a_stop_after_the_turn_lets_the_approved_call_finish_and_asks_no_more(
    app: Tether,
) -> None:
    gate = Gate()
    model, outbox = mail_script(), Outbox(gate)
    register(app, model, outbox)
    paused = await pause(app)
    run = await app.resume(paused.run_id, [ToolDecision(call_id=CALL, approved=True)])
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel(mode="after_turn")
    gate.open()
    with anyio.fail_after(5):
        outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert outbox.sent == [MAIL]
    assert len(model.received) == 1
    [call] = [c for m in await app.store.run_messages(paused.run_id) for c in m.tool_calls]
    assert (call.status, call.result) == ("ok", "sent to a@x.org")


async def test_resume_on_another_worker_sharing_the_database(sqlite_url: str) -> None:
    model, outbox = mail_script(), Outbox()
    first, second = sql_app(sqlite_url, "a"), sql_app(sqlite_url, "b")
    register(first, model, outbox)
    register(second, model, outbox)
    async with first, second:
        paused = await pause(first)
        finished = await resume(second, paused, ToolDecision(call_id=CALL, approved=True))
        assert finished.status == "completed"
        record = await first.store.get_run(paused.run_id)
        assert record is not None
        assert (record.status, record.owner) == ("completed", "b")
    assert outbox.sent == [MAIL]
    assert tool_results(model.received[1]) == [(CALL, "sent to a@x.org", False)]


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
        edited = {"to": "b@x.org", "body": "hello"}
        finished = await resume(
            after, paused, ToolDecision(call_id=CALL, approved=True, args=edited)
        )
        assert finished.status == "completed"
    assert outbox.sent == [edited]
    assert_every_call_answered(model.received[1])


# --- what is not supported fails the run clearly ---------------------------------------


def new_turn() -> Turn:
    return Turn(
        run_id=RunId(new_id("run")), session_id=SessionId(new_id("ses")), prompt="hi", history=()
    )


async def drive(agent: object, turn: Turn | None = None) -> Paused | None:
    with anyio.fail_after(5):
        return await AgnoRuntime().drive(agent, turn or new_turn(), RecordingSink(), ManualSignal())


async def test_drive_returns_the_calls_waiting_for_confirmation_and_a_json_state() -> None:
    model = mail_script()
    result = await drive(Agent(telemetry=False, model=model, tools=[Outbox().tool()]))
    assert isinstance(result, Paused)
    assert result.calls == (PendingCall(call_id=CALL, tool="send_email", args=MAIL),)
    assert isinstance(result.state, dict)


@pytest.mark.parametrize(
    "options",
    [{"requires_user_input": True, "user_input_fields": ["body"]}, {"external_execution": True}],
)
async def test_a_pause_for_user_input_or_external_execution_is_a_usage_error(
    options: dict[str, Any],
) -> None:
    async def send_email(to: str, body: str) -> str:
        """Send an email."""
        return "sent"

    tool = Function(name="send_email", entrypoint=send_email, **options)
    model = scripted_agno([tool_call("send_email", MAIL)])
    with pytest.raises(UsageError, match="other than a confirmation"):
        await drive(Agent(telemetry=False, model=model, tools=[tool]))


async def test_a_team_member_needing_confirmation_is_a_usage_error() -> None:
    leader = scripted_agno(
        [tool_call("delegate_task_to_member", {"member_id": "mailer", "task": "mail"})],
        name="leader",
    )
    member = Agent(telemetry=False, name="mailer", model=mail_script(), tools=[Outbox().tool()])
    team = Team(telemetry=False, name="crew", model=leader, members=[member])
    with pytest.raises(UsageError, match="not a team's or a workflow's pause"):
        await drive(team)


@pytest.mark.parametrize("state", [None, {"runtime": "pydantic_ai"}, {"agno_run_output": 3}])
async def test_continuing_without_a_paused_agno_run_in_the_state_is_a_usage_error(
    state: JsonValue,
) -> None:
    model = scripted_agno()
    decisions = [ToolDecision(call_id=CALL, approved=True)]
    turn = dataclasses.replace(
        new_turn(), resume=Continuation(items=(), decisions=decisions, state=state)
    )
    with pytest.raises(UsageError, match="no Agno run to continue"):
        await drive(Agent(telemetry=False, model=model, tools=[Outbox().tool()]), turn)
    assert model.received == []


async def test_continuing_a_team_is_a_usage_error() -> None:
    member = Agent(telemetry=False, name="m", model=scripted_agno())
    team = Team(telemetry=False, name="crew", model=scripted_agno(), members=[member])
    turn = dataclasses.replace(new_turn(), resume=Continuation(items=(), decisions=(), state=None))
    with pytest.raises(UsageError, match="can't continue a paused run"):
        await drive(team, turn)
