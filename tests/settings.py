"""Test settings: a host project with ordinary models (integer keys, Django's
own user, an organization model) and the library's default models."""

import importlib.util
import os

import django

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_escrow_connect",
    "tests.testapp",
]

if importlib.util.find_spec("django_tasks_db"):
    # The database task backend's tables, for the real-worker tests
    # (tests/workers); nothing else uses it.
    INSTALLED_APPS.append("django_tasks_db")

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


def _database() -> dict:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    import dj_database_url

    database = dj_database_url.parse(url, conn_max_age=0)
    if os.environ.get("ESCROW_PG_PREPARED") == "1":
        # Server-side binding with prepared statements (psycopg prepares a
        # statement on its 5th use): the configuration docs/scale.md
        # recommends without a transaction-pooling connection pooler.
        database.setdefault("OPTIONS", {}).update(
            {"server_side_binding": True, "prepare_threshold": 5}
        )
    return database


DATABASES = {"default": _database()}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if django.VERSION >= (6, 1):
    # Django 6.1 deprecates sending without MAILERS. The test runner swaps
    # every alias for the locmem backend (mail.outbox).
    MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        "escrow": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
    }

ESCROW_CONNECT_TASK_MODEL = "testapp.Task"
ESCROW_CONNECT_ORGANIZATION_MODEL = "testapp.Organization"

ESCROW_CONNECT = {
    "STRIPE_SECRET_KEY": "sk_test_escrowconnecttests",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_escrowconnecttests",
    "WEBHOOK_SECRETS": ["whsec_platform_test_secret"],
    "CONNECT_WEBHOOK_SECRETS": ["whsec_connect_test_secret"],
    "THIN_WEBHOOK_SECRETS": ["whsec_thin_test_secret"],
    "ONBOARDING_RETURN_URL": "https://marketplace.example/onboarding/return/",
    "ONBOARDING_REFRESH_URL": "https://marketplace.example/onboarding/refresh/",
    "ORGANIZATION_ADMIN_PREDICATE": "tests.testapp.models.is_organization_admin",
    "ADMINISTERED_ORGANIZATIONS": "tests.testapp.models.administered_organizations",
    "STRIPE_MAX_NETWORK_RETRIES": 0,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
}

#: Which host the suite runs against; tests/factories.py dispatches on it.
ESCROW_TEST_HOST = "testapp"
