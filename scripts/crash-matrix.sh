#!/usr/bin/env bash
# The crash matrix (tests/crash) N times in a row, on a fresh PostgreSQL cluster.
#
#   bash scripts/crash-matrix.sh               # 5 runs (what issue 11 asks before resolving)
#   bash scripts/crash-matrix.sh 2             # 2 runs
#   bash scripts/crash-matrix.sh 1 -k release-transfer -x   # extra arguments go to pytest
#
# Every run must pass; the script runs them all and prints one line per run,
# then exits non-zero if any failed. The cluster comes from scripts/pg.sh
# (a new one, deleted on exit); the script refuses to run while this
# checkout's cluster is already running, so the runs start from nothing.
#
# Environment: ESCROW_VENV (default .venv, with the test extra installed),
# ESCROW_PG_PORT (see scripts/pg.sh), DJANGO_SETTINGS_MODULE (default
# tests.settings; tests.settings_swapped also works).
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT"

RUNS=5
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    RUNS="$1"
    shift
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    # The opening comment up to the first line of code (no line numbers to go stale).
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
fi

VENV="${ESCROW_VENV:-.venv}"
PY="$VENV/bin/python"
[[ -x "$PY" ]] || { echo "error: $PY not found (bash scripts/test.sh --quick creates it)" >&2; exit 2; }
"$PY" -c "import gunicorn" 2>/dev/null \
    || { echo "error: gunicorn missing: $PY -m pip install -e '.[test]'" >&2; exit 2; }

if bash scripts/pg.sh status >/dev/null 2>&1; then
    echo "error: this checkout's PostgreSQL cluster is running; stop it first" \
        "(bash scripts/pg.sh stop) so the matrix runs on a fresh one" >&2
    exit 2
fi
cleanup() { bash scripts/pg.sh stop >/dev/null 2>&1 || echo "warning: could not stop PostgreSQL" >&2; }
trap cleanup EXIT
line="$(bash scripts/pg.sh start)"
export DATABASE_URL="${line#DATABASE_URL=}"
export PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-tests.settings}"
export PYTHONDONTWRITEBYTECODE=1

SUMMARY=()
FAILED=0
for ((run = 1; run <= RUNS; run++)); do
    printf '\n==> crash matrix, run %d of %d (%s)\n' "$run" "$RUNS" "$DJANGO_SETTINGS_MODULE"
    start=$SECONDS
    log="$(mktemp "${TMPDIR:-/tmp}/crash-matrix.XXXXXX")"
    set +e
    "$PY" -m pytest tests/crash -q -p no:cacheprovider "$@" 2>&1 | tee "$log"
    rc="${PIPESTATUS[0]}"
    set -e
    result="$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$log" | tail -n 1 | tr -d '=' | xargs)"
    rm -f "$log"
    if ((rc == 0)); then
        SUMMARY+=("run $run: ok     ${result} ($((SECONDS - start))s)")
    else
        FAILED=$((FAILED + 1))
        SUMMARY+=("run $run: FAILED ${result} ($((SECONDS - start))s, exit $rc)")
    fi
done

echo
echo "==================== crash matrix ===================="
printf '  %s\n' "${SUMMARY[@]}"
if ((FAILED)); then
    echo "  result: $FAILED of $RUNS runs failed"
    exit 1
fi
echo "  result: $RUNS of $RUNS runs passed"
