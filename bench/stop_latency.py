"""In-process stop latency: ``cancel()`` -> terminal event seen by a stream consumer.

A scripted model streams one token every 20 ms (and, for comparison, every 5 ms), or calls a
2 s async tool; the stop is sent mid-text (after 5 tokens) or mid-tool. Prints min / median /
p99 over N stops per case.

    .venv/bin/python bench/stop_latency.py [--n 60]
"""

import argparse
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

sys.path.insert(0, str(Path(__file__).parent.parent))

from tether import RunFinished, Settings, Tether, TextDelta, ToolCallStarted
from tether.storage.memory import MemoryStore


def streaming_agent(interval_s: float) -> Agent[None, str]:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for i in range(10_000):
            await anyio.sleep(interval_s)
            yield f"tok{i} "

    return Agent(FunctionModel(stream_function=stream))


def tool_agent() -> Agent[None, str]:
    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        yield {0: DeltaToolCall(name="slow_lookup", json_args="{}", tool_call_id="c1")}

    async def slow_lookup() -> str:
        await anyio.sleep(2.0)
        return "done"

    return Agent(FunctionModel(stream_function=stream), tools=[slow_lookup])


async def measure(app: Tether, agent: str, *, trigger: type, after: int, n: int) -> list[float]:
    samples: list[float] = []
    for _ in range(n):
        run = await app.start(agent, "go")
        seen = 0
        sent_at = 0.0
        async for event in run.events():
            if isinstance(event, trigger):
                seen += 1
                if seen == after:
                    sent_at = time.perf_counter()
                    await run.cancel()
            if isinstance(event, RunFinished):
                samples.append((time.perf_counter() - sent_at) * 1000)
                assert event.status == "cancelled", event
        await run.outcome()
    return samples


def row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{name:<28} n={len(samples):<4} min {ordered[0]:7.3f} ms   "
        f"median {statistics.median(ordered):7.3f} ms   p99 {p99:7.3f} ms"
    )


async def main(n: int) -> None:
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    app.agent("text20")(lambda ctx: streaming_agent(0.020))
    app.agent("text5")(lambda ctx: streaming_agent(0.005))
    app.agent("tool")(lambda ctx: tool_agent())
    async with app:
        await measure(app, "text5", trigger=TextDelta, after=2, n=3)  # warm-up
        gc.freeze()
        print(
            row(
                "mid-text, 20 ms/token",
                await measure(app, "text20", trigger=TextDelta, after=5, n=n),
            )
        )
        print(
            row(
                "mid-text, 5 ms/token", await measure(app, "text5", trigger=TextDelta, after=5, n=n)
            )
        )
        print(
            row(
                "mid-tool (2 s async tool)",
                await measure(app, "tool", trigger=ToolCallStarted, after=1, n=n),
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=60)
    anyio.run(main, parser.parse_args().n)
