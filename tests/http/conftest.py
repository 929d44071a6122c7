from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tether import Settings, Tether
from tether.http import create_app
from tether.storage.memory import MemoryStore

KEYS = "key-alice:alice,key-bob:bob"
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


@pytest.fixture
def tether_app() -> Tether:
    return Tether(store=MemoryStore(), settings=Settings(database_url="memory"))


@pytest.fixture
async def app(tether_app: Tether) -> AsyncIterator[FastAPI]:
    app = create_app(tether_app)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def keyed_client(tether_app: Tether) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with API keys for alice and bob (no key sent by default)."""
    app = create_app(tether_app, settings=Settings(database_url="memory", api_keys=KEYS))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
