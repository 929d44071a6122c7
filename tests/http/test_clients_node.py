"""Real JavaScript clients against tether (#17): ``node --test`` in tests/clients.

The Node project is installed by ``npm ci`` (``make test`` does it); without Node or the
installed packages this test fails rather than skipping, so CI can't pass without it.
"""

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tests.approvals import Outbox
from tests.http._server import serving
from tether import Settings, Tether
from tether.http import create_app
from tether.storage.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
CLIENTS = Path(__file__).parent.parent / "clients"


async def _hello(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "Hello "
    yield "world"


async def _park(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    yield "Hello "
    await anyio.sleep_forever()


async def _clerk(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    if returned := [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]:
        yield f"The tool said: {returned[-1].model_response_str()}"
        return
    args = json.dumps({"to": "ann@example.com", "body": "hi"})
    # Call ids are unique across runs, as a provider's are: storage keys tool calls by them.
    call_id = f"call-{uuid4().hex[:12]}"
    yield {0: DeltaToolCall(name="send_email", json_args=args, tool_call_id=call_id)}


def _clerk_agent(outbox: Outbox) -> Agent[None, str]:
    model = FunctionModel(stream_function=_clerk)
    return Agent(model, deps_type=type(None), tools=[outbox.tool()])


async def test_the_ai_sdk_and_ag_ui_clients_against_tether() -> None:
    tether_app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    outbox = Outbox()
    tether_app.agent("hello")(lambda ctx: Agent(FunctionModel(stream_function=_hello)))
    tether_app.agent("park")(lambda ctx: Agent(FunctionModel(stream_function=_park)))
    tether_app.agent("clerk")(lambda ctx: _clerk_agent(outbox))
    tests = ["ai_sdk.test.mjs", "ai_sdk_approval.test.mjs", "agui.test.mjs"]
    async with serving(create_app(tether_app)) as url:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                ["node", "--test", *tests],
                cwd=CLIENTS,
                env={**os.environ, "TETHER_URL": url},
                check=False,
            )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    # One approval test and one denial (in the AI SDK and AG-UI each): only approvals send.
    assert outbox.sent == [{"to": "ann@example.com", "body": "hi"}] * 2
