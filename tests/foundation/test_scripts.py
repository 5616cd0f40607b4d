"""The scripts under scripts/ explain themselves: ``--help`` prints the
comment at the top of the file (usage, environment variables), all of it and
nothing of the code below, so the header is the one place to keep current."""

from __future__ import annotations

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
