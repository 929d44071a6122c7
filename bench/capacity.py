"""Capacity on one core: Agno AgentOS vs ``tether serve`` vs a bare Starlette SSE endpoint.

The three servers (``bench/_server.py agno|tether|bare``, uvicorn + httptools, stock asyncio)
run the same scripted token timing: ``paced`` answers of ``PACED_TOKENS`` tokens, one every
``PACED_INTERVAL_S`` (20 tokens/s) on the model's own clock, so a slow server shows as late
tokens rather than as a slower model. Each server is pinned to core 0 (``taskset -c 0``), this
client to core 1; every point gets a fresh server and a fresh SQLite file (tether's store,
Agno's ``SqliteDb``; the bare endpoint stores nothing).

A point: N streams are started at once and read to their end. Added delay = the gap between two
consecutive tokens of a stream minus the interval; time to first token = request sent -> first
token frame; an error = a refused start or a stream that ends short. Server CPU is read from
/proc over the point, per token delivered.

    .venv/bin/python bench/capacity.py [--steps 50,100,200,300,400] [--tries 1]
        [--kinds agno,tether,bare] [--loads 5] [--long-n 200]

Then, in one long-lived process per kind, ``--loads`` successive loads of ``--long-n`` streams:
p99 added delay and resident memory after each (the tail must stay flat). Last, events/s with
no token delay: one stream of ``FAST_TOKENS`` tokens, and 100 of ``PACED_TOKENS``.

AgentOS needs ``python-multipart``; if Agno or it is missing from the venv, the bench installs
them into a throwaway directory (``uv pip install --target``) used only by the Agno server.
The machine may be busy: read the ratios between the columns of one run, not the absolute
figures.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import FAST_TOKENS, PACED_INTERVAL_S, PACED_TOKENS, Conn, pinned_server_process

SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
TARGET_P99_MS: Final = 20.0
POINT_TIMEOUT_S: Final = 120.0
_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")
_PAGE_KB: Final = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True, slots=True)
class Target:
    kind: str
    path: str
    token: bytes
    end: bytes
    form: bool


TARGETS: Final = {
    "agno": Target(
        "agno", "/agents/{agent}/runs", b"event: RunContent\n", b"event: RunCompleted", True
    ),
    "tether": Target(
        "tether", "/agents/{agent}/runs", b"event: text_delta", b"event: run_finished", False
    ),
    "bare": Target("bare", "/bare/{agent}", b"event: text_delta", b"event: run_finished", False),
}


def start_request(target: Target, agent: str) -> bytes:
    if target.form:
        body, kind = b"message=go&stream=true", "application/x-www-form-urlencoded"
    else:
        body, kind = b'{"message": "go"}', "application/json"
    head = (
        f"POST {target.path.format(agent=agent)} HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Stream:
    sent_at: float = 0.0
    arrivals: list[float] | None = None
    is_ok: bool = False


async def one_stream(port: int, target: Target, agent: str, tokens: int) -> Stream:
    """Start one run and read it to its end, stamping each token frame with its arrival."""
    stream = Stream(arrivals=[])
    arrivals = stream.arrivals
    assert arrivals is not None
    conn = await Conn.open(port)
    try:
        stream.sent_at = time.perf_counter()
        await conn.send(start_request(target, agent))
        head = await conn.read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return stream
        data, tail, keep = conn.buffer, b"", len(target.end) - 1
        while True:
            # A marker split across two reads is whole in ``tail + chunk``; one already counted
            # that lies wholly in ``tail`` is not counted again.
            fresh = data.count(target.token) - tail.count(target.token)
            arrivals.extend([time.perf_counter()] * fresh)
            if target.end in data:
                break
            tail = data[-keep:]
            data = tail + await conn.stream.receive()
        stream.is_ok = len(arrivals) == tokens
        return stream
    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
        return stream
    finally:
        await conn.aclose()


def p(ordered: Sequence[float], q: float) -> float:
    return (
        ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    kind: str
    n: int
    p50_ms: float
    p99_ms: float
    ttft_p99_s: float
    errors: int
    tokens: int
    elapsed_s: float
    cpu_ms_per_token: float
    rss_mb: float

    @property
    def is_ok(self) -> bool:
        return self.errors == 0 and self.p99_ms <= TARGET_P99_MS


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def rss_mb(pid: int) -> float:
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * _PAGE_KB / 1024


async def load(pid: int, port: int, target: Target, n: int, *, agent: str = "paced") -> Point:
    """N concurrent streams of ``agent`` against one server, read to their end."""
    tokens = FAST_TOKENS if agent == "fast" else PACED_TOKENS
    streams: list[Stream] = []

    async def run() -> None:
        streams.append(await one_stream(port, target, agent, tokens))

    cpu_before, began = cpu_s(pid), time.perf_counter()
    with anyio.fail_after(POINT_TIMEOUT_S):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(run)
    elapsed = time.perf_counter() - began
    delivered = sum(len(s.arrivals or ()) for s in streams)
    added_ms = sorted(
        (later - earlier - PACED_INTERVAL_S) * 1000
        for s in streams
        for earlier, later in zip(s.arrivals or (), (s.arrivals or ())[1:], strict=False)
    )
    ttft_s = sorted(s.arrivals[0] - s.sent_at for s in streams if s.arrivals)
    return Point(
        kind=target.kind,
        n=n,
        p50_ms=statistics.median(added_ms) if added_ms else float("nan"),
        p99_ms=p(added_ms, 0.99),
        ttft_p99_s=p(ttft_s, 0.99),
        errors=sum(not s.is_ok for s in streams),
        tokens=delivered,
        elapsed_s=elapsed,
        cpu_ms_per_token=(cpu_s(pid) - cpu_before) * 1000 / max(delivered, 1),
        rss_mb=rss_mb(pid),
    )


def server_args(kind: str) -> list[str]:
    folder = tempfile.mkdtemp(prefix=f"capacity-{kind}-")
    match kind:
        case "tether":
            return ["tether", "--database-url", f"sqlite+aiosqlite:///{folder}/tether.db"]
        case "agno":
            return ["agno", "--database-url", f"{folder}/agno.db"]
        case _:
            return [kind]


async def warm_up(pid: int, port: int, target: Target) -> None:
    await load(pid, port, target, 2, agent="fast")


async def fresh_point(target: Target, n: int) -> Point:
    async with pinned_server_process(*server_args(target.kind), cpu=SERVER_CPU) as (pid, port):
        await warm_up(pid, port, target)
        return await load(pid, port, target, n)


def ensure_agno() -> None:
    """Make AgentOS importable for the Agno server: a throwaway --target dir if need be."""
    if all(importlib.util.find_spec(m) for m in ("agno", "multipart")):
        return
    extra = Path(tempfile.gettempdir()) / "tether-bench-agno"
    uv = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "uv"
    packages = ["agno==3.1.10", "python-multipart"]
    command = [str(uv), "pip", "install", "--quiet", "--target", str(extra), *packages]
    subprocess.run([*command, "--python", sys.executable], check=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(extra), os.environ.get("PYTHONPATH")])
    )


# --- the report ---------------------------------------------------------------------------------


def cell(points: list[Point], attribute: str, fmt: str) -> str:
    values = sorted(getattr(x, attribute) for x in points)
    return format(statistics.median(values), fmt) if values else "-"


async def sweep(
    kinds: list[str], steps: list[int], tries: int
) -> dict[tuple[str, int], list[Point]]:
    results: dict[tuple[str, int], list[Point]] = {}
    print(
        f"{'kind':<7} {'N':>4} {'p50 ms':>7} {'p99 ms':>7} {'ttft p99 s':>10} {'errors':>6} "
        f"{'cpu ms/token':>12} {'RSS MB':>7}",
        flush=True,
    )
    for _ in range(tries):
        for n in steps:
            # Kinds in turn at each N, so a machine whose load drifts skews them alike.
            for kind in kinds:
                point = await fresh_point(TARGETS[kind], n)
                results.setdefault((kind, n), []).append(point)
                print(
                    f"{kind:<7} {n:>4} {point.p50_ms:>7.1f} {point.p99_ms:>7.1f} "
                    f"{point.ttft_p99_s:>10.2f} {point.errors:>6} {point.cpu_ms_per_token:>12.3f} "
                    f"{point.rss_mb:>7.0f}",
                    flush=True,
                )
    return results


def largest_ok(results: dict[tuple[str, int], list[Point]], kind: str, steps: list[int]) -> str:
    best = 0
    for n in steps:
        points = results.get((kind, n), [])
        # Median of the tries: a step passes when most tries do.
        if not points or sum(x.is_ok for x in points) * 2 <= len(points):
            break
        best = n
    return f">= {best}" if best == steps[-1] else str(best)


async def events_per_s(kinds: list[str]) -> dict[tuple[str, int], float]:
    rates: dict[tuple[str, int], float] = {}
    for kind in kinds:
        target = TARGETS[kind]
        async with pinned_server_process(*server_args(kind), cpu=SERVER_CPU) as (pid, port):
            await warm_up(pid, port, target)
            for n, agent in ((1, "fast"), (100, "burst")):
                point = await load(pid, port, target, n, agent=agent)
                rates[kind, n] = point.tokens / point.elapsed_s
    return rates


async def long_lived(kinds: list[str], n: int, loads: int) -> None:
    print(f"\nlong-lived process: {loads} successive loads of N = {n}", flush=True)
    for kind in kinds:
        target = TARGETS[kind]
        async with pinned_server_process(*server_args(kind), cpu=SERVER_CPU) as (pid, port):
            await warm_up(pid, port, target)
            warm_rss = rss_mb(pid)
            figures: list[str] = []
            for _ in range(loads):
                point = await load(pid, port, target, n)
                await anyio.sleep(1.0)  # let the last writes land
                figures.append(f"{point.p99_ms:.0f} ms / {rss_mb(pid):.0f} MB")
            print(
                f"{kind:<7} after warm-up {warm_rss:.0f} MB; p99 / RSS: {', '.join(figures)}",
                flush=True,
            )


async def main(options: argparse.Namespace) -> None:
    kinds: list[str] = options.kinds
    steps: list[int] = options.steps
    if "agno" in kinds:
        ensure_agno()
    os.sched_setaffinity(0, {CLIENT_CPU})
    results = await sweep(kinds, steps, options.tries)
    rates = await events_per_s(kinds)
    print(f"\n{'figure (median of tries)':<46}" + "".join(f"{k:>14}" for k in kinds))

    def line(label: str, values: list[str]) -> None:
        print(f"{label:<46}" + "".join(f"{v:>14}" for v in values))

    line(
        f"largest N, p99 added <= {TARGET_P99_MS:.0f} ms, 0 errors",
        [largest_ok(results, k, steps) for k in kinds],
    )
    for n in (50, 200):
        if n in steps:
            line(
                f"p50 added delay at N = {n}, ms",
                [cell(results[k, n], "p50_ms", ".1f") for k in kinds],
            )
            line(
                f"p99 added delay at N = {n}, ms",
                [cell(results[k, n], "p99_ms", ".1f") for k in kinds],
            )
    if 200 in steps:
        line(
            "time to first token p99 at N = 200, s",
            [cell(results[k, 200], "ttft_p99_s", ".2f") for k in kinds],
        )
    cpu_n = 200 if 200 in steps else steps[0]
    line(
        f"CPU per delivered token at N = {cpu_n}, ms",
        [cell(results[k, cpu_n], "cpu_ms_per_token", ".3f") for k in kinds],
    )
    for n in (1, 100):
        line(f"events/s at zero token delay, {n} streams", [f"{rates[k, n]:,.0f}" for k in kinds])
    if options.loads:
        await long_lived([k for k in kinds if k != "bare"], options.long_n, options.loads)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="50,100,200,300,400")
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--kinds", default="agno,tether,bare")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--long-n", type=int, default=200)
    options = parser.parse_args(argv)
    options.steps = [int(n) for n in options.steps.split(",")]
    options.kinds = options.kinds.split(",")
    return options


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
