"""What ``tether chat`` left in the SQLite database under ``tmp_path / "data"``."""

from pathlib import Path

import anyio

from tether import Settings
from tether.demo import demo_app
from tether.events import RunPaused
from tether.ids import SessionId
from tether.records import MessageRecord, RunRecord
from tether.storage.sql import SqlStore


def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tether.db'}"


def read_session(tmp_path: Path, session_id: str) -> tuple[list[MessageRecord], list[RunRecord]]:
    async def main() -> tuple[list[MessageRecord], list[RunRecord]]:
        store = SqlStore.open(database_url(tmp_path))
        try:
            sid = SessionId(session_id)
            return await store.messages(sid), await store.session_runs(sid)
        finally:
            await store.close()

    return anyio.run(main)


def pause_a_session(tmp_path: Path, message: str) -> str:
    """A ``records-clerk`` session whose run waits for approval (as a closed chat leaves it)."""

    async def main() -> str:
        settings = Settings(data_dir=tmp_path / "data", database_url=database_url(tmp_path))
        app = demo_app(settings)
        async with app:
            run = await app.start("records-clerk", message)
            async for _ in run.events():
                pass
            assert isinstance(await run.settled(), RunPaused)
            return run.session_id

    return anyio.run(main)
