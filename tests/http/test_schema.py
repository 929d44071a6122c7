"""Property-based requests from the OpenAPI description: no input makes the API fail (5xx),
and every answer matches what the description promises (status, media type, body schema)."""

# schemathesis' checks and ``Case`` are generic over types it leaves unbound in its signatures.
# pyright: reportUnknownVariableType=false, reportUnknownMemberType=false
# pyright: reportUnknownParameterType=false, reportUntypedFunctionDecorator=false

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pydantic
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCalls, FunctionModel
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tether import Settings, Tether
from tether.http import create_app
from tether.storage.memory import MemoryStore

AGENTS = ["echo", "with_ctx"]


class Ctx(pydantic.BaseModel):
    tenant: str


async def _echo(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    yield "ok"


def _app() -> FastAPI:
    tether_app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    model = FunctionModel(stream_function=_echo)
    tether_app.agent("echo")(lambda ctx: Agent(model))
    tether_app.agent("with_ctx", context=Ctx)(lambda ctx: Agent(model))
    # Deliberate: schemathesis calls from "testclient", which is not a loopback address.
    return create_app(tether_app, allow_remote=True)


def _with_known_agents(spec: dict[str, Any]) -> dict[str, Any]:
    """Steer valid cases to registered agents, so they reach the engine, not just a 404."""
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "agent":
                    parameter["schema"]["enum"] = AGENTS
    return spec


APP = _app()
schema = schemathesis.openapi.from_dict(_with_known_agents(APP.openapi()))
schema.app = APP


@pytest.fixture(scope="module", autouse=True)
def _stop_the_app() -> Iterator[None]:
    yield
    asgi.shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
def test_no_input_makes_the_api_fail(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
