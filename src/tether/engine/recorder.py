"""Write-behind persistence of what runs stream.

The streaming path only appends to in-memory buffers (no await, no I/O); one flusher task per
process writes every dirty buffer in a single ``Store.write`` transaction every
``flush_interval_s``, and at once when a run asks (tool boundaries, terminal events). So what is
stored is exactly what was streamed, at most one interval behind.

If the store keeps failing, batches are kept and retried with backoff; nothing accepted is
dropped. After ``give_up_s`` of continuous failure, the affected runs are told (their
``on_storage_lost`` callback), so they can end ``failed`` and tell their clients.

A batch the database refuses for its data (``StorageRejected``: it would refuse it again) is
split and written run by run: the run whose data was refused fails with the reason, the others
are written, and only an unavailable store counts towards ``give_up_s``.
"""

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

import anyio
from pydantic import JsonValue

from tether.errors import StorageError, StorageRejected
from tether.events import ToolStatus, Usage
from tether.ids import MessageId, RunId, SessionId, new_id
from tether.records import MessageRecord, MessageStatus, ToolCallRecord, utcnow
from tether.storage.store import Ending, Store, StoredEvent, WriteBatch

log = logging.getLogger(__name__)

HANG_FACTOR = 2
"""A write that lasts ``give_up_s`` times this is abandoned (cut short): the store's own bounds
(busy timeout, retry budget, connect timeout) failed to end it."""


SLOW_WRITE_S = 1.0
"""A write in flight this long makes the worker count as failing (``is_failing``): it refuses
new runs and says it is not ready at once, while the write goes on (issue #15)."""

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
"""Backoff between a finished run's attempts to store its ending."""


class _Message:
    __slots__ = ("completed_at", "created_at", "dirty", "message_id", "parts", "status", "tool_ids")

    def __init__(self) -> None:
        self.message_id = MessageId(new_id("msg"))
        self.created_at = utcnow()
        self.parts: list[str] = []
        self.status: MessageStatus = "streaming"
        self.completed_at: datetime | None = None
        self.tool_ids: list[str] = []
        self.dirty = True


class RunBuffer:
    """One run's unflushed state; the engine's sink writes here, the flusher reads it."""

    def __init__(
        self, run_id: RunId, session_id: SessionId, on_storage_lost: Callable[[str], None]
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.on_storage_lost = on_storage_lost
        self._messages: list[_Message] = []
        self._current: _Message | None = None
        self._calls: dict[str, ToolCallRecord] = {}
        self._dirty_calls: set[str] = set()
        self._events: list[StoredEvent] = []
        self._usage: Usage | None = None
        self._ending: Ending | None = None
        self.is_finished = False
        self.landed = anyio.Event()
        """Set once everything the finished run buffered, its ending included, is stored."""
        self.is_ready = True
        """False until the run's row exists (child runs opened mid-stream are created after)."""

    @property
    def text(self) -> str:
        """All assistant text recorded for the run so far."""
        return "".join("".join(m.parts) for m in self._messages)

    def response_started(self) -> None:
        if self._current is not None:
            self._close(self._current, "complete")
        self._current = None

    def text_delta(self, delta: str) -> None:
        message = self._current
        if message is None or message.tool_ids:
            # Text after tool calls belongs to the next model response.
            message = self._new_message()
        message.parts.append(delta)
        message.dirty = True

    def tool_started(self, call_id: str, tool: str, args: Mapping[str, JsonValue]) -> None:
        message = self._current or self._new_message()
        message.tool_ids.append(call_id)
        self._calls[call_id] = ToolCallRecord(
            call_id=call_id, run_id=self.run_id, message_id=message.message_id, tool=tool, args=args
        )
        self._dirty_calls.add(call_id)

    def tool_finished(
        self,
        call_id: str,
        *,
        status: ToolStatus,
        result: JsonValue,
        error: str | None,
        at: datetime | None,
    ) -> None:
        """Record how the call ended (``at`` None: it has not, it awaits approval)."""
        call = self._calls[call_id]
        self._calls[call_id] = dataclasses.replace(
            call, status=status, result=result, error=error, finished_at=at
        )
        self._dirty_calls.add(call_id)

    def adopt_call(self, call: ToolCallRecord) -> None:
        """Take over a stored call of this run (a paused run's, as it resumes)."""
        self._calls[call.call_id] = call
        self._dirty_calls.add(call.call_id)

    def event(self, event: StoredEvent) -> None:
        self._events.append(event)

    def usage(self, usage: Usage) -> None:
        self._usage = usage

    def end(self, ending: Ending) -> None:
        """The run's terminal state: written in the transaction that stores its last events."""
        self._ending = ending

    def finish(self, last_status: MessageStatus) -> None:
        """Close the run's messages: the last one gets ``last_status``, the others complete."""
        for message in self._messages:
            if message.status == "streaming":
                self._close(message, last_status if message is self._messages[-1] else "complete")

    def open_messages(self) -> list[MessageRecord]:
        """The run's responses still streaming, oldest first (what its ending closes)."""
        return [self._record(m) for m in self._messages if m.status == "streaming"]

    def calls(self, call_ids: Iterable[str]) -> list[ToolCallRecord]:
        return [self._calls[call_id] for call_id in call_ids]

    def close_records(
        self, messages: Iterable[MessageRecord], tool_calls: Iterable[ToolCallRecord]
    ) -> None:
        """Take the run's ending's closed messages and tool calls (``tether.ending.decide``)."""
        by_id = {m.message_id: m for m in self._messages}
        for record in messages:
            message = by_id[record.message_id]
            message.status = record.status
            message.completed_at = record.completed_at
            message.dirty = True
        for call in tool_calls:
            self._calls[call.call_id] = call
            self._dirty_calls.add(call.call_id)

    def replace_terminal(self, old: StoredEvent, new: StoredEvent, ending: Ending) -> None:
        """A terminal event never shown gives way to another (under the recorder's lock)."""
        self._events = [e for e in self._events if e is not old]
        self._events.append(new)
        self._ending = ending

    def take(self, batch: "_BatchBuilder") -> None:
        for m in self._messages:
            if m.dirty:
                m.dirty = False
                batch.messages.append(self._record(m))
        for call_id in self._dirty_calls:
            batch.tool_calls.append(self._calls[call_id])
        self._dirty_calls.clear()
        batch.events.extend(self._events)
        self._events = []
        if self._usage is not None:
            batch.usage[self.run_id] = self._usage
            self._usage = None
        if self._ending is not None:
            batch.endings[self.run_id] = self._ending
            self._ending = None

    def restore(self, batch: "_BatchBuilder") -> None:
        """Put back what ``take`` gave away after a failed write (events keep their order)."""
        ids = {m.message_id for m in batch.messages}
        for m in self._messages:
            if m.message_id in ids:
                m.dirty = True
        self._dirty_calls.update(c.call_id for c in batch.tool_calls if c.run_id == self.run_id)
        mine = [e for e in batch.events if e.run_id == self.run_id]
        self._events = mine + self._events
        if self._usage is None and self.run_id in batch.usage:
            self._usage = batch.usage[self.run_id]
        if self._ending is None and self.run_id in batch.endings:
            self._ending = batch.endings[self.run_id]

    def _new_message(self) -> _Message:
        if self._current is not None:
            self._close(self._current, "complete")
        message = self._current = _Message()
        self._messages.append(message)
        return message

    def _close(self, message: _Message, status: MessageStatus) -> None:
        message.status = status
        message.completed_at = utcnow()
        message.dirty = True

    def _record(self, m: _Message) -> MessageRecord:
        return MessageRecord(
            message_id=m.message_id,
            session_id=self.session_id,
            run_id=self.run_id,
            role="assistant",
            content="".join(m.parts),
            status=m.status,
            created_at=m.created_at,
            completed_at=m.completed_at,
        )


@dataclasses.dataclass(slots=True)
class _BatchBuilder:
    messages: list[MessageRecord] = dataclasses.field(default_factory=list[MessageRecord])
    tool_calls: list[ToolCallRecord] = dataclasses.field(default_factory=list[ToolCallRecord])
    events: list[StoredEvent] = dataclasses.field(default_factory=list[StoredEvent])
    usage: dict[RunId, Usage] = dataclasses.field(default_factory=dict[RunId, Usage])
    endings: dict[RunId, Ending] = dataclasses.field(default_factory=dict[RunId, Ending])

    def build(self) -> WriteBatch:
        return WriteBatch(
            messages=self.messages,
            tool_calls=self.tool_calls,
            events=self.events,
            usage=self.usage,
            endings=self.endings,
        )


def _merge(parts: Iterable[_BatchBuilder]) -> WriteBatch:
    merged = _BatchBuilder()
    for part in parts:
        merged.messages.extend(part.messages)
        merged.tool_calls.extend(part.tool_calls)
        merged.events.extend(part.events)
        merged.usage.update(part.usage)
        merged.endings.update(part.endings)
    return merged.build()


class Recorder:
    """Buffers what runs stream and writes it behind the stream, in batches."""

    def __init__(self, store: Store, *, flush_interval_s: float, give_up_s: float = 30.0) -> None:
        self._store = store
        self._interval_s = flush_interval_s
        self._give_up_s = give_up_s
        self._hang_s = HANG_FACTOR * give_up_s
        self._buffers: dict[RunId, RunBuffer] = {}
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._failing_since: float | None = None
        self._stored_through: float | None = None
        """When the last flush that landed took what it wrote: all buffered before is stored."""
        self._is_slow = False
        """A write has been in flight for over ``SLOW_WRITE_S``."""

    @property
    def lag_s(self) -> float:
        """How far what is stored is behind what runs streamed, in seconds (0 until it runs).

        An upper bound on the age of the oldest buffered data not yet written: about the flush
        interval when writes keep up; it grows while they fall behind, fail, or the event loop
        is too busy to flush on time.
        """
        if self._stored_through is None:
            return 0.0
        return max(0.0, anyio.current_time() - self._stored_through)

    @property
    def give_up_s(self) -> float:
        """How long the store may fail before the runs it holds are told (and given up on)."""
        return self._give_up_s

    def open(
        self, run_id: RunId, session_id: SessionId, on_storage_lost: Callable[[str], None]
    ) -> RunBuffer:
        buffer = self._buffers[run_id] = RunBuffer(run_id, session_id, on_storage_lost)
        return buffer

    @property
    def is_failing(self) -> bool:
        """This process's writes are failing (retried, not landed) or one is slow.

        Slow: in flight for over ``SLOW_WRITE_S``.
        """
        return self._failing_since is not None or self._is_slow

    def wake(self) -> None:
        """Flush soon (tool boundaries): the flusher runs now instead of at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """The flusher loop; runs until cancelled (it is started in the app's task group)."""
        self._stored_through = anyio.current_time()  # nothing was buffered before
        next_tick = anyio.current_time() + self._interval_s
        while True:
            # Fixed ticks, not "an interval after the last write ended": a slow write must not
            # stretch the gap between flushes (what is stored lags at most about one interval).
            with anyio.move_on_after(max(0.0, next_tick - anyio.current_time())):
                await self._wake.wait()
            self._wake = anyio.Event()
            next_tick = max(next_tick + self._interval_s, anyio.current_time())
            # Shielded, like the heartbeat: shutdown never cuts a write in half. Not cut short
            # at give_up_s either (an aiosqlite call cancelled mid-way leaks its connection): the
            # store's own bounds (busy timeout, retry budget) end a failing write; a write still
            # in flight at give_up_s counts as a failure there and then, and only one that hangs
            # far beyond is abandoned.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._hang_s) as bound:
                async with anyio.create_task_group() as watch:
                    watch.start_soon(self._fail_if_slow, anyio.current_time())
                    await self.flush()
                    watch.cancel_scope.cancel()
            self._is_slow = False
            if bound.cancelled_caught:
                hung = StorageError(f"a storage write hung for over {self._hang_s:g} s")
                self._note_failure(list(self._buffers.values()), hung)

    async def _fail_if_slow(self, started_at: float) -> None:
        """A write in flight for ``give_up_s`` is a failing store: its runs are told now."""
        await anyio.sleep(min(SLOW_WRITE_S, self._give_up_s))
        self._is_slow = True
        await anyio.sleep(max(0.0, self._give_up_s - SLOW_WRITE_S))
        if self._failing_since is None or self._failing_since > started_at:
            self._failing_since = started_at
        slow = StorageError(f"a storage write has taken over {self._give_up_s:g} s")
        self._note_failure(list(self._buffers.values()), slow)

    async def flush(
        self, *, is_write_shielded: bool = False, only: RunBuffer | None = None
    ) -> bool:
        """Write everything buffered (or ``only`` that run's); False if the store failed.

        The data of a failed write is kept. ``is_write_shielded``: the write, once started, is
        never cut short (waiting for the flusher's write in flight still is).
        """
        async with self._lock:
            taken_at = anyio.current_time()
            # A buffer whose run row is still being created waits: its rows reference it.
            buffers = [b for b in self._buffers.values() if b.is_ready]
            if only is not None:
                buffers = [only] if only in buffers else []
            # Decided before the write: a run that finishes while it is in flight has more to
            # write (its terminal event), so only the next flush may forget it.
            finished = [buffer for buffer in buffers if buffer.is_finished]
            parts: list[tuple[RunBuffer, _BatchBuilder]] = []
            for buffer in buffers:
                part = _BatchBuilder()
                buffer.take(part)
                if not part.build().is_empty():
                    parts.append((buffer, part))
            if parts and not await self._write(parts, is_write_shielded=is_write_shielded):
                return False
            for buffer in finished:
                self._buffers.pop(buffer.run_id, None)
                buffer.landed.set()
            self._stored_through = taken_at
            return True

    async def _write(
        self, parts: list[tuple[RunBuffer, _BatchBuilder]], *, is_write_shielded: bool
    ) -> bool:
        """Write the runs' parts in one transaction; False if the store is failing.

        A part the database refuses (bad data: it would refuse it again) fails only its own
        run: the batch is split and each run written on its own.
        """
        try:
            # A shielded write is still abandoned if it hangs far beyond the store's own
            # bounds, like the flusher's (else nothing could ever end it).
            bound_s = self._hang_s if is_write_shielded else None
            with anyio.move_on_after(bound_s, shield=is_write_shielded) as bound:
                await self._store.write(_merge(part for _, part in parts))
            if bound.cancelled_caught:
                raise StorageError(f"a storage write hung for over {self._hang_s:g} s")
        except StorageRejected as exc:
            if len(parts) == 1:
                self._reject(parts[0][0], exc)
                return True
            return await self._write_each(parts)
        except StorageError as exc:
            for buffer, part in parts:
                buffer.restore(part)
            self._note_failure([buffer for buffer, _ in parts], exc)
            return False
        except BaseException:
            # Cut short (the flush is bounded): keep the batch, replaying it is harmless.
            for buffer, part in parts:
                buffer.restore(part)
            raise
        self._failing_since = None
        return True

    async def _write_each(self, parts: list[tuple[RunBuffer, _BatchBuilder]]) -> bool:
        failing: list[RunBuffer] = []
        error: StorageError | None = None
        for index, (buffer, part) in enumerate(parts):
            try:
                await self._store.write(part.build())
            except StorageRejected as exc:
                self._reject(buffer, exc)
            except StorageError as exc:
                buffer.restore(part)
                failing.append(buffer)
                error = exc
            except BaseException:
                for left, left_part in parts[index:]:
                    left.restore(left_part)
                raise
        if error is not None:
            self._note_failure(failing, error)
            return False
        self._failing_since = None
        return True

    def _reject(self, buffer: RunBuffer, exc: StorageRejected) -> None:
        # Deliberate: the refused part is dropped, not kept for a retry that would fail the
        # same way for ever; the run fails with the reason, and the other runs never wait on it.
        log.error("run %s: the database refused its data; the run fails: %s", buffer.run_id, exc)
        buffer.on_storage_lost(f"the database refused the run's data: {exc.message}")

    async def close(self, buffer: RunBuffer, *, timeout_s: float | None) -> bool:
        """Store a finished run's last state (its ending with it); False if not landed in time.

        Retries with backoff. A write, once started, is never cut short (the store's own
        bounds end a failing one), so ``timeout_s`` only ends the waiting around writes.
        On False the buffer stays, and the flusher keeps retrying it.
        """
        buffer.is_finished = True
        delay_s = RETRY_FIRST_S
        with anyio.move_on_after(timeout_s):
            while True:
                # Only this run's rows: its terminal event waits for this write, which must not
                # carry every other run's streamed text (the flusher's tick does).
                await self.flush(is_write_shielded=True, only=buffer)
                if buffer.landed.is_set():
                    break
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
        return buffer.landed.is_set()

    async def change_unlanded(self, buffer: RunBuffer, change: Callable[[], object]) -> bool:
        """Run ``change`` on a finished run's buffer while no write of it is in flight.

        False (``change`` not run) if its last state has landed meanwhile: then that is its end.
        """
        async with self._lock:
            if buffer.landed.is_set():
                return False
            change()
            return True

    def _note_failure(self, buffers: list[RunBuffer], exc: StorageError) -> None:
        now = anyio.current_time()
        if self._failing_since is None:
            self._failing_since = now
        log.warning("storage write failed; will retry: %s", exc)
        if now - self._failing_since >= self._give_up_s:
            for buffer in buffers:
                buffer.on_storage_lost(f"storage unavailable for {self._give_up_s:g} s: {exc}")
