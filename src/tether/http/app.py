"""``create_app``: the FastAPI app serving one ``Tether`` over HTTP, and its lifespan.

The lifespan enters ``async with tether_app:`` — it owns the engine, store and buses for the
life of the server — and on exit the tether app stops every run of this worker with reason
``shutdown``, so every open stream gets its terminal event. When the server itself starts
shutting down (uvicorn got SIGTERM), open streams stop the runs at once rather than waiting for
the lifespan, since uvicorn waits for responses to finish before it ends the lifespan.

The built web UI is served from the ``tether/web`` package directory when it is there.
"""

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

import tether
from tether.app import Tether
from tether.http import problems
from tether.http.agui import agui_router
from tether.http.ai_sdk_chat import ai_sdk_router
from tether.http.auth import Authenticator, parse_api_keys
from tether.http.health import health_router
from tether.http.limits import HeaderLimit
from tether.http.metrics import CONTENT_TYPE
from tether.http.openai_chat import openai_router
from tether.http.problems import TextSafeJSONResponse, problem_responses
from tether.http.runs import runs_router
from tether.http.schemas import ConfigOut, HealthOut
from tether.http.sessions import sessions_router
from tether.http.state import HttpState
from tether.ids import UserId
from tether.settings import Settings

_NO_UI_HTML: Final = (
    "<!doctype html><title>tether</title><p>The tether API is running. The web UI is not built "
    "into this installation; the API is described at <a href='/docs'>/docs</a>.</p>"
)


def create_app(
    tether_app: Tether, *, settings: Settings | None = None, allow_remote: bool = False
) -> FastAPI:
    """The HTTP API (and web UI) of ``tether_app``.

    Args:
        tether_app: The application to serve; the app's lifespan enters and exits it.
        settings: API keys and message limits; default: ``tether_app.settings``.
        allow_remote: In local mode (no API keys), also serve non-loopback peers. Pair with
            ``check_bind`` before binding.

    Raises:
        UsageError: ``settings.api_keys`` is malformed.
    """
    settings = settings or tether_app.settings
    state = HttpState(tether_app, settings)
    authenticate = Authenticator(parse_api_keys(settings.api_keys), allow_remote=allow_remote)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None, None]:
        async with state.running():
            yield

    # Without the built assets (a source tree that never ran the UI build), FastAPI's defaults.
    docs_assets = Path(tether.__file__).parent / "web" / "docs-assets"
    has_docs = docs_assets.is_dir()
    app = FastAPI(
        title="tether",
        version=_version(),
        summary="Run, stream and stop LLM agent runs.",
        lifespan=lifespan,
        responses=problem_responses(400, 401, 403, 422, 431, 503),
        default_response_class=TextSafeJSONResponse,
        docs_url=None if has_docs else "/docs",
        redoc_url=None if has_docs else "/redoc",
    )
    problems.install(app)
    app.add_middleware(HeaderLimit)
    if has_docs:
        mount_docs(app, docs_assets)
    app.include_router(runs_router(state, authenticate))
    app.include_router(sessions_router(state, authenticate))
    app.include_router(_service_router(state, authenticate))
    app.include_router(health_router(state))
    app.include_router(openai_router(state, authenticate))
    app.include_router(ai_sdk_router(state, authenticate))
    app.include_router(agui_router(state, authenticate))
    mount_ui(app, Path(tether.__file__).parent / "web")
    return app


def _service_router(state: HttpState, authenticate: Authenticator) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get("/config")
    async def config() -> ConfigOut:
        """What the UI needs before it can call anything else (no key needed)."""
        return ConfigOut(auth_required=authenticate.is_required)

    @router.get("/healthz")
    async def healthz() -> HealthOut:
        """Liveness: 200 while the app runs, 503 otherwise (no key needed; see `/readyz`)."""
        state.require_running()
        return HealthOut()

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def metrics(user: Annotated[UserId, Depends(authenticate)]) -> Response:
        """Prometheus metrics of this app."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return router


def mount_ui(app: FastAPI, web_dir: Path) -> None:
    """Serve the UI built into ``web_dir`` (``index.html`` at ``/``, ``/assets/*``), if there."""
    index = web_dir / "index.html"
    if not index.is_file():

        @app.get("/", include_in_schema=False)
        async def no_ui() -> HTMLResponse:
            return HTMLResponse(_NO_UI_HTML)

        return

    @app.get("/", include_in_schema=False)
    async def ui() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if (web_dir / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=web_dir / "assets"), name="assets")


def mount_docs(app: FastAPI, assets: Path) -> None:
    """Swagger UI at ``/docs`` and ReDoc at ``/redoc``, from scripts shipped with tether.

    FastAPI's defaults load them from a CDN: a blank page offline.
    """
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="data:,",
            with_google_fonts=False,
        )


def _version() -> str:
    try:
        return version("tether")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"
