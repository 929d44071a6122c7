"""``Admission``: whether this worker takes one more run now, and whether it is draining.

A worker admits a run only while it can carry it: fewer than ``max_runs`` live runs (those it
holds, and those being created right now), and its writes no further behind what its runs
streamed than ``max_write_lag_s`` (``Recorder.lag_s``). Otherwise, and once it started draining
(shutdown), a start is refused with ``Overloaded`` before anything is written, so the client can
go elsewhere or come back, instead of its run queueing behind the ones already here and every
run paying for it with late tokens and late writes.

Deliberately not counted: paused runs (let go, nothing streams) and child runs (part of a run
already admitted: refusing one would fail its parent's tool call, not shed load).
"""

import math
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from typing import Final

from tether.engine.config import EngineConfig
from tether.engine.recorder import Recorder
from tether.engine.run import Run
from tether.errors import Overloaded
from tether.ids import RunId

FULL_RETRY_AFTER_S: Final = 2.0
"""Retry-After of a start refused because the worker is full: runs end every few seconds."""
DRAINING_RETRY_AFTER_S: Final = 1.0
"""Retry-After of a start refused by a draining worker: another worker (or its successor)."""
MAX_LAG_RETRY_AFTER_S: Final = 10.0


class Admission:
    """Whether this worker can carry another run now (live runs, write lag, draining)."""

    def __init__(
        self, *, runs: Mapping[RunId, Run], recorder: Recorder, config: EngineConfig
    ) -> None:
        self._runs = runs
        """The engine's table of the runs held here (read only)."""
        self._recorder = recorder
        self._config = config
        self._creating = 0
        """Starts admitted whose run is not in ``runs`` yet (their rows are being written)."""
        self.drain_deadline: float | None = None
        """Set once draining began (``anyio.current_time()`` by which it should be over)."""

    @property
    def is_draining(self) -> bool:
        return self.drain_deadline is not None

    def refusal(self) -> Overloaded | None:
        """Why a start would be refused now, or None if it would be admitted."""
        if self.is_draining:
            return Overloaded("this worker is shutting down", retry_after_s=DRAINING_RETRY_AFTER_S)
        limit = self._config.max_runs
        if len(self._runs) + self._creating >= limit:
            return Overloaded(
                f"this worker is at its limit of {limit} live runs",
                retry_after_s=FULL_RETRY_AFTER_S,
                max_runs=limit,
            )
        lag_s = self._recorder.lag_s
        if lag_s > self._config.max_write_lag_s:
            return Overloaded(
                f"this worker's writes are {lag_s:.1f} s behind its runs",
                retry_after_s=min(float(math.ceil(lag_s)), MAX_LAG_RETRY_AFTER_S),
            )
        return None

    @contextmanager
    def slot(self) -> Generator[None, None, None]:
        """Hold one run's place while it is created (its row written, its run made).

        Raises:
            Overloaded: this worker can't take it (nothing was written).
        """
        if (refused := self.refusal()) is not None:
            raise refused
        self._creating += 1
        try:
            yield
        finally:
            self._creating -= 1

    def drain(self, deadline: float) -> float:
        """Refuse every start from now on; the drain's deadline (the first one set wins)."""
        if self.drain_deadline is None:
            self.drain_deadline = deadline
        return self.drain_deadline
