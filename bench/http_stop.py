"""Stop latency over HTTP: ``POST /runs/{id}/cancel`` sent -> terminal SSE event received.

A real uvicorn server in its own process (``bench/_server.py tether``, SQLite store) runs a
scripted agent that streams a token every 20 ms, or one that calls a 2 s async tool. For each
sample the client starts a run, reads its stream until the 5th token (mid-text) or until the
tool call started and the tool is waiting (mid-tool), then sends the cancel on a second,
already-open connection and times until ``run_finished`` arrives on the stream.

    .venv/bin/python bench/http_stop.py [--n 60] [--database-url memory]

Targets: mid-text <= 3 ms median / 10 ms p99; mid-tool <= 20 / 50 ms.
"""

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import Conn, request, server_process

_RUN_ID = re.compile(rb"x-run-id: (\S+)", re.IGNORECASE)
TOOL_SETTLE_S = 0.1
"""After ``tool_call_started``, how long to let the tool reach its await before stopping."""


async def one_stop(port: int, agent: str, *, control: Conn) -> float:
    stream = await Conn.open(port)
    try:
        await stream.send(request("POST", f"/agents/{agent}/runs", {"message": "go"}))
        head = await stream.read_until(b"\r\n\r\n")
        found = _RUN_ID.search(head)
        assert found is not None, head
        run_id = found[1].decode()
        if agent == "talk":
            for _ in range(5):
                await stream.read_until(b"event: text_delta")
        else:
            await stream.read_until(b"event: tool_call_started")
            await anyio.sleep(TOOL_SETTLE_S)
        cancel = request("POST", f"/runs/{run_id}/cancel", {})
        sent_at = time.perf_counter()
        await control.send(cancel)
        await stream.read_until(b"event: run_finished")
        latency_ms = (time.perf_counter() - sent_at) * 1000
        answer = json.loads(await control.read_response())
        assert answer["accepted"], answer
        return latency_ms
    finally:
        await stream.aclose()


def row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{name:<26} n={len(ordered):<4} min {ordered[0]:7.2f} ms   "
        f"median {statistics.median(ordered):7.2f} ms   p99 {p99:7.2f} ms"
    )


async def main(n: int, database_url: str | None) -> None:
    args = ["tether"] + (["--database-url", database_url] if database_url else [])
    async with server_process(*args) as port:
        control = await Conn.open(port)
        for _ in range(3):  # warm-up: imports, first runs, connection pools
            await one_stop(port, "talk", control=control)
            await one_stop(port, "tool", control=control)
        store = database_url or "sqlite"
        for agent, name in (("talk", "mid-text (20 ms/token)"), ("tool", "mid-tool (2 s tool)")):
            samples = [await one_stop(port, agent, control=control) for _ in range(n)]
            print(row(f"{name} [{store}]", samples), flush=True)
        await control.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    options = parser.parse_args()
    anyio.run(main, options.n, options.database_url)
