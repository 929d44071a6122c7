"""The app the schemathesis run serves: one agent, ``echo``, that answers ``ok`` at once."""

from collections.abc import AsyncIterator
from typing import Final

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tether import AgentContext, Tether

AGENT: Final = "echo"


async def _answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "ok"


def echo_agent(ctx: AgentContext) -> Agent[None, str]:
    return Agent(FunctionModel(stream_function=_answer, model_name="echo"))


def make_app() -> Tether:
    app = Tether()
    app.agent(AGENT, description="Answers ok at once")(echo_agent)
    return app
