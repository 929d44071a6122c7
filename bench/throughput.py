"""Streaming throughput: tether's full stack vs a bare Starlette SSE endpoint, same model.

Both servers run in their own process on uvicorn (``bench/_server.py``): ``tether`` is the real
HTTP app over the engine and a SQLite store; ``bare`` runs the same Pydantic AI agent straight
into an sse-starlette response with frames of the same shape. The scripted model streams
``FAST_TOKENS`` tokens as fast as it can. A raw-socket client opens C concurrent streams, each a
new run, reads them to the end, and counts ``text_delta`` events; events/s is the total over
the wall time of the round (best of ``--rounds``, the two servers measured in turn).

    .venv/bin/python bench/throughput.py [--rounds 3] [--concurrency 1 100]
    .venv/bin/python bench/throughput.py --profile /tmp/tether.html   # pyinstrument, server side

Target: tether / bare >= 0.7.
"""

import argparse
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import FAST_TOKENS, Conn, request, server_process

PATHS = {"tether": "/agents/fast/runs", "bare": "/bare/fast"}


async def one_stream(port: int, path: str) -> int:
    """The number of text deltas of one run; -1 if the server refused to start it."""
    conn = await Conn.open(port)
    try:
        await conn.send(request("POST", path, {"message": "go"}))
        head = await conn.read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            print(f"refused: {head.splitlines()[0].decode()}", flush=True)
            return -1
        received = await conn.read_until(b"event: run_finished")
        return received.count(b"event: text_delta")
    finally:
        await conn.aclose()


async def one_round(port: int, path: str, concurrency: int) -> float:
    counts: list[int] = []

    async def stream() -> None:
        counts.append(await one_stream(port, path))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(stream)
    elapsed = time.perf_counter() - started
    assert all(c in (FAST_TOKENS, -1) for c in counts), counts[:5]
    return sum(c for c in counts if c > 0) / elapsed


async def main(
    rounds: int, concurrencies: list[int], profile: str | None, database_url: str | None
) -> None:
    tether_args = ["tether"]
    tether_args += ["--profile", profile] if profile else []
    tether_args += ["--database-url", database_url] if database_url else []
    # Both servers up at once, measured in alternation (only one is busy at a time), so a
    # machine whose load drifts during the bench skews both sides alike.
    async with server_process("bare") as bare_port, server_process(*tether_args) as tether_port:
        ports = {"bare": bare_port, "tether": tether_port}
        for kind, port in ports.items():
            for _ in range(3):
                await one_round(port, PATHS[kind], 1)  # warm-up
        for concurrency in concurrencies:
            best = {"bare": 0.0, "tether": 0.0}
            for _ in range(rounds):
                for kind, port in ports.items():
                    rate = await one_round(port, PATHS[kind], concurrency)
                    best[kind] = max(best[kind], rate)
            ratio = best["tether"] / best["bare"]
            print(
                f"C={concurrency:<4} bare {best['bare']:>8,.0f} events/s   "
                f"tether {best['tether']:>8,.0f} events/s   tether/bare = {ratio:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--profile", default=None, help="pyinstrument report (.html or text)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    options = parser.parse_args()
    anyio.run(main, options.rounds, options.concurrency, options.profile, options.database_url)
