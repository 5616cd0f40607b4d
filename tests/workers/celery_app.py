"""The Celery app of the worker tests: Redis at ``REDIS_URL`` as the broker."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped, unused-ignore]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.workers.worker_settings")

app = Celery("escrow_workers")
app.conf.update(
    broker_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    # One message at a time per worker: a slow event never holds others back.
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)
app.autodiscover_tasks(["django_escrow_connect.contrib"], related_name="celery")
