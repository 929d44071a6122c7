"""Bench servers in their own process, and a minimal raw HTTP/SSE client to measure them.

    .venv/bin/python bench/_server.py tether [--database-url URL] [--profile FILE]
    .venv/bin/python bench/_server.py bare
    .venv/bin/python bench/_server.py agno [--database-url sqlite-file]

``tether``: tether's HTTP app (``create_app``) with the bench agents below. ``bare``: a plain
Starlette app whose one endpoint, ``POST /bare/{agent}``, runs the same Pydantic AI agent and
streams its text as SSE frames of the same shape (sse-starlette, id/event/data JSON), with no
tether in between. ``agno``: Agno's AgentOS over its SQLite db, with Agno agents ``paced``,
``burst`` and ``fast`` on a scripted Agno model of the same timing (``POST /agents/{agent}/runs``,
a form).
Each prints ``port N`` once it listens on loopback.

Agents: ``fast`` streams ``FAST_TOKENS`` tokens as fast as it can; ``paced`` streams
``PACED_TOKENS`` tokens, one every ``PACED_INTERVAL_S`` on its own clock, as a provider does,
and ``burst`` as many with no delay;
``talk`` one token every 20 ms for minutes; ``tool`` says a sentence, then calls a 2 s async tool.

The client speaks HTTP/1.1 over raw sockets, so its own cost barely shows in the figures.
"""

import argparse
import contextlib
import functools
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import uvicorn
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

FAST_TOKENS: Final = 2000
PACED_TOKENS: Final = 200
PACED_INTERVAL_S: Final = 0.050
TALK_INTERVAL_S: Final = 0.020
TOOL_S: Final = 2.0


async def _fast(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for i in range(FAST_TOKENS):
        yield f"t{i} "


async def paced_tokens(count: int, interval_s: float) -> AsyncIterator[str]:
    """``count`` tokens, one every ``interval_s`` on the model's own clock (0: no waiting).

    On its own clock, as a provider streams: a token every interval, however long the consumer
    took with the last one, so a slow server shows as late tokens, not as a slower model.
    """
    due = anyio.current_time()
    for i in range(count):
        if interval_s:
            due += interval_s
            await anyio.sleep(max(0.0, due - anyio.current_time()))
        yield f"w{i} "


async def _paced(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    async for token in paced_tokens(PACED_TOKENS, PACED_INTERVAL_S):
        yield token


async def _burst(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    async for token in paced_tokens(PACED_TOKENS, 0.0):
        yield token


async def _talk(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for i in range(100_000):
        await anyio.sleep(TALK_INTERVAL_S)
        yield f"w{i} "


async def _tool(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    yield "Let me look."
    yield {0: DeltaToolCall(name="slow_lookup", json_args="{}", tool_call_id="call_1")}


async def slow_lookup() -> str:
    """A slow async tool."""
    await anyio.sleep(TOOL_S)
    return "found"


def bench_agent(name: str) -> Agent[None, str]:
    match name:
        case "fast":
            return Agent(FunctionModel(stream_function=_fast))
        case "paced":
            return Agent(FunctionModel(stream_function=_paced))
        case "burst":
            return Agent(FunctionModel(stream_function=_burst))
        case "talk":
            return Agent(FunctionModel(stream_function=_talk))
        case "tool":
            return Agent(FunctionModel(stream_function=_tool), tools=[slow_lookup])
        case _:
            raise ValueError(name)


def run_server(server: uvicorn.Server, sockets: list[socket.socket]) -> Awaitable[None]:
    from tether.cli.serve import run_server

    return run_server(server, sockets)


def tether_app(database_url: str) -> Any:
    from tether import Settings, Tether
    from tether.http import create_app

    # Deliberate: no generated titles, so figures stay comparable with the anchors (a title is
    # one more model request after a new session's first answer).
    settings = Settings(
        database_url=database_url, data_dir=Path(tempfile.mkdtemp()), generate_titles=False
    )
    app = Tether(settings=settings)
    for name in ("fast", "paced", "burst", "talk", "tool"):
        app.agent(name)(lambda ctx, name=name: bench_agent(name))
    return create_app(app)


def bare_app() -> Starlette:
    async def run(request: Request) -> EventSourceResponse:
        body = await request.json()
        agent = bench_agent(request.path_params["agent"])

        async def frames() -> AsyncIterator[bytes]:
            seq = 0
            async with agent.run_stream_events(body["message"]) as events:
                async for event in events:
                    match event:
                        case (
                            PartStartEvent(part=TextPart(content=text))
                            | PartDeltaEvent(delta=TextPartDelta(content_delta=text))
                        ):
                            seq += 1
                            data = json.dumps({"seq": seq, "text": text, "kind": "text_delta"})
                            yield f"id: {seq}\r\nevent: text_delta\r\ndata: {data}\r\n\r\n".encode()
                        case _:
                            pass
            data = json.dumps({"seq": seq + 1, "kind": "run_finished"})
            yield f"id: {seq + 1}\r\nevent: run_finished\r\ndata: {data}\r\n\r\n".encode()

        return EventSourceResponse(frames())

    return Starlette(routes=[Route("/bare/{agent}", run, methods=["POST"])])


def agno_app(db_file: str) -> Any:
    """Agno's AgentOS serving agents ``paced`` and ``fast`` over Agno's SQLite db."""
    from agno.agent import Agent as AgnoAgent
    from agno.db.sqlite import SqliteDb
    from agno.models.base import Model
    from agno.models.response import ModelResponse as AgnoResponse
    from agno.os import AgentOS

    class PacedAgnoModel(Model):
        def __init__(self, count: int, interval_s: float) -> None:
            super().__init__(id="paced", name="paced", provider="bench")
            self.count, self.interval_s = count, interval_s

        async def ainvoke_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[AgnoResponse]:
            async for token in paced_tokens(self.count, self.interval_s):
                yield AgnoResponse(content=token)

        async def ainvoke(self, *args: Any, **kwargs: Any) -> AgnoResponse:
            raise NotImplementedError

        def invoke(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def invoke_stream(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        def _parse_provider_response(self, response: Any, **kwargs: Any) -> Any:
            return response

        def _parse_provider_response_delta(self, response: Any) -> Any:
            raise NotImplementedError

    db = SqliteDb(db_file=db_file)
    timings = {
        "paced": (PACED_TOKENS, PACED_INTERVAL_S),
        "burst": (PACED_TOKENS, 0.0),
        "fast": (FAST_TOKENS, 0.0),
    }
    agents: list[Any] = [
        AgnoAgent(id=name, name=name, model=PacedAgnoModel(*timing), db=db, telemetry=False)
        for name, timing in timings.items()
    ]
    return AgentOS(agents=agents, telemetry=False).get_app()


async def _serve(app: Any, profile: str | None, *, is_tether: bool = True) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn has started
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, http="httptools"
    )
    server = uvicorn.Server(config)
    print(f"port {sock.getsockname()[1]}", flush=True)
    if profile is None and is_tether:
        await run_server(server, [sock])  # as ``tether serve`` does, GC tuning included
        return
    gc.collect()
    gc.freeze()
    if profile is None:
        await server.serve([sock])
        return
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="disabled")
    profiler.start()
    try:
        await server.serve([sock])
    finally:
        profiler.stop()
        if profile.endswith(".html"):
            profiler.write_html(profile)
        else:
            await anyio.Path(profile).write_text(profiler.output_text(show_all=True))


# --- the client side ---------------------------------------------------------------------------


@asynccontextmanager
async def server_process(*args: str) -> AsyncGenerator[int, None]:
    """Start ``bench/_server.py *args``; yield its port; SIGINT it (graceful) at the end."""
    async with pinned_server_process(*args, cpu=None) as (_, port):
        yield port


@asynccontextmanager
async def pinned_server_process(
    *args: str, cpu: int | None
) -> AsyncGenerator[tuple[int, int], None]:
    """Like ``server_process``, pinned to core ``cpu`` (``taskset``); yields (pid, port)."""
    command = [sys.executable, str(Path(__file__)), *args]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await anyio.open_process(command, env=env, stderr=None, stdin=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(120):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        yield process.pid, int(line.split()[1])
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.move_on_after(180):  # a profiled server writes its report on the way out
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def request(method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(payload)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return (head + "\r\n").encode() + payload


class Conn:
    """One keep-alive HTTP/1.1 connection; responses are read just enough to find their end."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> "Conn":
        stream = await anyio.connect_tcp("127.0.0.1", port)
        stream.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        return cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def read_until(self, marker: bytes) -> bytes:
        """Read until ``marker`` arrived; return what came up to and including it."""
        chunks = [self.buffer]
        tail = self.buffer
        while (at := tail.find(marker)) < 0:
            chunk = await self.stream.receive()
            chunks.append(chunk)
            # Only the end of what came before can hold the start of the marker.
            tail = tail[-len(marker) :] + chunk
        data = b"".join(chunks)
        end = len(data) - len(tail) + at + len(marker)
        seen, self.buffer = data[:end], data[end:]
        return seen

    async def read_response(self) -> bytes:
        """One complete response with a Content-Length body."""
        head = await self.read_until(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(self.buffer) < length:
            self.buffer += await self.stream.receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    async def aclose(self) -> None:
        await self.stream.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["tether", "bare", "agno"])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", default=None, help="write a pyinstrument HTML profile here")
    args = parser.parse_args()
    if args.kind == "tether":
        url = args.database_url or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
        app = tether_app(url)
    elif args.kind == "agno":
        app = agno_app(args.database_url or f"{tempfile.mkdtemp()}/agno.db")
    else:
        app = bare_app()
    # uvicorn re-raises the SIGINT it shut down on.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(functools.partial(_serve, is_tether=args.kind == "tether"), app, args.profile)


if __name__ == "__main__":
    main()
