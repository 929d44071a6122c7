"""The ``CancelBus`` / ``EventBus`` contract, run against the memory and the Redis buses.

Redis comes from ``TETHER_TEST_REDIS_URL`` (default: the local server, database 0). Tests share
it with others, so they never flush it: every test uses its own run ids. When the server is
unreachable its tests are skipped, or fail if ``REQUIRE_SERVICES=1`` (CI).
"""

import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from uuid import uuid4

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tether.bus.base import CancelBus, EventBus
from tether.bus.memory import MemoryCancelBus, MemoryEventBus
from tether.bus.redis import (
    RedisCancelBus,
    RedisEventBus,
    open_redis_buses,
    stop_key,
    stream_key,
)
from tether.errors import StorageError
from tether.ids import RunId
from tether.records import CancelRequest
from tether.storage.store import StoredEvent

pytestmark = pytest.mark.anyio

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_URL = "redis://127.0.0.1:1/0"
_REDIS_PROBLEM = pytest.StashKey[str]()  # "" once Redis answered


# --- fixtures -------------------------------------------------------------------------------


async def redis_url(config: pytest.Config) -> str:
    """The test server's URL, or skip (fail under ``REQUIRE_SERVICES=1``) if it is down."""
    url = os.environ.get("TETHER_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if _REDIS_PROBLEM not in config.stash:
        config.stash[_REDIS_PROBLEM] = await _probe(url)
    if problem := config.stash[_REDIS_PROBLEM]:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis required but unreachable: {problem}")
        pytest.skip(f"Redis unreachable: {problem}")
    return url


def plain_client(url: str) -> Redis:
    """A client of our own, to probe the server and look at what the buses wrote."""
    return Redis.from_url(  # pyright: ignore[reportUnknownMemberType]
        url, socket_timeout=2, socket_connect_timeout=1, decode_responses=True
    )


async def _probe(url: str) -> str:
    client = plain_client(url)
    try:
        with anyio.fail_after(3):
            await client.ping()  # pyright: ignore[reportUnknownMemberType]
    except (RedisError, OSError) as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return ""


@dataclass(frozen=True, slots=True)
class Worker:
    cancel: CancelBus
    events: EventBus


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def worker(request: pytest.FixtureRequest) -> AsyncGenerator[Worker]:
    if request.param == "memory":
        yield Worker(MemoryCancelBus(), MemoryEventBus())
        return
    async with open_redis_buses(await redis_url(request.config)) as (cancel, events):
        yield Worker(cancel, events)


@pytest.fixture
async def url(request: pytest.FixtureRequest) -> str:
    return await redis_url(request.config)


@pytest.fixture
async def admin(url: str) -> AsyncGenerator[Redis]:
    """A plain client, to look at and clean up what the buses wrote."""
    client = plain_client(url)
    yield client
    await client.aclose()


def new_run_id() -> RunId:
    return RunId(f"test-{uuid4().hex}")


@dataclass
class Recorder:
    """A stop callback that remembers what it got and wakes a waiter."""

    got: list[CancelRequest] = field(default_factory=list[CancelRequest])
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def __call__(self, request: CancelRequest) -> None:
        self.got.append(request)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> list[CancelRequest]:
        with anyio.fail_after(5):
            while len(self.got) < count:
                await self._changed.wait()
        return self.got


async def barrier(bus: CancelBus) -> None:
    """Return once every stop requested before it has been delivered.

    A stop of another run, watched here, is delivered after any stop sent earlier: Redis pushes
    one channel's messages in order, and the memory bus delivers synchronously.
    """
    run_id, recorder = new_run_id(), Recorder()
    async with bus.watch(run_id, recorder):
        await bus.request_stop(run_id, CancelRequest(reason="user", by="barrier"))
        await recorder.wait_for(1)


async def flushed(bus: EventBus) -> None:
    if isinstance(bus, RedisEventBus):
        with anyio.fail_after(5):
            await bus.wait_flushed()


def event(run_id: RunId, seq: int) -> StoredEvent:
    return StoredEvent(run_id=run_id, seq=seq, kind="text_delta", payload=f'{{"seq":{seq}}}')


# --- CancelBus ------------------------------------------------------------------------------


async def test_stop_sent_before_watch_is_delivered_on_watch(worker: Worker) -> None:
    run_id, recorder = new_run_id(), Recorder()
    request = CancelRequest(reason="user", mode="after_turn", by="alice")
    await worker.cancel.request_stop(run_id, request)
    async with worker.cancel.watch(run_id, recorder):
        assert recorder.got == [request]


async def test_stop_sent_during_watch_is_delivered_once(worker: Worker) -> None:
    run_id, recorder = new_run_id(), Recorder()
    request = CancelRequest(reason="user", by="alice")
    async with worker.cancel.watch(run_id, recorder):
        await worker.cancel.request_stop(run_id, request)
        assert await recorder.wait_for(1) == [request]
        await barrier(worker.cancel)
        assert recorder.got == [request]


async def test_first_intent_wins_for_a_late_watcher(worker: Worker) -> None:
    run_id, recorder = new_run_id(), Recorder()
    first = CancelRequest(reason="user", mode="after_turn", by="alice")
    await worker.cancel.request_stop(run_id, first)
    await worker.cancel.request_stop(run_id, CancelRequest(reason="timeout", by="policy"))
    async with worker.cancel.watch(run_id, recorder):
        await barrier(worker.cancel)
        # Deliberate: only the first is pinned. A later request still in flight when the watch
        # starts may arrive too (over Redis), and may only escalate what the first decided.
        assert recorder.got[0] == first


async def test_later_stop_during_watch_is_delivered_after_the_first(worker: Worker) -> None:
    """A later ``now`` must reach the run, so it can escalate an ``after_turn`` stop."""
    run_id, recorder = new_run_id(), Recorder()
    first = CancelRequest(reason="user", mode="after_turn", by="alice")
    escalation = CancelRequest(reason="user", mode="now", by="alice")
    async with worker.cancel.watch(run_id, recorder):
        await worker.cancel.request_stop(run_id, first)
        await worker.cancel.request_stop(run_id, escalation)
        assert await recorder.wait_for(2) == [first, escalation]


async def test_stop_of_one_run_does_not_call_watchers_of_others(worker: Worker) -> None:
    run_id, other_id = new_run_id(), new_run_id()
    recorder, other = Recorder(), Recorder()
    async with worker.cancel.watch(run_id, recorder), worker.cancel.watch(other_id, other):
        await worker.cancel.request_stop(run_id, CancelRequest(reason="user"))
        await recorder.wait_for(1)
        await barrier(worker.cancel)
        assert other.got == []


async def test_stop_after_watch_exits_calls_nothing(worker: Worker) -> None:
    run_id, recorder = new_run_id(), Recorder()
    async with worker.cancel.watch(run_id, recorder):
        pass
    await worker.cancel.request_stop(run_id, CancelRequest(reason="user"))
    await barrier(worker.cancel)
    assert recorder.got == []


async def test_two_watchers_of_one_run_both_get_the_stop(worker: Worker) -> None:
    run_id, first, second = new_run_id(), Recorder(), Recorder()
    request = CancelRequest(reason="user")
    async with worker.cancel.watch(run_id, first), worker.cancel.watch(run_id, second):
        await worker.cancel.request_stop(run_id, request)
        assert await first.wait_for(1) == [request]
        assert await second.wait_for(1) == [request]


# --- EventBus -------------------------------------------------------------------------------


async def test_events_are_read_back_in_order_from_any_seq(worker: Worker) -> None:
    run_id = new_run_id()
    events = [event(run_id, seq) for seq in range(5)]
    for e in events:
        worker.events.publish(e)
    await flushed(worker.events)
    for after_seq in range(-1, 4):
        with anyio.fail_after(5):
            got = await worker.events.read(run_id, after_seq, timeout_s=5)
        assert got == events[after_seq + 1 :]


async def test_read_waits_for_the_next_event(worker: Worker) -> None:
    run_id = new_run_id()
    first, second = event(run_id, 0), event(run_id, 1)
    worker.events.publish(first)
    await flushed(worker.events)
    got: list[list[StoredEvent] | None] = []

    async def read() -> None:
        got.append(await worker.events.read(run_id, 0, timeout_s=5))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            worker.events.publish(second)
    assert got == [[second]]


async def test_read_at_the_end_returns_nothing_after_the_timeout(worker: Worker) -> None:
    run_id = new_run_id()
    worker.events.publish(event(run_id, 0))
    await flushed(worker.events)
    with anyio.fail_after(5):
        assert await worker.events.read(run_id, 0, timeout_s=0.1) == []


async def test_read_of_an_unknown_run_returns_none_at_once(worker: Worker) -> None:
    with anyio.fail_after(1):
        assert await worker.events.read(new_run_id(), -1, timeout_s=30) is None


async def test_read_before_the_first_kept_event_returns_none(worker: Worker) -> None:
    run_id = new_run_id()
    events = [event(run_id, seq) for seq in range(3, 6)]
    for e in events:
        worker.events.publish(e)
    await flushed(worker.events)
    with anyio.fail_after(5):
        assert await worker.events.read(run_id, 0, timeout_s=5) is None
        assert await worker.events.read(run_id, 2, timeout_s=5) == events


async def test_last_seqs_are_the_last_seq_of_each_known_run(worker: Worker) -> None:
    first, second, unknown = new_run_id(), new_run_id(), new_run_id()
    for e in [event(first, 0), event(first, 1), event(first, 2), event(second, 0)]:
        worker.events.publish(e)
    await flushed(worker.events)
    with anyio.fail_after(5):
        assert await worker.events.last_seqs([first, second, unknown]) == {first: 2, second: 0}
        assert await worker.events.last_seqs([]) == {}


async def test_event_at_or_below_the_last_seq_is_ignored(worker: Worker) -> None:
    run_id = new_run_id()
    events = [event(run_id, seq) for seq in range(3)]
    for e in events:
        worker.events.publish(e)
    worker.events.publish(StoredEvent(run_id=run_id, seq=1, kind="run_finished", payload="{}"))
    await flushed(worker.events)
    with anyio.fail_after(5):
        assert await worker.events.read(run_id, -1, timeout_s=5) == events
        assert await worker.events.last_seqs([run_id]) == {run_id: 2}


async def test_event_after_a_gap_is_kept_and_no_read_spans_the_gap(worker: Worker) -> None:
    """A lost run's terminal event follows events that never reached the bus (issue #8)."""
    run_id = new_run_id()
    before = [event(run_id, seq) for seq in range(3)]
    after_gap = event(run_id, 5)
    for e in [*before, after_gap]:
        worker.events.publish(e)
    await flushed(worker.events)
    with anyio.fail_after(5):
        assert await worker.events.last_seqs([run_id]) == {run_id: 5}
        assert await worker.events.read(run_id, 4, timeout_s=5) == [after_gap]
        assert await worker.events.read(run_id, 3, timeout_s=5) is None
        assert await worker.events.read(run_id, -1, timeout_s=5) in (None, before)


async def test_event_after_a_gap_wakes_a_reader_waiting_at_the_end(worker: Worker) -> None:
    run_id = new_run_id()
    worker.events.publish(event(run_id, 0))
    await flushed(worker.events)
    got: list[list[StoredEvent] | None] = []

    async def read() -> None:
        got.append(await worker.events.read(run_id, 0, timeout_s=30))

    # Woken at once, not left to time out, and told to read the store for what it missed.
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            worker.events.publish(event(run_id, 3))
    assert got == [None]


# --- Redis only -----------------------------------------------------------------------------

redis_only = pytest.mark.redis


@redis_only
async def test_stop_requested_on_one_worker_reaches_a_watcher_on_another(url: str) -> None:
    run_id, recorder = new_run_id(), Recorder()
    request = CancelRequest(reason="user", by="alice")
    async with open_redis_buses(url) as (owner, _), open_redis_buses(url) as (other, _):
        async with owner.watch(run_id, recorder):
            await other.request_stop(run_id, request)
            assert await recorder.wait_for(1) == [request]
        early_id, early = new_run_id(), Recorder()
        await other.request_stop(early_id, request)
        async with owner.watch(early_id, early):
            assert early.got == [request]


@redis_only
async def test_events_published_on_one_worker_are_read_on_another(url: str) -> None:
    run_id = new_run_id()
    async with open_redis_buses(url) as (_, writer), open_redis_buses(url) as (_, reader):
        writer.publish(event(run_id, 0))
        await flushed(writer)
        with anyio.fail_after(5):
            assert await reader.read(run_id, -1, timeout_s=0) == [event(run_id, 0)]


@redis_only
async def test_stop_key_and_stream_expire(url: str, admin: Redis) -> None:
    run_id = new_run_id()
    async with open_redis_buses(url) as (cancel, events):
        await cancel.request_stop(run_id, CancelRequest(reason="user"))
        events.publish(event(run_id, 0))
        await flushed(events)
    assert 0 < await admin.ttl(stop_key(run_id)) <= 24 * 3600
    assert 0 < await admin.ttl(stream_key(run_id)) <= 3600
    assert await admin.xrange(stream_key(run_id)) == [
        ("1-0", {"kind": "text_delta", "payload": '{"seq":0}'})
    ]


@redis_only
async def test_stop_sent_while_the_subscription_is_down_is_delivered(
    url: str, admin: Redis
) -> None:
    name = f"tether-test-{uuid4().hex[:12]}"
    run_id, recorder = new_run_id(), Recorder()
    request = CancelRequest(reason="user")
    async with (
        open_redis_buses(f"{url}?client_name={name}") as (owner, _),
        open_redis_buses(url) as (other, _),
        owner.watch(run_id, recorder),
    ):
        clients = await admin.client_list()  # pyright: ignore[reportUnknownMemberType]
        [subscription] = [c for c in clients if c["name"] == name and int(c["sub"]) > 0]
        await admin.client_kill_filter(_id=subscription["id"])  # pyright: ignore[reportUnknownMemberType]
        await other.request_stop(run_id, request)
        assert await recorder.wait_for(1) == [request]
        await barrier(owner)
        assert recorder.got == [request]


@redis_only
async def test_dropped_command_connections_are_reconnected_quietly(url: str, admin: Redis) -> None:
    # The buses' own retry policy is in force: redis 8 warns (an error here) when an asyncio client
    # is handed the synchronous Retry, and then silently uses its default policy instead.
    name = f"tether-test-{uuid4().hex[:12]}"
    async with open_redis_buses(f"{url}?client_name={name}") as (cancel, _):
        await cancel.request_stop(new_run_id(), CancelRequest(reason="user"))
        clients = await admin.client_list()  # pyright: ignore[reportUnknownMemberType]
        pooled = [c for c in clients if c["name"] == name and int(c["sub"]) == 0]
        assert pooled
        for client in pooled:
            await admin.client_kill_filter(_id=client["id"])  # pyright: ignore[reportUnknownMemberType]
        run_id = new_run_id()
        with anyio.fail_after(5):
            await cancel.request_stop(run_id, CancelRequest(reason="user", by="after-drop"))
    stored = await admin.get(stop_key(run_id))
    assert isinstance(stored, str)
    assert "after-drop" in stored


@redis_only
async def test_outbox_overflow_drops_the_oldest_events(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = new_run_id()
    events = [event(run_id, seq) for seq in range(5)]
    async with open_redis_buses(url, max_outbox=3) as (_, bus):
        with caplog.at_level(logging.WARNING, logger="tether.bus.redis"):
            for e in events:  # no await in between: the flusher can't run
                bus.publish(e)
            await flushed(bus)
        with anyio.fail_after(5):
            assert await bus.read(run_id, -1, timeout_s=5) is None
            assert await bus.read(run_id, 1, timeout_s=5) == events[2:]
    assert "dropping the oldest events" in caplog.text


@redis_only
async def test_malformed_stop_messages_and_keys_are_ignored(
    url: str, admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    run_id, recorder = new_run_id(), Recorder()
    request = CancelRequest(reason="user")
    async with open_redis_buses(url) as (bus, _):
        await admin.set(stop_key(run_id), "not json", ex=60)
        with caplog.at_level(logging.WARNING, logger="tether.bus.redis"):
            async with bus.watch(run_id, recorder):
                await admin.publish("tether:stop", "not json")  # pyright: ignore[reportUnknownMemberType]
                await bus.request_stop(run_id, request)
                assert await recorder.wait_for(1) == [request]
    assert "malformed stop key" in caplog.text
    assert "malformed message" in caplog.text


@redis_only
async def test_failing_stop_callback_does_not_stop_delivery_to_other_runs(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing_id, run_id, recorder = new_run_id(), new_run_id(), Recorder()

    def explode(request: CancelRequest) -> None:
        raise RuntimeError(f"callback failed on {request.reason}")

    async with (
        open_redis_buses(url) as (owner, _),
        open_redis_buses(url) as (other, _),
        owner.watch(failing_id, explode),
        owner.watch(run_id, recorder),
    ):
        await other.request_stop(failing_id, CancelRequest(reason="user"))
        await other.request_stop(run_id, CancelRequest(reason="user"))
        await recorder.wait_for(1)
    assert f"stop callback of run {failing_id} failed" in caplog.text


@redis_only
async def test_events_written_twice_are_kept_once(url: str) -> None:
    run_id = new_run_id()
    events = [event(run_id, seq) for seq in range(4)]
    async with open_redis_buses(url) as (_, bus):
        for e in events[:3]:
            bus.publish(e)
        await flushed(bus)
        for e in events[1:]:
            bus.publish(e)
        await flushed(bus)
        with anyio.fail_after(5):
            assert await bus.read(run_id, -1, timeout_s=5) == events


async def test_opening_an_unreachable_redis_fails_fast() -> None:
    with anyio.fail_after(10), pytest.raises(StorageError):
        async with open_redis_buses(UNREACHABLE_URL):
            pass


@pytest.fixture
async def unreachable() -> AsyncGenerator[Redis]:
    client = plain_client(UNREACHABLE_URL)
    yield client
    await client.aclose()


async def test_request_stop_when_redis_is_down_raises_storage_error(unreachable: Redis) -> None:
    with anyio.fail_after(10), pytest.raises(StorageError):
        await RedisCancelBus(unreachable).request_stop(new_run_id(), CancelRequest(reason="user"))


async def test_watch_and_read_when_redis_is_down_do_not_fail(unreachable: Redis) -> None:
    bus, events, recorder = (
        RedisCancelBus(unreachable),
        RedisEventBus(unreachable, unreachable),
        Recorder(),
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.run_subscriber)
            async with bus.watch(new_run_id(), recorder):
                assert recorder.got == []
            assert await events.read(new_run_id(), -1, timeout_s=1) is None
            tg.cancel_scope.cancel()


async def test_last_seqs_when_redis_is_down_are_unknown(unreachable: Redis) -> None:
    with anyio.fail_after(10):
        assert await RedisEventBus(unreachable, unreachable).last_seqs([new_run_id()]) == {}


async def test_events_that_failed_to_write_stay_in_the_bounded_outbox(
    unreachable: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = new_run_id()
    bus = RedisEventBus(unreachable, unreachable, max_outbox=3)
    bus.publish(event(run_id, 0))
    bus.publish(event(run_id, 1))
    with anyio.fail_after(10), pytest.raises(RedisError):
        await bus.flush_pending()
    assert "dropping" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="tether.bus.redis"):
        bus.publish(event(run_id, 2))  # fits only if the failed two are back in the outbox...
        bus.publish(event(run_id, 3))  # ...which this one overflows
    assert "dropping the oldest events" in caplog.text
