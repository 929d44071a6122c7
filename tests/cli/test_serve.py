"""``tether serve`` for real: it starts, migrates a new database, serves, and stops on Ctrl+C."""

import os
import socket
import sys
from pathlib import Path

import httpx
import pexpect
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_starts_on_a_fresh_data_dir_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_DATA_DIR"] = str(tmp_path / "data")
    server: pexpect.spawn[str] = pexpect.spawn(
        sys.executable,
        ["-m", "tether.cli.main", "serve", "--port", str(port)],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    try:
        server.expect_exact("Application startup complete")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10)
        server.sendintr()
        server.expect_exact("Application shutdown complete")
        server.expect(pexpect.EOF)
    finally:
        server.close(force=True)

    # Issue #18: the embedded model is freed on purpose, not by `Llama.__del__` at exit.
    assert "Traceback" not in (server.before or "")
    assert health.status_code == 200
    assert config.json()["auth_required"] is False
    assert server.exitstatus == 0
    assert (tmp_path / "data" / "tether.db").is_file()


def test_serve_on_a_taken_port_says_so_before_serving(tmp_path: Path) -> None:
    """Issue #18: it printed "serving on" first, then failed to bind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_DATA_DIR"] = str(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        server: pexpect.spawn[str] = pexpect.spawn(
            sys.executable,
            [
                "-m",
                "tether.cli.main",
                "serve",
                "--port",
                str(port),
                "--app",
                "tests.cli._apps:quick_demo",
            ],
            cwd=str(Path(__file__).parents[2]),
            env=env,
            encoding="utf-8",
            timeout=60,
            dimensions=(40, 200),
        )
        try:
            server.expect(pexpect.EOF)
        finally:
            server.close(force=True)
    output = server.before or ""
    assert f"can't listen on 127.0.0.1:{port}" in output
    assert "serving" not in output
    assert "Traceback" not in output
    assert server.exitstatus == 2
