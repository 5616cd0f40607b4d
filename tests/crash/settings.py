"""Settings of the crash suite's server processes (gunicorn).

They extend the test settings the pytest process runs with
(``ESCROW_CRASH_BASE_SETTINGS``, default ``tests.settings``) and point at
the PostgreSQL database that process uses (``ESCROW_CRASH_DB_NAME``: the
test database pytest-django created, or the second installation's), with
the shared simulated Stripe (:class:`tests.crash.gateway.CrashGateway`).
"""

import copy
import importlib
import json
import os

_base = importlib.import_module(os.environ.get("ESCROW_CRASH_BASE_SETTINGS", "tests.settings"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

DATABASES = copy.deepcopy(_base.DATABASES)
DATABASES["default"]["NAME"] = os.environ["ESCROW_CRASH_DB_NAME"]
DATABASES["default"]["CONN_MAX_AGE"] = 0

ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

ESCROW_CONNECT = {
    **_base.ESCROW_CONNECT,
    "GATEWAY": "tests.crash.gateway.CrashGateway",
    "ESCROW_STRATEGY": os.environ.get("ESCROW_CRASH_STRATEGY", "separate_charges_and_transfers"),
    # The lease stands for the Stripe client's longest call; here every
    # interrupted call belongs to a worker that was killed, so none can still
    # be running: a competing request may settle it at once.
    "MONEY_OPERATION_LEASE_SECONDS": 0,
    # Tasks titled "per-milestone ..." are funded per milestone (tests/crash/terms.py).
    "PAYMENT_TERMS": "tests.crash.terms.crash_terms",
    # Tips on (tests/crash/test_tips.py).
    "TIP_MAX_AMOUNT": {"usd": 10_000},
    # Saved cards (tests/crash/test_saved_payment_methods.py).
    "SAVE_PAYMENT_METHODS": True,
}
# A job's own settings (tests/crash/jobs.py: AUTO_RELEASE_AFTER_DAYS,
# CAPTURE_EXPIRY_ACTION...), as the test process's configure() would set them.
ESCROW_CONNECT.update(json.loads(os.environ.get("ESCROW_CRASH_SETTINGS", "{}")))
if os.environ.get("ESCROW_CRASH_KEY_PREFIX"):
    ESCROW_CONNECT["IDEMPOTENCY_KEY_PREFIX"] = os.environ["ESCROW_CRASH_KEY_PREFIX"]

# The test client authenticates over HTTP with the factories' password.
REST_FRAMEWORK = {
    **_base.REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}

# Tracebacks go to the server's log file, quoted in a failing case's report.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
