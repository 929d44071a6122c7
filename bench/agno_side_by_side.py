"""The same Agno agent, stopped two ways: Agno's own ``acancel_run`` vs tether's ``cancel()``.

A scripted model streams one token every 20 ms, or streams a few tokens and then calls a 2 s
async tool. Each run is stopped mid-text (after 3-12 tokens) or mid-tool (50 ms-1.5 s into the
tool), then a second turn is run in the same session. Measured per system:

- stop latency: the stop call -> the stream's terminal event, as its consumer sees it;
- text parity: the text stored for the stopped run equals the text the consumer saw;
- next turn: the model's input for the second turn contains the partial answer.

Agno's side keeps its runs in ``InMemoryDb`` with ``add_history_to_context``, its own way to
carry history. Runs of a case go concurrently, so the whole bench takes well under a minute.

    .venv/bin/python bench/agno_side_by_side.py [--n 60]
"""

import argparse
import contextlib
import gc
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from agno.agent import Agent
from agno.db.in_memory import InMemoryDb
from agno.models.message import Message
from agno.run.agent import RunCancelledEvent, RunContentEvent, ToolCallStartedEvent

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.runtimes.scripted_agno import ScriptedAgnoModel, scripted_agno
from tests.scripted import Delay, Step, text, tool_call
from tether import RunFinished, Settings, Tether, TextDelta, ToolCallStarted
from tether.ids import RunId
from tether.storage.memory import MemoryStore

TOKEN_S = 0.020
TOOL_S = 2.0
TOKENS_BEFORE_TOOL = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    latency_ms: float
    is_text_stored: bool
    """The stored text of the stopped run equals what the consumer saw."""
    is_partial_seen_next: bool
    """The next turn's model input contains the partial answer."""


def tokens(count: int) -> list[Step]:
    return [step for i in range(count) for step in (Delay(TOKEN_S), text(f"tok{i} "))]


def script(case: str) -> list[list[Step]]:
    if case == "text":
        return [tokens(400), [text("ok")]]
    return [[*tokens(TOKENS_BEFORE_TOOL), tool_call("slow", {}, call_id="c1")], [text("ok")]]


async def slow() -> str:
    """Takes two seconds."""
    await anyio.sleep(TOOL_S)
    return "done"


def agent(model: ScriptedAgnoModel, **kwargs: Any) -> Agent:
    return Agent(model=model, tools=[slow], telemetry=False, **kwargs)


def next_turn_sees(model: ScriptedAgnoModel, partial: str) -> bool:
    request: list[Message] = model.received[-1]
    said = "\n".join(m.get_content_string() for m in request if m.role == "assistant")
    return bool(partial) and partial in said


class Stopper:
    """Sends the stop at the chosen point and times it."""

    def __init__(self, stop: Callable[[], Awaitable[object]]) -> None:
        self._stop = stop
        self.sent_at: float | None = None

    async def now(self) -> None:
        if self.sent_at is None:
            self.sent_at = time.perf_counter()
            await self._stop()

    async def after(self, delay_s: float) -> None:
        await anyio.sleep(delay_s)
        await self.now()

    def elapsed_ms(self) -> float:
        assert self.sent_at is not None, "the run ended before the stop was sent"
        return (time.perf_counter() - self.sent_at) * 1000


async def agno_sample(case: str, rng: random.Random) -> Sample:
    model = scripted_agno(*script(case))
    bare: Any = agent(model, db=InMemoryDb(), add_history_to_context=True)  # Agno: bare generics
    run_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    stopper = Stopper(lambda: bare.acancel_run(run_id))
    stop_after = rng.randint(3, 12)
    seen: list[str] = []
    latency_ms = None
    async with anyio.create_task_group() as tg:
        stream = bare.arun(
            "go", stream=True, stream_events=True, run_id=run_id, session_id=session_id
        )
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if isinstance(event, RunContentEvent) and isinstance(event.content, str):
                    seen.append(event.content)
                    if case == "text" and len(seen) == stop_after:
                        await stopper.now()
                elif isinstance(event, ToolCallStartedEvent):
                    tg.start_soon(stopper.after, rng.uniform(0.05, 1.5))
                elif isinstance(event, RunCancelledEvent):
                    latency_ms = stopper.elapsed_ms()
    assert latency_ms is not None, "Agno did not report the run cancelled"
    stored = await bare.aget_run_output(run_id=run_id, session_id=session_id)
    assert stored is not None
    partial = "".join(seen)
    async for _ in bare.arun("continue", stream=True, session_id=session_id):
        pass
    return Sample(
        latency_ms=latency_ms,
        is_text_stored=stored.content == partial,
        is_partial_seen_next=next_turn_sees(model, partial),
    )


async def tether_sample(app: Tether, name: str, case: str, rng: random.Random) -> Sample:
    model = scripted_agno(*script(case))
    app.agent(name)(lambda ctx: agent(model))
    run = await app.start(name, "go")
    stopper = Stopper(run.cancel)
    stop_after = rng.randint(3, 12)
    seen: list[str] = []
    latency_ms = None
    async with anyio.create_task_group() as tg:
        async for event in run.events():
            if isinstance(event, TextDelta):
                seen.append(event.text)
                if case == "text" and len(seen) == stop_after:
                    await stopper.now()
            elif isinstance(event, ToolCallStarted):
                tg.start_soon(stopper.after, rng.uniform(0.05, 1.5))
            elif isinstance(event, RunFinished):
                assert event.status == "cancelled", event
                latency_ms = stopper.elapsed_ms()
    assert latency_ms is not None
    await app.engine.wait_terminal(RunId(run.run_id))
    messages = await app.store.messages(run.session_id)
    stored = "".join(m.content for m in messages if m.role == "assistant")
    partial = "".join(seen)
    again = await app.start(name, "continue", session_id=run.session_id)
    await again.outcome()
    return Sample(
        latency_ms=latency_ms,
        is_text_stored=stored == partial,
        is_partial_seen_next=next_turn_sees(model, partial),
    )


async def gather(n: int, sample: Callable[[int], Awaitable[Sample]]) -> list[Sample]:
    samples: list[Sample] = []

    async def one(i: int) -> None:
        samples.append(await sample(i))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return samples


def latency(samples: list[Sample]) -> str:
    ordered = sorted(s.latency_ms for s in samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{ordered[0]:7.1f} / {statistics.median(ordered):7.1f} / {p99:7.1f}"


def share(samples: list[Sample], attribute: str) -> str:
    count = sum(getattr(s, attribute) for s in samples)
    return f"{count}/{len(samples)}"


async def main(n: int) -> None:
    rng = random.Random(7)
    app = Tether(store=MemoryStore(), settings=Settings(database_url="memory"))
    results: dict[tuple[str, str], list[Sample]] = {}
    async with app:
        await tether_sample(app, "warm-up", "text", rng)
        await agno_sample("text", rng)
        gc.freeze()
        for case in ("text", "tool"):
            results["agno", case] = await gather(n, lambda i, c=case: agno_sample(c, rng))
            results["tether", case] = await gather(
                n, lambda i, c=case: tether_sample(app, f"{c}-{i}", c, rng)
            )
    stored, next_turn = "is_text_stored", "is_partial_seen_next"
    rows: list[tuple[str, str, Callable[[list[Sample]], str]]] = [
        ("stop mid-text, ms (min/med/p99)", "text", latency),
        ("stop mid-tool, ms (min/med/p99)", "tool", latency),
        ("stored == seen, mid-text", "text", lambda s: share(s, stored)),
        ("stored == seen, mid-tool", "tool", lambda s: share(s, stored)),
        ("next turn sees partial, mid-text", "text", lambda s: share(s, next_turn)),
        ("next turn sees partial, mid-tool", "tool", lambda s: share(s, next_turn)),
    ]
    print(f"n={n} per cell; {TOKEN_S * 1000:.0f} ms/token; {TOOL_S:.0f} s async tool")
    print(f"{'':<34} {'agno acancel_run':>27}   {'tether cancel()':>27}")
    for label, case, cell in rows:
        print(
            f"{label:<34} {cell(results['agno', case]):>27}   {cell(results['tether', case]):>27}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=60)
    anyio.run(main, parser.parse_args().n)
