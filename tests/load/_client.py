"""A load client's view of runs: start one over HTTP, read its SSE frames into a ``Seen``.

``RunStream`` reads frame by frame, so a caller can act at a point of its choosing (stop the run
after its 5th token, leave, …) and then read on to ``run_finished``. Every read is bounded.
"""

import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import httpx

from tests.http._sse import Frame, SseParser
from tests.load._invariants import Seen
from tests.load.load_app import AGENT

FRAME_TIMEOUT_S: Final = 60.0
"""Generous: under overload a token can be late by many seconds; that is measured, not failed."""


@dataclass
class RunStream:
    """One SSE response being read into ``seen``."""

    response: httpx.Response
    seen: Seen
    frame_timeout_s: float = FRAME_TIMEOUT_S
    _parser: SseParser = field(default_factory=SseParser)
    _pending: deque[Frame] = field(default_factory=deque[Frame])
    _chunks: AsyncIterator[str] | None = None

    async def next_frame(self) -> Frame | None:
        """The next frame; None once the stream ended (or broke: ``seen.broken`` says why)."""
        if self._chunks is None:
            self._chunks = self.response.aiter_text()
        with anyio.fail_after(self.frame_timeout_s):
            while not self._pending:
                try:
                    chunk = await anext(self._chunks, None)
                except httpx.TransportError as exc:
                    self.seen.broken = repr(exc)
                    return None
                if chunk is None:
                    return None
                self._pending.extend(self._parser.feed(chunk))
        frame = self._pending.popleft()
        self.seen.frames.append(frame)
        if frame.event == "text_delta" and self.seen.first_token_at is None:
            self.seen.first_token_at = time.perf_counter()
        return frame

    async def read_until(self, is_there: Callable[[Frame], bool]) -> Frame | None:
        """Read until a frame ``is_there`` (returned), or the run's end (None)."""
        while (frame := await self.next_frame()) is not None:
            if is_there(frame):
                return frame
            if frame.event == "run_finished":
                return None
        return None

    async def read_to_end(self) -> None:
        """Read through ``run_finished``, or until the stream ends without it."""
        await self.read_until(lambda frame: False)


@asynccontextmanager
async def start_run(
    client: httpx.AsyncClient, message: str, seen: Seen, **options: Any
) -> AsyncGenerator[RunStream | None, None]:
    """POST a run; yield its ``RunStream``, open until the block ends; None if it was refused.

    ``seen`` gets the answer's status code (503: refused), the run's ids and every frame read.
    """
    seen.started_at = time.perf_counter()
    body = {"message": message, **options}
    async with client.stream("POST", f"/agents/{AGENT}/runs", json=body) as response:
        seen.status_code = response.status_code
        if response.status_code != 200:
            seen.refusal = (await response.aread()).decode(errors="replace")[:300]
            yield None
            return
        seen.run_id = response.headers["X-Run-Id"]
        seen.session_id = response.headers["X-Session-Id"]
        yield RunStream(response, seen)


@asynccontextmanager
async def follow(
    client: httpx.AsyncClient, seen: Seen, *, after: int | None
) -> AsyncGenerator[RunStream | None, None]:
    """``GET /runs/{id}/events`` resuming after ``after``: frames go on into ``seen``.

    None when the worker answers 204 (it holds the client already had the run's last event).
    """
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    async with client.stream("GET", f"/runs/{seen.run_id}/events", headers=headers) as response:
        if response.status_code == 204:
            yield None
            return
        response.raise_for_status()
        seen.broken = None
        yield RunStream(response, seen)


def http_client(base_url: str, *, timeout_s: float = 30.0) -> httpx.AsyncClient:
    """A client for many runs at once: no pool limit; reads are bounded per frame instead."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, read=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )
