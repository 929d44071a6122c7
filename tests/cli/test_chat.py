"""``tether chat`` in process, with piped input: answers stream, sessions resume, approvals ask.

Issue #9 (human in the loop): a paused run's calls are asked about one by one, the answers
resume it, and Ctrl+D at a question stops it.
"""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.cli._sessions import pause_a_session, read_session
from tether.cli.main import app

QUICK_APP = "tests.cli._apps:quick_demo"
SCRIPTS_APP = "tests.cli._apps:approval_scripts"
QUESTION = "Approve delete_record(record_id='INV-42')? [y/n]"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("TETHER_DATA_DIR", str(data))
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    return data


def chat(
    *args: str, lines: list[str], agent: str = "slow-tools", app_spec: str = QUICK_APP
) -> Result:
    command = ["chat", agent, "--app", app_spec, *args]
    return CliRunner().invoke(app, command, input="".join(f"{line}\n" for line in lines))


def session_of(result: Result) -> str:
    match = re.search(r"--session (ses_\w+)", result.stdout)
    assert match is not None, result.output
    return match.group(1)


def test_chat_when_input_ends_answers_each_line_and_prints_how_to_resume() -> None:
    result = chat(lines=["tide tables"])

    assert result.exit_code == 0, result.output
    assert "⚙ search_archive(query='tide tables')" in result.stdout
    assert "↳ 3 archived notes mention 'tide tables'" in result.stdout
    assert "The numbers add up to 2870. That is all I found." in result.stdout
    assert re.search(r"tether chat slow-tools --session ses_\w+", result.stdout)


def test_chat_with_session_shows_the_earlier_messages_and_continues_them() -> None:
    first = chat(lines=["tide tables"])
    match = re.search(r"--session (ses_\w+)", first.stdout)
    assert match is not None, first.output
    session_id = match.group(1)

    second = chat("--session", session_id, lines=["and now?", "/exit", "never sent"])

    assert second.exit_code == 0, second.output
    assert f"Resuming session {session_id} (4 messages)" in second.stdout
    assert "user: tide tables" in second.stdout
    assert "My last answer ended: «" in second.stdout
    assert "That is all I found.». You asked about 'and now?'." in second.stdout
    assert "never sent" not in second.stdout


def test_chat_when_a_call_is_approved_runs_it_and_streams_the_rest_of_the_answer(
    tmp_path: Path,
) -> None:
    result = chat(lines=["please delete INV-42", "sure?", "y"], agent="records-clerk")

    assert result.exit_code == 0, result.output
    assert "⚙ delete_record(record_id='INV-42') …" in result.stdout
    assert result.stdout.count(QUESTION) == 2  # "sure?" is neither y nor n: asked again
    assert "Please answer y or n" in result.stdout
    assert "↳ record INV-42 deleted\nThe tool answered: record INV-42 deleted" in result.stdout
    messages, runs = read_session(tmp_path, session_of(result))
    assert [(r.status, r.reason) for r in runs] == [("completed", None)]
    assert [c.status for m in messages for c in m.tool_calls] == ["ok"]


def test_chat_when_a_call_is_denied_without_a_reason_the_model_hears_the_default(
    tmp_path: Path,
) -> None:
    result = chat(lines=["please delete INV-42", "N", ""], agent="records-clerk")

    assert result.exit_code == 0, result.output
    assert "Reason (Enter for none):" in result.stdout
    assert "↳ denied: The tool call was denied by the user." in result.stdout
    messages, runs = read_session(tmp_path, session_of(result))
    assert [r.status for r in runs] == ["completed"]
    [call] = [c for m in messages for c in m.tool_calls]
    assert (call.status, call.result) == ("denied", "The tool call was denied by the user.")


def test_chat_when_input_ends_at_the_question_stops_the_run_for_the_user(
    tmp_path: Path,
) -> None:
    result = chat(lines=["please delete INV-42"], agent="records-clerk")

    assert result.exit_code == 0, result.output
    assert f"{QUESTION} \n[stopped]\n" in result.stdout
    messages, runs = read_session(tmp_path, session_of(result))
    assert [(r.status, r.reason) for r in runs] == [("cancelled", "user")]
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]
    assert [c.status for c in messages[1].tool_calls] == ["cancelled"]


def test_chat_when_the_resumed_run_pauses_again_asks_again(tmp_path: Path) -> None:
    result = chat(
        lines=["tidy up", "y", "n", "keep B", "y"],
        agent="bulk-clerk",
        app_spec=SCRIPTS_APP,
    )

    assert result.exit_code == 0, result.output
    questions = re.findall(r"Approve (delete_record\(record_id='[A-Z]-\d'\))\?", result.stdout)
    assert questions == [f"delete_record(record_id='{r}')" for r in ("A-1", "B-2", "C-3")]
    assert "↳ denied: keep B" in result.stdout
    assert "All done." in result.stdout
    messages, runs = read_session(tmp_path, session_of(result))
    assert [r.status for r in runs] == ["completed"]
    calls = [(c.call_id, c.status) for m in messages for c in m.tool_calls]
    assert calls == [("call_a", "ok"), ("call_b", "denied"), ("call_c", "ok")]


def test_chat_with_a_session_whose_run_waits_shows_it_and_asks_first(tmp_path: Path) -> None:
    session_id = pause_a_session(tmp_path, "please delete INV-42")

    result = chat("--session", session_id, lines=["y"], agent="records-clerk")

    assert result.exit_code == 0, result.output
    assert "assistant: I will delete record INV-42, once you approve." in result.stdout
    assert "⚙ delete_record(record_id='INV-42') [awaiting_approval]" in result.stdout
    assert "The last answer waits for your approval." in result.stdout
    assert "The tool answered: record INV-42 deleted" in result.stdout
    _, runs = read_session(tmp_path, session_id)
    assert [r.status for r in runs] == ["completed"]
