"""A model setting naming no installed model is reported by `check`, not a traceback.

The package's foreign keys to such a model stay strings, and Django's admin
inline checks crash on them; so this runs `manage.py check` in a fresh
process whose settings name the missing model from the start (overriding the
setting inside a test cannot unresolve a foreign key already made).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ("ESCROW_CONNECT_ORGANIZATION_MODEL", "escrow_connect.E003"),
        ("ESCROW_CONNECT_TASK_MODEL", "escrow_connect.E002"),
    ],
)
def test_check_names_the_setting_of_a_missing_model(tmp_path, setting, code):
    (tmp_path / "missing_model_settings.py").write_text(
        f"from tests.settings import *  # noqa: F403\n{setting} = 'testapp.Missing'\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
        "DJANGO_SETTINGS_MODULE": "missing_model_settings",
    }
    env.pop("DATABASE_URL", None)  # the check needs no database

    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert f"({code}) {setting} refers to 'testapp.Missing'" in result.stderr
