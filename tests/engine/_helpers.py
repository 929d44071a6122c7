from typing import TypeVar

import anyio

from tether import RunHandle
from tether.events import RunEvent

E = TypeVar("E")


async def wait_for(run: RunHandle, kind: type[E]) -> E:
    """The first event of ``kind`` the run emits (fails after 5 s)."""
    with anyio.fail_after(5):
        async for event in run.events():
            if isinstance(event, kind):
                return event
    raise AssertionError(f"run ended without a {kind.__name__}")


async def all_events(run: RunHandle) -> list[RunEvent]:
    with anyio.fail_after(5):
        return [e async for e in run.events()]
