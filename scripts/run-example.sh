#!/usr/bin/env bash
# Run the example marketplace on http://127.0.0.1:8000 (simulated Stripe unless keys are set):
#
#   bash scripts/run-example.sh           # port 8000
#   bash scripts/run-example.sh 8080      # another port (or PORT=8080)
#
# On a machine with only python3 it creates .venv, installs the package in
# editable mode with its test extra (which brings dj-database-url), migrates,
# loads the demo data (idempotent: `seed_demo`) and starts the development
# server. Without STRIPE_SECRET_KEY everything runs in SIMULATED mode; with
# sk_test_ keys it uses Stripe test mode (see docs/example.md).
#
# Environment: PORT, HOST (default 127.0.0.1), PYTHON (interpreter for a new
# venv, default python3), ESCROW_VENV (default .venv; absolute, or relative to
# the checkout), DATABASE_URL, STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY,
# STRIPE_WEBHOOK_SECRET, STRIPE_CONNECT_WEBHOOK_SECRET, STRIPE_API_BASE,
# SITE_URL.
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT"

case "${1:-}" in
    -h | --help)
        # The opening comment up to the first line of code (no line numbers to go stale).
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
esac

PORT="${1:-${PORT:-8000}}"
HOST="${HOST:-127.0.0.1}"
VENV="${ESCROW_VENV:-.venv}"
# Absolute, so that "$PY" still names it from another directory (the
# import check below runs in /tmp); a relative ESCROW_VENV is the checkout's.
[[ "$VENV" == /* ]] || VENV="$PROJECT/$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export SITE_URL="${SITE_URL:-http://$HOST:$PORT}"

if [[ ! -x "$PY" ]]; then
    python="${PYTHON:-python3}"
    echo "==> creating $VENV with $python ($("$python" --version 2>&1))"
    "$python" -m venv "$VENV" || {
        echo "error: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    "$PY" -m pip install -q --upgrade pip
fi

# Install (again) when pyproject.toml changed or something is missing.
stamp="$VENV/.escrow-example-install"
want="$(cksum <pyproject.toml)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] \
    || ! (cd /tmp && "$PY" -c "import django_escrow_connect, dj_database_url, rest_framework") 2>/dev/null; then
    echo "==> installing django-escrow-connect (editable) with its test extra into $VENV"
    "$PY" -m pip install -q -e ".[test]"
    printf '%s\n' "$want" >"$stamp"
fi

MANAGE=("$PY" example_project/manage.py)
echo "==> migrate"
"${MANAGE[@]}" migrate --noinput -v 0
echo "==> seed_demo"
"${MANAGE[@]}" seed_demo

if [[ -z "${STRIPE_SECRET_KEY:-}" ]]; then
    mode="SIMULATED (no Stripe keys: no network, no money)"
else
    mode="Stripe TEST mode"
fi
cat <<MSG

  Example marketplace: $SITE_URL/
  Mode: $mode
  Demo people (listed above by seed_demo; one-click login on $SITE_URL/login/,
  password demo-password), for example customer@example.com and doer@example.com
  Headless tour of every flow: (cd $PROJECT && $PY example_project/manage.py demo_flow)

MSG
exec "${MANAGE[@]}" runserver "$HOST:$PORT"
