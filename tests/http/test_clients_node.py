"""Real JavaScript clients against tether (#17): ``node --test`` in tests/clients.

The Node project is installed by ``npm ci`` (``make test`` does it); without Node or the
installed packages this test fails rather than skipping, so CI can't pass without it.
"""

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCalls, FunctionModel

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


async def test_the_ai_sdk_and_ag_ui_clients_against_tether() -> None:
    tether_app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    tether_app.agent("hello")(lambda ctx: Agent(FunctionModel(stream_function=_hello)))
    tether_app.agent("park")(lambda ctx: Agent(FunctionModel(stream_function=_park)))
    async with serving(create_app(tether_app)) as url:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                ["node", "--test", "ai_sdk.test.mjs", "agui.test.mjs"],
                cwd=CLIENTS,
                env={**os.environ, "TETHER_URL": url},
                check=False,
            )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
