"""Process webhook events on a task worker (``WEBHOOK_PROCESSING = "task"``).

Uses Django's tasks framework: ``django.tasks`` on Django 6, the
``django-tasks`` backport before it. The request only records the event and
enqueues its id once the transaction commits; the worker does the rest.

A failed event is retried by the task engine itself: the task enqueues
itself again with ``run_after`` (exponential backoff from
``WEBHOOK_TASK_RETRY_DELAY``) until the event has had
``WEBHOOK_TASK_MAX_ATTEMPTS`` tries, then leaves it ``failed`` for
``escrow_replay_events``. Each retry is a new task, so a poisoned event
waits beside the queue, never in front of it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

__all__ = [
    "enqueue_event",
    "process_webhook_event",
    "retry_delay",
]

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef, unused-ignore]

from .. import swappable
from ..conf import escrow_settings
from ..states import WebhookEventStatus as E
from .context import log_extra
from .pipeline import process_event

logger = logging.getLogger("django_escrow_connect.webhooks")


@task()
def process_webhook_event(stripe_event_id: str, retry_of_attempt: int = 0) -> str | None:
    """Process one recorded event; returns its new state (``None``: nothing to do).

    ``retry_of_attempt`` is set on the retries this task schedules: the
    number of tries the event had when the retry was scheduled. A retry
    whose event was tried since (or settled) does nothing, and a first run
    leaves alone an event whose retries are under way, so a duplicate
    delivery never starts a second chain of retries.
    """
    row = (
        swappable.load("WebhookEvent")
        .objects.filter(stripe_event_id=stripe_event_id)
        .values("pk", "status", "attempts")
        .first()
    )
    if row is None:
        return None
    if retry_of_attempt:
        if row["status"] != E.FAILED or row["attempts"] != retry_of_attempt:
            return None
        statuses: tuple[str, ...] = (E.FAILED,)
    elif row["status"] == E.RECEIVED:
        statuses = (E.RECEIVED,)
    elif row["status"] == E.FAILED and not _retries_under_way(row["attempts"]):
        # Delivered again after the worker gave up, or on a backend that
        # cannot retry (a resend from the Stripe dashboard): one more try.
        # escrow_fetch_missed_events leaves known failed events alone.
        statuses = (E.FAILED,)
    else:
        return None
    # process_event locks the row and re-checks its state: of two tasks for
    # the same event, one processes it and the other finds nothing to do.
    status = process_event(row["pk"], statuses=statuses)
    if status == E.FAILED:
        _schedule_retry(row["pk"])
    return status


def _max_attempts() -> int:
    return int(escrow_settings.WEBHOOK_TASK_MAX_ATTEMPTS)


def _can_defer() -> bool:
    return bool(getattr(process_webhook_event.get_backend(), "supports_defer", False))


def _retries_under_way(attempts: int) -> bool:
    """Whether a failed event with ``attempts`` tries has a retry scheduled."""
    return attempts < _max_attempts() and _can_defer()


def retry_delay(attempts: int) -> timedelta:
    """How long after its ``attempts``-th failed try an event is tried again.

    ``WEBHOOK_TASK_RETRY_DELAY`` seconds after the first, doubling each time:
    with the defaults (30 s, 5 attempts) the retries come 30 s, 1, 2 and
    4 minutes apart, about 7.5 minutes in all.
    """
    return timedelta(
        seconds=float(escrow_settings.WEBHOOK_TASK_RETRY_DELAY) * 2 ** max(attempts - 1, 0)
    )


def _schedule_retry(pk: object) -> None:
    event = swappable.load("WebhookEvent").objects.filter(pk=pk).first()
    if event is None or event.status != E.FAILED:
        return
    # No webhook_status here: the pipeline logged the failure itself.
    extra = log_extra(event, attempts=event.attempts)
    max_attempts = _max_attempts()
    if event.attempts >= max_attempts:
        logger.error(
            "webhook failed %d times; left failed for escrow_replay_events",
            event.attempts,
            extra=extra,
        )
        return
    if not _can_defer():
        # System check W095 says so at startup; the event waits for a replay.
        return
    delay = retry_delay(event.attempts)
    process_webhook_event.using(run_after=timezone.now() + delay).enqueue(
        event.stripe_event_id, event.attempts
    )
    logger.warning(
        "webhook failed; retry %d of %d in %.1f s",
        event.attempts,
        max_attempts - 1,
        delay.total_seconds(),
        extra=extra,
    )


def enqueue_event(stripe_event_id: str) -> None:
    """Enqueue processing once the current transaction (if any) commits."""
    transaction.on_commit(lambda: process_webhook_event.enqueue(stripe_event_id))
