"""Issue #18: after its first answer a session gets a short title written by the agent's model.

The title request is told apart from the agent's own by its instructions, so the tests don't
depend on which of the two reaches the model first.
"""

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.scripted import Gate, ScriptedModel, Step, fail, scripted, text
from tether import Settings, Tether
from tether.ids import SessionId
from tether.runtimes.title_models import TITLE_INSTRUCTIONS
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


@dataclass
class TitledModel:
    """Answers runs from ``answers`` and title requests from ``titles``, each scripted."""

    answers: ScriptedModel
    titles: ScriptedModel
    prompts: list[str] = field(default_factory=list[str])

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(stream_function=self._stream, model_name="titled"))

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        last = messages[-1]
        is_title = isinstance(last, ModelRequest) and last.instructions == TITLE_INSTRUCTIONS
        if is_title:
            self.prompts.append(str(last))
        model = self.titles if is_title else self.answers
        async for chunk in model.model.stream_function(messages, info):  # pyright: ignore[reportOptionalCall]
            assert isinstance(chunk, str)
            yield chunk


def titled(answers: Sequence[Sequence[Step]], titles: Sequence[Sequence[Step]]) -> TitledModel:
    return TitledModel(scripted(*answers), scripted(*titles))


@pytest.fixture
async def app() -> AsyncIterator[Tether]:
    settings = Settings(database_url="memory", generate_titles=True)
    app = Tether(store=MemoryStore(), settings=settings)
    async with app:
        yield app


async def title_once_set(app: Tether, session_id: str, *, other_than: str) -> str:
    """Wait, on the session's signals, until its title is no longer ``other_than``."""
    sid = SessionId(session_id)
    async with app.engine.session_signals.watch(sid) as watch:
        with anyio.fail_after(5):
            while True:
                session = await app.store.get_session(sid)
                assert session is not None
                if session.title != other_than and session.title is not None:
                    return session.title
                await watch.wait(timeout_s=5)


async def test_the_first_answer_is_followed_by_a_generated_title(app: Tether) -> None:
    model = titled([[text("Paris is the capital of France.")]], [[text('"Capital of France."')]])
    app.agent("a")(lambda ctx: model.agent())
    run = await app.start("a", "what's the capital of france")
    await run.outcome()

    title = await title_once_set(app, run.session_id, other_than="what's the capital of france")

    assert title == "Capital of France"
    session = await app.store.get_session(SessionId(run.session_id))
    assert session is not None
    assert session.title_source == "generated"
    assert "what's the capital of france" in model.prompts[0]
    assert "Paris is the capital of France." in model.prompts[0]


async def test_a_later_answer_asks_for_no_title(app: Tether) -> None:
    model = titled([[text("One.")], [text("Two.")]], [[text("Counting")]])
    app.agent("a")(lambda ctx: model.agent())
    first = await app.start("a", "count")
    await first.outcome()
    await title_once_set(app, first.session_id, other_than="count")
    second = await app.start("a", "again", session_id=first.session_id)
    await second.outcome()
    # The script has no second title: a second request would fail the test at exit.
    assert len(model.titles.received) == 1


async def test_a_slow_failing_title_neither_delays_nor_fails_the_run(
    app: Tether, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    model = titled([[text("Hello!")], [text("Still here.")]], [[gate, fail("title model down")]])
    app.agent("a")(lambda ctx: model.agent())
    failed = anyio.Event()

    class Sets(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "no generated title" in record.getMessage():
                failed.set()

    handler = Sets()
    logging.getLogger("tether.engine.titles").addHandler(handler)
    try:
        run = await app.start("a", "hi")
        outcome = await run.outcome()
        with anyio.fail_after(5):
            await gate.reached.wait()  # the title request is parked, the run is over
        next_run = await app.start("a", "still there?", session_id=run.session_id)
        next_outcome = await next_run.outcome()
        gate.open()
        with anyio.fail_after(5):
            await failed.wait()
    finally:
        logging.getLogger("tether.engine.titles").removeHandler(handler)

    assert outcome.status == "completed"
    assert next_outcome.status == "completed"
    session = await app.store.get_session(SessionId(run.session_id))
    assert session is not None
    assert (session.title, session.title_source) == ("hi", "message")


async def test_titles_are_not_generated_when_turned_off() -> None:
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    asked = Gate()
    model = titled([[text("Hello!")], [text("Again.")]], [[asked, text("Greeting")]])
    app.agent("a")(lambda ctx: model.agent())
    assert app.settings.generate_titles is False  # TETHER_GENERATE_TITLES=0 (tests/conftest.py)
    async with app:
        run = await app.start("a", "hi")
        await run.outcome()
        # A whole second run later, a title request would have reached the model long ago.
        again = await app.start("a", "hi again", session_id=run.session_id)
        await again.outcome()
        assert not asked.reached.is_set()
