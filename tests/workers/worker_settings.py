"""Settings of the worker processes the tests start: the test run's own
settings (``ESCROW_WORKER_BASE_SETTINGS``), in task mode on the engine named
by ``ESCROW_TASK_ENGINE``, plus a handler that always fails and a log of
every event each worker settled (``ESCROW_WORKER_LOG``)."""

import importlib
import os

from tests.workers.engines import escrow_overrides, tasks_setting

_base = importlib.import_module(os.environ.get("ESCROW_WORKER_BASE_SETTINGS", "tests.settings"))
globals().update({name: getattr(_base, name) for name in dir(_base) if name.isupper()})

INSTALLED_APPS = [*_base.INSTALLED_APPS, "tests.workers.apps.PoisonedHandlerConfig"]
ESCROW_CONNECT = {**_base.ESCROW_CONNECT, **escrow_overrides()}
TASKS = tasks_setting(os.environ.get("ESCROW_TASK_ENGINE", "db"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        # Only the pipeline's settled lines (they carry webhook_status).
        "settled": {
            "()": "django.utils.log.CallbackFilter",
            "callback": lambda record: hasattr(record, "webhook_status"),
        },
    },
    "formatters": {
        "settled": {"format": "SETTLED %(created).6f %(stripe_event_id)s %(webhook_status)s"}
    },
    "handlers": {
        "null": {"class": "logging.NullHandler"},
        "settled": {
            "class": "logging.FileHandler",
            "filename": os.environ.get("ESCROW_WORKER_LOG", os.devnull),
            "filters": ["settled"],
            "formatter": "settled",
        },
    },
    "loggers": {
        "django_escrow_connect.webhooks": {"handlers": ["settled"], "level": "INFO"},
    },
    "root": {"handlers": ["null"], "level": "WARNING"},
}

# Workers keep their connection: with CONN_MAX_AGE = 0 each task would open
# a new one (both engines call close_old_connections around every task),
# which costs more than processing the event (docs/scale.md).
DATABASES = {
    "default": {**_base.DATABASES["default"], "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}
}
