"""``tether serve``: the HTTP API and web UI for one app, on uvicorn.

The app's own start-up creates and migrates a SQLite database; any other database is checked
first and refused, with the command that migrates it, unless ``--migrate`` is given. For the
demo app, the embedded model is loaded (on a worker thread, behind a spinner) before the server
listens, so the first chat doesn't pay for it; if it can't load, the server still starts and
says why.

SIGTERM (or Ctrl+C) drains the worker: from the next moment on a start answers 503, every run
ends ``cancelled`` / ``shutdown`` with its end stored and sent to its clients, then the process
exits, within ``TETHER_DRAIN_S`` (uvicorn's graceful-shutdown timeout is the same bound).

Streaming is per token, so uvicorn parses HTTP with httptools (about 13 % less worker CPU than
h11), and the garbage collector is tuned for many live streams (``run_server``): what start-up
allocated, the app's own start-up included, is frozen out of its reach, and full collections,
which pause every stream at once, are rare.
"""

import contextlib
import errno
import functools
import gc
import logging
import math
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Final

import anyio
import typer
import uvicorn
from rich.markup import escape

from tether.cli._apps import load_app, shown_url
from tether.cli._output import console, silence_banners
from tether.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fastapi import FastAPI

    from tether.app import Tether
    from tether.settings import Settings

GC_THRESHOLDS: Final = (10_000, 10, 10)
"""The collector's thresholds once serving: young collections every 10,000 net allocations
instead of 700, so full ones (every 100 young ones, and only when the long-lived objects grew by
a quarter) come about 14 times less often. Each full collection stalls every live stream."""
_STARTED_POLL_S: Final = 0.05
_EXIT_POLL_S: Final = 0.05

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="The Tether app to serve, as module:attribute (default: the demo agents).",
        show_default=False,
    ),
]


def serve(
    app_spec: AppOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL (default: SQLite under TETHER_DATA_DIR, .tether/).",
            show_default=False,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Redis, to share stops and events between workers.",
            show_default=False,
        ),
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Listen beyond loopback without API keys (anyone reaching it acts as you).",
        ),
    ] = False,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate",
            help="Migrate the database at start-up (SQLite always is; others are only checked).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API and the web UI."""
    from tether.http.app import create_app
    from tether.http.auth import check_bind

    app = load_app(app_spec, database_url=database_url, redis_url=redis_url)
    if migrate:
        app.settings = app.settings.model_copy(update={"migrate": True})
    check_bind(host, app.settings, allow_remote=allow_remote)
    anyio.run(_check_database, app.settings)
    api = create_app(app, allow_remote=allow_remote)
    silence_banners()
    unavailable = {name: spec.unavailable for name, spec in app.agents.items() if spec.unavailable}
    for name, why in sorted(unavailable.items()):
        console.print(f"[yellow]{escape(name)} is unavailable:[/] {escape(why)}", soft_wrap=True)
    if app_spec is None and not unavailable:
        _preload_embedded_model()
    # Bound before "serving on" is printed: a taken port is one clear line and exit code 2.
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    url = f"http://{_url_host(host)}:{port}"
    console.print(
        f"[bold]tether[/] serving [cyan]{escape(', '.join(sorted(app.agents)))}[/] "
        f"on {escape(url)}  [dim](Ctrl+C to stop)[/]",
        soft_wrap=True,
    )
    database = shown_url(app.settings.resolved_database_url())
    console.print(f"[dim]database: {escape(database)}[/]", soft_wrap=True)
    # uvicorn shuts down gracefully on Ctrl+C, then re-raises the SIGINT it caught.
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(functools.partial(_serve, api, app, host=host, port=port, sock=sock))
    finally:
        _close_embedded_model()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            " (is another tether running? pick one with --port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise UsageError(
            f"can't listen on {host}:{port}: {exc.strerror}{hint}", host=host, port=port
        ) from exc
    sock.set_inheritable(True)
    return sock


async def _serve(
    api: "FastAPI", app: "Tether", *, host: str, port: int, sock: socket.socket
) -> None:
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        lifespan="on",
        log_level="info",
        http="httptools",
        timeout_graceful_shutdown=max(1, math.ceil(app.settings.drain_s)),
    )
    await run_server(uvicorn.Server(config), [sock], on_exit=app.drain)


async def run_server(
    server: uvicorn.Server,
    sockets: "Sequence[socket.socket] | None" = None,
    *,
    on_exit: "Callable[[], Awaitable[None]] | None" = None,
) -> None:
    """Serve until shut down, with the collector tuned for many streams (``GC_THRESHOLDS``).

    ``on_exit`` is called as soon as the server is asked to stop (SIGTERM, Ctrl+C), while
    uvicorn still waits for open responses: the app drains then, so its streams can end.

    Deliberate: what start-up made (modules, the app, the model, and once the server is up what
    the app's lifespan made: engine, store, pools) lives as long as the process; frozen, the
    collector stops scanning it on every full collection. Live runs are never frozen.
    """
    gc.collect()
    gc.freeze()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_once_started, server, sockets is not None)
        if on_exit is not None:
            tg.start_soon(_once_exiting, server, on_exit)
        await server.serve(list(sockets) if sockets is not None else None)
        tg.cancel_scope.cancel()


async def _once_started(server: uvicorn.Server, is_bound_by_us: bool) -> None:
    # Deliberate: uvicorn offers no start-up event to wait on, so poll its flag.
    while not server.started:  # noqa: ASYNC110
        await anyio.sleep(_STARTED_POLL_S)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if is_bound_by_us:
        # uvicorn announces the address only for sockets it bound itself; say it as it would,
        # once the app is up, so whatever waits for that line keeps working.
        config = server.config
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
            _url_host(config.host),
            config.port,
        )


async def _once_exiting(server: uvicorn.Server, on_exit: "Callable[[], Awaitable[None]]") -> None:
    # Deliberate: polled, not hooked into the signal handler, which runs between any two
    # bytecodes of the loop's thread, where no loop or task state may be touched.
    while not server.should_exit:  # noqa: ASYNC110
        await anyio.sleep(_EXIT_POLL_S)
    await on_exit()


async def _check_database(settings: "Settings") -> None:
    """Refuse an unmigrated server database now, with what to run, not at the first request."""
    url = settings.resolved_database_url()
    if url == "memory" or url.startswith("sqlite") or settings.migrate:
        return  # the app's start-up migrates these
    from tether.storage.migrate import check_schema

    await check_schema(url, shown=shown_url(url))


def _preload_embedded_model() -> None:
    from tether.runtimes.local import MODEL_NAME, default_local_llama

    llama = default_local_llama()
    started = time.monotonic()
    try:
        with console.status(f"Loading the embedded model ({MODEL_NAME})…"):
            anyio.run(llama.load)
    except UsageError as exc:
        console.print(
            f"[yellow]The embedded model is unavailable, so assistant and storyteller will fail "
            f"(slow-tools works):[/] {escape(exc.message)}"
        )
        return
    console.print(f"[green]✓[/] Embedded model loaded in {time.monotonic() - started:.1f} s")


def _close_embedded_model() -> None:
    # Deliberate: freed here, while the interpreter is whole; left to `Llama.__del__` at exit
    # it printed a traceback on every Ctrl+C.
    if "tether.runtimes.local" in sys.modules:
        from tether.runtimes.local import close_default_local_llama

        close_default_local_llama()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
