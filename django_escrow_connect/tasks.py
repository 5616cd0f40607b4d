"""The periodic jobs as Django tasks, for a scheduler to enqueue.

Each task calls the same service as its management command, so a cron line
running the command and a Celery beat entry enqueueing the task do the same
work (``docs/scale.md`` has both schedules). Each returns a JSON-ready
summary; when some of the work failed (a payment Stripe refused to
release, a source whose events could not be listed) it raises
:class:`PeriodicJobFailed` *after* the rest was done and committed, so the
task engine records the run as failed and monitoring sees it.

``django.tasks`` on Django 6, the ``django-tasks`` backport before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef, unused-ignore]

from .arguments import check_days, check_flag, check_minutes, check_since, task_arguments
from .conf import escrow_settings
from .exceptions import PeriodicJobFailed
from .services.audit_tasks import audit_books_task
from .services.changes import Change, Report, changed
from .services.reconcile import DEFAULT_OLDER_THAN_MINUTES, reconcile
from .services.schedules import (
    auto_release,
    auto_release_after_days,
    capture_expiry,
    capture_expiry_action,
)
from .webhooks.operations import (
    connected_account_ids,
    fetch_missed_events,
    purge_payloads,
    requeue_after_minutes,
    requeue_stuck_events,
    retry_deferred_events,
)

__all__ = [
    "PeriodicJobFailed",
    "audit_books_task",
    "auto_release_task",
    "capture_expiry_task",
    "fetch_missed_events_task",
    "purge_event_payloads_task",
    "reconcile_task",
    "requeue_stuck_events_task",
]


_T = TypeVar("_T")


def _summary(changes: Sequence[Change]) -> dict[str, Any]:
    return {
        "changes": [str(change) for change in changes if not change.error],
        "errors": [str(change) for change in changes if change.error],
    }


def _finish(job: str, summary: dict[str, Any]) -> dict[str, Any]:
    if summary["errors"]:
        raise PeriodicJobFailed(
            f"{job}: {len(summary['errors'])} failed: " + "; ".join(summary["errors"]), summary
        )
    return summary


def _until_stopped(
    job: str,
    made: str,
    run: Callable[[Report], _T],
    summary: dict[str, Any] | None = None,
    *,
    counted: Callable[[Sequence[Change]], int] = changed,
    summarize: Callable[[Sequence[Change]], dict[str, Any]] = _summary,
) -> _T:
    """``run(report)``, whose changes are committed one by one as it reports them.

    An unexpected error (a bug, the database gone) that stops it becomes the
    ``__cause__`` of a :class:`PeriodicJobFailed` saying how many changes of
    state (``made``: ``released``, ``changed``) it made before, its summary
    (``summary`` and the changes reported) listing them: the bare exception
    said nothing of them. ``escrow_*`` commands print the same as they go
    (``management/progress.py``). ``counted``: which changes the message
    counts (default: those that changed a state); ``summarize``: the
    summary's entries for the changes (default ``changes`` and ``errors``).
    """
    done: list[Change] = []
    try:
        return run(done.append)
    except Exception as exc:
        stopped = f"stopped by {type(exc).__name__}: {exc}"
        failed = {**(summary or {}), **summarize(done)}
        failed["errors"].append(stopped)
        raise PeriodicJobFailed(f"{job}: {stopped}, after {counted(done)} {made}", failed) from exc


@task()
def reconcile_task(older_than_minutes: int = DEFAULT_OLDER_THAN_MINUTES) -> dict[str, Any]:
    """``escrow_reconcile``: finish interrupted operations, then retry deferred events.

    An ``older_than_minutes`` that is no whole number of zero or more fails
    the run (:class:`PeriodicJobFailed`) before anything is read. An
    unexpected error that stops the run is the ``__cause__`` of a
    :class:`PeriodicJobFailed` saying how many changes it made before it.
    """
    with task_arguments("reconcile", {"changes": []}):
        minutes = check_minutes("older_than_minutes", older_than_minutes, minimum=0)

    def run(report: Report) -> list[Change]:
        changes = reconcile(older_than=timedelta(minutes=minutes), report=report)
        deferred = retry_deferred_events()
        for change in deferred:
            report(change)
        return [*changes, *deferred]

    return _finish("reconcile", _summary(_until_stopped("reconcile", "changed", run)))


@task()
def capture_expiry_task(action: str | None = None) -> dict[str, Any]:
    """``escrow_capture_expiry``: holds close to ``capture_before`` (``CAPTURE_EXPIRY_ACTION``).

    A malformed ``CAPTURE_EXPIRY_ACTION`` or ``CAPTURE_EXPIRY_WARNING_HOURS``
    (E035, E101), or an ``action`` that is none of the actions, handles no
    hold and fails the run (:class:`PeriodicJobFailed`). An unexpected
    error that stops the run is the ``__cause__`` of a
    :class:`PeriodicJobFailed` saying how many holds it captured, voided or
    synced before it (committed; listed in its summary).
    """
    # Only the settings are read under the try: a ValueError from a release,
    # a cancel or a sync during the run is a bug, to keep its traceback.
    try:
        capture_expiry_action(action)
    except ValueError as exc:
        return _finish("capture expiry", {"changes": [], "errors": [str(exc)]})
    changes = _until_stopped(
        "capture expiry",
        "changed",
        lambda report: capture_expiry(action=action, report=report),
    )
    return _finish("capture expiry", _summary(changes))


@task()
def auto_release_task() -> dict[str, Any]:
    """``escrow_auto_release``: release payments held past ``AUTO_RELEASE_AFTER_DAYS``.

    ``{"enabled": False}`` when the setting is None (automatic release is off).
    A malformed ``AUTO_RELEASE_AFTER_DAYS`` (E034) releases nothing and fails
    the run (:class:`PeriodicJobFailed`). An unexpected error that stops the
    run is the ``__cause__`` of a :class:`PeriodicJobFailed` saying how many
    payments were released before it (committed; listed in its summary).
    """
    try:  # only the setting: a ValueError from a release is a bug (its traceback)
        auto_release_after_days()
    except ValueError as exc:
        return _finish("auto release", {"enabled": True, "changes": [], "errors": [str(exc)]})
    changes = _until_stopped(
        "auto release",
        "released",
        lambda report: auto_release(report=report),
        {"enabled": True},
    )
    if changes is None:
        return {"enabled": False, "changes": [], "errors": []}
    return _finish("auto release", {"enabled": True, **_summary(changes)})


@task()
def fetch_missed_events_task(since: str = "1d", all_accounts: bool = True) -> dict[str, Any]:
    """``escrow_fetch_missed_events --since 1d [--all-accounts]``: record events that never arrived.

    ``all_accounts``: also each connected account's events (one Events API
    listing per account: keep the schedule sparse on a large platform). A
    source whose listing failed is in ``errors``; the events read before the
    failure are recorded and counted in ``sources`` all the same. A
    ``since`` that is no date, time or duration, or an ``all_accounts``
    that is not True or False, fails the run (:class:`PeriodicJobFailed`)
    before anything is read. An unexpected error that stops the run is the
    ``__cause__`` of a :class:`PeriodicJobFailed` saying how many events it
    recorded or processed before it (committed; listed in its summary's
    ``changes``, a failed one in its ``errors``).
    """
    with task_arguments("fetch missed events", {"sources": {}}):
        start = check_since("since", since, required=True)
        check_flag("all_accounts", all_accounts)
    accounts = connected_account_ids() if all_accounts else []
    results = _until_stopped(
        "fetch missed events",
        "events recorded or processed",
        lambda report: fetch_missed_events(start, accounts=accounts, report=report),
        {"sources": {}},
        counted=len,  # a failed one was recorded too
    )
    summary: dict[str, Any] = {
        "sources": {
            result.source: {
                "seen": result.seen,
                "outcomes": dict(result.outcomes),
                "left_alone": len(result.left_alone),
                "unreadable": result.unreadable,
            }
            for result in results
            if not result.error or result.outcomes  # what was read before a page failed
        },
        "errors": [f"{result.source}: {result.error}" for result in results if result.error],
    }
    failed = sum(result.outcomes.get("failed", 0) for result in results)
    if failed:
        summary["errors"].append(f"{failed} events failed processing")
    return _finish("fetch missed events", summary)


@task()
def purge_event_payloads_task(days: int | None = None) -> dict[str, Any]:
    """``escrow_purge_event_payloads``: null settled events' payloads past the retention.

    A retention under one day (the argument or the setting) purges nothing
    and fails the run (:class:`PeriodicJobFailed`), as the command refuses it.
    A ``days`` that is no whole number of at least 1 fails it naming ``days``
    (as the other tasks name theirs), before anything is read; the setting's
    refusal names the retention.
    """
    if days is not None:
        with task_arguments("purge_event_payloads", {"purged": 0}):
            days = check_days("days", days)
    try:
        purged = purge_payloads(days)
    except ValueError as exc:
        return _finish("purge_event_payloads", {"purged": 0, "errors": [str(exc)]})
    return {"purged": purged, "errors": []}


@task()
def requeue_stuck_events_task(older_than_minutes: int | None = None) -> dict[str, Any]:
    """``escrow_requeue_stuck_events``: enqueue again events a worker never took.

    ``{"enabled": False}`` unless ``WEBHOOK_PROCESSING`` is ``"task"``. A
    ``WEBHOOK_REQUEUE_AFTER_MINUTES`` or ``older_than_minutes`` that is no
    int of at least 1 (E115) enqueues nothing and fails the run
    (:class:`PeriodicJobFailed`). An error that stops the run (the broker
    gone) is the ``__cause__`` of a :class:`PeriodicJobFailed` saying how
    many events were enqueued again before it (its summary's ``requeued``).
    """
    older_than = None
    if older_than_minutes is not None:
        with task_arguments("requeue stuck events", {"enabled": True, "requeued": []}):
            minutes = check_minutes("older_than_minutes", older_than_minutes, minimum=1)
        older_than = timedelta(minutes=minutes)
    if older_than is None and escrow_settings.WEBHOOK_PROCESSING == "task":
        # Read here, not within the run: its refusal is no error that stopped it.
        try:
            older_than = timedelta(minutes=requeue_after_minutes())
        except ValueError as exc:  # the setting, when checks were skipped (E115)
            return _finish(
                "requeue stuck events", {"enabled": True, "requeued": [], "errors": [str(exc)]}
            )
    ids = _until_stopped(
        "requeue stuck events",
        "re-enqueued",
        lambda report: requeue_stuck_events(older_than, report=report),
        {"enabled": True},
        counted=len,
        summarize=lambda done: {"requeued": [change.subject for change in done], "errors": []},
    )
    if ids is None:
        return {"enabled": False, "requeued": [], "errors": []}
    return {"enabled": True, "requeued": ids, "errors": []}
