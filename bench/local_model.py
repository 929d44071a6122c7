"""The embedded model (SmolLM2-135M on llama.cpp): throughput and stop latency.

Throughput: decode tokens/s through `LocalModel` (a Pydantic AI `Agent`, streaming) against
llama-cpp-python's own `create_chat_completion(stream=True)`, same prompt, greedy sampling,
same `max_tokens`; runs alternate between the two so machine noise hits both alike. The prompt
asks for more than `max_tokens`, so every run generates exactly that many tokens.

Stop latency: cancel -> generation stopped and the model free again (the llama.cpp generator is
closed before `LocalLlama.generate` returns), after the k-th delta (k = 1..5), through the
Agent and directly through `LocalLlama`; and during prompt evaluation of a long, uncached prompt.

    .venv/bin/python bench/local_model.py [--runs 7] [--stops 30] [--max-tokens 64] [--threads 2]
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import PartDeltaEvent

from tether.runtimes.local import (
    ChatMessage,
    GenerationOptions,
    LocalChatStream,
    LocalLlama,
    LocalModel,
    find_smollm2_gguf,
)

PROMPT = "Write a long essay about the history of Rome."
STORY = "Write a long story about a dragon who learns to cook."


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(samples: Sequence[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"median {statistics.median(ms):7.1f} ms  p99 {percentile(ms, 0.99):7.1f} ms  "
        f"max {max(ms):7.1f} ms  (n={len(ms)})"
    )


async def agent_tokens_per_s(agent: Agent[None, str], max_tokens: int) -> float:
    started = time.perf_counter()
    result = await agent.run(PROMPT, model_settings={"max_tokens": max_tokens, "temperature": 0})
    elapsed = time.perf_counter() - started
    assert result.usage.output_tokens == max_tokens, result.usage
    return max_tokens / elapsed


async def engine_tokens_per_s(local: LocalLlama, max_tokens: int) -> float:
    messages = [ChatMessage(role="user", content=PROMPT)]
    options = GenerationOptions(max_tokens=max_tokens, temperature=0)
    started = time.perf_counter()
    async with local.generate(messages, options=options) as stream:
        async for _ in stream:
            pass
    elapsed = time.perf_counter() - started
    assert stream.completion_tokens == max_tokens, stream.result
    return max_tokens / elapsed


def direct_tokens_per_s(llama: Any, max_tokens: int) -> float:
    # Untyped on purpose: this is llama-cpp-python used as its own docs show it.
    started = time.perf_counter()
    chunks = llama.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        max_tokens=max_tokens,
        temperature=0,
        repeat_penalty=1.1,
    )
    finish = None
    for chunk in chunks:
        finish = chunk["choices"][0]["finish_reason"] or finish
    elapsed = time.perf_counter() - started
    assert finish == "length", finish
    return max_tokens / elapsed


async def throughput(local: LocalLlama, *, runs: int, max_tokens: int, n_threads: int) -> None:
    import llama_cpp

    direct = llama_cpp.Llama(
        model_path=str(find_smollm2_gguf()), n_ctx=local.n_ctx, n_threads=n_threads, verbose=False
    )
    agent = Agent(LocalModel(local))
    # Warm-up: fills both KV caches with the prompt, as repeated runs of one prompt would.
    await agent_tokens_per_s(agent, max_tokens)
    await engine_tokens_per_s(local, max_tokens)
    direct_tokens_per_s(direct, max_tokens)
    ours: list[float] = []
    engine: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        ours.append(await agent_tokens_per_s(agent, max_tokens))
        engine.append(await engine_tokens_per_s(local, max_tokens))
        theirs.append(await anyio.to_thread.run_sync(direct_tokens_per_s, direct, max_tokens))
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(f"throughput, {max_tokens} tokens, median of {runs} runs:")
    print(f"  LocalModel via Agent (streaming) {ours_median:7.1f} tok/s")
    print(f"  LocalLlama.generate (no Agent)   {statistics.median(engine):7.1f} tok/s")
    print(f"  llama_cpp create_chat_completion {theirs_median:7.1f} tok/s")
    print(f"  ratio LocalModel / direct        {ours_median / theirs_median:7.2f}")


async def stop_through_agent(agent: Agent[None, str], after: int) -> float:
    delta_seen = anyio.Event()
    seen = 0

    async def generate() -> None:
        nonlocal seen
        async with agent.iter(STORY, model_settings={"max_tokens": 512}) as run:
            async for node in run:
                if Agent.is_model_request_node(node):
                    async with node.stream(run.ctx) as events:
                        async for event in events:
                            if isinstance(event, PartDeltaEvent):
                                seen += 1
                                if seen == after:
                                    delta_seen.set()

    return await cancel_when(generate, delta_seen)


async def stop_direct(local: LocalLlama, after: int, messages: list[ChatMessage]) -> float:
    delta_seen = anyio.Event()

    async def generate() -> None:
        options = GenerationOptions(max_tokens=512)
        async with local.generate(messages, options=options) as stream:
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == after:
                    delta_seen.set()

    return await cancel_when(generate, delta_seen)


async def stop_during_prefill(local: LocalLlama, i: int) -> float:
    # A fresh prefix every time, so the whole ~800-token prompt has to be evaluated.
    background = f"Note {i}: " + "the garden has tomatoes, beans and basil. " * 80
    messages = [
        ChatMessage(role="system", content=background),
        ChatMessage(role="user", content="Summarize."),
    ]
    streams: list[LocalChatStream] = []

    async def generate() -> None:
        async with local.generate(messages, options=GenerationOptions(max_tokens=8)) as stream:
            streams.append(stream)
            async for _ in stream:
                pass

    cancelled_at = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(generate)
        await anyio.sleep(0.05)  # well inside the prompt evaluation (seconds when not stopped)
        cancelled_at = time.perf_counter()
        tg.cancel_scope.cancel()
    stopped_s = time.perf_counter() - cancelled_at
    assert streams[0].completion_tokens == 0, "the stop landed after the prompt evaluation"
    return stopped_s


async def cancel_when(generate: Callable[[], Any], trigger: anyio.Event) -> float:
    cancelled_at = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(generate)
        await trigger.wait()
        cancelled_at = time.perf_counter()
        tg.cancel_scope.cancel()
    return time.perf_counter() - cancelled_at


async def stop_latency(local: LocalLlama, *, stops: int) -> None:
    agent = Agent(LocalModel(local))
    story = [ChatMessage(role="user", content=STORY)]
    through_agent = [await stop_through_agent(agent, 1 + i % 5) for i in range(stops)]
    direct = [await stop_direct(local, 1 + i % 5, story) for i in range(stops)]
    prefill = [await stop_during_prefill(local, i) for i in range(max(5, stops // 4))]
    print("stop latency, cancel -> generator closed and model free:")
    print(f"  Agent + LocalModel, mid-decode   {summary_ms(through_agent)}")
    print(f"  LocalLlama.generate, mid-decode  {summary_ms(direct)}")
    print(f"  LocalLlama.generate, mid-prefill {summary_ms(prefill)}")


async def main(args: argparse.Namespace) -> None:
    local = LocalLlama(n_threads=args.threads)
    await local.load()
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, n_threads={args.threads}"
    )
    await throughput(local, runs=args.runs, max_tokens=args.max_tokens, n_threads=args.threads)
    await stop_latency(local, stops=args.stops)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Embedded model throughput and stop latency")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--stops", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    anyio.run(main, parser.parse_args())
