"""``tether runs``, ``tether sessions`` and ``tether db upgrade``: look at and look after the store.

These commands read the database directly (no engine, no recovery of other workers' runs), so
they are safe to run next to a live ``tether serve``.
"""

import functools
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Final

import anyio
import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tether.cli._apps import build_settings, shown_url
from tether.cli._output import console
from tether.errors import NotFound, StorageError, UsageError
from tether.ids import SessionId, UserId
from tether.records import RunRecord, SessionRecord
from tether.settings import Settings
from tether.storage.store import Store

LOCAL_USER: Final = "local"
"""The user of local mode (no API keys): ``tether chat`` and a key-less ``tether serve``."""

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: SQLite under TETHER_DATA_DIR, .tether/).",
        show_default=False,
    ),
]
Limit = Annotated[int, typer.Option("--limit", "-n", min=1, help="How many rows to show.")]
User = Annotated[str, typer.Option("--user", help="Whose sessions and runs to show.")]

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
runs_app = typer.Typer(help="Show recent runs, or stop one (runs cancel RUN_ID).")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    session: Annotated[
        str | None, typer.Option("--session", help="Only this session's runs.", show_default=False)
    ] = None,
    limit: Limit = 20,
    user: User = LOCAL_USER,
    database_url: DatabaseUrl = None,
) -> None:
    """Show recent runs: id, agent, status, reason, start and duration."""
    if ctx.invoked_subcommand is not None:
        return
    settings = build_settings(database_url=database_url)
    records = anyio.run(
        functools.partial(
            _recent_runs, settings, session_id=session, user_id=UserId(user), limit=limit
        )
    )
    table = _table("Runs", "run", [r.run_id for r in records])
    table.add_column("agent", no_wrap=True, overflow="ellipsis")
    table.add_column("status", no_wrap=True)
    table.add_column("reason", no_wrap=True, overflow="ellipsis")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", no_wrap=True, justify="right")
    for run in records:
        table.add_row(
            run.run_id,
            escape(run.agent if run.parent_run_id is None else f"↳ {run.agent}"),
            _status(run.status),
            run.reason or "",
            _local(run.started_at),
            _duration(run),
        )
    _print_table(table, empty="No runs yet.")


@runs_app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run to stop.")],
    url: Annotated[
        str, typer.Option("--url", help="The running tether serve that holds it.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="The server's API key.", show_default=False)
    ] = None,
) -> None:
    """Stop a run on a running server (as the web UI's Stop button does)."""
    from tether.cli.remote import cancel_run

    state = cancel_run(url, run_id, api_key=api_key)
    status, reason = state.get("status"), state.get("reason")
    console.print(
        f"run {escape(run_id)}: {_status(str(status))}" + (f" ({reason})" if reason else "")
    )


def sessions(
    agent: Annotated[
        str | None, typer.Option("--agent", help="Only this agent's sessions.", show_default=False)
    ] = None,
    limit: Limit = 20,
    user: User = LOCAL_USER,
    database_url: DatabaseUrl = None,
) -> None:
    """Show recent sessions, newest activity first."""
    settings = build_settings(database_url=database_url)
    records = anyio.run(
        functools.partial(_sessions, settings, agent=agent, user_id=UserId(user), limit=limit)
    )
    table = _table("Sessions", "session", [r.session_id for r in records])
    table.add_column("agent", no_wrap=True, overflow="ellipsis")
    table.add_column("title", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("created", no_wrap=True)
    table.add_column("last active", no_wrap=True)
    for record in records:
        table.add_row(
            record.session_id,
            escape(record.agent),
            escape(record.title or ""),
            _local(record.created_at),
            _local(record.updated_at),
        )
    _print_table(table, empty="No sessions yet.")


@db_app.command("upgrade")
def upgrade(database_url: DatabaseUrl = None) -> None:
    """Create the database, or migrate it to the current schema."""
    settings = build_settings(database_url=database_url)
    url = _sql_url(settings)
    anyio.run(_upgrade, settings, url)
    console.print(f"[green]✓[/] Database is up to date: {escape(shown_url(url))}")


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncGenerator[Store]:
    """The settings' SQL store, its schema brought up to date first if it is SQLite (as serve does).

    Raises:
        UsageError: the settings name no persistent database.
        StorageError: the database can't be reached or migrated.
    """
    url = _sql_url(settings)
    from tether.storage.sql import SqlStore

    if url.startswith("sqlite"):
        await _upgrade(settings, url)
    try:
        store = SqlStore.open(url)
    except SQLAlchemyError as exc:
        raise UsageError(f"unusable database URL {shown_url(url)}: {_reason(exc)}") from exc
    try:
        yield store
    except SQLAlchemyError as exc:
        # The store retries what is transient; what is left (no schema, bad credentials)
        # is the operator's to fix, and a traceback would not help them.
        raise StorageError(f"database {shown_url(url)} failed: {_reason(exc)}") from exc
    finally:
        await store.close()


async def _recent_runs(
    settings: Settings, *, session_id: str | None, user_id: UserId, limit: int
) -> list[RunRecord]:
    async with open_store(settings) as store:
        if session_id is not None:
            found = await store.get_session(SessionId(session_id))
            if found is None or found.user_id != user_id:
                raise NotFound(f"no session {session_id}", session_id=session_id)
            session_ids = [found.session_id]
        else:
            # Runs live in sessions: the most recently active sessions hold the latest runs.
            listed = await store.list_sessions(user_id, None, limit=limit)
            session_ids = [s.session_id for s in listed]
        records: list[RunRecord] = []
        for sid in session_ids:
            records.extend(await store.session_runs(sid))
    records.sort(key=lambda r: r.started_at, reverse=True)
    return records[:limit]


async def _sessions(
    settings: Settings, *, agent: str | None, user_id: UserId, limit: int
) -> list[SessionRecord]:
    async with open_store(settings) as store:
        return await store.list_sessions(user_id, agent, limit=limit)


async def _upgrade(settings: Settings, url: str) -> None:
    from tether.storage.migrate import upgrade_database

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        await upgrade_database(url)
    except ArgumentError as exc:
        raise UsageError(f"unusable database URL {shown_url(url)}: {_reason(exc)}") from exc
    except (OSError, SQLAlchemyError) as exc:
        raise StorageError(f"could not migrate {shown_url(url)}: {_reason(exc)}") from exc


def _sql_url(settings: Settings) -> str:
    url = settings.resolved_database_url()
    if url == "memory":
        raise UsageError(
            "the database is `memory`, which no other process can see; "
            "pass --database-url or set TETHER_DATABASE_URL"
        )
    return url


def _table(title: str, id_column: str, ids: list[str]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    # Ids are what you copy into the next command: never cut or folded; other columns wrap.
    table.add_column(id_column, no_wrap=True, min_width=max(map(len, ids), default=0))
    return table


def _reason(exc: Exception) -> str:
    # SQLAlchemy appends a second line pointing at its docs; the error is one line.
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _print_table(table: Table, *, empty: str) -> None:
    if table.row_count:
        console.print(table)
    else:
        console.print(f"[dim]{empty}[/]")


def _local(moment: datetime) -> str:
    # Always with the date: "14:02" alone was ambiguous as soon as a list spanned two days.
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _duration(run: RunRecord) -> str:
    if run.finished_at is None:
        return "[cyan]running[/]" if run.status == "running" else ""
    seconds = (run.finished_at - run.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


_STATUS_STYLES: Final = {
    "completed": "green",
    "cancelled": "yellow",
    "interrupted": "yellow",
    "failed": "red",
    "running": "cyan",
}


def _status(status: str) -> str:
    style = _STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status
