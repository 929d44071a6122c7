"""The package as a user installs it: the wheel's contents, and the wheel serving outside the repo.

Both build with ``uv build`` (the Makefile's pinned uv in ``.tools/``, else one on ``PATH``), as a
release would. The install test takes the locked versions (``uv export``) as constraints and
leaves out the ``local`` extra, whose llama.cpp compiles for minutes: the embedded-model agents
must then be listed as unavailable, with the command that installs them.
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.cli.test_serve import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "src" / "tether" / "storage" / "migrations"


def uv() -> str:
    pinned = REPO / ".tools" / "bin" / "uv"
    found = str(pinned) if pinned.is_file() else shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: `make install-dev` puts it in .tools/bin/uv")
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([uv(), "build", "--quiet", "--out-dir", str(out), str(REPO)], check=True)
    return out


def wheel_of(dist: Path) -> Path:
    [wheel] = dist.glob("tether-*.whl")
    return wheel


def test_wheel_holds_the_web_ui_the_migrations_and_py_typed(dist: Path) -> None:
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = set(wheel.namelist())
        index = wheel.read("tether/web/index.html").decode()
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = wheel.read(metadata_name).decode()

    referenced = set(re.findall(r'(?:src|href)="(?:\./|/)?(assets/[^"]+)"', index))
    assert referenced, index
    assert {f"tether/web/{asset}" for asset in referenced} <= names
    migrations = {
        f"tether/storage/migrations/{path.relative_to(MIGRATIONS)}"
        for path in MIGRATIONS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {
        "tether/storage/migrations/env.py",
        "tether/storage/migrations/script.py.mako",
        "tether/storage/migrations/versions/0001_initial.py",
    } <= migrations
    assert migrations <= names
    assert "tether/py.typed" in names
    assert "Provides-Extra: local" in metadata
    assert "Provides-Extra: agno" in metadata
    assert not any(name.startswith(("tests/", "web/", "bench/")) for name in names)


def test_sdist_builds_from_the_repo(dist: Path) -> None:
    [sdist] = dist.glob("tether-*.tar.gz")
    assert sdist.stat().st_size > 0


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv outside the repo with the wheel (no extras) in it; its bin directory."""
    root = tmp_path_factory.mktemp("venv")
    constraints = root / "constraints.txt"
    export = ["export", "--quiet", "--frozen", "--format", "requirements-txt", "--no-dev"]
    subprocess.run(
        [uv(), *export, "--no-emit-project", "--no-hashes", "--output-file", str(constraints)],
        cwd=REPO,
        check=True,
    )
    venv = root / "venv"
    subprocess.run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run(
        [uv(), "pip", "install", "--quiet", "--constraints", str(constraints), str(wheel_of(dist))],
        env=env,
        check=True,
    )
    return venv / "bin"


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[tuple[str, "pexpect.spawn[str]"]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "VIRTUAL_ENV"))}
    server: pexpect.spawn[str] = pexpect.spawn(
        str(installed / "tether"),
        ["serve", "--port", str(port)],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 400),
    )
    try:
        server.expect_exact("Application startup complete")
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.close(force=True)


def test_installed_wheel_serves_the_ui_and_the_demo_outside_the_checkout(
    served: tuple[str, "pexpect.spawn[str]"], tmp_path: Path
) -> None:
    base, server = served
    page = httpx.get(f"{base}/", timeout=10)
    agents = {a["name"]: a for a in httpx.get(f"{base}/agents", timeout=10).json()}
    run = httpx.post(f"{base}/agents/slow-tools/runs", json={"message": "hello"}, timeout=60).text
    refused = httpx.post(f"{base}/agents/assistant/runs", json={"message": "hi"}, timeout=10)

    assert page.status_code == 200
    assert '<div id="app">' in page.text
    assert "event: run_finished" in run
    assert (tmp_path / ".tether" / "tether.db").is_file()  # created and migrated
    assert agents["slow-tools"]["available"] is True
    assert agents["assistant"]["available"] is False
    assert "pip install 'tether[local]'" in agents["assistant"]["unavailable_reason"]
    assert refused.status_code == 422
    assert "pip install 'tether[local]'" in refused.json()["detail"]
    assert "Traceback" not in (server.before or "")
