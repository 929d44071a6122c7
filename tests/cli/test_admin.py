"""``tether db upgrade``, ``sessions`` and ``runs``, and how the CLI reports bad input."""

from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner, Result

from tether import Settings
from tether.cli.main import app
from tether.demo import SlowToolsTiming, demo_app
from tether.ids import RunId, SessionId

QUICK = SlowToolsTiming(word_s=0, search_s=0, crunch_s=0)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("TETHER_DATA_DIR", str(data))
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return data


def tether(*args: str) -> Result:
    # Wide enough that no table column is shortened.
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _one_red_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_db_upgrade_on_a_fresh_data_dir_creates_the_database(data_dir: Path) -> None:
    result = tether("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert (data_dir / "tether.db").is_file()
    assert "up to date" in result.stdout
    assert tether("db", "upgrade").exit_code == 0


@pytest.mark.parametrize("command", ["sessions", "runs"])
def test_listing_on_a_fresh_data_dir_says_there_is_nothing_yet(
    data_dir: Path, command: str
) -> None:
    result = tether(command)

    assert result.exit_code == 0, result.output
    assert "yet" in result.stdout


def _chat_once(data_dir: Path) -> tuple[SessionId, RunId]:
    async def main() -> tuple[SessionId, RunId]:
        async with demo_app(Settings(data_dir=data_dir), timing=QUICK) as tether_app:
            run = await tether_app.start("slow-tools", "tide tables")
            assert (await run.outcome()).status == "completed"
            return run.session_id, run.run_id

    return anyio.run(main)


def test_sessions_and_runs_after_a_chat_list_it(data_dir: Path) -> None:
    session_id, run_id = _chat_once(data_dir)

    sessions = tether("sessions", "--agent", "slow-tools")
    runs = tether("runs")
    session_runs = tether("runs", "--session", session_id)

    assert sessions.exit_code == 0, sessions.output
    assert session_id in sessions.stdout
    assert "slow-tools" in sessions.stdout
    for result in (runs, session_runs):
        assert result.exit_code == 0, result.output
        assert run_id in result.stdout
        assert "completed" in result.stdout
    assert "No sessions yet." in tether("sessions", "--agent", "assistant").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat", "nope"], "unknown agent 'nope'"),
        (["chat", "--app", "no_such_module:app"], "no module named 'no_such_module'"),
        (["chat", "--app", "tether.demo:no_such_app"], "has no attribute 'no_such_app'"),
        (["chat", "--app", "tether.demo"], "--app must look like module:attribute"),
        (["chat", "--app", "tether.demo:LOCAL_MODEL_AGENTS"], "not a Tether app"),
        (["serve", "--app", "no_such_module:app"], "no module named 'no_such_module'"),
        (["serve", "--host", "0.0.0.0"], "refusing to listen on 0.0.0.0"),
        (["runs", "--session", "ses_missing"], "no session ses_missing"),
        (["db", "upgrade", "--database-url", "memory"], "no other process can see"),
        (["db", "upgrade", "--database-url", "nonsense"], "unusable database URL"),
        (["sessions", "--database-url", "mysql://h/db"], "unsupported database 'mysql'"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    data_dir: Path, args: list[str], message: str
) -> None:
    result = tether(*args)

    assert result.exit_code == 2, result.output
    assert message in _one_red_line(result)


def test_chat_resuming_a_missing_session_exits_2(data_dir: Path) -> None:
    result = tether("chat", "slow-tools", "--session", "ses_missing")

    assert result.exit_code == 2, result.output
    assert "no session ses_missing" in _one_red_line(result)


def test_chat_resuming_another_agents_session_exits_2(data_dir: Path) -> None:
    session_id, _ = _chat_once(data_dir)

    result = tether("chat", "assistant", "--session", session_id)

    assert result.exit_code == 2, result.output
    assert "belongs to agent 'slow-tools'" in _one_red_line(result)
