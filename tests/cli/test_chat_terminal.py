"""``tether chat`` in a real pseudo-terminal: Ctrl+C stops an answer, the next turn sees it."""

import os
import re
import sys
from pathlib import Path
from typing import cast

import anyio
import pexpect
import pytest

from tether.ids import SessionId
from tether.records import MessageRecord, RunRecord
from tether.storage.sql import SqlStore

pytestmark = pytest.mark.slow

MARKER = "[This answer was interrupted: stopped by the user.]"


def spawn_chat(tmp_path: Path, *args: str) -> "pexpect.spawn[str]":
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_DATA_DIR"] = str(tmp_path / "data")
    return pexpect.spawn(
        sys.executable,
        ["-m", "tether.cli.main", "chat", "slow-tools", *args],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        # Generous: start-up (imports, migrating a new database) is slow on a busy machine.
        timeout=60,
        dimensions=(40, 200),
    )


def read_session(tmp_path: Path, session_id: str) -> tuple[list[MessageRecord], list[RunRecord]]:
    async def main() -> tuple[list[MessageRecord], list[RunRecord]]:
        store = SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tether.db'}")
        try:
            sid = SessionId(session_id)
            return await store.messages(sid), await store.session_runs(sid)
        finally:
            await store.close()

    return anyio.run(main)


def stop_answer(child: "pexpect.spawn[str]", *, after: str) -> None:
    child.expect_exact(after)
    child.sendintr()
    child.expect_exact("[stopped]")
    child.expect_exact("you>")


def exit_with_ctrl_c(child: "pexpect.spawn[str]") -> str:
    """Ctrl+C at the prompt; the session id from the goodbye line."""
    goodbye = r"--session (ses_\w+)"
    child.sendintr()
    # CPython's readline looks at signals only when its select() on the terminal is
    # interrupted: a Ctrl+C that lands after the prompt is drawn but before that select()
    # waits for the next key. The test presses the moment the prompt shows, which no person
    # can; if that happened, it presses again, as a person would.
    if child.expect([goodbye, pexpect.TIMEOUT], timeout=3) == 1:
        child.sendintr()
        child.expect(goodbye)
    return cast("re.Match[str]", child.match).group(1)


def test_ctrl_c_stops_the_answer_keeps_the_partial_text_and_the_next_turn_sees_it(
    tmp_path: Path,
) -> None:
    first = spawn_chat(tmp_path)
    first.expect_exact("you>")
    first.sendline("tide tables")
    stop_answer(first, after="I will search")
    session_id = exit_with_ctrl_c(first)
    first.expect(pexpect.EOF)
    first.close()
    assert first.exitstatus == 0

    messages, runs = read_session(tmp_path, session_id)
    assert [(r.status, r.reason) for r in runs] == [("cancelled", "user")]
    assert [m.role for m in messages] == ["user", "assistant"]
    partial = messages[1]
    assert partial.status == "interrupted"
    assert partial.content.startswith("You asked about 'tide tables'. I will search")

    second = spawn_chat(tmp_path, "--session", session_id)
    second.expect_exact(f"Resuming session {session_id}")
    second.expect_exact("you>")
    second.sendline("and now?")
    stop_answer(second, after="search_archive(")
    second.sendeof()  # Ctrl+D at the prompt: exit
    second.expect(pexpect.EOF)
    second.close()
    assert second.exitstatus == 0

    messages, runs = read_session(tmp_path, session_id)
    assert [(r.status, r.reason) for r in runs] == [("cancelled", "user")] * 2
    answer = messages[-1].content
    # The scripted model quotes how its previous answer ended, as it received it.
    assert f"«{' '.join(partial.content.split())} {MARKER}». It was cut off." in answer
