"""The app the schemathesis run serves: one agent, ``echo``, that answers ``ok`` at once.

Its context takes any object: the run routes' schema can't name each agent's context model, so
an agent with none would rightly refuse the objects schemathesis generates (422).
"""

from collections.abc import AsyncIterator
from typing import Final

from pydantic import BaseModel, ConfigDict
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tether import AgentContext, Tether

AGENT: Final = "echo"


async def _answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "ok"


class AnyContext(BaseModel):
    model_config = ConfigDict(extra="allow")


def echo_agent(ctx: AgentContext) -> Agent[None, str]:
    return Agent(FunctionModel(stream_function=_answer, model_name="echo"))


def make_app() -> Tether:
    app = Tether()
    app.agent(AGENT, description="Answers ok at once", context=AnyContext)(echo_agent)
    return app
