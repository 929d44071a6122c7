"""``tether chat`` in process, with piped input: answers stream, sessions resume."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tether.cli.main import app

QUICK_APP = "tests.cli._apps:quick_demo"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("TETHER_DATA_DIR", str(data))
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    return data


def chat(*args: str, lines: list[str]) -> Result:
    command = ["chat", "slow-tools", "--app", QUICK_APP, *args]
    return CliRunner().invoke(app, command, input="".join(f"{line}\n" for line in lines))


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
