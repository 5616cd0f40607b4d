"""Hand a just-recorded event to processing: in the request, or to a task worker.

Above both the pipeline and the task module (which imports the pipeline), so
neither has to import the other.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured

from .. import observability
from ..conf import escrow_settings
from .context import log_extra
from .pipeline import Outcome, RecordedEvent, outcome_for, process_event

__all__ = ["dispatch_recorded"]

logger = logging.getLogger("django_escrow_connect.webhooks")


def dispatch_recorded(row: RecordedEvent) -> Outcome:
    """Process (or enqueue) an event that :func:`receiver.record` just stored."""
    if not row.is_pending:
        logger.info(
            "webhook duplicate: event already %s",
            row.status,
            extra=log_extra(row, webhook_status=row.status),
        )
        observability.record_webhook_event(row.type, "duplicate")
        return Outcome(200, "duplicate", f"Already {row.status}.", row.stripe_event_id)
    if escrow_settings.WEBHOOK_PROCESSING == "task":
        try:
            # Optional: Django 6 ships django.tasks, Django 5.2 needs the
            # django-tasks backport, so the import waits until task mode is used.
            from .tasks import enqueue_event
        except ImportError as exc:
            raise ImproperlyConfigured(
                'ESCROW_CONNECT["WEBHOOK_PROCESSING"] = "task" needs Django\'s tasks '
                "framework: Django 6, or pip install django-tasks on Django 5.2."
            ) from exc

        enqueue_event(row.stripe_event_id)
        logger.info("webhook queued", extra=log_extra(row, webhook_status="queued"))
        observability.record_webhook_event(row.type, "queued")
        return Outcome(200, "queued", "Queued for processing.", row.stripe_event_id)
    status = process_event(row.pk)
    return outcome_for(status, row.stripe_event_id)
