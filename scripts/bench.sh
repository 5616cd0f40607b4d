#!/usr/bin/env bash
# Benchmarks on a throwaway PostgreSQL cluster (see benchmarks/run.py, docs/performance.md).
#
#   bash scripts/bench.sh                      # webhooks, API, Stripe calls; lists at 1k and 10k
#   bash scripts/bench.sh --sizes 1000,10000,100000   # the full scaling run (a few minutes)
#
# Arguments go to benchmarks/run.py. Results: benchmarks/results/latest.json
# (override with BENCH_OUTPUT). Not part of CI's test command.
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
OUTPUT="${BENCH_OUTPUT:-$PROJECT/benchmarks/results/latest.json}"

work="$(mktemp -d "${TMPDIR:-/tmp}/escrow-bench.XXXXXX")"
chmod 755 "$work"
mkdir -p "$work/scripts"
cp "$PROJECT/scripts/pg.sh" "$work/scripts/pg.sh"
cleanup() {
    bash "$work/scripts/pg.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Production durability: fsync, synchronous_commit and full_page_writes on.
line="$(ESCROW_PG_DURABLE=1 ESCROW_PG_PORT="${ESCROW_PG_PORT:-55700}" bash "$work/scripts/pg.sh" start)"
export "${line?}"
echo "bench.sh: $line" >&2

mkdir -p "$(dirname "$OUTPUT")"
cd "$PROJECT"
PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}" DJANGO_SETTINGS_MODULE=tests.settings \
    "$PYTHON" benchmarks/run.py --output "$OUTPUT" "$@" >/dev/null
echo "bench.sh: results in $OUTPUT" >&2
