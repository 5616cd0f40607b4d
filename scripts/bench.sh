#!/usr/bin/env bash
# Benchmarks on a throwaway PostgreSQL cluster with production durability
# (fsync, synchronous_commit and full_page_writes on). See docs/performance.md.
#
#   bash scripts/bench.sh                 # ingest vs floor, then API, Stripe calls, 1k/100k lists
#   bash scripts/bench.sh ingest [args]   # only the webhook ingest (benchmarks/ingest.py)
#   bash scripts/bench.sh api [args]      # only the API run (benchmarks/run.py)
#   bash scripts/bench.sh djstripe [args] # ingest, then dj-stripe 2.11 on the same payloads
#                                         # (benchmarks/djstripe_ingest.py, in its own venv)
#   bash scripts/bench.sh statements [args] # where each webhook statement's time goes
#                                         # (benchmarks/statements.py; a diagnostic, no ratios)
#
# ESCROW_PG_PREPARED=1 runs both sides with server-side binding and prepared
# statements (tests/settings.py; docs/scale.md recommends it without a
# transaction-pooling pooler); the results say which ("client" in "postgresql").
#
# Results: benchmarks/results/ingest-latest.json and benchmarks/results/latest.json
# (override the directory with BENCH_RESULTS); the djstripe target adds
# benchmarks/results/djstripe-latest.json, the statements target writes
# benchmarks/results/statements-latest.json. Not part of CI's test command.
#
# dj-stripe 2.11 needs stripe<16 (the package needs 16), so its run has a venv of
# its own, built here from PyPI on first use and cached in DJSTRIPE_VENV (default
# ~/.cache/django-escrow-connect/djstripe-2.11). If it cannot be built the dj-stripe
# run is skipped with a message (the package's ingest still runs).
#
# The cluster is our own: scripts/pg.sh is run from a private copy so its state
# directory (and a `stop`) never touches a cluster the test suite may be using,
# on ESCROW_PG_PORT (default 55700; the next free port if taken).
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$PROJECT/.venv/bin/python" ]]; then PYTHON="$PROJECT/.venv/bin/python"; else PYTHON=python; fi
fi
RESULTS="${BENCH_RESULTS:-$PROJECT/benchmarks/results}"
what="all"
case "${1:-}" in
    ingest | api | djstripe | statements) what="$1"; shift ;;
esac

# The peer's venv first: a failure here should not cost a cluster and an ingest run
# before the user learns that dj-stripe cannot be measured.
DJSTRIPE_REQUIREMENTS="dj-stripe==2.11.* stripe<16 psycopg[binary] Django==5.2.*"
djstripe_python=""
if [[ "$what" == djstripe ]]; then
    venv="${DJSTRIPE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/django-escrow-connect/djstripe-2.11}"
    if [[ -x "$venv/bin/python" && "$(cat "$venv/.bench-requirements" 2>/dev/null)" == "$DJSTRIPE_REQUIREMENTS" ]]; then
        djstripe_python="$venv/bin/python"
    else
        echo "bench.sh: building the dj-stripe venv in $venv ($DJSTRIPE_REQUIREMENTS) ..." >&2
        # shellcheck disable=SC2086  # the requirements are words on purpose
        if rm -rf "$venv" && python3 -m venv "$venv" \
            && "$venv/bin/pip" install -q $DJSTRIPE_REQUIREMENTS >&2; then
            printf '%s' "$DJSTRIPE_REQUIREMENTS" >"$venv/.bench-requirements"
            djstripe_python="$venv/bin/python"
        else
            echo "bench.sh: dj-stripe skipped: its venv could not be built in $venv (needs python3 -m venv and PyPI)" >&2
        fi
    fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/escrow-bench.XXXXXX")"
chmod 755 "$work"
mkdir -p "$work/scripts"
cp "$PROJECT/scripts/pg.sh" "$work/scripts/pg.sh"
cleanup() {
    bash "$work/scripts/pg.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

line="$(ESCROW_PG_DURABLE=1 ESCROW_PG_PORT="${ESCROW_PG_PORT:-55700}" bash "$work/scripts/pg.sh" start)"
export "${line?}"
echo "bench.sh: $line" >&2

mkdir -p "$RESULTS"
cd "$PROJECT"
export PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}" DJANGO_SETTINGS_MODULE=benchmarks.settings
if [[ "$what" == statements ]]; then
    "$PYTHON" benchmarks/statements.py --output "$RESULTS/statements-latest.json" "$@" >/dev/null
    echo "bench.sh: results in $RESULTS/statements-latest.json" >&2
    echo "bench.sh: the table: $PYTHON benchmarks/report.py statements $RESULTS/statements-latest.json" >&2
    exit 0
fi
if [[ "$what" != api ]]; then
    replay=()
    if [[ -n "$djstripe_python" ]]; then replay=(--payloads-out "$work/payloads.json"); fi
    "$PYTHON" benchmarks/ingest.py --output "$RESULTS/ingest-latest.json" "${replay[@]}" "$@" >/dev/null
    echo "bench.sh: results in $RESULTS/ingest-latest.json" >&2
fi
if [[ -n "$djstripe_python" ]]; then
    # Its own settings module; it imports neither the package nor the test host.
    DJANGO_SETTINGS_MODULE=benchmarks.djstripe_settings "$djstripe_python" benchmarks/djstripe_ingest.py \
        --payloads "$work/payloads.json" --output "$RESULTS/djstripe-latest.json" >/dev/null
    echo "bench.sh: results in $RESULTS/djstripe-latest.json" >&2
    echo "bench.sh: side by side: $PYTHON benchmarks/report.py ingest $RESULTS/ingest-latest.json $RESULTS/djstripe-latest.json" >&2
fi
if [[ "$what" != ingest && "$what" != djstripe ]]; then
    if [[ "$what" == all ]]; then set -- --sizes 1000,100000 --skip-webhooks; fi
    "$PYTHON" benchmarks/run.py --output "$RESULTS/latest.json" "$@" >/dev/null
    echo "bench.sh: results in $RESULTS/latest.json" >&2
fi
