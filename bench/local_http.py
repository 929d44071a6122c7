"""The embedded model through tether's full HTTP path vs llama.cpp called directly.

Starts `tether serve` (the demo app, SQLite in a temporary data dir) in a subprocess and
streams the `assistant` agent over SSE; in this process, runs llama-cpp-python on the same
GGUF with the same thread count. Decode speed is tokens / (last token - first token), so both
sides exclude prompt processing; runs alternate so machine noise hits both alike. Then stops
runs over HTTP after 10 tokens: `POST /runs/{id}/cancel` -> `run_finished` received.

    .venv/bin/python bench/local_http.py [--runs 5] [--stops 20]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tether.runtimes.local import find_smollm2_gguf

PROMPT = "Write a long story about a dragon who learns to cook."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "TETHER_DATA_DIR": data_dir}
    tether = Path(sys.executable).parent / "tether"
    proc = subprocess.Popen(
        [str(tether), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)  # the server is still starting
    proc.kill()
    raise SystemExit("tether serve did not start")


def http_run(
    client: httpx.Client, base: str, *, stop_after: int | None = None
) -> tuple[float, int, float | None]:
    """One streamed run: (decode tokens/s, output tokens, stop latency in ms or None)."""
    first = last = sent = 0.0
    deltas = 0
    tokens = 0
    stop_ms = None
    body = {"message": PROMPT}
    with client.stream("POST", f"{base}/agents/assistant/runs", json=body) as response:
        response.raise_for_status()
        run_id = response.headers["x-run-id"]
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            now = time.perf_counter()
            if event["kind"] == "text_delta":
                deltas += 1
                first = first or now
                last = now
                if deltas == stop_after:
                    sent = time.perf_counter()
                    client.post(f"{base}/runs/{run_id}/cancel", json={})
            elif event["kind"] == "run_finished":
                tokens = event["usage"]["output_tokens"]
                if stop_after is not None:
                    stop_ms = (now - sent) * 1000
                break
    rate = (tokens - 1) / (last - first) if last > first else 0.0
    return rate, tokens, stop_ms


def direct_run(llama: Any, max_tokens: int) -> float:
    first = last = 0.0
    n = 0
    for chunk in llama.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        max_tokens=max_tokens,
        temperature=0.7,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
    return (n - 1) / (last - first)


def main(args: argparse.Namespace) -> None:
    import llama_cpp

    threads = max(1, (os.cpu_count() or 2) // 2)  # LocalLlama's default
    llama = llama_cpp.Llama(
        model_path=str(find_smollm2_gguf()), n_ctx=2048, n_threads=threads, verbose=False
    )
    with tempfile.TemporaryDirectory() as data_dir:
        proc, base = start_server(data_dir)
        try:
            with httpx.Client(timeout=120) as client:
                http_run(client, base)  # warm-up: loads the model in the server
                via_http: list[float] = []
                direct: list[float] = []
                for _ in range(args.runs):
                    rate, tokens, _ = http_run(client, base)
                    via_http.append(rate)
                    direct.append(direct_run(llama, tokens))  # as many tokens as tether made
                stops = [http_run(client, base, stop_after=10)[2] for _ in range(args.stops)]
        finally:
            proc.terminate()
            proc.wait(10)
    h, d = statistics.median(via_http), statistics.median(direct)
    print(f"decode tokens/s, median of {args.runs}: tether HTTP {h:.1f}  llama.cpp direct {d:.1f}")
    print(f"ratio HTTP / direct: {h / d:.2f}")
    ms = sorted(s for s in stops if s is not None)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"stop over HTTP after 10 tokens (cancel -> run_finished), n={len(ms)}: "
        f"min {ms[0]:.1f} ms  median {statistics.median(ms):.1f} ms  p99 {p99:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stops", type=int, default=20)
    main(parser.parse_args())
