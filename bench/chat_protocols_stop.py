"""Stop latency of the chat-protocol routes (#17) next to the native route, in one run.

A real uvicorn server in its own process (``bench/_server.py tether``, SQLite store) runs the
``talk`` agent (a token every 20 ms). Per route and sample, the client starts a run, reads until
the 5th text frame, then either

- server stop: sends ``POST /runs/{id}/cancel`` on a second, open connection and times until
  the route's terminal frame arrives on the stream; or
- client drop: closes the stream's connection and times until ``GET /runs/{id}`` on the second
  connection reads a terminal status (polled back to back, so the figure includes one poll).

    .venv/bin/python bench/chat_protocols_stop.py [--n 30]
"""

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import Conn, request, server_process

_RUN_ID = re.compile(rb"x-(?:tether-)?run-id: (\S+)", re.IGNORECASE)
_TERMINAL = {"completed", "cancelled", "failed", "interrupted"}


def _agui_body(n: int) -> dict[str, Any]:
    message = {"id": "u", "role": "user", "content": "go"}
    return {
        "threadId": f"bench-agui-{n}",
        "runId": f"r{n}",
        "messages": [message],
        "state": None,
        "tools": [],
        "context": [],
        "forwardedProps": None,
        "protocolVersion": "1.0",
    }


def _native_body(n: int) -> dict[str, Any]:
    return {"message": "go"}


def _openai_body(n: int) -> dict[str, Any]:
    return {"model": "talk", "stream": True, "messages": [{"role": "user", "content": "go"}]}


def _chat_body(n: int) -> dict[str, Any]:
    user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "go"}]}
    return {"id": f"bench-chat-{n}", "messages": [user], "trigger": "submit-message"}


# name -> (path, body for sample n, text marker, terminal marker)
ROUTES: dict[str, tuple[str, Callable[[int], dict[str, Any]], bytes, bytes]] = {
    "native": ("/agents/talk/runs", _native_body, b"event: text_delta", b"event: run_finished"),
    "openai": ("/v1/chat/completions", _openai_body, b'"content":', b"data: [DONE]"),
    "ai-sdk": ("/agents/talk/chat", _chat_body, b'"type":"text-delta"', b"data: [DONE]"),
    "ag-ui": ("/agents/talk/agui", _agui_body, b'"TEXT_MESSAGE_CONTENT"', b'"RUN_FINISHED"'),
}


async def _start(port: int, route: str, n: int) -> tuple[Conn, str]:
    path, body, text_marker, _ = ROUTES[route]
    stream = await Conn.open(port)
    await stream.send(request("POST", path, body(n)))
    head = await stream.read_until(b"\r\n\r\n")
    found = _RUN_ID.search(head)
    assert found is not None, head
    for _ in range(5):
        await stream.read_until(text_marker)
    return stream, found[1].decode()


async def server_stop(port: int, route: str, n: int, *, control: Conn) -> float:
    stream, run_id = await _start(port, route, n)
    try:
        sent_at = time.perf_counter()
        await control.send(request("POST", f"/runs/{run_id}/cancel", {}))
        await stream.read_until(ROUTES[route][3])
        latency_ms = (time.perf_counter() - sent_at) * 1000
        assert json.loads(await control.read_response())["accepted"]
        return latency_ms
    finally:
        await stream.aclose()


async def client_drop(port: int, route: str, n: int, *, control: Conn) -> float:
    stream, run_id = await _start(port, route, n)
    dropped_at = time.perf_counter()
    await stream.aclose()
    while True:
        await control.send(request("GET", f"/runs/{run_id}"))
        if json.loads(await control.read_response())["status"] in _TERMINAL:
            return (time.perf_counter() - dropped_at) * 1000


def row(name: str, samples: list[float], baseline: float) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    return (
        f"{name:<24} n={len(ordered):<4} median {median:7.2f} ms   p99 {p99:7.2f} ms   "
        f"x{median / baseline:5.2f} of native"
    )


async def main(n: int) -> None:
    async with server_process("tether") as port:
        control = await Conn.open(port)
        sample = 0
        for kind, measure in (("server stop", server_stop), ("client drop", client_drop)):
            baseline = 0.0
            for route in ROUTES:
                for _ in range(3):  # warm-up
                    sample += 1
                    await measure(port, route, sample, control=control)
                samples: list[float] = []
                for _ in range(n):
                    sample += 1
                    samples.append(await measure(port, route, sample, control=control))
                baseline = baseline or statistics.median(samples)
                print(row(f"{kind} [{route}]", samples, baseline), flush=True)
        await control.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30)
    anyio.run(main, parser.parse_args().n)
