#!/usr/bin/env bash
# Benchmarks on a throwaway PostgreSQL cluster with production durability
# (fsync, synchronous_commit and full_page_writes on). See docs/performance.md.
#
#   bash scripts/bench.sh                 # ingest vs floor, then API, Stripe calls, 1k/100k lists
#   bash scripts/bench.sh ingest [args]   # only the webhook ingest (benchmarks/ingest.py)
#   bash scripts/bench.sh api [args]      # only the API run (benchmarks/run.py)
#
# Results: benchmarks/results/ingest-latest.json and benchmarks/results/latest.json
# (override the directory with BENCH_RESULTS). Not part of CI's test command.
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
if [[ "${1:-}" == ingest || "${1:-}" == api ]]; then what="$1"; shift; fi

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
if [[ "$what" != api ]]; then
    "$PYTHON" benchmarks/ingest.py --output "$RESULTS/ingest-latest.json" "$@" >/dev/null
    echo "bench.sh: results in $RESULTS/ingest-latest.json" >&2
fi
if [[ "$what" != ingest ]]; then
    if [[ "$what" == all ]]; then set -- --sizes 1000,100000 --skip-webhooks; fi
    "$PYTHON" benchmarks/run.py --output "$RESULTS/latest.json" "$@" >/dev/null
    echo "bench.sh: results in $RESULTS/latest.json" >&2
fi
