"""The ``storyteller-team`` demo: an Agno workflow where a writer drafts and an editor revises.

A workflow, not a team: each step's agent just writes, so the small embedded model needs no
tool calling. Each step is a child run of the workflow's run, so a stop shows which step it
landed in, and each step's partial text is kept.
"""

from typing import Final

from tether.app import Tether
from tether.engine.context import AgentContext
from tether.runtimes.local import embedded_model_missing

WRITER_INSTRUCTIONS: Final = (
    "You are a writer. Write a short story of three or four paragraphs about what the user asks."
)
EDITOR_INSTRUCTIONS: Final = (
    "You are an editor. Rewrite the story you are given so it reads better: fix mistakes, "
    "tighten the sentences, and give it a title."
)
STEP_MAX_TOKENS: Final = 640


def register_storyteller_team(app: Tether) -> None:
    """Register the ``storyteller-team`` Agno workflow on ``app``."""

    @app.agent(
        "storyteller-team",
        description="An Agno workflow on the embedded model: a writer drafts, an editor revises",
        unavailable=embedded_model_missing(),
    )
    def storyteller_team(ctx: AgentContext) -> object:
        # Agno is an optional extra: imported when a run starts, never at import time.
        from agno.agent import Agent
        from agno.workflow import Step, Workflow

        from tether.runtimes.local_agno import LocalAgnoModel

        def model() -> LocalAgnoModel:
            return LocalAgnoModel(
                max_tokens=STEP_MAX_TOKENS,
                temperature=0.7,
                on_wait=lambda: ctx.queued("embedded model"),
            )

        writer = Agent(name="writer", model=model(), instructions=WRITER_INSTRUCTIONS)
        editor = Agent(name="editor", model=model(), instructions=EDITOR_INSTRUCTIONS)
        return Workflow(
            name="storyteller-team",
            steps=[Step(name="draft", agent=writer), Step(name="edit", agent=editor)],
        )
