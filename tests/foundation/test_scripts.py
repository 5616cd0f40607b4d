"""The scripts under scripts/ explain themselves: ``--help`` prints the
comment at the top of the file (usage, environment variables), all of it and
nothing of the code below, so the header is the one place to keep current.
The example scripts use the venv ``ESCROW_VENV`` names, absolute or relative."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
WITH_HELP = ["crash-matrix.sh", "pg.sh", "redis.sh", "run-example.sh", "test.sh"]


def header_comment(script: Path) -> list[str]:
    """The lines after the shebang up to the first that is not a comment, without ``# ``."""
    lines = []
    for line in script.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        lines.append(re.sub(r"^# ?", "", line))
    return lines


@pytest.mark.parametrize("name", WITH_HELP)
def test_help_prints_the_whole_header_comment_and_nothing_else(name: str) -> None:
    script = SCRIPTS / name
    # --help answers before the script touches a venv, a cluster or a server.
    shown = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.splitlines() == header_comment(script)


def fake_venv(venv: Path, stamp: str | None) -> Path:
    """A venv whose python only logs its arguments (to the file returned), with the
    script's install stamp (if it keeps one) saying pyproject.toml is installed."""
    log = venv / "calls.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >>"{log}"\n')
    python.chmod(0o755)
    pyproject = SCRIPTS.parent / "pyproject.toml"
    cksum = subprocess.run(
        ["cksum"], stdin=pyproject.open(), capture_output=True, text=True, check=True
    )
    if stamp:
        (venv / stamp).write_text(cksum.stdout)
    return log


@pytest.mark.parametrize("absolute", [True, False], ids=["absolute", "relative"])
@pytest.mark.parametrize(
    ("name", "stamp", "env"),
    [
        ("run-example.sh", ".escrow-example-install", {}),
        ("test-example.sh", None, {"EXAMPLE_NO_APT": "1"}),
    ],
)
def test_an_installed_escrow_venv_is_not_installed_again(
    name: str, stamp: str | None, env: dict[str, str], absolute: bool, tmp_path: Path
) -> None:
    """ESCROW_VENV, absolute or relative to the checkout, is used as it is: no pip.

    The fake python answers every call (the import check, migrate, runserver,
    pytest) at once, so the whole script runs in a moment without a network.
    """
    log = fake_venv(tmp_path / "venv", stamp)
    venv = tmp_path / "venv" if absolute else os.path.relpath(tmp_path / "venv", SCRIPTS.parent)
    subprocess.run(
        ["bash", str(SCRIPTS / name)],
        env={**os.environ, **env, "ESCROW_VENV": str(venv), "PORT": "8123"},
        cwd=tmp_path,  # a relative ESCROW_VENV is the checkout's, wherever we are
        capture_output=True,
        timeout=60,
        check=True,
    )
    calls = log.read_text()
    assert "pip install" not in calls, calls
    assert "import django_escrow_connect" in calls  # the fake venv was the one asked
