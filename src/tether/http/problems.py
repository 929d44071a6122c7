"""One table from our exceptions to HTTP status codes, and every error as problem+json.

Every error response of the API is ``application/problem+json`` (RFC 9457): ``type``, ``title``,
``status``, ``detail``, plus the error's structured fields (``active_run_id`` on a busy session,
``errors`` on a validation failure, ``awaiting`` on decisions that don't answer a paused run's
calls). A field named like a member of the problem itself goes under another name: a run's
``status`` is ``run_status`` (on a conflict, e.g. resuming a run that is not paused). Nothing
here echoes request input back.

Status rules: a request we could not parse (malformed JSON, a query, header or path parameter of
the wrong type) is 400; a well-formed body that fails validation, or a request tether refuses as
a caller mistake (``UsageError``), is 422.
"""

import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Final, cast

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from tether.errors import (
    AgentRunError,
    Conflict,
    NotFound,
    Overloaded,
    ProviderError,
    StorageError,
    StorageRejected,
    UsageError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
STORAGE_RETRY_AFTER_S: Final = "1"

# Looked up along the exception's MRO, so a subclass without a row gets its base's.
_TABLE: Final[Mapping[type[AgentRunError], tuple[int, str]]] = {
    NotFound: (404, "not-found"),
    Conflict: (409, "conflict"),
    UsageError: (422, "invalid-request"),
    StorageRejected: (422, "unstorable-value"),
    StorageError: (503, "storage-unavailable"),
    Overloaded: (503, "overloaded"),
    ProviderError: (502, "provider-error"),
    AgentRunError: (500, "internal-error"),
}
_SLUGS: Final[Mapping[int, str]] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    422: "invalid-request",
    431: "headers-too-large",
    500: "internal-error",
    503: "unavailable",
}
_TITLES: Final[Mapping[int, str]] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    431: "Request headers too large",
    500: "Internal error",
    502: "Model provider failed",
    503: "Service unavailable",
    504: "Model provider timed out",
}
_RESERVED: Final = frozenset({"type", "title", "status", "detail", "instance"})
# Our errors' fields that share a reserved name; any other such field is dropped.
_RENAMED: Final[Mapping[str, str]] = {"status": "run_status"}
# Parse failures: the request is not well-formed, as opposed to well-formed but invalid.
_PARSE_ERROR_TYPES: Final = frozenset({"json_invalid", "json_type"})
_PARAMETER_LOCATIONS: Final = frozenset({"query", "header", "path", "cookie"})


class TextSafeJSONResponse(JSONResponse):
    """JSON that any text can travel in, even a lone surrogate.

    A lone surrogate (a model or a tool may emit one) has no UTF-8 form, so such a body is sent
    with every non-ASCII character escaped instead.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
            return text.encode("ascii")


class Problem(BaseModel):
    """An RFC 9457 problem; extension members carry the error's structured fields."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def status_of(exc: AgentRunError) -> tuple[int, str]:
    """The HTTP status and problem slug for one of our exceptions."""
    for cls in type(exc).__mro__:
        if (found := _TABLE.get(cls)) is not None:
            return found
    raise AssertionError("AgentRunError has a row")  # pragma: no cover - see the table


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"urn:tether:problem:{slug or _SLUGS.get(status, 'error')}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    for key, value in (extra or {}).items():
        if (name := _RENAMED.get(key, key)) not in _RESERVED:
            body[name] = _jsonable(value)
    return TextSafeJSONResponse(
        body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json for ``statuses``."""
    return {
        status: {
            "model": Problem,
            "description": _TITLES.get(status, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def install(app: FastAPI) -> None:
    """Make every error ``app`` returns problem+json."""
    app.add_exception_handler(AgentRunError, _on_agent_run_error)  # pyright: ignore[reportArgumentType]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # pyright: ignore[reportArgumentType]
    app.add_exception_handler(HTTPException, _on_http_exception)  # pyright: ignore[reportArgumentType]
    app.add_exception_handler(Exception, _on_unexpected)


async def _on_agent_run_error(request: Request, exc: AgentRunError) -> Response:
    status, slug = status_of(exc)
    if isinstance(exc, StorageError):
        # Deliberate: the driver's text stays in the log; the client learns what it can do.
        log.warning("%s %s failed: %r", request.method, request.url.path, exc)
        if isinstance(exc, StorageRejected):
            return problem(status, "the database refused a value of the request", slug=slug)
        detail = "storage is unavailable; retry later"
        return problem(status, detail, slug=slug, headers={"Retry-After": STORAGE_RETRY_AFTER_S})
    if isinstance(exc, Overloaded):
        # Deliberate: not logged per refusal; under overload that would be a log line per start.
        headers = {"Retry-After": retry_after(exc)}
        return problem(status, exc.message, slug=slug, extra=exc.details, headers=headers)
    if status >= 500:
        log.warning("%s %s failed: %r", request.method, request.url.path, exc)
    return problem(status, exc.message, slug=slug, extra=exc.details)


def retry_after(exc: Overloaded) -> str:
    """The ``Retry-After`` header of a refused start: whole seconds, at least one."""
    return str(max(1, math.ceil(exc.retry_after_s)))


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()
    ]
    is_parse_error = all(
        e["type"] in _PARSE_ERROR_TYPES or (e["loc"] and e["loc"][0] in _PARAMETER_LOCATIONS)
        for e in errors
    )
    if is_parse_error:
        return problem(400, "the request could not be parsed", extra={"errors": errors})
    return problem(422, "the request body is invalid", extra={"errors": errors})


async def _on_http_exception(request: Request, exc: HTTPException) -> Response:
    if exc.status_code < 400:  # pragma: no cover - we never raise non-error HTTPExceptions
        return Response(status_code=exc.status_code, headers=exc.headers)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return problem(exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    # Starlette's 405 names the methods of the first route matching the path only; a path
    # served by several routes (GET, PATCH and DELETE /sessions/{id}) supports them all. The
    # OpenAPI description is the contract, so its paths say which.
    app = cast("FastAPI", request.app)
    path = request.url.path
    for template, operations in app.openapi()["paths"].items():
        if compile_path(template)[0].fullmatch(path):
            return sorted(method.upper() for method in operations)
    return []


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception itself after this response is sent.
    return problem(500, "internal error")


def _jsonable(value: object) -> object:
    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return str(value)
