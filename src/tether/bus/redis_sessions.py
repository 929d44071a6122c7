"""Session signals over Redis: a change in a session wakes its watchers on every worker.

One pub/sub channel, ``tether:sessions``, carries session ids. ``notify`` wakes this process's
watchers at once and queues the id for a background publisher; each process holds one
subscription whose reader wakes its own watchers of the ids it receives.

Deliberately best effort: signals are hints (watchers read the store, and poll it anyway), so
a full queue drops the oldest id, a failed publish is logged and dropped, and while the
subscription is down (reconnecting with bounded backoff) other workers' changes reach this
process's watchers only through their polls.
"""

import logging
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, Final, cast

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from tether.bus.memory import MemorySessionSignals, MemorySessionWatch
from tether.ids import SessionId

log = logging.getLogger(__name__)

SESSION_CHANNEL: Final = "tether:sessions"
MAX_QUEUED: Final = 10_000
SOCKET_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 2.0
COMMAND_TIMEOUT_S: Final = 6.0
LISTEN_SLICE_S: Final = 1.0
HEARTBEAT_S: Final = 15.0
RECONNECT_MIN_S: Final = 0.1
RECONNECT_MAX_S: Final = 5.0

_FAILURES: Final = (RedisError, OSError)  # OSError covers TimeoutError from fail_after


class RedisSessionSignals:
    """``SessionSignals`` shared by every worker on one Redis."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._local = MemorySessionSignals()
        self._queued: deque[SessionId] = deque(maxlen=MAX_QUEUED)
        self._has_queued = anyio.Event()

    def notify(self, session_id: SessionId) -> None:
        self._local.notify(session_id)
        self._queued.append(session_id)
        self._has_queued.set()

    @asynccontextmanager
    async def watch(self, session_id: SessionId) -> AsyncGenerator[MemorySessionWatch]:
        async with self._local.watch(session_id) as watch:
            yield watch

    async def run(self) -> None:
        """Publish queued ids and listen for other workers' ones, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._publish_forever)
            tg.start_soon(self._listen_forever)

    async def _publish_forever(self) -> None:
        while True:
            await self._has_queued.wait()
            self._has_queued = anyio.Event()
            while self._queued:
                session_id = self._queued.popleft()
                try:
                    with anyio.fail_after(COMMAND_TIMEOUT_S):
                        await self._client.publish(SESSION_CHANNEL, session_id)  # pyright: ignore[reportUnknownMemberType]
                except _FAILURES as exc:
                    log.warning("session signal for %s not sent: %s", session_id, exc)

    async def _listen_forever(self) -> None:
        backoff_s = RECONNECT_MIN_S
        while True:
            pubsub = self._client.pubsub()  # pyright: ignore[reportUnknownMemberType]
            try:
                with anyio.fail_after(COMMAND_TIMEOUT_S):
                    await pubsub.subscribe(SESSION_CHANNEL)
                backoff_s = RECONNECT_MIN_S
                await self._listen(pubsub)
            except _FAILURES as exc:
                log.warning("session channel lost (%s); reconnecting in %.1fs", exc, backoff_s)
            finally:
                with anyio.move_on_after(COMMAND_TIMEOUT_S, shield=True):
                    await pubsub.aclose()
            await anyio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def _listen(self, pubsub: PubSub) -> None:
        # A half-open connection never fails a read: silence is answered with a PING, and a
        # PING unanswered as long again counts as a lost connection.
        silent_since, pinged = anyio.current_time(), False
        while True:
            with anyio.fail_after(COMMAND_TIMEOUT_S):
                message = cast(
                    "dict[str, Any] | None", await pubsub.get_message(timeout=LISTEN_SLICE_S)
                )
            now = anyio.current_time()
            if message is not None:
                silent_since, pinged = now, False
                if message["type"] == "message":
                    self._local.notify(SessionId(str(message["data"])))
            elif now - silent_since >= HEARTBEAT_S:
                if pinged:
                    raise TimeoutError(f"no answer on {SESSION_CHANNEL} for {2 * HEARTBEAT_S}s")
                with anyio.fail_after(COMMAND_TIMEOUT_S):
                    await pubsub.ping()  # pyright: ignore[reportUnknownMemberType]
                silent_since, pinged = now, True


@asynccontextmanager
async def open_redis_session_signals(url: str) -> AsyncGenerator[RedisSessionSignals]:
    """Connect to Redis (lazily: an outage only delays signals) and run the signals until exit."""
    client = Redis.from_url(  # pyright: ignore[reportUnknownMemberType]
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        decode_responses=True,
    )
    try:
        signals = RedisSessionSignals(client)
        # Deliberate: yielding inside the task group is safe here, as this is only ever entered
        # as a context manager, never iterated.
        async with anyio.create_task_group() as tg:
            tg.start_soon(signals.run)
            try:
                yield signals
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(COMMAND_TIMEOUT_S, shield=True):
            await client.aclose()
