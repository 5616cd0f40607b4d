"""Operations that put local state back in line with Stripe, run on a schedule.

* :func:`reconcile` (``manage.py escrow_reconcile``): payments whose last
  money-moving call has an unknown outcome (``releasing``), payments still
  waiting for a PaymentIntent outcome after a while, and refunds whose answer
  was lost. The command then retries webhook events deferred because they
  arrived before their row
  (:func:`django_escrow_connect.webhooks.operations.retry_deferred_events`):
  webhooks sit above the services, so the command composes the two.
* :func:`capture_expiry` (``manage.py escrow_capture_expiry``): manual-capture
  holds about to lapse (Stripe voids an authorisation at ``capture_before``).
* :func:`auto_release` (``manage.py escrow_auto_release``): release payments
  held longer than ``AUTO_RELEASE_AFTER_DAYS``.

Each returns a list of :class:`Change` (one per payment touched, or that would
be touched with ``dry_run=True``). Nothing here moves money except through the
services, which reuse the idempotency key of the operation they finish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import transitions
from ..conf import escrow_settings
from ..exceptions import GatewayError
from ..states import UNRESOLVED_OPERATION_STATES, RefundStatus
from ..states import PaymentStatus as S
from . import errors, outcomes
from .common import gateway, model, payment_model
from .payments import cancel_payment, refund_payment, release_payment
from .sync import apply_payment_intent
from .transfers import apply_refund

logger = logging.getLogger("django_escrow_connect.reconcile")

__all__ = [
    "DEFAULT_OLDER_THAN_MINUTES",
    "Change",
    "auto_release",
    "capture_expiry",
    "reconcile",
]

#: A payment must have been left alone this long before reconcile looks at it
#: (so it does not race a customer who is paying right now).
DEFAULT_OLDER_THAN_MINUTES = 30
#: Payments awaiting a PaymentIntent outcome are looked up at Stripe for this
#: long (a bank debit can take two weeks); older ones are abandoned checkouts
#: and are only looked at with ``payment_id``.
STALE_INTENT_MAX_AGE = timedelta(days=30)


@dataclass(frozen=True)
class Change:
    """One thing reconcile did (or, in a dry run, would do)."""

    subject: str
    action: str
    detail: str = ""
    error: bool = False

    def __str__(self) -> str:
        text = f"{self.subject}: {self.action}"
        return f"{text} ({self.detail})" if self.detail else text


def _status_change(payment: Any, before: str) -> Change | None:
    if payment.status == before:
        return None
    return Change(str(payment.pk), f"{before} -> {payment.status}")


def _failed(subject: Any, action: str, exc: Exception) -> Change:
    message = getattr(exc, "message", "") or str(exc)
    logger.warning("reconcile: %s failed for %s: %s", action, subject, message)
    return Change(str(subject), f"{action} failed", message, error=True)


# --------------------------------------------------------------------------
# escrow_reconcile
# --------------------------------------------------------------------------


def reconcile(
    *,
    dry_run: bool = False,
    payment_id: Any = None,
    older_than: timedelta = timedelta(minutes=DEFAULT_OLDER_THAN_MINUTES),
    now: datetime | None = None,
) -> list[Change]:
    """Finish or correct what a crash, a timeout or a lost webhook left behind."""
    now = now or timezone.now()
    cutoff = now - older_than
    changes: list[Change] = []
    unresolved = model("MoneyOperation").objects.filter(status__in=UNRESOLVED_OPERATION_STATES)
    if payment_id is not None:
        unresolved = unresolved.filter(payment_id=payment_id)
    else:
        unresolved = unresolved.filter(updated_at__lte=cutoff)
    for operation in unresolved.order_by("created_at"):
        changes.extend(_settle(operation, dry_run))
    payments = payment_model().objects.all()
    if payment_id is not None:
        payments = payments.filter(pk=payment_id)
    else:
        payments = payments.filter(updated_at__lte=cutoff)
    # Releases left "releasing" by version 0.1, before the journal existed.
    legacy = payments.filter(status=S.RELEASING).exclude(
        operations__status__in=UNRESOLVED_OPERATION_STATES
    )
    for payment in legacy.order_by("updated_at"):
        changes.extend(_retry_release(payment, dry_run))
    # Still waiting for the PaymentIntent's outcome: the states a payment can
    # still fail from (``mark_failed``'s sources).
    waiting = transitions.sources(payments.model, "mark_failed")
    stale = payments.filter(status__in=waiting).exclude(stripe_payment_intent_id="")
    if payment_id is None:
        stale = stale.filter(updated_at__gte=now - STALE_INTENT_MAX_AGE)
    for payment in stale.order_by("updated_at"):
        changes.extend(_sync_intent(payment, dry_run))
    changes.extend(_refunds(payment_id, dry_run, cutoff))
    return changes


def _settle(operation: Any, dry_run: bool) -> list[Change]:
    """Finish one unresolved money operation from Stripe's facts."""
    subject = str(operation.payment_id)
    what = f"{operation.kind} {operation.idempotency_key}"
    if dry_run:
        return [Change(subject, f"would settle {what}", operation.status)]
    before = _status(operation.payment_id)
    try:
        outcomes.drive(operation, wanted=True, look_first=True)
        # An operation may commit the next one (a reversal, its refund).
        for _ in range(3):
            following = model("MoneyOperation").objects.filter(
                payment_id=operation.payment_id, status__in=UNRESOLVED_OPERATION_STATES
            )
            following = following.exclude(pk=operation.pk).first()
            if following is None:
                break
            outcomes.drive(following, wanted=True)
    except errors.ServiceError as exc:
        operation.refresh_from_db()
        if operation.is_unresolved:
            return [_failed(subject, f"settle {what}", exc)]
        after = (
            payment_model().objects.values_list("status", flat=True).get(pk=operation.payment_id)
        )
        return [Change(subject, f"{what}: {operation.status}", f"{before} -> {after}", error=True)]
    after = _status(operation.payment_id)
    latest = (
        model("MoneyOperation")
        .objects.filter(payment_id=operation.payment_id, kind=operation.kind)
        .order_by("-created_at")
        .values_list("status", flat=True)
        .first()
    )
    action = f"{before} -> {after}" if before != after else f"{operation.kind} settled"
    return [Change(subject, action, f"{what}: {latest}")]


def _status(payment_id: Any) -> str:
    return str(payment_model().objects.values_list("status", flat=True).get(pk=payment_id))


def _retry_release(payment: Any, dry_run: bool) -> list[Change]:
    if dry_run:
        return [Change(str(payment.pk), "would retry the release", "same idempotency key")]
    before = payment.status
    try:
        payment = release_payment(payment.pk, system=True)
    except errors.ServiceError as exc:
        fresh = payment_model().objects.get(pk=payment.pk)
        if fresh.status != before:
            # A definite refusal: the money is held again and an incident exists.
            return [Change(str(fresh.pk), f"{before} -> {fresh.status}", exc.message, error=True)]
        return [_failed(payment.pk, "retry the release", exc)]
    return [Change(str(payment.pk), f"{before} -> {payment.status}", "release retried")]


_NOTHING_TO_APPLY = ("requires_payment_method", "requires_confirmation", "requires_action")


def _sync_intent(payment: Any, dry_run: bool) -> list[Change]:
    try:
        intent = gateway().retrieve_payment_intent(
            payment.stripe_payment_intent_id, expand_charge=payment.is_manual_capture
        )
    except GatewayError as exc:
        return [_failed(payment.pk, "look up the PaymentIntent", exc)]
    if dry_run:
        if intent.status in _NOTHING_TO_APPLY and not intent.last_payment_error:
            return []
        return [Change(str(payment.pk), "would apply PaymentIntent", intent.status)]
    return _apply_intent(payment, intent)


def _apply_intent(payment: Any, intent: Any) -> list[Change]:
    before = payment.status
    try:
        updated = apply_payment_intent(intent)
    except errors.UnknownObject as exc:  # pragma: no cover - the row exists
        return [_failed(payment.pk, "apply the PaymentIntent", exc)]
    change = _status_change(updated, before)
    return (
        [Change(change.subject, change.action, f"PaymentIntent {intent.status}")] if change else []
    )


def _refunds(payment_id: Any, dry_run: bool, cutoff: datetime) -> list[Change]:
    refunds = model("Refund").objects.filter(
        status__in=[RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION]
    )
    if payment_id is not None:
        refunds = refunds.filter(payment_id=payment_id)
    else:
        refunds = refunds.filter(updated_at__lte=cutoff)
    changes: list[Change] = []
    journaled = model("MoneyOperation").objects.values_list("idempotency_key", flat=True)
    for refund in refunds.order_by("created_at"):
        if not refund.stripe_refund_id:
            if journaled.filter(idempotency_key=refund.idempotency_key).exists():
                continue  # settled above, with its operation
            # A refund sent by version 0.1 whose answer was lost: the refund
            # service journals it and sends it again with its own key.
            if dry_run:
                changes.append(Change(str(refund.payment_id), "would retry refund", str(refund.pk)))
                continue
            try:
                refund_payment(refund.payment_id, system=True)
            except errors.ServiceError as exc:
                changes.append(_failed(refund.payment_id, f"retry refund {refund.pk}", exc))
                continue
            refund.refresh_from_db()
            changes.append(
                Change(str(refund.payment_id), "refund retried", f"{refund.pk}: {refund.status}")
            )
            continue
        try:
            snapshot = gateway().retrieve_refund(refund.stripe_refund_id)
        except GatewayError as exc:
            changes.append(_failed(refund.payment_id, f"look up refund {refund.pk}", exc))
            continue
        if snapshot.status == refund.status:
            continue
        if dry_run:
            changes.append(
                Change(str(refund.payment_id), "would apply refund status", str(snapshot.status))
            )
            continue
        with transaction.atomic():
            updated = apply_refund(snapshot)
        changes.append(
            Change(
                str(refund.payment_id),
                f"refund {refund.pk}: {refund.status} -> {getattr(updated, 'status', '?')}",
            )
        )
    return changes


# --------------------------------------------------------------------------
# escrow_capture_expiry
# --------------------------------------------------------------------------

CAPTURE_EXPIRY_ACTIONS = ("warn", "release", "cancel")


def capture_expiry(
    *, action: str | None = None, dry_run: bool = False, now: datetime | None = None
) -> list[Change]:
    """Warn about (and optionally release or void) holds close to ``capture_before``.

    ``action`` defaults to ``CAPTURE_EXPIRY_ACTION``: ``warn`` only reports,
    ``release`` captures the hold (the doer is paid), ``cancel`` voids it (the
    customer's card is released). A hold already past its deadline is synced
    from Stripe instead: Stripe has voided it.
    """
    action = action or escrow_settings.CAPTURE_EXPIRY_ACTION
    if action not in CAPTURE_EXPIRY_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(CAPTURE_EXPIRY_ACTIONS)}")
    now = now or timezone.now()
    horizon = now + timedelta(hours=escrow_settings.CAPTURE_EXPIRY_WARNING_HOURS)
    holds = payment_model().objects.filter(
        strategy="manual_capture", status=S.HELD, capture_before__lte=horizon
    )
    changes: list[Change] = []
    for payment in holds.order_by("capture_before"):
        deadline = payment.capture_before
        subject = str(payment.pk)
        if deadline <= now:
            if dry_run:
                changes.append(
                    Change(subject, "lapsed; would sync from Stripe", deadline.isoformat())
                )
                continue
            synced = _sync_intent(payment, dry_run=False)
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
            changes.append(_failed(subject, action, exc))
            continue
        changes.append(
            Change(
                subject, f"{S.HELD} -> {updated.status}", f"{action} before {deadline.isoformat()}"
            )
        )
    return changes


# --------------------------------------------------------------------------
# escrow_auto_release
# --------------------------------------------------------------------------


def auto_release(*, dry_run: bool = False, now: datetime | None = None) -> list[Change] | None:
    """Release payments held longer than ``AUTO_RELEASE_AFTER_DAYS``.

    Returns None when the setting is None (automatic release is off).
    Disputed payments are never released (their state is not ``held``).
    """
    days = escrow_settings.AUTO_RELEASE_AFTER_DAYS
    if days is None:
        return None
    now = now or timezone.now()
    due = payment_model().objects.filter(status=S.HELD, held_at__lte=now - timedelta(days=days))
    changes: list[Change] = []
    for payment in due.order_by("held_at"):
        subject = str(payment.pk)
        if dry_run:
            changes.append(
                Change(subject, "would release", f"held since {payment.held_at:%Y-%m-%d}")
            )
            continue
        try:
            updated = release_payment(payment.pk, system=True)
        except errors.ServiceError as exc:
            changes.append(_failed(subject, "release", exc))
            continue
        changes.append(Change(subject, f"{S.HELD} -> {updated.status}", f"held {days}+ days"))
    return changes
