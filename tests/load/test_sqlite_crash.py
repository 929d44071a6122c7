"""``kill -9`` on the default set-up (SQLite, no Redis), then a restart (issue #13).

A client that reconnects with ``Last-Event-ID`` after its worker was killed and another took
over the database must always get the run's ``run_finished``: never a 204 because recovery gave
the terminal event a seq the client had already seen as text. The stored ending is the one that
reconnect shows, once.
"""

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Final

import anyio
import pytest

from tests.e2e._workers import WorkerSettings, serving
from tests.load._client import http_client, start_run
from tests.load._invariants import Seen, Tally, check_stored, read_stored
from tests.load.load_app import APP
from tests.load.test_faults import reconnect
from tether.storage.sql import open_engine

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.slow]

RUNS: Final = 5
TOKENS_BEFORE_KILL: Final = 10
LEASE_S: Final = 2.0
FLUSH_INTERVAL_S: Final = 1.0
"""The worker stores streamed text at most this late: it dies with up to a second unstored, so
the client has seen seqs the database never got."""


async def test_reconnect_after_kill_9_and_restart_on_sqlite_ends_with_run_finished(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tether.db'}"
    settings = WorkerSettings(
        database_url=url,
        redis_url=None,
        app=APP,
        lease_s=LEASE_S,
        flush_interval_s=FLUSH_INTERVAL_S,
    )
    seen = [Seen() for _ in range(RUNS)]
    async with serving(["A"], settings, log_dir=tmp_path) as (a,), AsyncExitStack() as stack:
        client = await stack.enter_async_context(http_client(a.base_url))

        async def one(index: int) -> None:
            stream = await stack.enter_async_context(
                start_run(client, f"talk #{index}", seen[index])
            )
            assert stream is not None, seen[index].refusal
            for _ in range(TOKENS_BEFORE_KILL):
                await stream.read_until(lambda frame: frame.event == "text_delta")

        async with anyio.create_task_group() as tg:
            for index in range(RUNS):
                tg.start_soon(one, index)
        a.kill()
        await a.process.wait()  # dead before its clients leave: no stop for a disconnect
    tally = Tally()
    async with (
        serving(["A2"], settings, log_dir=tmp_path) as (restarted,),
        http_client(restarted.base_url) as client,
    ):
        for record in seen:
            tally.add(await reconnect(client, record))
        engine = open_engine(url)
        try:
            for record in seen:
                stored = await read_stored(engine, record.run_id)
                tally.add(check_stored(record, stored, text_rule="streamed_goes_on"))
        finally:
            await engine.dispose()

    assert tally.total == 0, tally.report()
