"""A TCP proxy a test can cut: a database that becomes unreachable, then comes back."""

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketStream, TaskGroup


class Proxy:
    """Forwards connections on ``port`` to ``target``; ``cut()`` drops them and refuses new ones."""

    def __init__(self, tg: TaskGroup, target: tuple[str, int]) -> None:
        self._tg = tg
        self._target = target
        self._is_cut = False
        self._links: set[anyio.CancelScope] = set()
        self.port = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._link, task_group=self._tg)

    def cut(self) -> None:
        self._is_cut = True
        for link in self._links:
            link.cancel()

    def restore(self) -> None:
        self._is_cut = False

    async def _link(self, client: SocketStream) -> None:
        async with client:
            if self._is_cut:
                return  # accepted, then closed at once: the database is gone
            with anyio.CancelScope() as link:
                self._links.add(link)
                try:
                    server = await anyio.connect_tcp(*self._target)
                    async with server, anyio.create_task_group() as tg:
                        tg.start_soon(_pipe, client, server)
                        tg.start_soon(_pipe, server, client)
                finally:
                    self._links.discard(link)


async def _pipe(source: SocketStream, sink: SocketStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the other side went away: so does this direction


@asynccontextmanager
async def proxy_to(host: str, port: int) -> AsyncGenerator[Proxy, None]:
    async with anyio.create_task_group() as tg:
        proxy = Proxy(tg, (host, port))
        await tg.start(proxy.serve)
        yield proxy
        tg.cancel_scope.cancel()
