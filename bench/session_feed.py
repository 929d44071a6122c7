"""Session feed latency: from a message's POST to ``run_started`` (and from the answer's end to
``run_finished``) on every tab that follows the session.

One tether server (``bench/_server.py tether``, SQLite by default); ``--feeds`` tabs open
``GET /sessions/{id}/events`` on one session, then ``--runs`` messages are sent to it one after
another (agent ``fast``). Prints min / median / p99 / max over every (run, tab) pair.

    .venv/bin/python bench/session_feed.py [--feeds 50] [--runs 20] [--database-url URL]
"""

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench._server import server_process


def _summary(name: str, values_s: list[float]) -> str:
    ms = sorted(v * 1000 for v in values_s)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name}: n={len(ms)} min {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
        f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"
    )


async def _follow(
    base: str,
    session_id: str,
    seen: dict[str, list[float]],
    *,
    ready: anyio.Event,
    done: anyio.Event,
    runs: int,
) -> None:
    async with (
        httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", f"/sessions/{session_id}/events") as response,
    ):
        ready.set()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.setdefault(event, []).append(time.perf_counter())
                if len(seen.get("run_finished", ())) == runs:
                    done.set()


async def main(feeds: int, runs: int, database_url: str | None) -> None:
    server_args = ["--database-url", database_url] if database_url else []
    async with server_process("tether", *server_args) as port:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            first = await client.post("/agents/fast/runs", json={"message": "hi"})
            session_id = first.headers["X-Session-Id"]
            seen: list[dict[str, list[float]]] = [{} for _ in range(feeds)]
            started: list[float] = []
            answered: list[float] = []
            dones = [anyio.Event() for _ in seen]
            async with anyio.create_task_group() as tg:
                for tab, done in zip(seen, dones, strict=True):
                    ready = anyio.Event()
                    tg.start_soon(
                        functools.partial(
                            _follow, base, session_id, tab, ready=ready, done=done, runs=runs
                        )
                    )
                    await ready.wait()
                for _ in range(runs):
                    started.append(time.perf_counter())
                    body = {"message": "again", "session_id": session_id}
                    await client.post("/agents/fast/runs", json=body)
                    answered.append(time.perf_counter())
                with anyio.fail_after(30):
                    for done in dones:
                        await done.wait()
                tg.cancel_scope.cancel()
    print(_summary("POST -> run_started on a tab", _lags(started, seen, "run_started")))
    print(_summary("answer end -> run_finished on a tab", _lags(answered, seen, "run_finished")))


def _lags(sent: list[float], seen: list[dict[str, list[float]]], kind: str) -> list[float]:
    return [t[kind][i] - at for t in seen for i, at in enumerate(sent)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Session feed latency")
    parser.add_argument("--feeds", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    anyio.run(main, args.feeds, args.runs, args.database_url)
