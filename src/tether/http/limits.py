"""Request headers bigger than the API needs are refused with 431 (problem+json), up front.

uvicorn's own limits are per line and per event, and sized for proxies; no route of tether
needs more than a few kilobytes of headers (a bearer key, a ``Last-Event-ID``, cookies).
"""

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from tether.http.problems import problem

MAX_HEADER_BYTES: Final = 32 * 1024
"""The most request-header bytes (names and values) a request may carry."""


class HeaderLimit:
    """ASGI middleware: 431 for an HTTP request whose headers exceed ``MAX_HEADER_BYTES``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > MAX_HEADER_BYTES:
                detail = f"request headers are larger than {MAX_HEADER_BYTES} bytes"
                response = problem(431, detail)
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
