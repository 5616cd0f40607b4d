"""The two real task engines the worker tests run: their settings and worker commands."""

from __future__ import annotations

import os
from typing import Any

#: Worker retries kept short so a test sees the whole backoff (0.2 s, 0.4 s).
MAX_ATTEMPTS = 3
RETRY_DELAY = 0.2
ENGINES = ("db", "celery")
CELERY_APP = "tests.workers.celery_app"


def escrow_overrides() -> dict[str, Any]:
    return {
        "WEBHOOK_PROCESSING": "task",
        "WEBHOOK_TASK_MAX_ATTEMPTS": MAX_ATTEMPTS,
        "WEBHOOK_TASK_RETRY_DELAY": RETRY_DELAY,
    }


def tasks_setting(engine: str) -> dict[str, Any]:
    if engine == "db":
        return {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    if engine == "celery":
        return {
            "default": {
                "BACKEND": "django_escrow_connect.contrib.celery.CeleryBackend",
                "OPTIONS": {"APP": f"{CELERY_APP}.app"},
            }
        }
    raise ValueError(engine)


def worker_command(engine: str, python: str, name: str) -> list[str]:
    """One worker process running one task at a time."""
    if engine == "db":
        return [
            python,
            "-m",
            "django",
            "db_worker",
            "--interval",
            "0.05",
            "--no-startup-delay",
            "--worker-id",
            name,
        ]
    return [
        python,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "--pool",
        "solo",
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "WARNING",
    ]


def redis_url() -> str:
    return os.environ.get("REDIS_URL", "")
