#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#
#   bash scripts/test.sh            # lint, types, docs, SQLite, PostgreSQL (both settings), example
#   bash scripts/test.sh --quick    # SQLite only (tests.settings), no lint, types or docs
#   bash scripts/test.sh -k refund  # extra arguments go to every pytest run
#   bash scripts/test.sh --quick -- -x tests/test_money.py
#
# It creates .venv with python3 when missing and installs the package there in
# editable mode with the test, lint, types and docs extras (again whenever
# pyproject.toml changes). PostgreSQL is a throwaway cluster from
# scripts/pg.sh, stopped on exit unless it was already running; Redis (the
# Celery broker of the real-worker tests, tests/workers) likewise comes from
# scripts/redis.sh, which installs Debian's redis-server when it is missing.
#
# Every pytest run uses pytest-xdist with one worker per CPU (each worker has
# its own test database; tests that share a server outside the database are
# grouped onto one worker with @pytest.mark.xdist_group).
#
# Environment: PYTHON (interpreter for a new venv, default python3),
# ESCROW_TEST_WORKERS (pytest-xdist workers: a number, default the CPU count;
# 0 runs in one process), ESCROW_VENV (default .venv; absolute, or relative
# to the checkout),
# ESCROW_PG_PORT (see scripts/pg.sh), ESCROW_REDIS_PORT (see scripts/redis.sh).
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT"

QUICK=0
PYTEST_ARGS=()
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        -h | --help)
            # The opening comment up to the first line of code (no line numbers to go stale).
            sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        --)
            shift
            PYTEST_ARGS+=("$@")
            break
            ;;
        *) PYTEST_ARGS+=("$1") ;;
    esac
    shift
done

VENV="${ESCROW_VENV:-.venv}"
PY="$VENV/bin/python"
WORKERS="${ESCROW_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
[[ "$WORKERS" =~ ^[0-9]+$ ]] || { echo "error: ESCROW_TEST_WORKERS must be a number, not '$WORKERS'" >&2; exit 2; }
XDIST=()
if ((WORKERS > 1)); then
    XDIST=(-n "$WORKERS" --dist loadgroup)
fi
RESULTS="$(mktemp -d "${TMPDIR:-/tmp}/escrow-test.XXXXXX")"
SUMMARY=()
PG_STARTED=0
REDIS_STARTED=0
CURRENT=""

export PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1

say() { printf '\n==> %s\n' "$*"; }

finish() {
    local rc=$?
    set +e
    if ((PG_STARTED)); then
        bash scripts/pg.sh stop >/dev/null 2>&1 || echo "warning: could not stop PostgreSQL" >&2
    fi
    if ((REDIS_STARTED)); then
        bash scripts/redis.sh stop >/dev/null 2>&1 || echo "warning: could not stop Redis" >&2
    fi
    if [[ -n "$CURRENT" ]]; then
        SUMMARY+=("FAIL  $CURRENT")
    fi
    echo
    echo "==================== summary ===================="
    local line
    for line in "${SUMMARY[@]}"; do
        echo "  $line"
    done
    if [[ -x "$PY" ]] && compgen -G "$RESULTS/*.xml" >/dev/null; then
        "$PY" - "$RESULTS" <<'EOF'
import glob, sys
import xml.etree.ElementTree as ET

total = failed = skipped = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        continue
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for s in suites:
        total += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
# One plain line (no indent) that counts every pytest run of this script.
print(f"pytest: {total - failed - skipped} passed, {failed} failed, {skipped} skipped")
EOF
    fi
    if ((rc == 0)); then
        echo "  result: OK"
    else
        echo "  result: FAILED (exit $rc)"
    fi
    rm -rf "$RESULTS"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run one named step; record it; stop the whole script on failure.
# (Called as `"$@" || rc=$?`, a step function runs without errexit: each one
# returns its failures explicitly.)
step() {
    local name="$1"
    shift
    CURRENT="$name"
    say "$name"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        SUMMARY+=("FAIL  $name (exit $rc, $((SECONDS - start))s)")
        CURRENT=""
        exit "$rc"
    fi
    SUMMARY+=("ok    $name ($((SECONDS - start))s)")
    CURRENT=""
}

setup_venv() {
    if [[ ! -x "$PY" ]]; then
        local python="${PYTHON:-python3}"
        echo "creating $VENV with $python ($("$python" --version 2>&1))"
        "$python" -m venv "$VENV" || {
            echo "error: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
            return 1
        }
        "$PY" -m pip install -q --upgrade pip || return 1
    fi
    # Reinstall only when pyproject.toml changed (or the last install failed).
    local stamp="$VENV/.escrow-connect-install" want
    want="$(cksum <pyproject.toml)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$PY" -c "import django_escrow_connect, pytest, xdist, ruff, mypy, mkdocs" 2>/dev/null; then
        echo "dependencies up to date"
        return 0
    fi
    rm -f "$stamp"
    # The test extra includes the real task engines (django-tasks-db, Celery,
    # the Redis client) that tests/workers drives in the PostgreSQL stage.
    "$PY" -m pip install -q -e ".[test,lint,types,docs]" || return 1
    printf '%s\n' "$want" >"$stamp"
}

# run_pytest LABEL SETTINGS [PATH...]: one pytest run in a subshell (so its
# environment does not leak); exit code 5 (nothing collected) counts as a failure.
run_pytest() {
    local label="$1" settings="$2" rc=0
    shift 2
    (
        export DJANGO_SETTINGS_MODULE="$settings"
        if [[ "$label" == sqlite* ]]; then
            unset DATABASE_URL
        fi
        if [[ "$label" == *prepared* ]]; then
            # tests/settings.py: server-side binding and prepared statements.
            export ESCROW_PG_PREPARED=1
        fi
        if [[ "$label" == *one-process* ]]; then
            XDIST=()
        fi
        exec "$PY" -m pytest -q --junit-xml="$RESULTS/$label.xml" -o junit_family=xunit2 \
            ${XDIST[@]+"${XDIST[@]}"} ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} "$@"
    ) || rc=$?
    if ((rc == 5)) && ((${#PYTEST_ARGS[@]})); then
        # Extra arguments (a -k, a path) that select nothing of this run's tests.
        echo "note: the arguments select none of this run's tests ($label)"
        return 0
    fi
    if ((rc == 5)); then
        echo "error: pytest collected no tests ($label)" >&2
    fi
    return "$rc"
}

start_pg() {
    if bash scripts/pg.sh status >/dev/null 2>&1; then
        echo "reusing the cluster that is already running (it is left running)"
    else
        PG_STARTED=1
    fi
    local line
    line="$(bash scripts/pg.sh start)" || return 1
    DATABASE_URL="${line#DATABASE_URL=}"
    export DATABASE_URL
    echo "DATABASE_URL=$DATABASE_URL"
}

# Redis for the Celery worker tests (tests/workers). scripts/redis.sh installs
# Debian's redis-server as root when it is missing; only when that is
# impossible (exit 3) do those tests skip, saying so. Any other failure fails.
start_redis() {
    if bash scripts/redis.sh status >/dev/null 2>&1; then
        echo "reusing the Redis server that is already running (it is left running)"
    else
        REDIS_STARTED=1
    fi
    local line rc=0
    line="$(bash scripts/redis.sh start)" || rc=$?
    if ((rc == 3)); then
        REDIS_STARTED=0
        echo "Redis could not be installed: the Celery worker tests will SKIP"
        return 0
    fi
    ((rc == 0)) || return "$rc"
    REDIS_URL="${line#REDIS_URL=}"
    export REDIS_URL
    echo "REDIS_URL=$REDIS_URL"
}

# GNU gettext lets tests/foundation/test_translations.py check that makemessages
# is clean and the committed .mo files are current. Without it those two checks
# skip, so installing it is best effort (Debian's package, as root) and never
# fails the run.
ensure_gettext() {
    if command -v msgfmt >/dev/null && command -v xgettext >/dev/null; then
        echo "gettext: $(command -v msgfmt)"
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        (timeout 300 apt-get install -y -q --no-install-recommends gettext >/dev/null 2>&1 \
            || { timeout 300 apt-get update -q >/dev/null 2>&1 \
                && timeout 300 apt-get install -y -q --no-install-recommends gettext >/dev/null 2>&1; }) \
            && { echo "gettext installed"; return 0; }
    fi
    echo "gettext not available: the catalog checks will skip"
    return 0
}

step "install into $VENV" setup_venv
step "gettext for the translation checks" ensure_gettext
if ((!QUICK)); then
    step "ruff check ." "$PY" -m ruff check .
    # The whole tree (ruff's config leaves out only the generated migrations):
    # after a merge, `ruff format .` fixes what this reports.
    step "ruff format --check ." "$PY" -m ruff format --check .
    step "mypy" "$PY" -m mypy
    # The docs site as Read the Docs builds it: a broken link or anchor fails.
    step "mkdocs build --strict" "$PY" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
fi
step "pytest sqlite tests.settings" run_pytest sqlite-settings tests.settings
if ((!QUICK)); then
    step "start postgresql (scripts/pg.sh)" start_pg
    step "start redis (scripts/redis.sh)" start_redis
    # The real task workers (tests/workers: db_worker and Celery processes
    # draining a backlog) run on their own, in one pytest process: beside
    # another xdist worker's tests the Celery pools of 2 and 4 workers stalled
    # until their 600 s timeout.
    step "pytest postgresql tests.settings" \
        run_pytest postgres-settings tests.settings --ignore=tests/workers
    step "pytest postgresql real task workers (tests/workers, one process)" \
        run_pytest postgres-workers-one-process tests.settings tests/workers
    # The crash matrix (real server processes, SIGKILL) runs once, above: the
    # swapped models add nothing to its phases but minutes of CI time.
    # DJANGO_SETTINGS_MODULE=tests.settings_swapped bash scripts/crash-matrix.sh
    # runs it under them.
    step "pytest postgresql tests.settings_swapped (crash matrix: above)" \
        run_pytest postgres-settings_swapped tests.settings_swapped --ignore=tests/crash
    # The raw SQL of the webhook pipeline and the services under server-side
    # binding with prepared statements (docs/scale.md's recommended setting).
    step "pytest postgresql prepared statements (webhooks, payments)" \
        run_pytest postgres-prepared tests.settings tests/webhooks tests/payments
    # The example marketplace: its own settings, views, API, demo_flow and
    # the headless-Chromium walk through the pages (SQLite).
    step "example marketplace (scripts/test-example.sh)" \
        env -u DATABASE_URL bash scripts/test-example.sh \
        --junit-xml="$RESULTS/example.xml" -o junit_family=xunit2
fi
