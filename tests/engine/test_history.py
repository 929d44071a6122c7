"""The next turn sees the stopped turn: partial answer, interrupted label, a result per call."""

import threading

import anyio
import pytest
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolReturnPart

from tests.engine._helpers import wait_for
from tests.history_validator import InvalidHistory, validate_history
from tests.scripted import Gate, ScriptedModel, parked_tool, scripted, text, tool_call
from tether import Tether, ToolCallStarted

pytestmark = pytest.mark.anyio


def _texts(model: ScriptedModel) -> list[str]:
    last = model.received[-1]
    return [
        p.content
        for m in last
        if isinstance(m, ModelResponse)
        for p in m.parts
        if isinstance(p, TextPart)
    ]


def _returns(model: ScriptedModel) -> list[ToolReturnPart]:
    return [
        p
        for m in model.received[-1]
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    ]


async def test_next_turn_sees_the_partial_answer_labelled_interrupted(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("The answer "), text("is"), gate], [text("continuing")])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "question")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    await run.outcome()
    second = await app.start("a", "continue", session_id=run.session_id)
    assert (await second.outcome()).status == "completed"
    validate_history(model.received[-1])
    assert _texts(model) == ["The answer is\n\n[This answer was interrupted: stopped by the user.]"]
    assert model.received[-1][-1].parts[-1].content == "continue"  # type: ignore[union-attr]


async def test_mid_async_tool_stop_gives_the_call_a_synthetic_result(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("Checking."), tool_call("lookup", {"q": "x"})], [text("ok")])
    app.agent("a")(lambda ctx: model.agent(tools=[parked_tool("lookup", gate)]))
    run = await app.start("a", "question")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    await run.outcome()
    second = await app.start("a", "continue", session_id=run.session_id)
    await second.outcome()
    validate_history(model.received[-1])
    (synthetic,) = _returns(model)
    assert synthetic.tool_call_id == "call_lookup"
    assert "interrupted (stopped by the user)" in str(synthetic.content)
    assert _texts(model)[-1] == "[This answer was interrupted: stopped by the user.]"


async def test_mid_sync_tool_stop_gives_the_call_a_synthetic_result(app: Tether) -> None:
    release = threading.Event()

    def crunch() -> str:
        release.wait(10)
        return "late"

    model = scripted([tool_call("crunch")], [text("ok")])
    app.agent("a")(lambda ctx: model.agent(tools=[crunch]))
    run = await app.start("a", "question")
    await wait_for(run, ToolCallStarted)
    await run.cancel()
    await run.outcome()
    release.set()
    second = await app.start("a", "continue", session_id=run.session_id)
    await second.outcome()
    validate_history(model.received[-1])
    assert [r.tool_call_id for r in _returns(model)] == ["call_crunch"]


async def test_stop_in_second_model_turn_keeps_the_first_turns_tool_result(app: Tether) -> None:
    gate = Gate()
    model = scripted([tool_call("lookup")], [text("Found "), gate], [text("ok")])

    async def lookup() -> str:
        return "the record"

    app.agent("a")(lambda ctx: model.agent(tools=[lookup]))
    run = await app.start("a", "question")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel(reason="timeout")
    await run.outcome()
    second = await app.start("a", "continue", session_id=run.session_id)
    await second.outcome()
    validate_history(model.received[-1])
    assert [r.content for r in _returns(model)] == ["the record"]
    assert _texts(model) == ["Found \n\n[This answer was interrupted: the run timed out.]"]


async def test_rollback_leaves_the_turn_out_of_history(app: Tether) -> None:
    gate = Gate()
    model = scripted([text("first answer")], [text("oops"), gate], [text("ok")])
    app.agent("a")(lambda ctx: model.agent())
    first = await app.start("a", "one")
    await first.outcome()
    run = await app.start("a", "two", session_id=first.session_id)
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel(action="rollback")
    await run.outcome()
    third = await app.start("a", "three", session_id=first.session_id)
    await third.outcome()
    validate_history(model.received[-1])
    prompts = [
        p.content
        for m in model.received[-1]
        if isinstance(m, ModelRequest)
        for p in m.parts
        if p.part_kind == "user-prompt"
    ]
    assert prompts == ["one", "three"]
    assert _texts(model) == ["first answer"]


def test_validator_rejects_a_dangling_tool_call() -> None:
    from pydantic_ai.messages import ToolCallPart, UserPromptPart

    history = [
        ModelRequest(parts=[UserPromptPart(content="hi")]),
        ModelResponse(parts=[ToolCallPart(tool_name="t", args={}, tool_call_id="c1")]),
        ModelRequest(parts=[UserPromptPart(content="next")]),
    ]
    with pytest.raises(InvalidHistory):
        validate_history(history)
