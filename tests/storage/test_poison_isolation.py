"""A write the database refuses for its data fails only the run that owns it (issue #15).

On a SQLite file and on PostgreSQL, through the real recorder and ``SqlStore``: one run's tool
call carries a value no database takes (an integer too long for any JSON encoder), the other
runs' text in the same flush is stored, the poisoned run is told why, and the store is not
counted as failing (``give_up_s`` is for outages only).
"""

from collections.abc import AsyncIterator

import anyio
import pytest

from tests.contract.test_store import run_record, session_record, tool_call_record
from tests.storage.conftest import Database
from tether.engine.recorder import Recorder
from tether.ids import RunId, SessionId
from tether.storage.migrate import upgrade_database
from tether.storage.sql import SqlStore

pytestmark = pytest.mark.anyio

UNSTORABLE = 10**5000
"""Python's JSON encoder refuses integers past 4300 digits: the same refusal on both databases."""


@pytest.fixture
async def store(database: Database) -> AsyncIterator[SqlStore]:
    await upgrade_database(database.url, schema=database.schema)
    sql_store = SqlStore.open(database.url, schema=database.schema, retry_budget_s=1.0)
    try:
        yield sql_store
    finally:
        await sql_store.close()


async def test_refused_data_fails_only_its_run_and_the_others_are_stored(store: SqlStore) -> None:
    for n in range(3):
        await store.create_session(session_record(f"s{n}"))
        await store.create_run(run_record(f"r{n}", f"s{n}", status="running"), None)
    recorder = Recorder(store, flush_interval_s=3600, give_up_s=0.0)
    lost: dict[str, list[str]] = {"r0": [], "r1": [], "r2": []}
    buffers = [
        recorder.open(RunId(f"r{n}"), SessionId(f"s{n}"), lost[f"r{n}"].append) for n in range(3)
    ]
    for n, buffer in enumerate(buffers):
        buffer.text_delta(f"text of run {n}")
    poisoned = tool_call_record("c1", "r1", "m1")
    buffers[1].tool_started("c1", poisoned.tool, {"n": UNSTORABLE})

    with anyio.fail_after(5):
        assert await recorder.flush()

    for n in (0, 2):
        (message,) = await store.messages(SessionId(f"s{n}"))
        assert message.content == f"text of run {n}"
    assert lost["r0"] == lost["r2"] == []
    (why,) = lost["r1"]
    assert "refused" in why

    # The store is healthy: with give_up_s=0 any counted failure would fail every run at once.
    buffers[0].text_delta(" and more")
    with anyio.fail_after(5):
        assert await recorder.flush()
    (message,) = await store.messages(SessionId("s0"))
    assert message.content == "text of run 0 and more"
    assert lost["r0"] == []
