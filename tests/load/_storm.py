"""A stop storm over HTTP: many runs, each stopped at a random point; every ending checked.

Each run of the plan (drawn from a seeded ``random.Random``, so a storm is reproducible) is
started on the first worker and stopped at one of ``STOP_POINTS``, through the first worker or,
for every other run when there are two, through the second. Right after its terminal frame
(``now:``) and again ``LATER_S`` later (``1s:``) its state is read over HTTP from the worker that
does not drive it (the only one on a single worker) and from the database, and checked against
what the client saw (``tests.load._invariants``). A rolled-back turn must also be absent from
the model's input on the session's next turn (``rollback_in_history``).

Used by ``bench/stop_storm.py`` (300 runs) and ``tests/load/test_stop_storm.py`` (CI-sized).
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.load._client import RunStream, follow, start_run
from tests.load._invariants import Seen, Tally, Violation, check_reads, check_stored, read_stored
from tests.load.load_app import RECALL_SEPARATOR

StopPoint = Literal[
    "before_first_event",
    "mid_text",
    "mid_tool_async",
    "mid_tool_sync",
    "twice",
    "stop_and_disconnect",
    "rollback",
    "after_turn",
]
STOP_POINTS: Final[tuple[StopPoint, ...]] = (
    "before_first_event",
    "mid_text",
    "mid_tool_async",
    "mid_tool_sync",
    "twice",
    "stop_and_disconnect",
    "rollback",
    "after_turn",
)
LATER_S: Final = 1.0
AFTER_TURN_TOKENS: Final = 30
RUN_TIMEOUT_S: Final = 60.0
_SCRIPTS: Final[dict[StopPoint, str]] = {
    "before_first_event": "talk",
    "mid_text": "talk",
    "mid_tool_async": "async",
    "mid_tool_sync": "sync",
    "twice": "talk",
    "stop_and_disconnect": "talk",
    "rollback": "talk",
    "after_turn": f"tok {AFTER_TURN_TOKENS}",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    index: int
    point: StopPoint
    tokens_before_stop: int
    """Text deltas read before the stop (mid-text points)."""
    settle_s: float
    """A pause before the stop (mid-tool points: let the tool get going)."""
    is_crossed: bool
    """Stopped through the other worker."""


def plan(runs: int, *, seed: int, workers: int) -> list[Planned]:
    """The storm's runs: every stop point in turn (so each gets its share), drawn details."""
    rng = random.Random(seed)
    return [
        Planned(
            index=i,
            point=STOP_POINTS[i % len(STOP_POINTS)],
            tokens_before_stop=rng.randint(1, 20),
            settle_s=rng.uniform(0, 0.3),
            is_crossed=workers > 1 and rng.random() < 0.5,
        )
        for i in range(runs)
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Storm:
    """Where the storm runs: clients on the workers (the first drives), and the database."""

    clients: Sequence[httpx.AsyncClient]
    engine: AsyncEngine

    @property
    def driver(self) -> httpx.AsyncClient:
        return self.clients[0]

    @property
    def reader(self) -> httpx.AsyncClient:
        return self.clients[-1]


async def storm(where: Storm, runs: Sequence[Planned], *, concurrency: int) -> Tally:
    """Run the plan, at most ``concurrency`` runs at once; the violations found."""
    tally = Tally()
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(planned: Planned) -> None:
        async with limiter:
            with anyio.fail_after(RUN_TIMEOUT_S):
                await _one_run(where, planned, tally)

    async with anyio.create_task_group() as tg:
        for planned in runs:
            tg.start_soon(one, planned)
    return tally


async def _one_run(where: Storm, planned: Planned, tally: Tally) -> None:
    seen = Seen()
    stopper = where.clients[-1] if planned.is_crossed else where.driver
    message = f"{_SCRIPTS[planned.point]} #{planned.index}"
    async with start_run(where.driver, message, seen) as stream:
        if stream is None:
            tally.refused[seen.status_code] += 1
            if seen.status_code != 503:  # overload may refuse a start; nothing else may
                tally.add([Violation("start_failed", "", f"{seen.status_code}: {seen.refusal}")])
            return
        left = await _stop_at(stream, planned, stopper, tally)
    if left:  # the client left with the stop: it reconnects to learn the ending
        async with follow(where.driver, seen, after=seen.last_seq) as resumed:
            if resumed is not None:
                await resumed.read_to_end()
    await _check(where, seen, tally, prefix="now:")
    await anyio.sleep(LATER_S)
    await _check(where, seen, tally, prefix="1s:")
    if planned.point == "rollback" and seen.ending == ("cancelled", "user"):
        tally.add(await rollback_violations(where, seen, message))


async def _stop_at(
    stream: RunStream, planned: Planned, stopper: httpx.AsyncClient, tally: Tally
) -> bool:
    """Read the run up to its stop point, stop it, read to its end; whether the client left."""
    run_id = stream.seen.run_id
    body: dict[str, Any] = {}
    match planned.point:
        case "before_first_event":
            pass
        case "mid_text" | "twice" | "stop_and_disconnect" | "after_turn":
            await _read_tokens(stream, planned.tokens_before_stop)
            if planned.point == "after_turn":
                body = {"mode": "after_turn"}
        case "mid_tool_async" | "mid_tool_sync":
            await stream.read_until(lambda frame: frame.event == "tool_call_started")
            await anyio.sleep(planned.settle_s)
        case "rollback":
            await _read_tokens(stream, planned.tokens_before_stop)
            body = {"action": "rollback"}
    if planned.point == "stop_and_disconnect":
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel, stopper, run_id, body, tally)
            await stream.response.aclose()
        return True
    if planned.point == "twice":
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel, stopper, run_id, body, tally)
            tg.start_soon(_cancel, stopper, run_id, body, tally)
            await stream.read_to_end()
        return False
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel, stopper, run_id, body, tally)
        await stream.read_to_end()
    return False


async def _read_tokens(stream: RunStream, count: int) -> None:
    for _ in range(count):
        await stream.read_until(lambda frame: frame.event == "text_delta")


async def _cancel(
    client: httpx.AsyncClient, run_id: str, body: dict[str, Any], tally: Tally
) -> None:
    response = await client.post(f"/runs/{run_id}/cancel", json=body)
    if response.status_code != 200:
        detail = f"{response.status_code}: {response.text[:200]}"
        tally.add([Violation("cancel_refused", run_id, detail)])


async def _check(where: Storm, seen: Seen, tally: Tally, *, prefix: str) -> None:
    found: list[Violation] = []
    if seen.ending is not None:
        found += await check_reads(where.reader, seen)
    found += check_stored(seen, await read_stored(where.engine, seen.run_id))
    tally.add(found, prefix=prefix)


async def rollback_violations(where: Storm, seen: Seen, message: str) -> list[Violation]:
    """The session's next turn must not have the rolled-back prompt in its model input."""
    recall = Seen()
    body = {"session_id": seen.session_id}
    async with start_run(where.driver, f"recall #{seen.run_id}", recall, **body) as stream:
        if stream is None:
            detail = f"the next turn was refused: {recall.status_code}"
            return [Violation("rollback_next_turn", seen.run_id, detail)]
        await stream.read_to_end()
    if message in recall.text.split(RECALL_SEPARATOR):
        return [Violation("rollback_in_history", seen.run_id, f"the model was given {message!r}")]
    return []
