"""Issue #18: /docs was a blank page offline (Swagger UI came from a CDN)."""

import re

import httpx
import pytest

from tether import Settings, Tether
from tether.http.app import create_app
from tether.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_api_docs_load_every_script_from_this_server(page: str) -> None:
    app = create_app(Tether(store=MemoryStore(), settings=Settings(database_url="memory")))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        html = (await client.get(page)).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(
            r"""url:\s*["']([^"']+)["']""", html
        )
        assert urls
        for url in urls:
            if url.startswith("data:"):
                continue
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            assert (await client.get(url)).status_code == 200, url
