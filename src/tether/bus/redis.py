"""Redis buses: stop intents and live events shared by every worker.

Layout, all under the ``tether:`` prefix:

- ``tether:stop:{run_id}``: string, the JSON of the run's first ``CancelRequest`` (``SET NX``,
  expires after a day).
- ``tether:stop``: pub/sub channel carrying ``{"run_id": ..., "request": {...}}`` for every
  request. Each process holds one subscription, read by one background task that dispatches to
  the local watchers by run id.
- ``tether:events:{run_id}``: stream; entry id ``{seq + 1}-0`` (ids must be above ``0-0``),
  fields ``kind`` and ``payload``; trimmed to about 10,000 entries, expires an hour after its
  last write.

Guarantees:

- A stop reaches its run's watcher on any worker, even one sent before ``watch``: the key is
  written before the publish, and ``watch`` subscribes before it reads the key. The first
  request wins the key; every request is still pushed, so a later ``now`` can escalate an
  ``after_turn`` stop, as with the memory bus. A watcher sees the first intent first, and each
  distinct request at most once; a later request still in flight when the watch starts may
  follow it (the memory bus would drop it), which can only escalate.
- When the subscription drops (or stays silent through a PING), the reader reconnects with
  bounded backoff, logging at WARNING, and re-reads the keys of every watched run, so a first
  intent sent meanwhile still arrives. While Redis is down, ``watch`` doesn't delay the run.
  A worker may also start while Redis is down (``is_down_fatal=False``): it begins in that
  same degraded state and recovers the same way.
- Every command is bounded (socket timeouts plus ``anyio.fail_after``), and blocking event
  reads use their own pool, so viewers can't starve the stop path.
- ``read`` returns only events contiguous from ``after_seq + 1``, or ``None`` when it can't.
- ``last_seqs`` is the seq of each stream's last entry: what any worker wrote, so recovery can
  put a lost run's terminal event after everything its dead worker got to Redis.

Deliberately not done:

- No retry loop when sending a stop: after redis-py's one quick reconnect, ``request_stop``
  raises ``StorageError``. The stop is already in the database, which the owner polls; that
  poll also covers an escalation pushed while a worker was not subscribed.
- Events are best effort. ``publish`` never waits or fails: it appends to a bounded outbox
  (dropping the oldest on overflow) that a background task flushes. The store is the system of
  record; a reader that meets a gap, an outage or an unknown run gets ``None`` and reads it.
- Keys are never deleted when a watch ends: they expire (a run is watched once).
"""

import logging
import os
import socket
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import anyio
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError, ResponseError

from tether.bus.base import StopCallback
from tether.errors import StorageError
from tether.ids import RunId
from tether.records import CancelRequest
from tether.storage.store import StoredEvent

log = logging.getLogger(__name__)

STOP_CHANNEL: Final = "tether:stop"
STOP_TTL_S: Final = 24 * 3600
STREAM_MAXLEN: Final = 10_000
STREAM_TTL_S: Final = 3600
MAX_OUTBOX: Final = 100_000

SOCKET_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 2.0
COMMAND_TIMEOUT_S: Final = 6.0
"""Hard bound on one command, pool wait and connect included (socket timeouts bound each part)."""
SUBSCRIBE_WAIT_S: Final = 2.0
HEARTBEAT_S: Final = 15.0
"""A subscription silent this long is pinged; silent as long again, it is presumed dead."""
RECONNECT_MIN_S: Final = 0.1
RECONNECT_MAX_S: Final = 5.0
BLOCK_SLICE_S: Final = 3.0
"""Longest single XREAD BLOCK: under ``SOCKET_TIMEOUT_S``, so a healthy wait never times out."""
READ_BATCH: Final = 1000
FLUSH_BATCH: Final = 1000
MAX_COMMAND_CONNECTIONS: Final = 64
MAX_READER_CONNECTIONS: Final = 256

_MAX_REMEMBERED: Final = 16
"""Requests a watcher remembers, to call it once per request."""

_FAILURES: Final = (RedisError, OSError)  # OSError covers TimeoutError from fail_after
# The pyright ignores below are for redis-py's unannotated ``**kwargs``, nothing else.


@dataclass(frozen=True, slots=True, kw_only=True)
class _StopMessage:
    run_id: RunId
    request: CancelRequest


_INTENT: TypeAdapter[CancelRequest] = TypeAdapter(CancelRequest)
_MESSAGE: TypeAdapter[_StopMessage] = TypeAdapter(_StopMessage)


def client_name() -> str:
    """The name this process's connections carry in ``CLIENT LIST``: ``tether:{host}:{pid}``."""
    return f"tether:{socket.gethostname()}:{os.getpid()}"


def stop_key(run_id: RunId) -> str:
    """The Redis key holding a run's first stop request."""
    return f"tether:stop:{run_id}"


def stream_key(run_id: RunId) -> str:
    """The Redis stream holding a run's live events."""
    return f"tether:events:{run_id}"


def _entry_id(seq: int) -> str:
    return f"{seq + 1}-0"


@asynccontextmanager
async def open_redis_buses(
    url: str, *, max_outbox: int = MAX_OUTBOX, is_down_fatal: bool = True
) -> AsyncGenerator[tuple["RedisCancelBus", "RedisEventBus"]]:
    """Connect to Redis and run both buses' background tasks until exit.

    Stops, key reads and event flushes share one small pool; blocking event reads get their own,
    so any number of viewers can't delay a stop.

    With ``is_down_fatal=False`` (what a worker uses), a Redis that doesn't answer at start-up
    is only logged at WARNING: the buses start degraded, exactly as in an outage later, and
    recover when Redis does. A malformed URL still raises.

    Raises:
        StorageError: Redis did not answer a PING at start-up and ``is_down_fatal`` (a wrong
            URL fails fast; an outage later only degrades the buses).
    """
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "decode_responses": True,
        # Named, so an operator (and a test) can tell this process's connections in CLIENT LIST.
        "client_name": client_name(),
        # One quick reconnect hides a stale pooled connection; longer outages are ours to handle.
        # The asyncio client needs the asyncio Retry: given the synchronous one, redis 8 replaces
        # it with its own default policy (and warns), so ours would not be the one in force.
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), retries=2),
    }
    commands = Redis.from_pool(
        BlockingConnectionPool.from_url(  # pyright: ignore[reportUnknownMemberType]
            url, max_connections=MAX_COMMAND_CONNECTIONS, timeout=COMMAND_TIMEOUT_S, **options
        )
    )
    readers = Redis.from_pool(
        ConnectionPool.from_url(  # pyright: ignore[reportUnknownMemberType]
            url, max_connections=MAX_READER_CONNECTIONS, **options
        )
    )
    try:
        await _check_reachable(commands, url, is_down_fatal=is_down_fatal)
        cancel_bus = RedisCancelBus(commands)
        event_bus = RedisEventBus(commands, readers, max_outbox=max_outbox)
        # Deliberate: yielding inside the task group is safe here, as this is only ever entered
        # as a context manager, never iterated.
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_bus.run_subscriber)
            tg.start_soon(event_bus.run_flusher)
            try:
                yield cancel_bus, event_bus
            finally:
                tg.cancel_scope.cancel()
        # Best effort, on a clean exit only: viewers fall back to the store for anything lost.
        try:
            with anyio.move_on_after(COMMAND_TIMEOUT_S, shield=True):
                await event_bus.flush_pending()
        except _FAILURES as exc:
            log.warning("could not flush events to Redis on exit: %s", _why(exc))
    finally:
        for client in (readers, commands):
            with anyio.move_on_after(COMMAND_TIMEOUT_S, shield=True):
                await client.aclose()


async def _check_reachable(client: Redis, url: str, *, is_down_fatal: bool) -> None:
    try:
        with anyio.fail_after(COMMAND_TIMEOUT_S):
            await client.ping()  # pyright: ignore[reportUnknownMemberType]
    except _FAILURES as exc:
        problem = f"Redis at {_redacted(url)} is unreachable: {_why(exc)}"
        if is_down_fatal:
            raise StorageError(problem) from exc
        log.warning(
            "%s; starting without it: stops land through the database heartbeat, and viewers "
            "of other workers' runs read events from the store, until it answers",
            problem,
        )


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _why(exc: BaseException) -> str:
    # redis-py's repr of its errors hides the message ("network:ConnectionError").
    return f"{type(exc).__name__}: {exc}"


# --- stops ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Watcher:
    on_stop: StopCallback
    delivered: list[CancelRequest] = field(default_factory=list[CancelRequest])
    pending: list[CancelRequest] | None = field(default_factory=list[CancelRequest])
    """Requests pushed before the key was read, delivered after it; None once the key was read."""

    def push(self, request: CancelRequest) -> None:
        if self.pending is None:
            self._deliver(request)
        elif len(self.pending) < _MAX_REMEMBERED:
            self.pending.append(request)

    def start(self, intent: CancelRequest | None) -> None:
        """The key was read (``intent``): deliver it first, then what was pushed meanwhile."""
        pending, self.pending = self.pending or [], None
        for request in [intent, *pending] if intent is not None else pending:
            self._deliver(request)

    def _deliver(self, request: CancelRequest) -> None:
        # The key and the channel can carry the same request: call the watcher once for it.
        if request in self.delivered:
            return
        if len(self.delivered) >= _MAX_REMEMBERED:
            del self.delivered[0]
        self.delivered.append(request)
        self.on_stop(request)


class RedisCancelBus:
    """Delivers stops across workers: a durable key per run, pushed over one channel."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._watchers: dict[RunId, list[_Watcher]] = {}
        self._state: Literal["connecting", "up", "down"] = "connecting"
        self._state_changed = anyio.Event()

    async def request_stop(self, run_id: RunId, request: CancelRequest) -> None:
        """Record ``request`` unless the run already has one, then push it to every worker.

        Raises:
            StorageError: Redis failed or did not answer in time.
        """
        message = _MESSAGE.dump_json(_StopMessage(run_id=run_id, request=request))
        try:
            with anyio.fail_after(COMMAND_TIMEOUT_S):
                # Deliberate: two round trips, not a pipeline, so nothing is pushed unless the
                # key was written (or already held the first intent).
                await self._client.set(
                    stop_key(run_id), _INTENT.dump_json(request), nx=True, ex=STOP_TTL_S
                )
                await self._client.publish(STOP_CHANNEL, message)  # pyright: ignore[reportUnknownMemberType]
        except _FAILURES as exc:
            raise StorageError(
                f"could not send the stop of run {run_id} through Redis: {_why(exc)}", run_id=run_id
            ) from exc

    @asynccontextmanager
    async def watch(self, run_id: RunId, on_stop: StopCallback) -> AsyncGenerator[None]:
        watcher = _Watcher(on_stop)
        self._watchers.setdefault(run_id, []).append(watcher)
        try:
            with anyio.move_on_after(SUBSCRIBE_WAIT_S):
                while self._state == "connecting":
                    await self._state_changed.wait()
            # Not subscribed: don't delay the run. Once subscribed, the reader re-reads the key
            # of every started watcher, this one included.
            intent = None
            if self._state == "up":
                intent = (await self._read_intents([run_id])).get(run_id)
            watcher.start(intent)
            yield
        finally:
            watchers = self._watchers[run_id]
            watchers.remove(watcher)
            if not watchers:
                del self._watchers[run_id]

    async def run_subscriber(self) -> None:
        """Hold this process's subscription for ever, reconnecting with bounded backoff."""
        backoff_s = RECONNECT_MIN_S
        while True:
            pubsub = self._client.pubsub()  # pyright: ignore[reportUnknownMemberType]
            try:
                await self._listen(pubsub)
            except _FAILURES as exc:
                if self._state == "up":
                    backoff_s = RECONNECT_MIN_S
                self._set_state("down")
                log.warning("stop channel lost (%s); reconnecting in %.1fs", _why(exc), backoff_s)
            finally:
                with anyio.move_on_after(COMMAND_TIMEOUT_S, shield=True):
                    await pubsub.aclose()
            await anyio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def _listen(self, pubsub: PubSub) -> None:
        with anyio.fail_after(COMMAND_TIMEOUT_S):
            await pubsub.subscribe(STOP_CHANNEL)
        silent_since, pinged = anyio.current_time(), False
        while True:
            with anyio.fail_after(COMMAND_TIMEOUT_S):
                message = cast("dict[str, Any] | None", await pubsub.get_message(timeout=1.0))
            now = anyio.current_time()
            if message is None:
                if now - silent_since < HEARTBEAT_S:
                    continue
                if pinged:
                    raise TimeoutError(f"no answer on {STOP_CHANNEL} for {2 * HEARTBEAT_S}s")
                with anyio.fail_after(COMMAND_TIMEOUT_S):
                    await pubsub.ping()  # pyright: ignore[reportUnknownMemberType]
                silent_since, pinged = now, True
                continue
            silent_since, pinged = now, False
            if message["type"] == "message":
                self._dispatch(message["data"])
            elif message["type"] == "subscribe":
                await self._on_subscribed()

    def _set_state(self, state: Literal["up", "down"]) -> None:
        self._state = state
        changed, self._state_changed = self._state_changed, anyio.Event()
        changed.set()

    async def _on_subscribed(self) -> None:
        self._set_state("up")
        # Stops sent while we were not subscribed: their first intent is in the keys.
        ready = [
            run_id for run_id, ws in self._watchers.items() if any(w.pending is None for w in ws)
        ]
        for run_id, intent in (await self._read_intents(ready)).items():
            self._push(run_id, intent)

    def _dispatch(self, data: str) -> None:
        try:
            message = _MESSAGE.validate_json(data)
        except ValidationError:
            log.warning("ignored a malformed message on %s: %.200r", STOP_CHANNEL, data)
            return
        self._push(message.run_id, message.request)

    def _push(self, run_id: RunId, request: CancelRequest) -> None:
        for watcher in list(self._watchers.get(run_id, ())):
            try:
                watcher.push(request)
            except Exception:
                # One failing callback must not end stop delivery for every other run.
                log.exception("stop callback of run %s failed", run_id)

    async def _read_intents(self, run_ids: list[RunId]) -> dict[RunId, CancelRequest]:
        """The first intents recorded for ``run_ids``; none of them if Redis fails."""
        if not run_ids:
            return {}
        try:
            with anyio.fail_after(COMMAND_TIMEOUT_S):
                values = await self._client.mget([stop_key(run_id) for run_id in run_ids])
        except _FAILURES as exc:
            log.warning("could not read stop keys of %d runs: %s", len(run_ids), _why(exc))
            return {}
        intents: dict[RunId, CancelRequest] = {}
        for run_id, value in zip(run_ids, values, strict=True):
            if value is None:
                continue
            try:
                intents[run_id] = _INTENT.validate_json(value)
            except ValidationError:
                log.warning("ignored the malformed stop key of run %s", run_id)
        return intents


# --- events ---------------------------------------------------------------------------------


class RedisEventBus:
    """Live events in one stream per run, written behind the hot path, readable by any worker."""

    def __init__(self, client: Redis, readers: Redis, *, max_outbox: int = MAX_OUTBOX) -> None:
        self._client = client
        self._readers = readers
        self._outbox: deque[StoredEvent] = deque()
        self._max_outbox = max_outbox
        self._dropped = 0
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._is_read_failing = False

    def publish(self, event: StoredEvent) -> None:
        if len(self._outbox) >= self._max_outbox:
            self._outbox.popleft()
            self._count_dropped(1)
        self._outbox.append(event)
        self._wake.set()
        if self._idle.is_set():
            self._idle = anyio.Event()

    async def wait_flushed(self) -> None:
        """Wait until every event published so far is written to Redis (or dropped).

        Unbounded while Redis fails: callers put it under a timeout.
        """
        await self._idle.wait()

    def _count_dropped(self, count: int) -> None:
        if not self._dropped:
            log.warning("event outbox full (%d); dropping the oldest events", self._max_outbox)
        self._dropped += count

    async def run_flusher(self) -> None:
        """Write the outbox to Redis whenever it has events, backing off while Redis fails."""
        backoff_s = RECONNECT_MIN_S
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.flush_pending()
                backoff_s = RECONNECT_MIN_S
                self._idle.set()
            except _FAILURES as exc:
                log.warning(
                    "could not write events to Redis (%s); retry in %.1fs", _why(exc), backoff_s
                )
                self._wake.set()
                await anyio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def flush_pending(self) -> None:
        """Write everything in the outbox; on failure the unwritten batch goes back in front."""
        while self._outbox:
            batch = [self._outbox.popleft() for _ in range(min(FLUSH_BATCH, len(self._outbox)))]
            try:
                await self._write(batch)
            except BaseException:
                self._requeue(batch)
                raise
        if self._dropped:
            log.warning("event outbox drained; %d events were dropped", self._dropped)
            self._dropped = 0

    def _requeue(self, batch: list[StoredEvent]) -> None:
        room = self._max_outbox - len(self._outbox)
        if len(batch) > room:
            self._count_dropped(len(batch) - room)
            batch = batch[len(batch) - room :]
        self._outbox.extendleft(reversed(batch))

    async def _write(self, batch: Iterable[StoredEvent]) -> None:
        keys: set[str] = set()
        with anyio.fail_after(COMMAND_TIMEOUT_S):
            async with self._client.pipeline(transaction=False) as pipe:
                for event in batch:
                    key = stream_key(event.run_id)
                    keys.add(key)
                    pipe.xadd(
                        key,
                        {"kind": event.kind, "payload": event.payload},
                        id=_entry_id(event.seq),
                        maxlen=STREAM_MAXLEN,
                        approximate=True,
                    )
                for key in keys:
                    pipe.expire(key, STREAM_TTL_S)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        # Explicit ids make a retried write idempotent: Redis rejects an id it already has.
        rejected = sum(isinstance(result, ResponseError) for result in results)
        if rejected:
            log.debug("Redis rejected %d of %d event writes", rejected, len(results))

    async def read(
        self, run_id: RunId, after_seq: int, *, timeout_s: float
    ) -> list[StoredEvent] | None:
        try:
            events = await self._read(run_id, after_seq, timeout_s=timeout_s)
        except _FAILURES as exc:
            if not self._is_read_failing:
                log.warning("could not read events from Redis: %s", _why(exc))
            self._is_read_failing = True
            return None
        self._is_read_failing = False
        return events

    async def _read(
        self, run_id: RunId, after_seq: int, *, timeout_s: float
    ) -> list[StoredEvent] | None:
        key = stream_key(run_id)
        # XRANGE's min is inclusive, XREAD's id exclusive: both mean "after after_seq".
        seen = max(after_seq, -1)
        first_id, last_id = _entry_id(seen + 1), _entry_id(seen)
        deadline = anyio.current_time() + timeout_s
        while True:
            with anyio.fail_after(COMMAND_TIMEOUT_S):
                async with self._readers.pipeline(transaction=False) as pipe:
                    pipe.xrange(key, first_id, "+", count=READ_BATCH)
                    pipe.exists(key)
                    entries, exists = await pipe.execute()
            if not exists:
                return None
            if entries:
                return _contiguous(run_id, entries, after_seq)
            remaining_s = deadline - anyio.current_time()
            if remaining_s <= 0:
                return []
            block_s = min(remaining_s, BLOCK_SLICE_S)
            with anyio.fail_after(block_s + COMMAND_TIMEOUT_S):
                # Only a wake-up: the entries are fetched by the XRANGE above, whose reply
                # has the same shape under RESP2 and RESP3.
                await self._readers.xread(
                    {key: last_id}, count=1, block=max(1, int(block_s * 1000))
                )

    async def last_seqs(self, run_ids: Sequence[RunId]) -> dict[RunId, int]:
        if not run_ids:
            return {}
        try:
            with anyio.fail_after(COMMAND_TIMEOUT_S):
                async with self._client.pipeline(transaction=False) as pipe:
                    for run_id in run_ids:
                        pipe.xrevrange(stream_key(run_id), "+", "-", count=1)
                    replies: list[list[tuple[str, Any]]] = await pipe.execute()
        except _FAILURES as exc:
            log.warning("could not read the last events of %d runs: %s", len(run_ids), _why(exc))
            return {}
        return {
            run_id: int(entries[0][0].partition("-")[0]) - 1
            for run_id, entries in zip(run_ids, replies, strict=True)
            if entries
        }


def _contiguous(
    run_id: RunId, entries: list[tuple[str, dict[str, str]]], after_seq: int
) -> list[StoredEvent] | None:
    """The events that follow ``after_seq`` without a gap, or None if the first one is missing."""
    events: list[StoredEvent] = []
    expected = after_seq + 1
    for entry_id, fields in entries:
        seq = int(entry_id.partition("-")[0]) - 1
        kind, payload = fields.get("kind"), fields.get("payload")
        if seq != expected or kind is None or payload is None:
            break
        events.append(StoredEvent(run_id=run_id, seq=seq, kind=kind, payload=payload))
        expected += 1
    return events or None
