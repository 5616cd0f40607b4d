#!/usr/bin/env bash
# The parts of the suite that lean most on Django's own machinery (the admin
# and its actions, request parsing, system checks, migrations, the webhook
# operations pages, the task-mode requeue on django.tasks) under the newest Django the package supports, on SQLite,
# as a guard in CI (.ci/run); the whole suite under every Django is tox's:
#
#   bash scripts/test-newest-django.sh            # Django 6.1 on Python 3.13 or 3.12
#   bash scripts/test-newest-django.sh -x -k admin # extra arguments go to pytest
#
# Django 6.x needs Python 3.12+. The script looks for python3.13, then
# python3.12, on PATH and then among pyenv's versions (~/.pyenv/versions); a
# machine with neither says so and exits 0 (the full matrix is tox's job:
# `tox -e py313-django61`, docs/development.md). The venv is .venv-django61
# (ESCROW_NEWEST_VENV to change it); the Django series is ESCROW_NEWEST_DJANGO
# (default 6.1).
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT"

SERIES="${ESCROW_NEWEST_DJANGO:-6.1}"
VENV="${ESCROW_NEWEST_VENV:-.venv-django${SERIES//./}}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}"

find_python() {
    local v candidate
    for v in 3.13 3.12; do
        if command -v "python$v" >/dev/null 2>&1 && "python$v" -c pass 2>/dev/null; then
            command -v "python$v"
            return 0
        fi
        for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v"; do
            if [[ -x "$candidate" ]] && "$candidate" -c pass 2>/dev/null; then
                echo "$candidate"
                return 0
            fi
        done
    done
    return 1
}

if ! python="$(find_python)"; then
    echo "Django $SERIES: skipped, no Python 3.12 or 3.13 on this machine (Django 6.x needs one)"
    exit 0
fi
major="${SERIES%%.*}"
minor="${SERIES#*.}"
next="$major.$((minor + 1))"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating $VENV with $python ($("$python" --version 2>&1))"
    "$python" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -e ".[test]" "Django>=$SERIES,<$next"
"$VENV/bin/python" -c 'import django; print("Django", django.get_version())'
WORKERS="$(nproc 2>/dev/null || echo 1)"
XDIST=()
if ((WORKERS > 1)); then
    XDIST=(-n "$WORKERS" --dist loadgroup) # pytest-xdist, as scripts/test.sh
fi
exec env -u DATABASE_URL "$VENV/bin/python" -m pytest -q -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} \
    --ds=tests.settings tests/admin tests/security/test_malformed_input.py \
    tests/foundation/test_checks.py tests/foundation/test_admin.py \
    tests/foundation/test_migrations.py tests/foundation/test_settings.py \
    tests/webhooks/test_operations.py tests/webhooks/test_requeue_stuck_events.py "$@"
