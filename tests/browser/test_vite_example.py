"""The README's `useChat` example (examples/js, a Vite page) in a real browser against tether (#17).

The page is built (``vite build``) into a temporary directory and served by ``vite preview``,
whose proxy sends ``/agents`` to the test server, as ``npm run chat`` does against ``make run``.
Its Stop drops the response; tether must cancel the run (``disconnect``) and keep the partial
text the page shows. Needs ``npm ci`` in examples/js (``make test`` does it).
"""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import REPO_ROOT, Server, free_port
from tests.browser.server_app import chat_text, word

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

EXAMPLE: Final = REPO_ROOT / "examples" / "js"
VITE: Final = EXAMPLE / "node_modules" / "vite" / "bin" / "vite.js"
BUILD_TIMEOUT_S: Final = 180.0
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
ARTIFACTS: Final = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def example_url(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built example page, served by ``vite preview`` with its proxy to ``server``."""
    assert VITE.is_file(), "run `npm ci` in examples/js (make test does)"
    out_dir = tmp_path_factory.mktemp("vite-example")
    build = ["node", str(VITE), "build", "--outDir", str(out_dir), "--emptyOutDir"]
    subprocess.run(build, cwd=EXAMPLE, check=True, capture_output=True, timeout=BUILD_TIMEOUT_S)
    port = free_port()
    preview = ["node", str(VITE), "preview", "--outDir", str(out_dir)]
    preview += ["--host", "127.0.0.1", "--port", str(port), "--strictPort"]
    env = {**os.environ, "TETHER_URL": server.base_url}
    log = out_dir.parent / "vite-preview.log"
    with log.open("wb") as out:
        process = subprocess.Popen(preview, cwd=EXAMPLE, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_serving(url: str, process: "subprocess.Popen[bytes]", log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vite preview exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        # Deliberate: polling a server process until it answers; there is no event to wait on.
        time.sleep(0.05)
    pytest.fail(f"vite preview did not answer within {START_TIMEOUT_S}s:\n{log.read_text()}")


def run_end(server: Server, run_id: str) -> dict[str, Any]:
    """The run's ``run_finished`` event, read from its event stream (which waits for it)."""
    with httpx.stream("GET", f"{server.base_url}/runs/{run_id}/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"run_finished"' in line:
                event: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return event
    raise AssertionError(f"run {run_id} streamed no run_finished")


def test_stop_in_the_use_chat_page_cancels_the_run_and_keeps_the_partial_text(
    page: Page, server: Server, example_url: str
) -> None:
    page.goto(f"{example_url}/?agent=chat")
    page.get_by_role("textbox").fill("Say many words")
    with page.expect_response("**/agents/chat/chat") as sent:
        page.get_by_role("button", name="Send").click()
    run_id = sent.value.headers["x-tether-run-id"]
    answer = page.locator("p", has_text="assistant:")
    expect(answer).to_contain_text(word(5))
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    shown = answer.inner_text().removeprefix("assistant:").strip()

    end = run_end(server, run_id)
    assert (end["status"], end["reason"]) == ("cancelled", "disconnect")
    session_id = server.get(f"/runs/{run_id}").json()["session_id"]
    [stored] = [
        m
        for m in server.get(f"/sessions/{session_id}").json()["messages"]
        if m["role"] == "assistant"
    ]
    assert stored["status"] == "interrupted"
    # The page shows what reached it before Stop; the run may have said a word more meanwhile.
    assert stored["content"].startswith(shown)
    assert chat_text().startswith(stored["content"])
    assert len(stored["content"]) < len(chat_text())
    expect(answer).to_have_text(f"assistant: {shown}")  # nothing arrives after Stop
    # The Stop click sends nothing more (it once became a submit of the empty input).
    expect(page.locator("p")).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("main").screenshot(path=str(ARTIFACTS / "use-chat-example-stopped.png"))


def test_approve_in_the_use_chat_page_resumes_the_paused_run(
    page: Page, server: Server, example_url: str
) -> None:
    page.goto(f"{example_url}/?agent=records-clerk")
    page.get_by_role("textbox").fill("Delete record R-7")
    with page.expect_response("**/agents/records-clerk/chat") as sent:
        page.get_by_role("button", name="Send").click()
    run_id = sent.value.headers["x-tether-run-id"]
    tool = page.locator("[data-tool-state]")
    expect(tool).to_have_attribute("data-tool-state", "approval-requested")
    assert server.get(f"/runs/{run_id}").json()["status"] == "paused"

    with page.expect_response("**/agents/records-clerk/chat") as resumed:
        page.get_by_role("button", name="Approve").click()
    assert resumed.value.headers["x-tether-run-id"] == run_id  # the same run, resumed
    answer = page.locator("p", has_text="assistant:")
    expect(answer).to_contain_text("The tool answered: record R-7 deleted")
    expect(tool).to_have_attribute("data-tool-state", "output-available")
    expect(page.locator("p")).to_have_count(2)  # one exchange: the answer continued its message
    end = run_end(server, run_id)
    assert end["status"] == "completed"
