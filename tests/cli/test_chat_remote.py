"""``tether chat --url`` and ``tether runs cancel``: the terminal as a client of a running server.

Issue #18: ``tether chat`` loaded its own app and model copy; now it can talk to ``tether serve``,
and Ctrl+C stops the run there (``POST /runs/{id}/cancel``).
"""

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.cli.test_chat_terminal import exit_with_ctrl_c, stop_answer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_DATA_DIR"] = str(tmp_path / "data")
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _tether(tmp_path: Path, *args: str) -> "pexpect.spawn[str]":
    return pexpect.spawn(
        sys.executable,
        ["-m", "tether.cli.main", *args],
        cwd=str(tmp_path),
        env=_env(tmp_path),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
        logfile=sys.stdout,
    )


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = _tether(tmp_path, "serve", "--port", str(port), "--app", "tether.demo:demo_app")
    try:
        server.expect_exact("Application startup complete")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.sendintr()
        server.expect(pexpect.EOF)
        server.close(force=True)


def test_ctrl_c_in_a_remote_chat_stops_the_run_on_the_server(
    tmp_path: Path, server_url: str
) -> None:
    chat = _tether(tmp_path, "chat", "slow-tools", "--url", server_url)
    chat.expect_exact("you>")
    chat.sendline("tide tables")
    stop_answer(chat, after="I will search")
    session_id = exit_with_ctrl_c(chat)
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0

    detail = httpx.get(f"{server_url}/sessions/{session_id}", timeout=10).json()
    assert [(r["status"], r["reason"]) for r in detail["runs"]] == [("cancelled", "user")]
    run_id = detail["runs"][0]["run_id"]

    cancel = _tether(tmp_path, "runs", "cancel", run_id, "--url", server_url)
    cancel.expect(pexpect.EOF)
    cancel.close()
    assert f"run {run_id}: cancelled (user)" in (cancel.before or "")
    assert cancel.exitstatus == 0

    missing = _tether(tmp_path, "runs", "cancel", "run_missing", "--url", server_url)
    missing.expect(pexpect.EOF)
    missing.close()
    assert "run_missing" in (missing.before or "")
    assert missing.exitstatus == 2


def test_a_remote_chat_to_a_server_that_is_not_there_says_so(tmp_path: Path) -> None:
    chat = _tether(tmp_path, "chat", "slow-tools", "--url", "http://127.0.0.1:9")
    chat.expect(pexpect.EOF)
    chat.close()
    assert "can't reach tether at http://127.0.0.1:9" in (chat.before or "")
    assert chat.exitstatus == 2


def test_a_message_to_a_chat_still_answering_elsewhere_says_so_and_the_chat_goes_on(
    tmp_path: Path, server_url: str
) -> None:
    """Issue #18: a second client of a busy session saw a raw 'Conflict: session ses_… already
    has an active run run_…'; now it reads why, and its chat goes on."""
    first = _tether(tmp_path, "chat", "slow-tools", "--url", server_url)
    first.expect_exact("you>")
    first.sendline("tide tables")
    first.expect_exact("I will search")
    (listed,) = httpx.get(f"{server_url}/sessions", timeout=10).json()["sessions"]

    second = _tether(
        tmp_path, "chat", "slow-tools", "--url", server_url, "--session", listed["session_id"]
    )
    second.expect_exact("you>")
    second.sendline("are you there?")
    second.expect_exact("This chat is still answering. Stop it or wait for it to finish.")
    second.expect_exact("you>")
    exit_with_ctrl_c(second)
    second.expect(pexpect.EOF)
    second.close()

    first.sendintr()
    first.expect_exact("[stopped]")
    first.expect_exact("you>")
    exit_with_ctrl_c(first)
    first.expect(pexpect.EOF)
    first.close()
    assert second.exitstatus == 0
