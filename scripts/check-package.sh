#!/usr/bin/env bash
# Build the distributions and prove the wheel works in a project of its own:
#
#   bash scripts/check-package.sh
#
# 1. python -m build: sdist and wheel into a temporary directory;
# 2. twine check;
# 3. the wheel must contain the migrations, py.typed, and every file under the
#    package's templates/ and static/ directories;
# 4. a fresh virtualenv (python3) gets the wheel and nothing from this tree; a
#    minimal host project (app "shop" with a Task model) runs
#    `django-admin check`, `makemigrations shop`, `migrate` and
#    `makemigrations --check` on SQLite;
# 5. a second host (app "jobs") whose first migration has another model and
#    whose task model arrives in 0002_task: without
#    ESCROW_CONNECT_TASK_MODEL_MIGRATION_DEPENDENCY `check` warns (W005) and
#    `migrate` on an empty database fails; with it set to "0002_task" check
#    passes and migrate runs from an empty database; a name that comes before
#    the task model is check error E004.
# 6. the first host runs a test of its own with only pytest, pytest-django and
#    the wheel's pytest plugin (escrow_* fixtures): onboard, hold, release, a
#    host signal receiver, balanced books.
#
# Uses .venv for the build tools (creates it if missing); PYTHON picks the
# interpreter of the fresh virtualenv (default python3).
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT"
PKG=django_escrow_connect
VENV="${ESCROW_VENV:-.venv}"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/escrow-package.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

say() { printf '\n==> %s\n' "$*"; }
fail() {
    printf 'check-package: FAILED: %s\n' "$*" >&2
    exit 1
}

if [[ ! -x "$PY" ]]; then
    say "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$PY" -c "import build, twine" 2>/dev/null; then
    say "installing build and twine into $VENV"
    "$PY" -m pip install -q build twine
fi

say "building sdist and wheel"
"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || {
    cat "$WORK/build.log" >&2
    fail "python -m build"
}
shopt -s nullglob
wheels=("$WORK"/dist/*.whl)
sdists=("$WORK"/dist/*.tar.gz)
shopt -u nullglob
((${#wheels[@]} == 1)) || fail "expected one wheel, found ${#wheels[@]}"
((${#sdists[@]} == 1)) || fail "expected one sdist, found ${#sdists[@]}"
WHEEL="${wheels[0]}"
SDIST="${sdists[0]}"
ls -l "$WORK/dist"

say "twine check"
"$PY" -m twine check --strict "$WHEEL" "$SDIST"

say "wheel contents"
# Expected: the first migration, py.typed, and every tracked or present file
# under templates/ and static/ anywhere in the package.
expected=("$PKG/migrations/0001_initial.py" "$PKG/py.typed" "$PKG/migrations/__init__.py")
while IFS= read -r -d '' file; do
    expected+=("$file")
done < <(find "$PKG" \( -path '*/templates/*' -o -path '*/static/*' \) -type f \
    ! -name '*.pyc' ! -path '*/__pycache__/*' ! -name '.*' -print0 | sort -z)
"$PY" - "$WHEEL" "$SDIST" "${expected[@]}" <<'EOF'
import sys
import tarfile
import zipfile

wheel, sdist, *expected = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
missing = [path for path in expected if path not in names]
if missing:
    print("missing from the wheel:", *missing, sep="\n  ", file=sys.stderr)
    sys.exit(1)
stray = sorted(n for n in names if n.startswith(("tests/", "example_project/", "scripts/")))
if stray:
    print("the wheel should not contain:", *stray[:20], sep="\n  ", file=sys.stderr)
    sys.exit(1)
with tarfile.open(sdist) as tar:
    members = {m.name.split("/", 1)[-1] for m in tar.getmembers()}
sdist_missing = [p for p in ("LICENSE", "README.md", "pyproject.toml", *expected) if p not in members]
if sdist_missing:
    print("missing from the sdist:", *sdist_missing, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"wheel: {len(names)} files; all {len(expected)} expected files present (sdist too)")
EOF

say "installing the wheel into a fresh virtualenv"
"${PYTHON:-python3}" -m venv "$WORK/venv"
HOSTPY="$WORK/venv/bin/python"
"$HOSTPY" -m pip install -q "$WHEEL"
"$HOSTPY" -m pip check

say "minimal host project"
HOST="$WORK/host"
mkdir -p "$HOST/shop"
cat >"$HOST/hostproject_settings.py" <<'EOF'
SECRET_KEY = "check-package-not-secret"
DEBUG = True
USE_TZ = True
ROOT_URLCONF = "hostproject_urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_escrow_connect",
    "shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
ESCROW_CONNECT_TASK_MODEL = "shop.Task"
ESCROW_CONNECT = {
    "STRIPE_SECRET_KEY": "sk_test_x",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_x",
    "WEBHOOK_SECRETS": ["whsec_x"],
    "CONNECT_WEBHOOK_SECRETS": ["whsec_y"],
}
EOF
cat >"$HOST/hostproject_urls.py" <<'EOF'
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("escrow/", include("django_escrow_connect.urls")),
]
EOF
: >"$HOST/shop/__init__.py"
cat >"$HOST/shop/models.py" <<'EOF'
from django.conf import settings
from django.db import models

from django_escrow_connect.base.models import EscrowTaskMixin
from django_escrow_connect.terms import EscrowTerms, TermsUnavailable


class Task(EscrowTaskMixin, models.Model):
    title = models.CharField(max_length=100)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posted_tasks"
    )
    doer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks_done",
    )
    price = models.BigIntegerField(default=1000)

    def __str__(self):
        return self.title

    def get_escrow_terms(self):
        if self.doer is None:
            raise TermsUnavailable("nobody hired")
        return EscrowTerms(
            payer=self.customer, payee_user=self.doer, amount=self.price, currency="usd"
        )
EOF

# Run django-admin from the host project, with nothing from this checkout on
# the path, so only the installed wheel can answer.
admin() {
    (
        cd "$HOST"
        env -u DATABASE_URL -u DJANGO_SETTINGS_MODULE PYTHONPATH="$HOST" \
            DJANGO_SETTINGS_MODULE=hostproject_settings \
            "$WORK/venv/bin/django-admin" "$@"
    )
}
where="$(cd "$HOST" && "$HOSTPY" -c "import django_escrow_connect as p; print(p.__file__)")"
case "$where" in
    "$WORK"/venv/*) echo "package imported from $where" ;;
    *) fail "package imported from $where, not from the installed wheel" ;;
esac

say "django-admin check"
admin check
say "django-admin makemigrations shop"
admin makemigrations shop
say "django-admin migrate"
admin migrate --no-input
say "django-admin makemigrations --check --dry-run"
admin makemigrations --check --dry-run
say "django-admin showmigrations escrow_connect"
admin showmigrations escrow_connect

say "host tests with the package's pytest plugin (docs/testing.md)"
# Only pytest and pytest-django are added; the fixtures come from the wheel's
# pytest11 entry point. The test file is the worked example of docs/testing.md.
"$HOSTPY" -m pip install -q "pytest>=8" "pytest-django>=4.9"
cat >"$HOST/pytest.ini" <<'EOF'
[pytest]
DJANGO_SETTINGS_MODULE = hostproject_settings
EOF
cat >"$HOST/test_escrow_flow.py" <<'EOF'
import pytest
from django.contrib.auth import get_user_model
from django.dispatch import receiver

from django_escrow_connect import signals
from django_escrow_connect.services.payments import release_payment
from shop.models import Task

released = []


@receiver(signals.payment_released)
def record_release(sender, payment, **kwargs):
    # The host's own receiver: in a real project, mark the task paid out.
    released.append(payment.pk)


@pytest.mark.django_db
def test_release_pays_the_doer_and_the_books_balance(
    escrow_stripe, escrow_onboarded_account, escrow_held_payment, escrow_books_balanced
):
    User = get_user_model()
    customer = User.objects.create_user("customer")
    doer = User.objects.create_user("doer")
    escrow_onboarded_account(owner_user=doer)
    task = Task.objects.create(title="Fix the sink", customer=customer, doer=doer, price=5_000)

    payment = escrow_held_payment(task, customer)
    assert payment.status == "held"

    with escrow_stripe.events():
        release_payment(payment.pk, customer)

    payment.refresh_from_db()
    assert payment.status == "released"
    assert released == [payment.pk]
    escrow_books_balanced(allow_unsettled=True)
EOF
(
    cd "$HOST"
    env -u DATABASE_URL -u DJANGO_SETTINGS_MODULE PYTHONPATH="$HOST" \
        "$HOSTPY" -m pytest -q -p no:cacheprovider test_escrow_flow.py
) || fail "the host's tests with the pytest plugin"

say "host whose task model arrives in a later migration (app jobs)"
LATER="$WORK/later"
mkdir -p "$LATER/jobs"
# The first host's settings with app "jobs" for "shop". JOBS_STAGE=1 is the
# project before it used the package (so its 0001 is made without the task
# model); JOBS_DB picks the database file; JOBS_TASK_MIGRATION is the setting
# under test (unset: None, the default).
{
    echo "import os"
    sed -e 's/"shop"/"jobs"/' -e 's/"shop.Task"/"jobs.Task"/' \
        -e 's/"db.sqlite3"/os.environ["JOBS_DB"]/' "$HOST/hostproject_settings.py"
    cat <<'EOF'
ESCROW_CONNECT_TASK_MODEL_MIGRATION_DEPENDENCY = os.environ.get("JOBS_TASK_MIGRATION")
if os.environ.get("JOBS_STAGE") == "1":
    INSTALLED_APPS = [
        app for app in INSTALLED_APPS if app not in ("django_escrow_connect", "rest_framework")
    ]
EOF
} >"$LATER/jobsproject_settings.py"
grep -q '"jobs.Task"' "$LATER/jobsproject_settings.py" || fail "jobs settings not derived"
cp "$HOST/hostproject_urls.py" "$LATER/"
: >"$LATER/jobs/__init__.py"
cat >"$LATER/jobs/models.py" <<'EOF'
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)
EOF
jobs_admin() {
    (
        cd "$LATER"
        env -u DATABASE_URL -u DJANGO_SETTINGS_MODULE PYTHONPATH="$LATER" \
            DJANGO_SETTINGS_MODULE=jobsproject_settings \
            "$WORK/venv/bin/django-admin" "$@"
    )
}
say "jobs: 0001_initial, before the task model"
JOBS_STAGE=1 JOBS_DB=stage1.sqlite3 jobs_admin makemigrations jobs
# The task model arrives: the shop's Task (its imports first), now in app jobs.
{
    sed -n '1,/^class Task/p' "$HOST/shop/models.py" | sed '$d'
    sed -n '/^class Category/,$p' "$LATER/jobs/models.py"
    printf '\n\n'
    sed -n '/^class Task/,$p' "$HOST/shop/models.py"
} >"$LATER/jobs/models.new"
mv "$LATER/jobs/models.new" "$LATER/jobs/models.py"
say "jobs: 0002_task adds the task model"
JOBS_DB=stage2.sqlite3 jobs_admin makemigrations jobs --name task
[[ -f "$LATER/jobs/migrations/0002_task.py" ]] || fail "jobs/migrations/0002_task.py was not made"
say "jobs: without the setting, check warns (W005) and migrate fails"
out="$(JOBS_DB=unset.sqlite3 jobs_admin check 2>&1)" || {
    echo "$out"
    fail "django-admin check (jobs, setting unset)"
}
echo "$out"
grep -q "escrow_connect.W005" <<<"$out" || fail "check did not warn escrow_connect.W005"
if JOBS_DB=unset.sqlite3 jobs_admin migrate --no-input >"$WORK/jobs-unset.log" 2>&1; then
    cat "$WORK/jobs-unset.log"
    fail "migrate passed without the setting, so this no longer proves it is needed"
fi
echo "migrate failed as expected: $(tail -n 1 "$WORK/jobs-unset.log")"
say "jobs: ESCROW_CONNECT_TASK_MODEL_MIGRATION_DEPENDENCY = \"0002_task\", empty database"
export JOBS_TASK_MIGRATION=0002_task JOBS_DB=db.sqlite3
out="$(jobs_admin check 2>&1)" || {
    echo "$out"
    fail "django-admin check (jobs)"
}
echo "$out"
if grep -q "escrow_connect.W005" <<<"$out"; then fail "W005 with the setting set"; fi
jobs_admin migrate --no-input
jobs_admin makemigrations --check --dry-run
jobs_admin showmigrations jobs escrow_connect
say "jobs: a migration before the task model is check error E004"
if out="$(JOBS_TASK_MIGRATION=0001_initial jobs_admin check 2>&1)"; then
    echo "$out"
    fail "check passed with the setting naming 0001_initial"
fi
grep -q "escrow_connect.E004" <<<"$out" || {
    echo "$out"
    fail "check did not report escrow_connect.E004"
}
unset JOBS_TASK_MIGRATION JOBS_DB

echo
echo "check-package: OK ($(basename "$WHEEL"), $(basename "$SDIST"))"
