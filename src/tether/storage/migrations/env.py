"""Alembic environment for tether's schema.

Alembic executes this file itself (it is not imported by the package). It migrates, in order of
preference: the connection ``upgrade_database`` hands in as ``config.attributes["connection"]``;
a URL from ``config.attributes["url"]``, ``-x url=...`` or the config's ``sqlalchemy.url``
(e.g. ``alembic -x url=sqlite+aiosqlite:///dev.db revision --autogenerate -m "..."``).
"""

import anyio
from alembic import context
from sqlalchemy import Connection

from tether.storage.sql import open_engine
from tether.storage.tables import Base


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite can't ALTER most things: future migrations copy the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_migrations(connection)
        return
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise RuntimeError("no database: pass -x url=... or set sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    anyio.run(_migrate_url, url)


_main()
