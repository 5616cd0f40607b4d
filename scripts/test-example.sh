#!/usr/bin/env bash
# The example marketplace's own tests (a pytest run of their own, with the
# example's settings: example_project/pytest.ini):
#
#   bash scripts/test-example.sh             # all, including the browser test
#   bash scripts/test-example.sh -k refund   # extra arguments go to pytest
#
# The browser test drives Debian's Chromium with Selenium. When chromium or
# chromium-driver is missing and we are root with apt-get, they are installed
# (apt-get update && apt-get install -y chromium chromium-driver); if that is
# impossible the browser test is skipped with the reason. Never downloads a
# browser build. Set EXAMPLE_NO_APT=1 to skip the apt-get step.
#
# Environment: ESCROW_VENV (default .venv; absolute, or relative to the
# checkout; created and installed like scripts/run-example.sh does when
# missing), DATABASE_URL (default: in-memory SQLite), EXAMPLE_SCREENSHOT_DIR
# (default /tmp/example-screenshots).
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT"
VENV="${ESCROW_VENV:-.venv}"
# Absolute, so that "$PY" still names it from another directory (the
# import check below runs in /tmp); a relative ESCROW_VENV is the checkout's.
[[ "$VENV" == /* ]] || VENV="$PROJECT/$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1

if [[ ! -x "$PY" ]]; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
fi
if ! (cd /tmp && "$PY" -c "import django_escrow_connect, dj_database_url, pytest_django") 2>/dev/null; then
    "$PY" -m pip install -q -e ".[test]"
fi
if ! "$PY" -c "import selenium" 2>/dev/null; then
    "$PY" -m pip install -q -r example_project/requirements-test.txt \
        || echo "warning: could not install selenium; the browser test will be skipped" >&2
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [[ "${EXAMPLE_NO_APT:-}" != 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "==> installing Debian's chromium and chromium-driver for the browser test"
        if ! (apt-get update -q && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q chromium chromium-driver) >/tmp/example-apt.log 2>&1; then
            echo "warning: apt-get could not install chromium (see /tmp/example-apt.log);" \
                "the browser test will be skipped" >&2
        fi
    else
        echo "note: chromium/chromedriver not found; the browser test will be skipped" >&2
    fi
fi

rc=0
"$PY" -m pytest -c example_project/pytest.ini --rootdir example_project \
    example_project/example_tests "$@" || rc=$?
if ((rc == 5)); then
    echo "error: pytest collected no tests" >&2
fi
exit "$rc"
