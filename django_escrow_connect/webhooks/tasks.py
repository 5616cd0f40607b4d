"""Process webhook events on a task worker (``WEBHOOK_PROCESSING = "task"``).

Uses Django's tasks framework: ``django.tasks`` on Django 6, the
``django-tasks`` backport before it. The request only records the event and
enqueues its id once the transaction commits; the worker does the rest.
"""

from __future__ import annotations

from django.db import transaction

__all__ = [
    "enqueue_event",
    "process_webhook_event",
]

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef, unused-ignore]

from .. import swappable
from .pipeline import process_event


@task()
def process_webhook_event(stripe_event_id: str) -> str | None:
    """Process one recorded event; returns its new state (``None``: nothing to do)."""
    pk = (
        swappable.load("WebhookEvent")
        .objects.filter(stripe_event_id=stripe_event_id)
        .values_list("pk", flat=True)
        .first()
    )
    if pk is None:
        return None
    return process_event(pk)


def enqueue_event(stripe_event_id: str) -> None:
    """Enqueue processing once the current transaction (if any) commits."""
    transaction.on_commit(lambda: process_webhook_event.enqueue(stripe_event_id))
