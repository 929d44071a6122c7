"""SIGTERM to ``tether serve``: every run is stopped with reason ``shutdown``, every open stream
gets its terminal event, the process exits cleanly, and the database has no run left running.
"""

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import httpx
import pytest
from anyio.abc import Process

from tests.http._sse import Frame, SseParser
from tether.ids import RunId
from tether.storage.sql import SqlStore

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
TETHER: Final = Path(sys.executable).parent / "tether"
STARTUP_TIMEOUT_S: Final = 90.0
_LISTENING: Final = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    process: Process
    output: bytearray = field(default_factory=bytearray)
    listening: anyio.Event = field(default_factory=anyio.Event)
    base_url: str = ""

    async def drain(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.output += chunk
            if not self.listening.is_set() and (found := _LISTENING.search(self.output)):
                self.base_url = f"http://127.0.0.1:{int(found[1])}"
                self.listening.set()


@asynccontextmanager
async def serving(database_url: str, log: Path) -> AsyncGenerator[Server, None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env |= {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    command = [str(TETHER), "serve", "--app", "tests.http._shutdown_app:make_app", "--port", "0"]
    command += ["--database-url", database_url]
    process = await anyio.open_process(
        command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    server = Server(process)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.drain)
        try:
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                await server.listening.wait()
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await anyio.Path(log).write_bytes(server.output)


class Stream:
    """An open run stream: its frames so far, read on demand."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.frames: list[Frame] = []
        self._chunks = response.aiter_text()
        self._parser = SseParser()

    async def read_until(self, kind: str) -> None:
        with anyio.fail_after(15):
            while not any(f.event == kind for f in self.frames):
                chunk = await anext(self._chunks)
                self.frames.extend(self._parser.feed(chunk))

    async def read_to_end(self) -> None:
        with anyio.fail_after(15):
            async for chunk in self._chunks:
                self.frames.extend(self._parser.feed(chunk))


async def test_sigterm_stops_every_run_and_ends_every_stream(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}"
    async with (
        serving(database_url, tmp_path / "server.log") as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=15) as http,
    ):
        detached = {"message": "talk", "on_disconnect": "continue"}
        async with http.stream("POST", "/agents/slow/runs", json=detached) as response:
            detached_run = response.headers["x-run-id"]
            await Stream(response).read_until("text_delta")
        async with (
            http.stream("POST", "/agents/slow/runs", json={"message": "talk"}) as talk_response,
            http.stream("POST", "/agents/slow/runs", json={"message": "lookup"}) as tool_response,
        ):
            talk, lookup = Stream(talk_response), Stream(tool_response)
            await talk.read_until("text_delta")
            await lookup.read_until("tool_call_started")
            server.process.send_signal(signal.SIGTERM)
            await talk.read_to_end()
            await lookup.read_to_end()
        with anyio.fail_after(30):
            # uvicorn re-raises the SIGTERM it caught once it has shut down gracefully.
            assert await server.process.wait() in (0, -signal.SIGTERM)
        assert b"Application shutdown complete" in server.output
    for stream in (talk, lookup):
        last = stream.frames[-1]
        assert last.event == "run_finished", stream.frames[-3:]
        assert (last.json["status"], last.json["reason"]) == ("cancelled", "shutdown")
    closed = [f.json for f in lookup.frames if f.event == "tool_call_finished"]
    assert [(c["call_id"], c["status"]) for c in closed] == [("call_1", "cancelled")]
    store = SqlStore.open(database_url)
    try:
        run_ids = [talk.frames[0].json["run_id"], lookup.frames[0].json["run_id"], detached_run]
        for run_id in run_ids:
            record = await store.get_run(RunId(run_id))
            assert record is not None
            assert (record.status, record.reason) == ("cancelled", "shutdown"), run_id
    finally:
        await store.close()
