"""The books audit as a task (Django's tasks framework).

``django.tasks`` on Django 6, the ``django-tasks`` backport before it, as
:mod:`django_escrow_connect.webhooks.tasks`. Enqueue it from a scheduler
(``audit_books_task.enqueue(since="1d")``); the result is
:meth:`AuditResult.to_dict` (JSON-ready), and a divergence is logged as a
WARNING on ``django_escrow_connect.audit``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "audit_books_task",
]

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef, unused-ignore]

from ..arguments import MAX_BATCH, check_count, check_payment_id, check_since, task_arguments
from .audit import DEFAULT_BATCH_SIZE, audit_books


@task()
def audit_books_task(
    payment_id: str | None = None,
    since: str | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Run :func:`~django_escrow_connect.services.audit.audit_books`; its result as a dict.

    ``since`` is a string as ``escrow_audit --since`` takes it (``2026-11-01``, ``1d``).
    Each argument is checked as the command checks its option, before the
    first query: one it refuses fails the run with
    :class:`~django_escrow_connect.exceptions.PeriodicJobFailed` naming it.
    """
    with task_arguments("audit books", {}):
        payment = check_payment_id("payment_id", payment_id)
        start = check_since("since", since)
        if limit is not None:
            check_count("limit", limit, minimum=0)
        check_count("batch_size", batch_size, minimum=1, maximum=MAX_BATCH)
    return audit_books(
        payment_id=payment, since=start, limit=limit, batch_size=batch_size
    ).to_dict()
