"""``WriterTurns``: SQLite's one writer, taken in turns, urgent units first.

SQLite has one writer at a time, so this process's write units queue for it. In order, except
that an urgent unit (creating a run or a session: a client waits on it for its first token)
goes before every queued ordinary one (the recorder's flushes of what runs streamed, lease
renewals): a start waits for the write in flight at most, never behind a queue of streaming
writes. Urgent units are few and small, and each worker admits only what it can carry
(``engine/admission.py``), so ordinary units are delayed, never starved.
"""

from collections import deque
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio


class WriterTurns:
    def __init__(self) -> None:
        self._is_taken = False
        self._urgent: deque[anyio.Event] = deque()
        self._ordinary: deque[anyio.Event] = deque()

    @asynccontextmanager
    async def turn(self, *, is_urgent: bool = False) -> AsyncGenerator[None, None]:
        """Hold the writer for the block; urgent turns are handed out first."""
        if self._is_taken:
            handed = anyio.Event()
            queue = self._urgent if is_urgent else self._ordinary
            queue.append(handed)
            try:
                await handed.wait()
            except BaseException:
                if handed.is_set():  # handed over as it was cancelled: pass the turn on
                    self._hand_on()
                else:
                    queue.remove(handed)
                raise
        else:
            self._is_taken = True
        try:
            yield
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        for queue in (self._urgent, self._ordinary):
            if queue:
                queue.popleft().set()  # the writer stays taken: it passes to that waiter
                return
        self._is_taken = False
