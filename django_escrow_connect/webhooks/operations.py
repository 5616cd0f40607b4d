"""Operator actions on the event log: replay, catch up, re-enqueue, purge.

The management commands (``escrow_replay_events``,
``escrow_fetch_missed_events``, ``escrow_requeue_stuck_events``,
``escrow_purge_event_payloads``) and the admin's replay action are thin
wrappers around these functions.
"""

from __future__ import annotations

import logging
import numbers
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from .. import swappable
from ..conf import ACCOUNTS_V2, escrow_settings
from ..dates import check_period, period_setting
from ..exceptions import GatewayError
from ..gateway import get_gateway
from ..services import accounts
from ..services.changes import Change, Report
from ..services.common import accounts_v2_gateway
from ..states import AccountsApi, AccountStatus, WebhookEndpoint
from ..states import WebhookEventStatus as E
from . import pipeline, receiver, registry
from .dispatch import dispatch_recorded

logger = logging.getLogger("django_escrow_connect.webhooks")

#: The Events API reaches back 30 days.
EVENTS_API_WINDOW = timedelta(days=30)


def retry_deferred_events(*, dry_run: bool = False) -> list[Change]:
    """``escrow_reconcile``'s last step: retry the events that arrived before their object."""
    if dry_run:
        waiting = pipeline.event_model().objects.filter(status=E.DEFERRED).count()
        return [Change("webhooks", "would retry deferred events", str(waiting))] if waiting else []
    counts = pipeline.process_deferred()
    if not counts:
        return []
    summary = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
    # An event whose handler raised is left ``failed`` for escrow_replay_events:
    # the run reports an error (the command exits non-zero, the task raises),
    # so a cron or task monitor sees it and not only the signal's receivers.
    failed = counts.get(E.FAILED, 0)
    return [Change("webhooks", "deferred events retried", summary, error=bool(failed))]


# --------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------


def replay_event(pk: Any) -> str:
    """Process one event again (whatever its state); returns its new state.

    ``"skipped"`` when the event is gone or another worker holds it.
    """
    return pipeline.replay(pk) or "skipped"


def replay_events(pks: Iterable[Any]) -> dict[str, int]:
    """Process each event again (whatever its state); returns the new states counted."""
    counts: Counter[str] = Counter(replay_event(pk) for pk in pks)
    return dict(counts)


# --------------------------------------------------------------------------
# Catch up with events that never arrived
# --------------------------------------------------------------------------


@dataclass
class FetchResult:
    source: str
    seen: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Why Stripe could not list all of this source's events (the others
    #: still run); the events read before the failure are recorded and
    #: counted, the older ones were not read.
    error: str = ""
    #: The known failed events left as they are (their pks; counted
    #: ``duplicate``), and how many of them failed because their object
    #: could not be read.
    left_alone: list[Any] = field(default_factory=list)
    unreadable: int = 0

    @property
    def recorded(self) -> int:
        """Events that were not in the log before."""
        return self.seen - self.outcomes.get("duplicate", 0)


def connected_account_ids() -> list[str]:
    """The accounts ``--all-accounts`` lists: created at Stripe, not deauthorized.

    A deauthorized account's events cannot be listed any more (Stripe
    refuses the platform access).
    """
    return list(
        swappable.load("ConnectedAccount")
        ._default_manager.exclude(stripe_account_id="")
        .exclude(status=AccountStatus.DEAUTHORIZED)
        .values_list("stripe_account_id", flat=True)
    )


def fetch_missed_events(
    since: datetime,
    *,
    accounts: Sequence[str] = (),
    include_platform: bool = True,
    include_thin: bool | None = None,
    report: Report | None = None,
) -> list[FetchResult]:
    """Record and process the events of the handled types created since ``since``.

    Reads Stripe's Events API (it reaches back 30 days, so ``since`` is
    clamped to that) for the platform and for each connected account named,
    and the v2 Events API (``/v2/core/events``) for thin events:
    ``include_thin`` None means when Accounts v2 is in use (``ACCOUNTS_API``
    is ``"v2"``, or an account was created with it).

    Events already in the log cost two queries and change nothing, failed
    ones included: retrying those is ``escrow_replay_events``'s (which
    leaves alone the ones whose object cannot be read); each result lists
    them (``left_alone``) and counts the unreadable ones. A known event
    still ``received`` (never processed) is processed, as a delivery would.

    When a page of a source cannot be fetched or read, its result has an
    ``error``, and the events of the pages read before it (the newest:
    Stripe lists newest first) are recorded and processed all the same; the
    older ones are read by a run with the same ``since``.

    ``report`` is called with each event recorded or processed now (not a
    known one left as it is) as soon as it is: an unexpected error (a bug,
    the database gone) that ends the run with its exception leaves those
    events recorded, and the results are lost with it.
    """
    oldest = timezone.now() - EVENTS_API_WINDOW
    if since < oldest:
        since = oldest
    created_gte = int(since.timestamp())
    results = []
    if include_platform:
        results.append(_fetch(WebhookEndpoint.PLATFORM, created_gte, None, report))
    for account in accounts:
        results.append(_fetch(WebhookEndpoint.CONNECT, created_gte, account, report))
    if include_thin is None:
        include_thin = accounts_v2_in_use()
    if include_thin:
        results.append(_fetch_thin(since, report))
    return results


def accounts_v2_in_use() -> bool:
    """Whether thin events can concern this installation's accounts."""
    if escrow_settings.ACCOUNTS_API == ACCOUNTS_V2:
        return True
    return bool(
        swappable.load("ConnectedAccount")
        ._default_manager.filter(accounts_api=AccountsApi.V2)
        .exists()
    )


#: The label of the thin events' results.
THIN_SOURCE = "thin events"


def _fetch_thin(since: datetime, report: Report | None) -> FetchResult:
    result = FetchResult(source=THIN_SOURCE)
    types = registry.event_types(WebhookEndpoint.THIN)
    fetched: list[dict[str, Any]] = []
    try:
        gateway = accounts_v2_gateway()
        for start in range(0, len(types), MAX_EVENT_TYPES):
            chunk = types[start : start + MAX_EVENT_TYPES]
            # One at a time: the events of the pages read before one that
            # fails are kept, and recorded below (see _fetch).
            for event in gateway.list_thin_events(created_gte=since, types=chunk):
                fetched.append(event)
    except GatewayError as exc:
        result.error = str(exc)
        logger.warning(
            "could not list thin events: %s (%s read before)",
            exc,
            len(fetched),
            extra={"connected_account": "", "stripe_event_id": "", "payment_id": ""},
        )
    oldest = datetime.min.replace(tzinfo=dt_timezone.utc)
    # Oldest first, as they happened (each one only says "read the account again").
    fetched.sort(key=lambda event: receiver.thin_created(event) or oldest)
    for event in fetched:
        if (
            not receiver.is_thin(event)
            or not isinstance(event.get("id"), str)
            or not isinstance(event.get("type"), str)
            or receiver.thin_created(event) is None
        ):
            result.outcomes["malformed"] += 1
            continue
        _settle(result, receiver.record(WebhookEndpoint.THIN, event), report)
    _count_unreadable(result)
    logger.info(
        "fetched missed thin events: %s seen, %s new",
        result.seen,
        result.recorded,
        extra={"connected_account": "", "stripe_event_id": "", "payment_id": ""},
    )
    return result


#: What to do about an account whose events Stripe refuses to list (``account_invalid``).
#: Not done automatically: Stripe answers the same to a key of another
#: platform or mode, which would disconnect every account.
ACCESS_REFUSED_HINT = (
    " (Stripe refuses the platform access to this account. If its owner disconnected the "
    "platform and the account.application.deauthorized event was lost, mark it deauthorized: "
    "Connected accounts > Refresh from Stripe in the admin, with 'Mark deauthorized if Stripe "
    "refuses access'. If every account is refused, check STRIPE_SECRET_KEY.)"
)

#: The most event types Stripe's Events API takes in one ``types`` filter.
MAX_EVENT_TYPES = 20


def _created(event: dict[str, Any]) -> int:
    created = event.get("created")
    return created if isinstance(created, int) and not isinstance(created, bool) else 0


def _fetch(
    endpoint: str, created_gte: int, account: str | None, report: Report | None
) -> FetchResult:
    result = FetchResult(source=account or "platform")
    types = registry.event_types(endpoint)
    fetched: list[dict[str, Any]] = []
    try:
        # Stripe takes at most 20 types per list call: one call per chunk.
        for start in range(0, len(types), MAX_EVENT_TYPES):
            chunk = types[start : start + MAX_EVENT_TYPES]
            listed = get_gateway().list_events(
                created_gte=created_gte, types=chunk, stripe_account=account
            )
            _read_listing(listed, fetched)
    except GatewayError as exc:
        # The events read before are recorded all the same: each is recorded
        # once by its id, so the run the error asks for (the same --since,
        # which also reaches the older events not read: Stripe lists newest
        # first) finds them known, and a handler takes events in any order
        # (Stripe delivers them so).
        result.error = str(exc)
        if account is not None and accounts.access_refused(exc):
            result.error += ACCESS_REFUSED_HINT
        logger.warning(
            "could not list events: %s (%s read before)",
            exc,
            len(fetched),
            extra={"connected_account": account or "", "stripe_event_id": "", "payment_id": ""},
        )
    fetched.sort(key=_created)  # stable: Stripe's order within a second
    for event in fetched:
        if account is not None and not event.get("account"):
            event = {**event, "account": account}
        data = event.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            result.outcomes["malformed"] += 1
            continue
        _settle(result, receiver.record(endpoint, event), report)
    _count_unreadable(result)
    logger.info(
        "fetched missed events: %s seen, %s new",
        result.seen,
        result.recorded,
        extra={"connected_account": account or "", "stripe_event_id": "", "payment_id": ""},
    )
    return result


def _read_listing(listed: Iterable[dict[str, Any]], fetched: list[dict[str, Any]]) -> None:
    """Add ``listed``'s events to ``fetched``, oldest first, as they happened
    (Stripe lists newest first); those read before a later page fails too."""
    read: list[dict[str, Any]] = []
    try:
        for event in listed:  # later pages are fetched while iterating
            read.append(event)
    finally:
        fetched.extend(reversed(read))


def _settle(result: FetchResult, row: pipeline.RecordedEvent, report: Report | None = None) -> None:
    """Process an event the log did not have (or never processed); leave a known one as it is.

    A known failed event was processed again on every run while it was
    within ``--since``: one whose object cannot be read failed alike every
    time, and the hourly run failed (exit 1) for as long. Retrying failed
    events is ``escrow_replay_events``'s, and ``escrow_report`` lists them.
    """
    result.seen += 1
    if row.status == E.FAILED:
        result.outcomes["duplicate"] += 1
        result.left_alone.append(row.pk)
        return
    status = dispatch_recorded(row).status
    result.outcomes[status] += 1
    if report is not None and status != "duplicate":
        # Committed by now: said at once (a failed one as an error), so an
        # error that stops the run later does not hide it.
        report(
            Change(
                row.stripe_event_id,
                f"received -> {status}",
                f"{row.type}, {result.source}",
                error=status == E.FAILED,
            )
        )


def _count_unreadable(result: FetchResult) -> None:
    """How many of the known failed events could not be read (one query, only if any)."""
    if result.left_alone:
        events = pipeline.event_model().objects.filter(pk__in=result.left_alone)
        result.unreadable = pipeline.unreadable(events).count()


# --------------------------------------------------------------------------
# Task mode: events whose queue message was lost
# --------------------------------------------------------------------------


def requeue_after_minutes() -> int:
    """``WEBHOOK_REQUEUE_AFTER_MINUTES``, or ValueError naming it (E115)."""
    return period_setting("WEBHOOK_REQUEUE_AFTER_MINUTES", "minutes", "E115")


def stuck_events(older_than: timedelta) -> Any:
    """Events still ``received`` ``older_than`` after they arrived, oldest first."""
    cutoff = timezone.now() - older_than
    return (
        pipeline.event_model()
        .objects.filter(status=E.RECEIVED, received_at__lt=cutoff)
        .order_by("received_at", "pk")
    )


def requeue_stuck_events(
    older_than: timedelta | None = None,
    *,
    limit: int = 1000,
    dry_run: bool = False,
    report: Report | None = None,
) -> list[str] | None:
    """Enqueue again the events a worker never took; returns their Stripe ids.

    Task mode only (``None`` otherwise: a request processes its own event,
    and Stripe redelivers one whose request died). The request enqueues an
    event once its row commits; a broker that loses that message (a Redis
    restart without persistence, a purged queue) leaves the row ``received``
    for ever. An event whose message is merely late in a long queue is
    enqueued twice, which is harmless: the worker locks the row and
    processes only an event still ``received`` (or failed), so the second
    task finds it settled and does nothing. ``older_than`` (default
    ``WEBHOOK_REQUEUE_AFTER_MINUTES``) should exceed the queue's usual wait.

    ``report`` is called with each event as soon as it is enqueued again
    (``evt_...: re-enqueued``): a broker that fails midway ends the run with
    its exception, and the ids returned are lost with it.
    """
    if escrow_settings.WEBHOOK_PROCESSING != "task":
        return None
    if older_than is None:
        older_than = timedelta(minutes=requeue_after_minutes())
    ids = [
        str(i) for i in stuck_events(older_than).values_list("stripe_event_id", flat=True)[:limit]
    ]
    if dry_run or not ids:
        return ids
    try:
        from .tasks import process_webhook_event
    except ImportError as exc:  # the same message as dispatch's
        raise ImproperlyConfigured(
            'ESCROW_CONNECT["WEBHOOK_PROCESSING"] = "task" needs Django\'s tasks '
            "framework: Django 6, or pip install django-tasks on Django 5.2."
        ) from exc
    for stripe_event_id in ids:
        process_webhook_event.enqueue(stripe_event_id)
        if report is not None:
            report(Change(stripe_event_id, "re-enqueued"))
    logger.warning(
        "re-enqueued %d webhook events left received for more than %s (lost queue messages?)",
        len(ids),
        older_than,
        extra={"connected_account": "", "stripe_event_id": "", "payment_id": ""},
    )
    return ids


# --------------------------------------------------------------------------
# Purge payloads after the retention period
# --------------------------------------------------------------------------


#: Only settled events lose their payload; failed and pending ones keep it
#: for the operator (and for replay).
PURGEABLE = (E.PROCESSED, E.IGNORED)


def purgeable_events(days: int | None = None) -> Any:
    """Settled events received more than ``days`` (default: the setting) ago.

    Raises ``ValueError`` for a retention under one day or past any date:
    every caller (the command, the task, a host's own schedule) is refused
    alike, so a misconfigured retention never strips the payload of an event
    processed a moment ago.
    """
    cutoff = timezone.now() - timedelta(days=retention_days(days))
    return pipeline.event_model().objects.filter(
        received_at__lt=cutoff, status__in=PURGEABLE, payload__isnull=False
    )


def retention_days(days: Any = None) -> int:
    """The retention (``days``, default: the setting) as whole days, or ValueError naming it.

    The one place that reads and converts it: the command prints the number
    this returns rather than converting the value a second time.

    A value system check E036 reports can still get here (``call_command``
    and ``--skip-checks`` skip the checks): a bool, a string that is no
    number or a list is refused like a retention under a day, not with a
    TypeError or int()'s message; so is a fraction (``2.5``), which int()
    would cut to fewer days than the operator asked for.
    """
    if days is None:
        days = escrow_settings.WEBHOOK_PAYLOAD_RETENTION_DAYS
    try:
        whole = None if isinstance(days, bool) else int(days)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        whole = None
    # numbers.Number, not Real: a Decimal("2.5") is a fraction too.
    fraction = isinstance(days, numbers.Number) and bool(whole != cast(Any, days))
    if whole is None or whole < 1 or fraction:
        raise ValueError(f"The retention must be at least one day, in whole days (got {days!r}).")
    check_period("The retention", days=whole)
    return whole


def purge_payloads(days: int | None = None) -> int:
    """Null the payload of settled events older than the retention; keep the rows.

    The row's unique Stripe id still refuses a duplicate delivery.
    """
    return int(purgeable_events(days).update(payload=None, payload_purged_at=timezone.now()))
