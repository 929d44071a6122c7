"""Start a streamed request in a task and collect its response when the stream ends.

httpx's ASGITransport hands the response over only once the app has sent all of it, so a test
that acts while a run streams (stop it, send another message) runs the request in a task.
"""

from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from tests.http._sse import Frame, parse


@dataclass
class Pending:
    done: anyio.Event = field(default_factory=anyio.Event)
    response: httpx.Response | None = None

    async def frames(self) -> list[Frame]:
        response = await self.result()
        assert response.status_code == 200, response.text
        return parse(response.text)

    async def result(self) -> httpx.Response:
        with anyio.fail_after(5):
            await self.done.wait()
        assert self.response is not None
        return self.response


def post_in_task(
    tg: TaskGroup, client: httpx.AsyncClient, path: str, body: dict[str, Any], **kwargs: Any
) -> Pending:
    pending = Pending()

    async def send() -> None:
        pending.response = await client.post(path, json=body, **kwargs)
        pending.done.set()

    tg.start_soon(send)
    return pending


def get_in_task(tg: TaskGroup, client: httpx.AsyncClient, path: str, **kwargs: Any) -> Pending:
    pending = Pending()

    async def send() -> None:
        pending.response = await client.get(path, **kwargs)
        pending.done.set()

    tg.start_soon(send)
    return pending
