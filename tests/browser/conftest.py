"""Fixtures of the browser tests: a real uvicorn server in a subprocess, and Chromium.

The server serves ``tests.browser.server_app`` on a random loopback port with a SQLite file
database. Chromium is Debian's (``/usr/bin/chromium``); without it (or without Playwright) the
tests skip locally and fail when ``REQUIRE_SERVICES=1``.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
UI_TIMEOUT_MS: Final = 15_000
API_KEY: Final = "good"
API_USER: Final = "alice"


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    base_url: str
    api_key: str | None = None

    def get(self, path: str) -> httpx.Response:
        """GET ``path`` from the server (with the API key, if it has one)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.get(f"{self.base_url}{path}", headers=headers, timeout=5)


def free_port() -> int:
    # A small race (the port is released before uvicorn binds it) is accepted: the kernel does
    # not hand out a just-released ephemeral port again right away.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(base_url: str, process: "subprocess.Popen[bytes]", log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        # Deliberate: polling a subprocess's port has no event to wait on.
        # Deliberate: polling a server process until it answers
        time.sleep(0.05)
    pytest.fail(f"the server was not healthy within {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")


@contextmanager
def serving(
    data_dir: Path, *, api_keys: str = "", factory: str = "tests.browser.server_app:make_app"
) -> Generator[str]:
    """Run a test server (the app ``factory`` makes) until the block ends; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {
        "TETHER_DATA_DIR": str(data_dir),
        "TETHER_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 't.db'}",
        "TETHER_API_KEYS": api_keys,
        "PYTHONPATH": str(REPO_ROOT),
    }
    log = data_dir / "server.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A local-mode server (no API keys), shared by the tests of the session."""
    with serving(tmp_path_factory.mktemp("server")) as base_url:
        yield Server(base_url=base_url)


@pytest.fixture(scope="session")
def basics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A local-mode server with the agents of issue #18's basics (``tests.browser.basics_app``)."""
    factory = "tests.browser.basics_app:make_app"
    with serving(tmp_path_factory.mktemp("basics-server"), factory=factory) as base_url:
        yield Server(base_url=base_url)


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that needs an API key: ``good`` is alice's."""
    data_dir = tmp_path_factory.mktemp("keyed-server")
    with serving(data_dir, api_keys=f"{API_KEY}:{API_USER}") as base_url:
        yield Server(base_url=base_url, api_key=API_KEY)


def _missing(reason: str) -> None:
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator["Browser"]:
    """Headless Debian Chromium, driven by Playwright's sync API."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed")
        raise  # unreachable: _missing skips or fails
    if not CHROMIUM.is_file():
        _missing(f"no Chromium at {CHROMIUM}")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: "Browser") -> Iterator["Page"]:
    """A fresh page in its own context: no API key, session or run kept from another test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
