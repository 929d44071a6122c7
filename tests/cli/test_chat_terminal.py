"""``tether chat`` in a real pseudo-terminal: Ctrl+C stops an answer, the next turn sees it.

Issue #9 (human in the loop): the chat asks y/n about a paused run's calls; Ctrl+C at the
question stops the run, and the chat goes on.
"""

import os
import re
import sys
from pathlib import Path
from typing import cast

import pexpect
import pytest

from tests.cli._sessions import pause_a_session, read_session

pytestmark = pytest.mark.slow

MARKER = "[This answer was interrupted: stopped by the user.]"
REPO = Path(__file__).resolve().parents[2]


def spawn_chat(tmp_path: Path, *args: str, agent: str = "slow-tools") -> "pexpect.spawn[str]":
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(REPO)  # for --app tests.cli._apps:…
    return pexpect.spawn(
        sys.executable,
        ["-m", "tether.cli.main", "chat", agent, *args],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        # Generous: start-up (imports, migrating a new database) is slow on a busy machine.
        timeout=60,
        dimensions=(40, 200),
        # pytest shows what the chat printed when a test fails (pexpect keeps only a tail).
        logfile=sys.stdout,
    )


def stop_answer(child: "pexpect.spawn[str]", *, after: str) -> None:
    child.expect_exact(after)
    child.sendintr()
    child.expect_exact("[stopped]")
    child.expect_exact("you>")


def ctrl_c_at_input(child: "pexpect.spawn[str]", *, then: str) -> None:
    """Ctrl+C while ``input()`` waits (the prompt or a question), until ``then`` shows."""
    child.sendintr()
    # CPython's readline looks at signals only when its select() on the terminal is
    # interrupted: a Ctrl+C that lands after the prompt is drawn but before that select()
    # waits for the next key. The test presses the moment the prompt shows, which no person
    # can; if that happened, it presses again, as a person would.
    if child.expect([then, pexpect.TIMEOUT], timeout=3) == 1:
        child.sendintr()
        child.expect(then)


def exit_with_ctrl_c(child: "pexpect.spawn[str]") -> str:
    """Ctrl+C at the prompt; the session id from the goodbye line."""
    ctrl_c_at_input(child, then=r"--session (ses_\w+)")
    return cast("re.Match[str]", child.match).group(1)


def exit_with_ctrl_d(child: "pexpect.spawn[str]") -> str:
    """Ctrl+D at the prompt; the session id from the goodbye line."""
    child.sendeof()
    child.expect(r"--session (ses_\w+)")
    session_id = cast("re.Match[str]", child.match).group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    return session_id


def ask_to_delete(child: "pexpect.spawn[str]", message: str, record_id: str) -> None:
    """Send ``message`` at the prompt and wait for the approval question."""
    child.expect_exact("you>")
    child.sendline(message)
    # "Approve" is styled: its escape codes sit between it and the rest.
    child.expect_exact(f"delete_record(record_id='{record_id}')? [y/n]")


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


def test_approving_at_the_question_runs_the_tool_and_completes_the_run(tmp_path: Path) -> None:
    child = spawn_chat(tmp_path, agent="records-clerk")
    ask_to_delete(child, "please delete INV-42", "INV-42")
    child.sendline("y")
    child.expect_exact("The tool answered: record INV-42 deleted")
    child.expect_exact("you>")
    session_id = exit_with_ctrl_d(child)

    messages, runs = read_session(tmp_path, session_id)
    assert [(r.status, r.reason) for r in runs] == [("completed", None)]
    assert [c.status for m in messages for c in m.tool_calls] == ["ok"]
    assert messages[-1].content == "The tool answered: record INV-42 deleted"


def test_denying_with_a_reason_tells_the_model_and_never_runs_the_tool(tmp_path: Path) -> None:
    child = spawn_chat(tmp_path, agent="records-clerk")
    ask_to_delete(child, "please delete INV-42", "INV-42")
    child.sendline("n")
    child.expect_exact("(Enter for none)")
    child.sendline("It is still needed")
    child.expect_exact("The tool answered: It is still needed")
    child.expect_exact("you>")
    session_id = exit_with_ctrl_d(child)

    messages, runs = read_session(tmp_path, session_id)
    assert [r.status for r in runs] == ["completed"]
    [call] = [c for m in messages for c in m.tool_calls]
    assert (call.status, call.result) == ("denied", "It is still needed")
    assert "It is still needed" in messages[-1].content


def test_ctrl_c_at_the_question_stops_the_run_and_the_next_message_works(
    tmp_path: Path,
) -> None:
    child = spawn_chat(tmp_path, agent="records-clerk")
    ask_to_delete(child, "please delete INV-42", "INV-42")
    ctrl_c_at_input(child, then=r"\[stopped\]")
    ask_to_delete(child, "then delete INV-7", "INV-7")
    child.sendline("y")
    child.expect_exact("The tool answered: record INV-7 deleted")
    child.expect_exact("you>")
    session_id = exit_with_ctrl_d(child)

    messages, runs = read_session(tmp_path, session_id)
    assert [(r.status, r.reason) for r in runs] == [("cancelled", "user"), ("completed", None)]
    first = [m for m in messages if m.run_id == runs[0].run_id]
    assert [(m.role, m.status) for m in first] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]
    assert [c.status for c in first[1].tool_calls] == ["cancelled"]
    assert [c.status for m in messages for c in m.tool_calls] == ["cancelled", "ok"]


def test_ctrl_c_while_the_approved_answer_streams_stops_it(tmp_path: Path) -> None:
    child = spawn_chat(tmp_path, "--app", "tests.cli._apps:approval_scripts", agent="slow-clerk")
    ask_to_delete(child, "tidy up", "A-1")
    child.sendline("y")
    child.expect_exact("now tidying up")  # then it parks until stopped
    child.sendintr()
    child.expect_exact("[stopped]")
    child.expect_exact("you>")
    session_id = exit_with_ctrl_d(child)

    messages, runs = read_session(tmp_path, session_id)
    assert [(r.status, r.reason) for r in runs] == [("cancelled", "user")]
    assert [c.status for m in messages for c in m.tool_calls] == ["ok"]  # approved, then ran
    assert (messages[-1].status, messages[-1].content) == (
        "interrupted",
        "Deleted; now tidying up",
    )


def test_resuming_a_session_whose_run_waits_asks_the_question_first(tmp_path: Path) -> None:
    session_id = pause_a_session(tmp_path, "please delete INV-42")

    child = spawn_chat(tmp_path, "--session", session_id, agent="records-clerk")
    child.expect_exact("⚙ delete_record(record_id='INV-42') [awaiting_approval]")
    child.expect_exact("The last answer waits for your approval.")
    child.expect_exact("delete_record(record_id='INV-42')? [y/n]")
    child.sendline("y")
    child.expect_exact("The tool answered: record INV-42 deleted")
    child.expect_exact("you>")
    assert exit_with_ctrl_d(child) == session_id

    _, runs = read_session(tmp_path, session_id)
    assert [r.status for r in runs] == ["completed"]
