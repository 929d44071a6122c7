"""The in-process event bus keeps finished runs compactly and boundedly (issue #14)."""

import gc

import anyio
import pytest

from tether.bus.memory import MemoryEventBus
from tether.ids import RunId
from tether.storage.store import StoredEvent

pytestmark = pytest.mark.anyio


def events(run_id: RunId, count: int) -> list[StoredEvent]:
    kinds = ["run_started", *["text_delta"] * (count - 2), "run_finished"]
    return [
        StoredEvent(run_id=run_id, seq=seq, kind=kind, payload=f'{{"seq": {seq}}}')
        for seq, kind in enumerate(kinds)
    ]


async def test_finished_run_reads_back_the_same_events_from_any_seq() -> None:
    bus, run_id = MemoryEventBus(), RunId("r1")
    sent = events(run_id, 50)
    for event in sent:
        bus.publish(event)
    assert await bus.read(run_id, -1, timeout_s=0) == sent
    assert await bus.read(run_id, 41, timeout_s=0) == sent[42:]
    assert await bus.last_seqs([run_id]) == {run_id: 49}


async def test_finished_run_holds_no_object_the_collector_tracks() -> None:
    bus, run_id = MemoryEventBus(), RunId("r1")
    for event in events(run_id, 200):
        bus.publish(event)
    log = bus._logs[run_id]  # pyright: ignore[reportPrivateUsage]
    assert log.events is None
    gc.collect()  # the collector untracks a tuple of strings the first time it sees it
    assert not gc.is_tracked(log.kinds)
    assert not gc.is_tracked(log.payloads)


async def test_live_reader_wakes_on_publish_and_at_the_end() -> None:
    bus, run_id = MemoryEventBus(), RunId("r1")
    sent = events(run_id, 3)
    bus.publish(sent[0])
    got: list[list[StoredEvent] | None] = []

    async def reader(after: int) -> None:
        got.append(await bus.read(run_id, after, timeout_s=5))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, 0)
            await anyio.wait_all_tasks_blocked()
            bus.publish(sent[1])
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, 1)
            await anyio.wait_all_tasks_blocked()
            bus.publish(sent[2])
    assert got == [[sent[1]], [sent[2]]]


async def test_oldest_runs_are_dropped_past_max_runs() -> None:
    bus = MemoryEventBus(max_runs=2)
    for name in ("a", "b", "c"):
        for event in events(RunId(name), 3):
            bus.publish(event)
    assert await bus.read(RunId("a"), -1, timeout_s=0) is None
    assert await bus.last_seqs([RunId("b"), RunId("c")]) == {RunId("b"): 2, RunId("c"): 2}
