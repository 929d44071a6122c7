from collections.abc import AsyncIterator

import pytest

from tether import Settings, Tether
from tether.storage.memory import MemoryStore


@pytest.fixture
async def app() -> AsyncIterator[Tether]:
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    async with app:
        yield app
