"""A worker killed with SIGKILL mid-run: the next worker on the database recovers its run.

Each test serves ``tests.e2e.crash_app`` with ``tether serve`` on a SQLite file, starts a run over
HTTP, kills the server with ``kill -9`` while the run is live, then starts a second server on the
same file and checks what the crash left: the run ``interrupted``/``worker_lost``, the streamed
text kept up to the last flush, open tool calls closed, a replay that ends, and a next turn that
sees the partial answer labelled as interrupted.
"""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest
from anyio.abc import Process

from tests.e2e.crash_app import AGENT, LOOKUP_TEXT, echo_entries
from tests.http._sse import Frame, SseParser, parse
from tether.engine.history import HistoryRules, why
from tether.storage.store import RECOVERY_SEQ_GAP

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
TETHER: Final = Path(sys.executable).parent / "tether"
# Generous: on a loaded CI machine importing the app alone can take several seconds.
STARTUP_TIMEOUT_S: Final = 90.0
LEASE_S: Final = 1.0
FLUSH_INTERVAL_S: Final = 0.1
# How late a flush may commit on a busy machine, beyond the interval, before the test calls it lost.
FLUSH_ALLOWANCE_S: Final = 0.4
RECOVERY_TIMEOUT_S: Final = 30.0
WORDS_BEFORE_KILL: Final = 50
_LISTENING: Final = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
MARKER: Final = HistoryRules().interrupted_marker.format(why=why("worker_lost"))
MISSING_RESULT: Final = HistoryRules().missing_result.format(why=why("worker_lost"))


@dataclass
class Server:
    """A ``tether serve`` process, its output, and its address once it listens."""

    process: Process
    output: bytearray = field(default_factory=bytearray)
    listening: anyio.Event = field(default_factory=anyio.Event)
    base_url: str = ""

    async def drain(self) -> None:
        """Collect the output; ``listening`` is set once it listens, or when it exits."""
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.output += chunk
            if not self.listening.is_set() and (found := _LISTENING.search(self.output)):
                self.base_url = f"http://127.0.0.1:{int(found[1])}"
                self.listening.set()
        self.listening.set()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10)


@asynccontextmanager
async def serving(data_dir: Path) -> AsyncGenerator[Server, None]:
    """Serve the crash app on the SQLite file in ``data_dir`` until the block ends (or a kill)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {
        "TETHER_DATA_DIR": str(data_dir),
        "TETHER_LEASE_S": str(LEASE_S),
        "TETHER_FLUSH_INTERVAL_S": str(FLUSH_INTERVAL_S),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    command = [str(TETHER), "serve", "--app", "tests.e2e.crash_app:make_app", "--port", "0"]
    command += ["--database-url", f"sqlite+aiosqlite:///{data_dir / 'tether.db'}"]
    process = await anyio.open_process(
        command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    server = Server(process)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.drain)
        try:
            with anyio.move_on_after(STARTUP_TIMEOUT_S):
                await server.listening.wait()
            if not server.base_url:
                pytest.fail(f"the server did not start:\n{server.output.decode(errors='replace')}")
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
                (data_dir / f"server-{process.pid}.log").write_bytes(server.output)


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@dataclass
class Seen:
    """What the client of the first server received, with when it received each delta."""

    run_id: str
    session_id: str
    frames: list[Frame] = field(default_factory=list[Frame])
    delta_times: list[tuple[float, str]] = field(default_factory=list[tuple[float, str]])

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.delta_times)

    def text_received_before(self, moment: float) -> str:
        return "".join(text for at, text in self.delta_times if at < moment)


async def stream_then_kill(server: Server, message: str, *, kill_after: str) -> tuple[Seen, float]:
    """Start a run; once a frame of kind ``kill_after`` arrived, kill -9 the server.

    Reads on until the connection drops, so ``Seen`` holds everything the server sent before it
    died. Returns it and the moment of the kill.
    """
    async with (
        server.client() as client,
        client.stream("POST", f"/agents/{AGENT}/runs", json={"message": message}) as response,
    ):
        assert response.status_code == 200
        seen = Seen(response.headers["X-Run-Id"], response.headers["X-Session-Id"])
        killed_at: list[float] = []
        with anyio.fail_after(30), pytest.raises(httpx.TransportError):
            await _read_and_kill(server, response, seen, kill_after=kill_after, killed_at=killed_at)
    assert killed_at, "the stream ended before the server was killed"
    assert seen.frames[-1].event != "run_finished"
    return seen, killed_at[0]


async def _read_and_kill(
    server: Server,
    response: httpx.Response,
    seen: Seen,
    *,
    kill_after: str,
    killed_at: list[float],
) -> None:
    parser = SseParser()
    async for chunk in response.aiter_text():
        now = time.monotonic()
        for frame in parser.feed(chunk):
            seen.frames.append(frame)
            if frame.event == "text_delta":
                seen.delta_times.append((now, frame.json["text"]))
        if not killed_at and await _is_time_to_kill(server, seen, kill_after):
            killed_at.append(time.monotonic())
            server.kill()


async def _is_time_to_kill(server: Server, seen: Seen, kill_after: str) -> bool:
    match kill_after:
        case "text_delta":
            return len(seen.delta_times) >= WORDS_BEFORE_KILL
        case "tool_call_started":
            if not any(f.event == kill_after for f in seen.frames):
                return False
            # The call's row is written by the flush the tool boundary forces; wait for it,
            # so what the crash must close is in the database.
            with anyio.fail_after(5):
                while True:
                    if (await _session(server, seen.session_id))["messages"][-1]["tool_calls"]:
                        return True
                    await anyio.sleep(0.01)  # Deliberate: polling the store, the thing under test
        case _:
            raise AssertionError(kill_after)


async def _session(server: Server, session_id: str) -> dict[str, Any]:
    async with server.client() as client:
        response = await client.get(f"/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_recovered(server: Server, run_id: str) -> dict[str, Any]:
    """Poll the run until the new worker has marked it over; return it."""
    async with server.client() as client:
        with anyio.fail_after(RECOVERY_TIMEOUT_S):
            while True:
                response = await client.get(f"/runs/{run_id}")
                assert response.status_code == 200, response.text
                run: dict[str, Any] = response.json()
                if run["status"] != "running":
                    return run
                # Deliberate: recovery happens in another process; its state is all there is.
                # Deliberate: polling the store, the thing under test
                await anyio.sleep(0.1)


async def replay(server: Server, run_id: str) -> list[Frame]:
    async with server.client() as client:
        with anyio.fail_after(10):
            response = await client.get(f"/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    return parse(response.text)


async def next_turn_history(server: Server, session_id: str) -> list[dict[str, Any]]:
    """Send ``echo`` in the session; return the history the model received for it."""
    async with server.client() as client:
        with anyio.fail_after(10):
            response = await client.post(
                f"/agents/{AGENT}/runs", json={"message": "echo", "session_id": session_id}
            )
    assert response.status_code == 200, response.text
    frames = parse(response.text)
    assert frames[-1].json["status"] == "completed"
    return echo_entries("".join(f.json["text"] for f in frames if f.event == "text_delta"))


def assert_replay_ends_interrupted(frames: list[Frame], seen: Seen) -> None:
    # What was stored is contiguous; recovery's ending (a tool_call_finished per open call, then
    # the terminal event) comes after every seq any viewer may have seen (RECOVERY_SEQ_GAP past
    # them), so a reconnect never mistakes it for one seen.
    stored = [f for f in frames if f.seq < RECOVERY_SEQ_GAP]
    *closing, last = frames[len(stored) :]
    assert [f.seq for f in stored] == list(range(len(stored)))
    assert [f.event for f in closing] == ["tool_call_finished"] * len(closing)
    assert [*closing, last][0].seq > max([f.seq for f in seen.frames], default=-1)
    assert (last.event, last.json["status"], last.json["reason"]) == (
        "run_finished",
        "interrupted",
        "worker_lost",
    )
    # What was stored is exactly what the client got, up to where the store stops.
    assert [(f.seq, f.event, f.json) for f in stored] == [
        (f.seq, f.event, f.json) for f in seen.frames[: len(stored)]
    ]


async def test_kill_9_mid_text_keeps_the_flushed_text_and_labels_it_interrupted(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as first:
        seen, killed_at = await stream_then_kill(first, "talk", kill_after="text_delta")
        with anyio.fail_after(10):
            assert await first.process.wait() == -signal.SIGKILL

    async with serving(tmp_path) as second:
        run = await wait_recovered(second, seen.run_id)
        assert (run["status"], run["reason"]) == ("interrupted", "worker_lost")

        user, assistant = (await _session(second, seen.session_id))["messages"]
        assert (user["content"], user["status"]) == ("talk", "complete")
        stored = assistant["content"]
        assert assistant["status"] == "interrupted"
        assert stored, "nothing the run streamed was stored"
        assert seen.text.startswith(stored)
        # At most the last flush interval (plus a write's worth of slack) is lost.
        safe = seen.text_received_before(killed_at - FLUSH_INTERVAL_S - FLUSH_ALLOWANCE_S)
        assert safe, "the kill came too early to tell what a flush must have kept"
        assert stored.startswith(safe), (len(safe), len(stored))

        frames = await replay(second, seen.run_id)
        assert_replay_ends_interrupted(frames, seen)
        assert "".join(f.json["text"] for f in frames if f.event == "text_delta") == stored

        assert await next_turn_history(second, seen.session_id) == [
            {"part": "user", "text": "talk"},
            {"part": "text", "text": f"{stored}\n\n{MARKER}", "state": "interrupted"},
        ]


async def test_kill_9_during_a_tool_call_closes_the_call_for_the_next_turn(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as first:
        seen, _ = await stream_then_kill(first, "lookup", kill_after="tool_call_started")
        with anyio.fail_after(10):
            assert await first.process.wait() == -signal.SIGKILL
    assert seen.text == LOOKUP_TEXT

    async with serving(tmp_path) as second:
        run = await wait_recovered(second, seen.run_id)
        assert (run["status"], run["reason"]) == ("interrupted", "worker_lost")

        _, assistant = (await _session(second, seen.session_id))["messages"]
        assert (assistant["content"], assistant["status"]) == (LOOKUP_TEXT, "interrupted")
        [call] = assistant["tool_calls"]
        assert (call["tool"], call["status"], call["error"]) == (
            "slow_lookup",
            "cancelled",
            "worker lost",
        )

        frames = await replay(second, seen.run_id)
        assert_replay_ends_interrupted(frames, seen)
        assert "tool_call_started" in [f.event for f in frames]

        assert await next_turn_history(second, seen.session_id) == [
            {"part": "user", "text": "lookup"},
            {"part": "text", "text": LOOKUP_TEXT, "state": "complete"},
            {"part": "tool_call", "tool": "slow_lookup"},
            {"part": "tool_return", "tool": "slow_lookup", "content": MISSING_RESULT},
            {"part": "text", "text": MARKER, "state": "interrupted"},
        ]
