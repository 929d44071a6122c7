"""History that fits: whole oldest turns dropped, a running summary, failed empty turns left out.

Regression tests for issue #18 (long chats died for good once the context was full).
"""

from collections.abc import Sequence

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_ai.messages import ModelRequest, ToolCallPart, UserPromptPart

from tests.history_validator import validate_history
from tests.scripted import Gate, ScriptedModel, fail, scripted, text, tool_call
from tether import Settings, Tether
from tether.engine.fit import fit_turns, history_budget, turn_tokens, with_summary
from tether.engine.history import HistoryRules, build_turns, flatten
from tether.events import RunStatus, ToolStatus
from tether.ids import MessageId, RunId, SessionId, UserId
from tether.records import (
    CancelRequest,
    HistoryItem,
    HistoryTurn,
    MessageRecord,
    RunRecord,
    ToolCallRecord,
)
from tether.runtimes.pydantic_ai import to_messages
from tether.storage.memory import MemoryStore

SESSION = SessionId("ses_1")


@st.composite
def stored_turns(draw: st.DrawFn) -> list[HistoryTurn]:
    turns: list[HistoryTurn] = []
    for n in range(draw(st.integers(0, 8))):
        run_id = RunId(f"run_{n}")
        status: RunStatus = draw(st.sampled_from(["completed", "cancelled", "failed"]))
        cancel = None
        if status == "cancelled":
            cancel = CancelRequest(
                reason="user", action=draw(st.sampled_from(["keep", "rollback"]))
            )
        messages = [_message(run_id, 0, "user", draw(st.text(max_size=40)))]
        n_responses = draw(st.integers(0, 3))
        for r in range(n_responses):
            # As a model does: a response followed by another one made tool calls.
            fewest_calls = 1 if r < n_responses - 1 else 0
            calls = tuple(
                ToolCallRecord(
                    call_id=f"c{n}_{r}_{c}",
                    run_id=run_id,
                    message_id=MessageId(f"msg_{n}_{r + 1}"),
                    tool="lookup",
                    args={"q": "x"},
                    status=draw(st.sampled_from(_TOOL_STATUSES)),
                    result="found",
                )
                for c in range(draw(st.integers(fewest_calls, 2)))
            )
            content = draw(st.text(max_size=60))
            messages.append(_message(run_id, r + 1, "assistant", content, calls))
        if status == "completed" and (len(messages) == 1 or messages[-1].tool_calls):
            # A completed turn ends with an answer that calls nothing.
            messages.append(_message(run_id, 9, "assistant", draw(st.text(max_size=60))))
        record = RunRecord(
            run_id=run_id,
            session_id=SESSION,
            agent="a",
            user_id=UserId("u"),
            status=status,
            reason="user" if status == "cancelled" else ("error" if status == "failed" else None),
            cancel=cancel,
        )
        turns.append(HistoryTurn(run=record, messages=tuple(messages)))
    return turns


_TOOL_STATUSES: Sequence[ToolStatus] = ("ok", "error", "cancelled", "running", "denied")


def _message(
    run_id: RunId,
    index: int,
    role: str,
    content: str,
    calls: tuple[ToolCallRecord, ...] = (),
) -> MessageRecord:
    assert role in ("user", "assistant")
    return MessageRecord(
        message_id=MessageId(f"msg_{run_id}_{index}"),
        session_id=SESSION,
        run_id=run_id,
        role="user" if role == "user" else "assistant",
        content=content,
        tool_calls=calls,
    )


@settings(max_examples=300, deadline=None)
@given(
    turns=stored_turns(),
    budget=st.integers(-50, 400),
    summary=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
def test_any_trimmed_history_is_valid_and_the_newest_that_fits(
    turns: list[HistoryTurn], budget: int, summary: str | None
) -> None:
    whole = build_turns(turns, HistoryRules())
    fitted = fit_turns(whole, budget_tokens=budget)
    assert fitted.dropped + fitted.kept == whole
    assert sum(turn_tokens(t) for t in fitted.kept) <= max(budget, 0)
    if fitted.dropped:  # the next older turn would not have fitted
        assert sum(turn_tokens(t) for t in [fitted.dropped[-1], *fitted.kept]) > budget
    items = with_summary(flatten(fitted.kept), summary)
    # The history the model gets ends before the new user message: add it as a runtime would.
    messages = [*to_messages(items), ModelRequest(parts=[UserPromptPart(content="next")])]
    validate_history(messages)


def test_a_failed_turn_that_produced_nothing_is_left_out() -> None:
    failed = HistoryTurn(
        run=RunRecord(
            run_id=RunId("run_f"),
            session_id=SESSION,
            agent="a",
            user_id=UserId("u"),
            status="failed",
            reason="error",
        ),
        messages=(_message(RunId("run_f"), 0, "user", "too long"),),
    )
    assert build_turns([failed], HistoryRules()) == []


def test_the_budget_keeps_room_for_the_reply_and_the_prompt() -> None:
    assert history_budget(2048, prompt="", summary=None) < 2048 * 3 // 4
    assert history_budget(2048, prompt="x" * 3000, summary=None) < history_budget(
        2048, prompt="", summary=None
    )


def _received_users(model: ScriptedModel) -> list[str]:
    return [
        p.content
        for m in model.received[-1]
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    ]


pytestmark = pytest.mark.anyio


async def test_a_long_session_drops_its_oldest_turns_to_fit() -> None:
    # Each turn: ~100 tokens of question, ~100 of answer; a 1000-token window keeps ~2 turns.
    n = 8
    model = scripted(*[[text("a" * 300)] for _ in range(n)])
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    app.agent("a", context_tokens=1000)(lambda ctx: model.agent())
    async with app:
        session_id = None
        for i in range(n):
            run = await app.start("a", f"{i} " + "q" * 300, session_id=session_id)
            session_id = run.session_id
            with anyio.fail_after(5):
                assert (await run.outcome()).status == "completed"
            validate_history(model.received[-1])
    users = _received_users(model)
    assert users[-1].startswith(f"{n - 1} ")
    assert 1 < len(users) < n  # some kept, the oldest dropped
    assert [u.split()[0] for u in users] == [str(i) for i in range(n - len(users), n)]


async def test_a_summariser_keeps_a_running_summary_of_dropped_turns() -> None:
    n = 6
    model = scripted(*[[text("a" * 300)] for _ in range(n)])
    seen: list[tuple[str | None, int]] = []

    async def summarise(summary: str | None, dropped: Sequence[HistoryItem]) -> str:
        seen.append((summary, len(dropped)))
        return f"summary {len(seen)}"

    store = MemoryStore()
    app = Tether(store=store, settings=Settings(database_url="memory"))
    app.agent("a", context_tokens=1000, summariser=summarise)(lambda ctx: model.agent())
    async with app:
        session_id = None
        for i in range(n):
            run = await app.start("a", f"{i} " + "q" * 300, session_id=session_id)
            session_id = run.session_id
            with anyio.fail_after(5):
                assert (await run.outcome()).status == "completed"
            validate_history(model.received[-1])
        assert session_id is not None
        session = await store.get_session(session_id)
    assert seen, "turns were dropped, so the summariser ran"
    assert seen[0][0] is None
    assert all(prev == f"summary {i}" for i, (prev, _) in enumerate(seen[1:], start=1))
    # Each turn is summarised once: the running summary moves on, never starts over.
    assert all(count == 2 for _, count in seen)  # one user message + one answer per turn
    assert session is not None
    assert session.summary == f"summary {len(seen)}"
    assert _received_users(model)[0].startswith(
        f"[Summary of the earlier conversation: summary {len(seen)}]"
    )


async def test_a_failing_summariser_never_fails_the_turn() -> None:
    model = scripted(*[[text("a" * 300)] for _ in range(4)])

    async def summarise(summary: str | None, dropped: Sequence[HistoryItem]) -> str:
        raise RuntimeError("summariser down")

    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    app.agent("a", context_tokens=1000, summariser=summarise)(lambda ctx: model.agent())
    async with app:
        session_id = None
        for i in range(4):
            run = await app.start("a", f"{i} " + "q" * 300, session_id=session_id)
            session_id = run.session_id
            with anyio.fail_after(5):
                assert (await run.outcome()).status == "completed"


async def test_a_turn_that_failed_empty_is_not_fed_back(app: Tether) -> None:
    model = scripted([fail("context full")], [text("fine")])
    app.agent("a")(lambda ctx: model.agent())
    first = await app.start("a", "lost question")
    assert (await first.outcome()).status == "failed"
    second = await app.start("a", "next", session_id=first.session_id)
    assert (await second.outcome()).status == "completed"
    assert _received_users(model) == ["next"]
    validate_history(model.received[-1])


async def test_a_failed_turn_with_a_tool_call_is_kept_valid(app: Tether) -> None:
    async def lookup() -> str:
        return "found"

    model = scripted([tool_call("lookup")], [fail("model broke")], [text("fine")])
    app.agent("a")(lambda ctx: model.agent(tools=[lookup]))
    first = await app.start("a", "find it")
    assert (await first.outcome()).status == "failed"
    second = await app.start("a", "again", session_id=first.session_id)
    assert (await second.outcome()).status == "completed"
    validate_history(model.received[-1])
    assert any(
        isinstance(p, ToolCallPart) for m in model.received[-1] for p in getattr(m, "parts", [])
    )


async def test_a_run_stopped_mid_answer_keeps_the_usage_it_streamed(app: Tether) -> None:
    """Issue #18: a stopped run recorded 0 / 0 tokens although it streamed 97."""
    gate = Gate()
    model = scripted([text("A long answer "), text("that goes on and on"), gate])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "question")
    with anyio.fail_after(5):
        await gate.reached.wait()
    await run.cancel()
    outcome = await run.outcome()
    assert outcome.status == "cancelled"
    assert outcome.usage.output_tokens > 0
    assert outcome.usage.input_tokens > 0
