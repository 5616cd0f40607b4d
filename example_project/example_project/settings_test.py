"""Settings for the example's own tests: simulated mode, a fresh database,
no state file (the simulated Stripe lives in memory and is reset per test)."""

import os

# Simulated mode, whatever the developer's shell exports.
for _name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_API_BASE"):
    os.environ.pop(_name, None)

from .settings import *  # noqa: E402,F403
from .settings import env  # noqa: E402

DEBUG = True
SIMULATED_STRIPE_STATE_FILE = None
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _test_database() -> dict:
    url = env("DATABASE_URL")
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    import dj_database_url

    return dj_database_url.parse(url, conn_max_age=0)


DATABASES = {"default": _test_database()}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
}
