"""Scheduled jobs for held money: capture expiry (manual capture) and auto release.

* :func:`capture_expiry` (``manage.py escrow_capture_expiry``): manual-capture
  holds about to lapse (Stripe voids an authorisation at ``capture_before``).
* :func:`auto_release` (``manage.py escrow_auto_release``): release payments
  held longer than ``AUTO_RELEASE_AFTER_DAYS`` (and finish the split releases
  of such payments that stopped part-way).

Both move money only through the payment services.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..conf import SETTING_NAME, escrow_settings
from ..dates import period_setting
from ..states import IncidentKind, MoneyOperationKind, MoneyOperationStatus, ReleaseStatus
from ..states import PaymentStatus as S
from . import errors, radar, radar_holds
from .changes import RELEASED_IN_PART, Change, ChangeLog, Report, failed_change, sync_intent
from .common import model, open_disputes, payment_model
from .payment_intents import MANUAL_CAPTURE_WINDOW
from .payments import cancel_payment, release_payment
from .releases import (
    auto_release_due,
    check_payees_ready,
    pending_transfers_made,
    shares_owed,
    transfers_made,
    transfers_owed,
    transfers_unconfirmed,
)

__all__ = ["CAPTURE_EXPIRY_ACTIONS", "auto_release", "capture_expiry"]

logger = logging.getLogger("django_escrow_connect.reconcile")


# --------------------------------------------------------------------------
# escrow_capture_expiry
# --------------------------------------------------------------------------

CAPTURE_EXPIRY_ACTIONS = ("warn", "release", "cancel")


def capture_expiry(
    *,
    action: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    report: Report | None = None,
) -> list[Change]:
    """Warn about (and optionally release or void) holds close to ``capture_before``.

    ``action`` defaults to ``CAPTURE_EXPIRY_ACTION``: ``warn`` only reports,
    ``release`` captures the hold (the doer is paid), ``cancel`` voids it (the
    customer's card is released). A hold already past its deadline is synced
    from Stripe instead: Stripe has voided it.

    ``report`` is called with each change as soon as it is made. Each
    capture or void is committed on its own, so an unexpected error (a bug,
    the database gone) that ends the run with its exception leaves the
    earlier ones done: only ``report`` has heard of them.
    """
    action = capture_expiry_action(action)
    now = now or timezone.now()
    horizon = now + timedelta(hours=_warning_hours())
    holds = payment_model().objects.filter(
        strategy="manual_capture", status=S.HELD, capture_before__lte=horizon
    )
    changes = ChangeLog(report)
    for payment in holds.order_by("capture_before"):
        deadline = payment.capture_before
        subject = str(payment.pk)
        if deadline <= now:
            if dry_run:
                changes.append(
                    Change(subject, "lapsed; would sync from Stripe", deadline.isoformat())
                )
                continue
            synced = sync_intent(payment, dry_run=False)
            payment = payment_model().objects.get(pk=payment.pk)
            if synced or payment.status != S.HELD or payment.capture_before <= now:
                changes.extend(synced or [Change(subject, "lapsed")])
                continue
            # Stripe's deadline is later than the one recorded (an estimate
            # whose charge event never arrived): still a hold, judged anew.
            deadline = payment.capture_before
            changes.append(Change(subject, "deadline read from Stripe", deadline.isoformat()))
            if deadline > horizon:
                continue
        left = deadline - now
        hours = int(left.total_seconds() // 3600)
        logger.warning(
            "manual-capture hold expires soon",
            extra={"payment_id": subject, "capture_before": deadline.isoformat()},
        )
        if action == "warn" or dry_run:
            verb = "expires" if action == "warn" else f"would {action}; expires"
            changes.append(Change(subject, f"{verb} in {hours}h", deadline.isoformat()))
            continue
        try:
            if action == "release":
                updated = release_payment(payment.pk, system=True)
            else:
                updated = cancel_payment(payment.pk, system=True)
        except errors.ServiceError as exc:
            changes.append(failed_change(subject, action, exc))
            continue
        changes.append(
            Change(
                subject, f"{S.HELD} -> {updated.status}", f"{action} before {deadline.isoformat()}"
            )
        )
    return changes


def capture_expiry_action(action: str | None = None) -> str:
    """The action a :func:`capture_expiry` run takes (``action``, else
    ``CAPTURE_EXPIRY_ACTION``), once the settings the run reads are checked:
    a ValueError naming the setting and its system check (E035, E101)
    otherwise, before any hold is read.
    """
    if action is None:
        action = escrow_settings.CAPTURE_EXPIRY_ACTION
        if action not in CAPTURE_EXPIRY_ACTIONS:
            raise ValueError(
                f'{SETTING_NAME}["CAPTURE_EXPIRY_ACTION"] must be one of '
                f"{', '.join(CAPTURE_EXPIRY_ACTIONS)}, not {action!r} (system check E035)."
            )
    if action not in CAPTURE_EXPIRY_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(CAPTURE_EXPIRY_ACTIONS)}")
    _warning_hours()
    return action


def _warning_hours() -> float:
    """``CAPTURE_EXPIRY_WARNING_HOURS``, or ValueError naming it (what E101 refuses).

    The checks do not run under ``call_command``, ``--skip-checks`` or the
    periodic task: a string was a TypeError's traceback, and a hold lapses
    within ``MANUAL_CAPTURE_WINDOW`` anyway, so a longer horizon means every hold.
    """
    hours = escrow_settings.raw("CAPTURE_EXPIRY_WARNING_HOURS")
    lifetime_hours = MANUAL_CAPTURE_WINDOW.total_seconds() // 3600
    number = isinstance(hours, (int, float)) and not isinstance(hours, bool)
    if not number or not 0 < hours < lifetime_hours:
        raise ValueError(
            f'{SETTING_NAME}["CAPTURE_EXPIRY_WARNING_HOURS"] must be a number of hours above 0 '
            f"and under {lifetime_hours:.0f}, not {hours!r} (system check E101)."
        )
    return float(hours)


# --------------------------------------------------------------------------
# escrow_auto_release
# --------------------------------------------------------------------------


def auto_release_after_days() -> int | None:
    """``AUTO_RELEASE_AFTER_DAYS``: None (automatic release is off) or a
    whole number of days, or a ValueError naming it (what E034 refuses)."""
    if escrow_settings.AUTO_RELEASE_AFTER_DAYS is None:
        return None
    return period_setting("AUTO_RELEASE_AFTER_DAYS", "days", "E034")


def auto_release(
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    report: Report | None = None,
) -> list[Change] | None:
    """Release payments held longer than ``AUTO_RELEASE_AFTER_DAYS``.

    Also releases each delivered milestone whose own ``auto_release_after``
    (from the terms; off by default) has passed since the doer marked it
    delivered (docs/milestones.md), whatever the setting says.

    Also finishes the release of everything held of a payment held that
    long whose release stopped after some payees' transfers went (a split
    payment left ``partially_released``, or ``partially_refunded`` by a
    refund since): :func:`_finish_stopped_releases`.

    Returns None when the setting is None (automatic release is off) and no
    milestone is due. Disputed payments are never released (their state is
    not ``held``; a milestone's release refuses while a dispute is open: an
    informational ``not released (dispute_open)`` line, as a hold's).

    A release that cannot succeed until someone acts is reported on an
    informational line, not as a failure, so the hourly run does not fail
    (nor call Stripe, nor record an incident) every time for as long as it
    lasts: a payee whose connected account cannot receive money
    (``account_not_ready``: disconnected, transfers inactive), and a payment
    whose last release Stripe refused (an open ``transfer_failed``
    incident: staff retry the failed transfer or resolve the incident), and
    one Stripe said is disputed (``charge_disputed``: a hold waits for the
    dispute's webhook or ``escrow_reconcile``; nothing is sent), and one an
    open Radar review or early fraud warning holds (Stripe closes it), and
    one whose dispute is open (``dispute_open``: a delivered milestone of a
    disputed payment, or a payment disputed after this run selected it; the
    dispute's decision lifts it).

    ``report`` is called with each change as soon as it is made. Each
    release is committed on its own, so an unexpected error (a bug, the
    database gone) that ends the run with its exception leaves the earlier
    releases done: only ``report`` has heard of them.
    """
    days = auto_release_after_days()  # a bad value is refused before anything is released
    now = now or timezone.now()
    changes = ChangeLog(report)
    _release_due_milestones(changes.append, dry_run=dry_run, now=now)
    if days is None:
        return changes or None
    # Before the held payments: one whose release this run stops part-way is
    # left to the next run, not sent again (or reported twice) at once.
    _finish_stopped_releases(days, changes.append, dry_run=dry_run, now=now)
    _release_held_payments(days, changes.append, dry_run=dry_run, now=now)
    return changes


def _release_due_milestones(record: Report, *, dry_run: bool, now: datetime) -> None:
    for payment_id, milestone_id in auto_release_due(now):
        subject = f"{payment_id} milestone {milestone_id}"
        if dry_run:
            record(_dry_run_release(payment_id, subject, "delivered, auto-release time passed"))
            continue
        waiting = _waits_for_staff(payment_id, subject)
        if waiting is not None:
            record(waiting)
            continue
        updated = _release(payment_id, subject, record, milestone_id=milestone_id)
        if updated is None:
            continue
        record(Change(subject, f"delivered -> {updated.status}", "milestone auto-release"))


def _release_held_payments(days: int, record: Report, *, dry_run: bool, now: datetime) -> None:
    due = payment_model().objects.filter(status=S.HELD, held_at__lte=now - timedelta(days=days))
    for payment in due.order_by("held_at"):
        subject = str(payment.pk)
        if dry_run:
            record(_dry_run_release(payment.pk, subject, f"held since {payment.held_at:%Y-%m-%d}"))
            continue
        waiting = _waits_for_staff(payment.pk, subject)
        if waiting is not None:
            record(waiting)
            continue
        updated = _release(payment.pk, subject, record)
        if updated is None:
            continue
        record(Change(subject, f"{S.HELD} -> {updated.status}", f"held {days}+ days"))


def _release(
    payment_id: Any,
    subject: str,
    record: Report,
    *,
    earlier: int = 0,
    milestone_id: Any = None,
    made: set[Any] | None = None,
) -> Any:
    """Release the payment (or its milestone) as the system; the payment
    released, or None once a refusal's line is recorded (saying what this
    release sent first: :func:`_release_refused`).

    ``made``, when given, gets the payee transfers Stripe made during the
    call (:func:`transfers_made` before and after): those this release sent,
    or finished with their own key, a replacement of a lost one included.
    """
    before = transfers_made(payment_id)
    try:
        released = release_payment(payment_id, system=True, milestone_id=milestone_id)
    except errors.ServiceError as exc:
        record(_release_refused(payment_id, subject, exc, before, earlier=earlier))
        return None
    if made is not None:
        made.update(transfers_made(payment_id) - before)
    return released


#: The states of a payment whose stopped release the job finishes: the one
#: ``release_part`` leaves, and ``partially_refunded``, which a refund of such
#: a payment (nothing held) leaves. That refund took its part of the pending
#: release from the payees not paid yet by smaller transfers (what
#: ``shares_owed`` reads, ``REVERSAL_POLICY``): what the release still owes
#: them is theirs, and releasing again sends exactly that. Not ``dispute_lost``:
#: a release the dispute caught unsent is never sent (settled with the payee
#: by hand, docs/recovery.md); nor ``disputed`` (frozen).
_FINISHABLE = (S.PARTIALLY_RELEASED, S.PARTIALLY_REFUNDED)


def _stopped_releases(cutoff: datetime) -> Any:
    """Payments held since before ``cutoff`` whose release of everything held
    stopped part-way: ``partially_released`` (or ``partially_refunded`` since:
    :data:`_FINISHABLE`), nothing left held, and a pending release that is no
    milestone's (a milestone has its own auto-release,
    :func:`_release_due_milestones`).

    Nothing held means the pending release took all of it, or a refund took
    what it left (a release by amount, its rest refunded since): releasing
    the payment again only sends the transfers that release owes, and never
    starts a release of money the customer kept (while a release by amount
    leaves some held, the payment is not selected). A manual-capture payment
    is captured whole, never released in parts by this job. One query,
    however many payments there are.
    """
    pending = model("EscrowRelease").objects.filter(
        payment=OuterRef("pk"), status=ReleaseStatus.PENDING, milestone__isnull=True
    )
    charged = Coalesce(F("amount_captured"), F("amount"))
    return (
        payment_model()
        .objects.filter(status__in=_FINISHABLE, held_at__lte=cutoff)
        .exclude(strategy="manual_capture")
        .filter(amount_released__gte=charged - F("amount_refunded"))
        .filter(Exists(pending))
        .order_by("held_at")
    )


def _finish_stopped_releases(days: int, record: Report, *, dry_run: bool, now: datetime) -> None:
    """Finish the releases of everything held that stopped after some payees' transfers.

    A payment split between payees is released one transfer per payee: a
    release refused after the first one went (Stripe refusing the next, a
    ``charge_disputed`` hold, a payee's account not ready) leaves the payment
    ``partially_released``, no longer ``held``, so :func:`_release_held_payments`
    never saw it again and the payees not yet paid waited for a person. A
    refund of it since leaves it ``partially_refunded`` (:data:`_FINISHABLE`),
    the payees not paid yet owed their shares less their part of the refund.
    Each run now sends what such a release still owes, with the same guards as
    a release of a held payment: a refusal Stripe made waits for staff
    (:func:`_waits_for_staff`), a hold or an account not ready is an
    informational line with no Stripe call, a dispute open is never released
    (its payment is ``disputed``, not selected; one disputed after the
    selection is refused under the release's lock: ``dispute_open``), and a
    transfer in flight is finished with its own idempotency key, never sent
    twice. The line says ``<status> -> <status>`` (the state it was selected
    in), or ``nothing sent (<status> meanwhile)`` when the customer or staff
    finished (or refunded) it between the selection and the release: no
    payee transfer was made during this run's call (:func:`_release`'s
    ``made``). Two runs overlapping (the command and its task) may both say
    ``->`` of a payment one of them finished; Stripe made each transfer once.

    Whoever started the release is finished alike, under the same age rule:
    the job's (held longer than ``AUTO_RELEASE_AFTER_DAYS``), and the
    customer's confirm or staff's release, which already decided to release
    everything; finishing it sends only what that decision owes the payees.
    """
    candidates = list(_stopped_releases(now - timedelta(days=days)))
    if not candidates:
        return
    # Four queries for them all; a pending release owing nothing (a refund
    # took every unpaid share) is left to whatever finishes it.
    owed = shares_owed([payment.pk for payment in candidates])
    # The payees each payment's stopped release still owes (its other payees
    # were paid: their accounts no longer matter to it).
    owed_payees: dict[Any, set[int]] = {}
    releases = (
        model("EscrowRelease")
        .objects.filter(pk__in=[pk for pk, shares in owed.items() if shares], milestone=None)
        .values_list("pk", "payment_id")
    )
    for release_pk, payment_pk in releases:
        owed_payees.setdefault(payment_pk, set()).update(owed[release_pk])
    for payment in candidates:
        if payment.pk not in owed_payees:
            continue
        subject = str(payment.pk)
        earlier = pending_transfers_made(payment.pk)
        held_since = f"held since {payment.held_at:%Y-%m-%d}"
        if dry_run:
            detail = (
                f"{held_since}; {_part_line(payment.pk, 0, earlier)}" if earlier else held_since
            )
            record(_dry_run_release(payment.pk, subject, detail, payees=owed_payees[payment.pk]))
            continue
        # Lazily: the line of a release still waiting costs four queries more.
        verb = (
            f"{_part_line(payment.pk, 0, earlier)}; rest not released"
            if earlier
            else "not released"
        )
        waiting = _waits_for_staff(payment.pk, subject, verb=verb, action=_RELEASE_AGAIN)
        if waiting is not None:
            record(waiting)
            continue
        made: set[Any] = set()
        updated = _release(payment.pk, subject, record, earlier=earlier, made=made)
        if updated is None:
            continue
        if not made:
            # Selected outside any lock: the customer or staff released it
            # (or staff refunded it) since, and the release, which checks
            # everything again under the payment's lock, had nothing to send.
            record(
                Change(
                    subject,
                    f"nothing sent ({updated.status} meanwhile)",
                    "its release was finished or refunded since this run selected it",
                )
            )
            continue
        record(
            Change(
                subject,
                f"{payment.status} -> {updated.status}",
                f"held {days}+ days; finished the release stopped part-way",
            )
        )


#: Refusals of a hold that Stripe lifts, not the next run: an open Radar
#: review or early fraud warning, and a ``charge_disputed`` hold (a refusal
#: saying the charge is disputed, recorded or this release's own).
_HELD_CODES = frozenset(radar_holds.FREEZE_CODES.values()) | radar_holds.DISPUTED_CHARGE_CODES


def _release_refused(
    payment_id: Any,
    subject: str,
    exc: errors.ServiceError,
    made_before: set[Any],
    *,
    earlier: int = 0,
) -> Change:
    """The line of a release that raised ``exc``, saying what it sent first.

    A payment split between payees is released one transfer per payee, each
    committed on its own: a refusal after the first payee's transfer went
    (Stripe refusing the next one, or a ``charge_disputed`` hold opened
    meanwhile refusing it before any call) leaves that transfer made. The
    line said ``not released`` (or only ``release failed``) all the same, and
    an operator reading it could pay that payee again by hand. It now says
    ``released in part: <made> of <all> transfers`` (the payment's transfers
    this release made, of those it made and those its pending releases still
    owe), then ``held (<code>)`` for a refusal that waits for someone else,
    or ``release failed`` (a failure, as before). A transfer whose answer was
    lost (a timeout) is owed until confirmed, but Stripe may have made it:
    ``<made> of <all> transfers made, <k> unconfirmed (retrying finishes
    ...)``, so that nobody pays that payee by hand a second time.

    ``earlier``: the transfers an earlier run made of the release this one
    finishes (:func:`_finish_stopped_releases`), counted in ``<made>``: a
    second run that again stops part-way says all its release made. A run
    that made none of them says ``still released in part: ...``, which the
    run's count of releases (:func:`.changes.changed`) leaves out.
    """
    code = _DISPUTE_OPEN if _frozen_by_a_dispute(payment_id, exc) else exc.code
    if isinstance(exc, errors.AccountNotReady) or code == _DISPUTE_OPEN:
        change = _not_released(subject, exc, code=code)
    else:
        change = _refused(subject, exc)
    new = len(transfers_made(payment_id) - made_before)
    if not new + earlier:
        return change
    part = _part_line(payment_id, new, earlier)
    unconfirmed = transfers_unconfirmed(payment_id)
    if unconfirmed:
        it = "it" if unconfirmed == 1 else "them"
        part += f" made, {unconfirmed} unconfirmed (retrying finishes {it}: do not pay by hand)"
    if change.error:
        return Change(subject, f"{part}; release failed", change.detail, error=True)
    return Change(subject, f"{part}; held ({code})", change.detail)


def _part_line(payment_id: Any, new: int, earlier: int) -> str:
    """``released in part: <made> of <all> transfers``: ``new`` made by this
    run, ``earlier`` by an earlier one, of those and the ones still owed;
    ``still released in part: ...`` when this run made none."""
    made = new + earlier
    line = f"{RELEASED_IN_PART}: {made} of {made + transfers_owed(payment_id)} transfers"
    return line if new else f"still {line}"


def _refused(subject: str, exc: errors.ServiceError) -> Change:
    """A release the run could not make: a failure, unless a hold refused it.

    A hold (:data:`_HELD_CODES`) refuses before any Stripe call, and nothing
    the next run does changes it: Stripe closes a Radar review or early
    fraud warning, the dispute's webhook or ``escrow_reconcile`` lifts a
    ``charge_disputed`` hold. Each is an open payment incident (the
    ``escrow_connect.incidents.open`` gauge), and a payment held too long
    is a stuck payment (``escrow_report --check``).
    Informational, as a payee not ready is, so the job does not fail every
    hour for as long as a review lasts (days, for Radar).
    """
    if exc.code in _HELD_CODES:
        return _not_released(subject, exc)
    return failed_change(subject, "release", exc)


def _not_released(subject: str, exc: errors.ServiceError, *, code: str = "") -> Change:
    """A release refused before any Stripe call that only someone else can unblock.

    Informational: a payee's account that cannot receive money (the doer
    finishes onboarding or reconnects, or staff refund: the payment stays
    listed by ``escrow_report``'s stuck payments), or a hold (Stripe, the
    dispute's webhook or reconcile lifts it: its open incident is listed),
    or an open dispute (``code`` :data:`_DISPUTE_OPEN`: its decision lifts it).
    """
    code = code or exc.code
    logger.info("auto release: %s not released (%s)", subject, code)
    return Change(subject, f"not released ({code})", exc.message)


#: The code of the line of a release an open dispute refused (``--dry-run``
#: says ``would not release (dispute_open)`` of it).
_DISPUTE_OPEN = "dispute_open"


def _frozen_by_a_dispute(payment_id: Any, exc: errors.ServiceError) -> bool:
    """The release was refused for the payment's state while a dispute of it is open.

    A delivered milestone of a disputed payment is due (its clock runs on),
    and a payment selected held or stopped part-way may be disputed before
    its release locks it: the release refuses it under the lock
    (``transition_not_allowed``) before any Stripe call. The dispute lasts
    weeks and only its decision lifts it, so it is a hold like the others,
    not a failure every hour (a refusal of a payment with no open dispute
    still is one). Read only on such a refusal: one query.
    """
    if not isinstance(exc, errors.TransitionNotAllowed):
        return False
    disputes = model("Dispute").objects.filter(payment=payment_id)
    return bool(open_disputes(disputes).exists())


def _refused_release(payment_id: Any) -> Any:
    """The open ``transfer_failed`` incident of the payment's refused last release, if any.

    The payment's latest release operation (a transfer or a capture) failed
    with Stripe's refusal, and the incident that refusal recorded (created
    with it, so not before it began) is still open. A tip's refused transfer
    is no release operation and keeps no release waiting.
    """
    latest = (
        model("MoneyOperation")
        .objects.filter(
            payment_id=payment_id,
            kind__in=[MoneyOperationKind.TRANSFER, MoneyOperationKind.CAPTURE],
        )
        .order_by("-created_at")
        .first()
    )
    if latest is None or latest.status != MoneyOperationStatus.FAILED:
        return None
    if latest.error_code == "not_made":  # never reached Stripe: nothing was refused
        return None
    return (
        model("TransferIncident")
        .objects.filter(
            payment_id=payment_id,
            kind=IncidentKind.TRANSFER_FAILED,
            resolved_at__isnull=True,
            created_at__gte=latest.created_at,
        )
        .order_by("-created_at")
        .first()
    )


#: What staff do for a refused release: a held payment's failed transfer is
#: retried; a split payment's release stopped part-way is released again (the
#: admin's *Retry failed transfer* refuses a ``partially_released`` payment).
_RETRY_FAILED_TRANSFER = "retry the failed transfer"
_RELEASE_AGAIN = "release it again (the admin's Release)"


def _waits_for_staff(
    payment_id: Any,
    subject: str,
    verb: str = "not released",
    action: str = _RETRY_FAILED_TRANSFER,
) -> Change | None:
    """An informational line when Stripe refused the payment's last release.

    Sending it again every run would be refused alike (an account Stripe will
    not pay, whose change the app may not have heard of), each time a Stripe
    call and a new incident: the release waits for staff, who retry the
    failed transfer (docs/recovery.md) or resolve the incident, after which
    the next run tries again.
    """
    incident = _refused_release(payment_id)
    if incident is None:
        return None
    code = incident.code or IncidentKind.TRANSFER_FAILED
    return Change(
        subject,
        f"{verb} ({code})",
        f"Stripe refused its last release: {action} or resolve the incident (resolving it "
        "lets the next run send it again: do not resolve it for money sent another way)",
    )


def _dry_run_release(
    payment_id: Any, subject: str, detail: str, *, payees: Collection[int] | None = None
) -> Change:
    """What a dry run says of a release due: ``would release``, or why it would be refused.

    Release refuses while the payment is frozen (an open dispute, an open
    Radar review or early fraud warning, a ``charge_disputed`` hold), and while a payee's account
    cannot receive money (``account_not_ready``, the real run's
    informational line); a dry run that listed those as ``would release``
    would promise what the real run then does not do. Reads only.

    ``payees``: a release stopped part-way (:func:`_finish_stopped_releases`)
    sends only to the payees it still owes, so only their accounts are
    checked, as the real run does (an account of a payee paid already that
    cannot receive money since said ``would not release`` of a payment the
    real run then released).
    """
    payment = payment_model().objects.get(pk=payment_id)
    waiting = _waits_for_staff(payment_id, subject, verb="would not release")
    if waiting is not None:
        return waiting
    refusal = ""
    if open_disputes(payment.disputes).exists():
        refusal = _DISPUTE_OPEN
    else:
        try:
            radar.check_not_held(payment)
            check_payees_ready(payment, only=payees)
        except errors.ServiceError as exc:
            refusal = exc.code
    if refusal:
        return Change(subject, f"would not release ({refusal})", detail)
    return Change(subject, "would release", detail)
