"""Run Django tasks (``django.tasks`` / the backport) on Celery workers.

No maintained ``django.tasks`` backend for Celery existed when this was
written, so this is a small adapter: :class:`CeleryBackend` sends each
enqueued task to Celery as one generic Celery task,
:func:`run_django_task`, which imports the Django task by its module path
and calls it on the worker. It is enough for this package's tasks (webhook
processing with its retries, the periodic jobs); it does not store results
(``supports_get_result`` is false: read the outcome from the rows the task
changed, e.g. the webhook event's state).

Host setup (``pip install django-escrow-connect[celery]``)::

    # settings.py
    TASKS = {
        "default": {
            "BACKEND": "django_escrow_connect.contrib.celery.CeleryBackend",
            # Optional: your Celery app (else celery's current app).
            "OPTIONS": {"APP": "myproject.celery.app"},
        }
    }

    # myproject/celery.py
    app = Celery("myproject")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()
    app.autodiscover_tasks(["django_escrow_connect.contrib"], related_name="celery")

``run_after`` becomes Celery's ``eta``, so the webhook task's retries with
backoff are held by the broker, not by a sleeping worker. A database error
while the task runs (a dropped connection, a failover) is retried by Celery
with exponential backoff; any other exception fails the Celery task (this
package's tasks record their own failures and never raise for them).
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery, shared_task  # type: ignore[import-untyped, unused-ignore]
from django.db import DatabaseError, close_old_connections
from django.utils.module_loading import import_string

try:  # Django 6
    from django.tasks import TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.signals import task_enqueued
except ImportError:  # Django 5.2: the backport
    from django_tasks import (  # type: ignore[assignment, no-redef, unused-ignore]
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.backends.base import (  # type: ignore[assignment, no-redef, unused-ignore]
        BaseTaskBackend,
    )
    from django_tasks.signals import task_enqueued  # type: ignore[no-redef, unused-ignore]

__all__ = [
    "RUN_DJANGO_TASK",
    "CeleryBackend",
    "run_django_task",
]

#: Django's default queue name (the tasks framework's DEFAULT_TASK_QUEUE_NAME).
DEFAULT_QUEUE = "default"
#: The Celery task name every Django task travels under.
RUN_DJANGO_TASK = "django_escrow_connect.run_django_task"


@shared_task(  # type: ignore[untyped-decorator, unused-ignore]
    name=RUN_DJANGO_TASK,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=5,
    # Acknowledge after the run: a worker killed mid-task leaves the message
    # for another worker (the tasks are idempotent: events lock their row).
    acks_late=True,
    reject_on_worker_lost=True,
)
def run_django_task(module_path: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Import the Django task at ``module_path`` and run it with ``args``/``kwargs``."""
    # Celery workers are long-lived and outside Django's request cycle: drop
    # connections past CONN_MAX_AGE or broken, as a request would.
    close_old_connections()
    try:
        return import_string(module_path).call(*args, **kwargs)
    finally:
        close_old_connections()


class CeleryBackend(BaseTaskBackend):
    """A ``TASKS`` backend that hands each task to Celery (see the module docs).

    ``OPTIONS``: ``APP``, the dotted path of the Celery app to send with
    (default: Celery's current app). A task's queue name other than
    ``"default"`` becomes the Celery queue (``QUEUES``, if given, limits which
    are allowed); ``"default"`` goes to Celery's default queue.
    """

    supports_defer = True
    supports_async_task = False
    supports_get_result = False
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            path = self.options.get("APP")
            if path:
                self._app = import_string(path)
            else:
                from celery import current_app  # type: ignore[import-untyped, unused-ignore]

                self._app = current_app
        return self._app

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        result_id = str(uuid.uuid4())
        result: Any = TaskResult(
            task=task,
            id=result_id,
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        self.app.send_task(
            RUN_DJANGO_TASK,
            args=[task.module_path, list(args), dict(kwargs)],
            task_id=result_id,
            # Django's "default" queue is Celery's default queue (task_default_queue,
            # "celery" unless set), so a plain `celery worker` consumes it.
            queue=None if task.queue_name == DEFAULT_QUEUE else task.queue_name,
            eta=task.run_after,
        )
        task_enqueued.send(type(self), task_result=result)
        return result
