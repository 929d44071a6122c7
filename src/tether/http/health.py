"""``GET /readyz``: whether this worker can serve runs now (``/healthz`` says it is alive).

Ready means: the app is running, this worker would admit a run now (not at ``TETHER_MAX_RUNS``,
its writes not behind, not draining: ``engine/admission.py``), the database answers a
``SELECT 1`` within ``READY_TIMEOUT_S``, and this worker's own writes are not failing (a worker
whose recorder keeps failing streams runs it can't store). Not ready is a 503 problem with
``Retry-After``, answered within about a second even while the database hangs, so a load
balancer can route around this worker at once.
"""

from typing import Final

import anyio
from fastapi import APIRouter
from starlette.exceptions import HTTPException

from tether.errors import StorageError
from tether.http.problems import STORAGE_RETRY_AFTER_S, problem_responses, retry_after
from tether.http.schemas import HealthOut
from tether.http.state import HttpState

READY_TIMEOUT_S: Final = 0.8
"""How long the probe waits for the database: the answer comes within a second."""


def health_router(state: HttpState) -> APIRouter:
    """The readiness route, ``GET /readyz``."""
    router = APIRouter(tags=["service"])

    @router.get("/readyz", responses=problem_responses(503))
    async def readyz() -> HealthOut:
        """200 when this worker can serve runs; 503 with `Retry-After` when not (no key needed).

        Not ready: the app is not running, it would refuse a run now (full, behind on its writes,
        or shutting down), the database does not answer within a second, or this worker's
        writes to it are failing.
        """
        if (unready := await _unready(state)) is not None:
            why, retry_after_s = unready
            raise HTTPException(503, why, headers={"Retry-After": retry_after_s})
        return HealthOut()

    return router


async def _unready(state: HttpState) -> tuple[str, str] | None:
    """Why this worker is not ready, and the ``Retry-After`` to answer with; None if it is."""
    engine = state.engine
    if engine.recorder.is_failing:
        return "this worker's writes to the database are failing", STORAGE_RETRY_AFTER_S
    if (refused := engine.admission.refusal()) is not None:
        return refused.message, retry_after(refused)
    with anyio.move_on_after(READY_TIMEOUT_S):
        try:
            await engine.store.ping()
        except StorageError:
            return "the database is unreachable", STORAGE_RETRY_AFTER_S
        return None
    return f"the database did not answer within {READY_TIMEOUT_S:g} s", STORAGE_RETRY_AFTER_S
