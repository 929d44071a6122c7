"""The built web UI is served when it is there, and its absence is handled."""

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tether.http.app import mount_ui

pytestmark = pytest.mark.anyio


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_the_built_ui_is_served_at_the_root_with_its_assets(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>ui</title>")
    (tmp_path / "assets" / "app.js").write_text("console.log('ui')")
    app = FastAPI()
    mount_ui(app, tmp_path)
    index = await get(app, "/")
    assert index.text == "<!doctype html><title>ui</title>"
    assert index.headers["content-type"].startswith("text/html")
    asset = await get(app, "/assets/app.js")
    assert asset.text == "console.log('ui')"
    assert (await get(app, "/assets/missing.js")).status_code == 404


async def test_without_a_built_ui_the_root_points_to_the_api_docs(tmp_path: Path) -> None:
    app = FastAPI()
    mount_ui(app, tmp_path / "nothing-here")
    response = await get(app, "/")
    assert response.status_code == 200
    assert "/docs" in response.text
