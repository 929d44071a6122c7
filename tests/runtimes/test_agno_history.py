"""Tether history -> Agno: provider-valid messages, and Agno really sends them to the model."""

import json

import pytest
from agno.agent import Agent
from agno.models.message import Message
from agno.team import Team

from tests.runtimes._agno_helpers import additional_input, run_agno
from tests.runtimes.scripted_agno import scripted_agno
from tests.scripted import text, tool_call
from tether.records import AssistantItem, HistoryItem, ToolExchange, UserItem
from tether.runtimes.agno_history import to_messages, with_history, workflow_input

pytestmark = pytest.mark.anyio

MARKER = "[This answer was interrupted: stopped by the user.]"

HISTORY: list[HistoryItem] = [
    UserItem(text="Find x"),
    AssistantItem(
        text="Checking.",
        tool_calls=(
            ToolExchange(call_id="c1", tool="lookup", args={"q": "x"}, result="found x"),
            ToolExchange(call_id="c2", tool="slow", args={}, result="[No result]", is_error=True),
        ),
    ),
    AssistantItem(text=MARKER, is_interrupted=True),
    UserItem(text="continue"),
]


def shape(messages: list[Message]) -> list[tuple[str, object, object, object]]:
    return [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in messages]


def test_to_messages_answers_every_tool_call_with_a_result_right_after_it() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}},
        {"id": "c2", "type": "function", "function": {"name": "slow", "arguments": "{}"}},
    ]
    assert shape(to_messages(HISTORY)) == [
        ("user", "Find x", None, None),
        ("assistant", "Checking.", calls, None),
        ("tool", "found x", None, "c1"),
        ("tool", "[No result]", None, "c2"),
        ("assistant", MARKER, None, None),
        ("user", "continue", None, None),
    ]
    tool_results = [m for m in to_messages(HISTORY) if m.role == "tool"]
    assert [m.tool_call_error for m in tool_results] == [False, True]


def test_to_messages_drops_an_empty_response_and_keeps_a_tool_only_one_without_text() -> None:
    history: list[HistoryItem] = [
        AssistantItem(text=""),
        AssistantItem(
            text="", tool_calls=(ToolExchange(call_id="c", tool="t", args={}, result="r"),)
        ),
    ]
    messages = to_messages(history)
    assert [(m.role, m.content) for m in messages] == [("assistant", None), ("tool", "r")]
    assert messages[0].tool_calls is not None
    assert json.loads(messages[0].tool_calls[0]["function"]["arguments"]) == {}


def test_with_history_copies_the_agent_and_leaves_the_original_untouched() -> None:
    few_shot = Message(role="user", content="example")
    agent = Agent(telemetry=False, model=scripted_agno(), additional_input=[few_shot])
    assert with_history(agent, []) is agent
    copied = with_history(agent, HISTORY)
    assert copied is not agent
    assert additional_input(agent) == [few_shot]
    copied_input = additional_input(copied)
    assert copied_input is not None
    assert copied_input[0] is few_shot
    assert len(copied_input) == 1 + len(to_messages(HISTORY))
    assert copied.model is agent.model


def test_workflow_input_uses_agnos_workflow_history_format() -> None:
    assert workflow_input("next", []) == "next"
    history: list[HistoryItem] = [
        UserItem(text="q1"),
        AssistantItem(text="step one"),
        AssistantItem(text="step two"),
        UserItem(text="q2"),
        AssistantItem(text=MARKER, is_interrupted=True),
    ]
    assert workflow_input("next", history) == "\n".join(
        [
            "<workflow_history_context>",
            "[Workflow Run-1]",
            "User input: q1",
            "Workflow output: step one\n\nstep two",
            "",
            "[Workflow Run-2]",
            "User input: q2",
            f"Workflow output: {MARKER}",
            "",
            "</workflow_history_context>",
            "next",
        ]
    )


async def test_agent_sends_history_between_its_system_message_and_the_prompt() -> None:
    model = scripted_agno([text("ok")])
    agent = Agent(telemetry=False, model=model, instructions="Be brief.")
    await run_agno(with_history(agent, HISTORY), "go on", add_history_to_context=False)
    (request,) = model.received
    assert [m.role for m in request] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
        "user",
    ]
    assert shape(request[1:-1]) == shape(to_messages(HISTORY))
    assert request[-1].content == "go on"


async def test_team_leader_gets_history_as_messages_not_flattened_text() -> None:
    leader = scripted_agno([text("fine")], name="leader")
    member = Agent(telemetry=False, name="helper", model=scripted_agno(name="helper"))
    team = Team(telemetry=False, name="crew", model=leader, members=[member])
    await run_agno(with_history(team, HISTORY), "go on", add_history_to_context=False)
    (request,) = leader.received
    assert shape(request[1:-1]) == shape(to_messages(HISTORY))
    assert (request[-1].role, request[-1].content) == ("user", "go on")


async def test_scripted_model_records_requests_and_fails_a_request_beyond_the_script() -> None:
    model = scripted_agno([tool_call("lookup", {"q": "x"}, call_id="c1")])

    async def lookup(q: str) -> str:
        """Look q up."""
        return f"found {q}"

    agent = Agent(telemetry=False, model=model, tools=[lookup])
    events = await run_agno(agent, "hi", stream_events=True)
    assert model.unexpected == [2]
    assert len(model.received) == 2
    assert [m.role for m in model.received[1]] == ["user", "assistant", "tool"]
    assert type(events[-1]).__name__ == "RunErrorEvent"
