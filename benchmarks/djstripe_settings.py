"""Settings of the dj-stripe peer run (:mod:`benchmarks.djstripe_ingest`).

Self-contained on purpose: the dj-stripe venv (stripe<16) cannot import the
package or ``tests.settings``. The database is ``DATABASE_URL`` (the benchmark
creates its own ``bench_djstripe`` database on that server); Stripe's API is the
local stub :mod:`benchmarks.djstripe_stub`, set through dj-stripe's own
``STRIPE_API_HOST`` setting (the one it documents for stripe-mock).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit


def _database() -> dict[str, object]:
    url = urlsplit(os.environ["DATABASE_URL"])
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")) or "postgres",
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "",
        "PORT": str(url.port or ""),
        # As benchmarks.settings: a new connection per request is not what is measured.
        "CONN_MAX_AGE": 0,
    }


SECRET_KEY = "bench-djstripe-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "djstripe",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "benchmarks.djstripe_urls"
DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# dj-stripe 2.11's configuration: test mode, a (fake) secret key the stub accepts,
# webhook validation by signature (the WebhookEndpoint rows hold the secrets).
STRIPE_LIVE_MODE = False
STRIPE_TEST_SECRET_KEY = "sk_test_benchdjstripe00000000000000"
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
STRIPE_API_HOST = os.environ.get("DJSTRIPE_BENCH_API_HOST", "http://127.0.0.1:9")
