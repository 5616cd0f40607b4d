"""The package metadata promises what tox.ini tests: a classifier for every
Django and Python of the matrix, and upper bounds on the dependencies whose
next release is untested (or whose private attributes the code reads)."""

from __future__ import annotations

import configparser
import fnmatch
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _matrix() -> tuple[set[str], set[str]]:
    """The Python and Django versions of tox.ini's env_list (py312-django61)."""
    tox = (ROOT / "tox.ini").read_text()
    pythons = {f"{m[0]}.{m[1:]}" for m in re.findall(r"^\s+py(\d+)-django\d+$", tox, re.M)}
    djangos = {f"{m[0]}.{m[1:]}" for m in re.findall(r"^\s+py\d+-django(\d+)$", tox, re.M)}
    return pythons, djangos


def test_a_classifier_for_every_tested_django_and_python():
    classifiers = set(_project()["classifiers"])
    pythons, djangos = _matrix()
    assert djangos, "no djangoNN environments found in tox.ini"
    for version in djangos:
        assert f"Framework :: Django :: {version}" in classifiers
    for version in pythons:
        assert f"Programming Language :: Python :: {version}" in classifiers


@pytest.mark.parametrize("name", ["Django", "djangorestframework", "django-fsm-2", "stripe"])
def test_dependencies_have_an_upper_bound(name):
    (requirement,) = [
        r
        for r in _project()["dependencies"]
        if re.match(rf"{re.escape(name)}(?=[<>=!~;\[ ]|$)", r, re.I)
    ]
    assert "<" in requirement, requirement


def test_the_django_bound_admits_the_newest_tested_django_only():
    (requirement,) = [r for r in _project()["dependencies"] if r.startswith("Django")]
    upper = re.search(r"<(\d+)\.(\d+)", requirement)
    newest = max(tuple(map(int, v.split("."))) for v in _matrix()[1])
    assert (int(upper[1]), int(upper[2])) == (newest[0], newest[1] + 1), requirement


@pytest.mark.parametrize("variable", ["DATABASE_URL", "ESCROW_PG_PREPARED", "REDIS_URL"])
def test_the_test_environments_pass_the_servers_through(variable):
    # tox runs a command with a clean environment: a variable it does not pass
    # through is unset, and `tox -e py313-django61` with DATABASE_URL exported
    # silently ran on SQLite, skipping every PostgreSQL-only test.
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    patterns = tox["testenv"]["pass_env"].split()
    assert any(fnmatch.fnmatchcase(variable, pattern) for pattern in patterns), patterns
