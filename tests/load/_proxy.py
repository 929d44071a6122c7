"""A TCP proxy a test can cut: a database outage without stopping the shared server.

Workers connect to the proxy's port instead of PostgreSQL's. ``cut()`` drops every proxied
connection and refuses new ones (accepted, then closed at once, as a server that went away);
``restore()`` lets connections through again.
"""

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.abc import SocketStream, TaskGroup


@dataclass
class Proxy:
    upstream_host: str
    upstream_port: int
    port: int = 0
    is_cut: bool = False
    _links: set[anyio.CancelScope] = field(default_factory=set[anyio.CancelScope])

    def cut(self) -> None:
        self.is_cut = True
        for scope in self._links:
            scope.cancel()

    def restore(self) -> None:
        self.is_cut = False

    async def handle(self, client: SocketStream) -> None:
        async with client:
            if self.is_cut:
                return
            with anyio.CancelScope() as scope:
                self._links.add(scope)
                try:
                    async with (
                        await anyio.connect_tcp(self.upstream_host, self.upstream_port) as server,
                        anyio.create_task_group() as tg,
                    ):
                        tg.start_soon(_pump, client, server, tg)
                        await _pump(server, client, tg)
                finally:
                    self._links.discard(scope)


async def _pump(source: SocketStream, sink: SocketStream, tg: TaskGroup) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    tg.cancel_scope.cancel()  # one side is gone: close the link


@asynccontextmanager
async def proxy(upstream_host: str, upstream_port: int) -> AsyncGenerator[Proxy, None]:
    """A proxy to the upstream on a loopback port of its own, serving until the block ends."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    link = Proxy(
        upstream_host, upstream_port, port=listener.extra(anyio.abc.SocketAttribute.local_port)
    )
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, link.handle)
        try:
            yield link
        finally:
            tg.cancel_scope.cancel()
