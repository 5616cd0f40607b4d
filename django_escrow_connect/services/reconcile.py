"""Operations that put local state back in line with Stripe, run on a schedule.

* :func:`reconcile` (``manage.py escrow_reconcile``): open ``charge_disputed``
  holds checked against their charge, payments whose last
  money-moving call has an unknown outcome (``releasing``), payments still
  waiting for a PaymentIntent outcome after a while, and refunds whose answer
  was lost. The command then retries webhook events deferred because they
  arrived before their row
  (:func:`django_escrow_connect.webhooks.operations.retry_deferred_events`):
  webhooks sit above the services, so the command composes the two.
* :func:`capture_expiry` and :func:`auto_release` live in
  :mod:`~django_escrow_connect.services.schedules` (importable from here too).

Each returns a list of :class:`Change` (one per payment touched, or that would
be touched with ``dry_run=True``). Nothing here moves money except through the
services, which reuse the idempotency key of the operation they finish.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import transitions
from ..exceptions import GatewayError
from ..states import UNRESOLVED_OPERATION_STATES, IncidentKind, RefundStatus
from ..states import PaymentStatus as S
from . import errors, outcomes, radar_holds, tips
from .changes import Change, ChangeLog, Report, failed_change, sync_intent
from .common import gateway, lock_payment, model, payment_model
from .operations import last_attempt
from .payments import release_payment, retry_legacy_refund
from .schedules import auto_release, capture_expiry
from .stripe_objects import apply_refund

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


# --------------------------------------------------------------------------
# escrow_reconcile
# --------------------------------------------------------------------------


def reconcile(
    *,
    dry_run: bool = False,
    payment_id: Any = None,
    older_than: timedelta = timedelta(minutes=DEFAULT_OLDER_THAN_MINUTES),
    now: datetime | None = None,
    report: Report | None = None,
) -> list[Change]:
    """Finish or correct what a crash, a timeout or a lost webhook left behind.

    ``report`` is called with each change as soon as it is made, the tips'
    too. Each is committed on its own, so an
    unexpected error (a bug, the database gone) that ends the run with its
    exception leaves the earlier ones done: only ``report`` has heard of them.
    """
    now = now or timezone.now()
    cutoff = now - older_than
    changes = ChangeLog(report)
    # First: a hold Stripe's charge_disputed refusal left is lifted when the
    # charge says otherwise, so the rest of the run treats the payment as
    # it now stands (or keeps holding it).
    _refusal_holds(changes, payment_id, dry_run, cutoff)
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
        changes.extend(sync_intent(payment, dry_run))
    _refunds(changes, payment_id, dry_run, cutoff)
    # Into the ChangeLog: each tip's change is reported as it is made.
    tips.reconcile_tips(dry_run=dry_run, payment_id=payment_id, cutoff=cutoff, changes=changes)
    return changes


def _refusal_holds(changes: list[Change], payment_id: Any, dry_run: bool, cutoff: datetime) -> None:
    """Check each open ``charge_disputed`` hold against its charge at Stripe.

    Stripe refused an operation saying the charge is disputed, and no
    dispute was recorded since (its webhook lifts the hold). The charge is
    read (no transaction open): not ``disputed``, Stripe's refusal no longer
    applies and the hold is lifted; disputed with the dispute now recorded,
    the dispute governs and it is lifted too; disputed with no dispute
    recorded, the dispute's events were missed: kept, and listed as an
    error telling staff to run ``escrow_fetch_missed_events``. A hold newer
    than ``--older-than`` is left to the webhook, unless the payment is named.
    """
    holds = model("PaymentIncident").objects.filter(
        kind=IncidentKind.CHARGE_DISPUTED, resolved_at__isnull=True
    )
    if payment_id is not None:
        holds = holds.filter(payment_id=payment_id)
    else:
        holds = holds.filter(created_at__lte=cutoff)
    for hold in holds.order_by("created_at"):
        subject = str(hold.payment_id)
        charge_id = hold.stripe_object_id or _payment_charge(hold.payment_id)
        if dry_run:
            changes.append(Change(subject, "would check the disputed charge", charge_id or "?"))
            continue
        if not charge_id:
            changes.append(
                Change(
                    subject,
                    f"charge_disputed hold {hold.pk} kept: its charge is not known",
                    "check the payment in the Stripe Dashboard, then resolve the incident",
                    error=True,
                )
            )
            continue
        # Before the read: a refusal committed after this moment (a new
        # hold, or this one refused again) is newer than what Stripe answers.
        read_at = timezone.now()
        try:
            charge = gateway().retrieve_charge(charge_id)
        except GatewayError as exc:
            changes.append(failed_change(hold.payment_id, f"read charge {charge_id}", exc))
            continue
        changes.extend(_apply_charge(hold, charge, read_at))


def _payment_charge(payment_id: Any) -> str:
    return str(
        payment_model().objects.values_list("stripe_charge_id", flat=True).get(pk=payment_id) or ""
    )


def _apply_charge(hold: Any, charge: Any, read_at: datetime) -> list[Change]:
    """Lift or keep one hold from what Stripe says of its charge (payment locked).

    ``charge`` was read from ``read_at`` on, with no lock held: a refusal
    that committed since (Stripe saying the charge is disputed again, or a
    new hold after this one was lifted) is newer than that read, and its
    hold is kept for the next run to read again.

    A lift, whatever its reason, that leaves the payment with no hold open
    and no dispute of its own standing open or lost sends the ``paid`` tips
    it held once it commits (:func:`.tips.tips_unheld`, each sent and
    reported by :func:`.tips.send_paid_tip`; Stripe closing a last Radar hold
    and staff's *Resolve* send them too): the run's
    tips step only looks at tips untouched for ``--older-than``, so a tip
    paid while the hold was open would wait for a later run. Each tip's
    charge is read first, after the commit; a tip whose own charge is
    disputed (or found refunded) is not sent.
    """
    subject = str(hold.payment_id)
    with transaction.atomic():
        payment = lock_payment(hold.payment_id)
        current = type(hold).objects.get(pk=hold.pk)
        if current.resolved_at is not None:
            return [Change(subject, f"charge_disputed hold {hold.pk} lifted meanwhile")]
        if not charge.disputed:
            why = f"escrow_reconcile: Stripe says charge {charge.id} is not disputed"
        elif radar_holds.governing_disputes(payment, charge.id).exists():
            why = f"escrow_reconcile: the dispute of charge {charge.id} is recorded"
        elif model("Dispute").objects.filter(payment=payment, stripe_charge_id=charge.id).exists():
            # Stripe's charge stays disputed after any dispute: one decided
            # for the platform before the refusal says nothing of a new one.
            return [
                Change(
                    subject,
                    f"charge_disputed hold {hold.pk} kept: Stripe says charge {charge.id} is "
                    "disputed and only a dispute decided for the platform is recorded",
                    "check the Stripe Dashboard for another dispute of the charge; if there is "
                    "none, resolve the hold in the admin",
                    error=True,
                )
            ]
        else:
            return [
                Change(
                    subject,
                    f"charge_disputed hold {hold.pk} kept: Stripe says charge {charge.id} is "
                    "disputed and no open or lost dispute of it is recorded",
                    "the dispute's events were missed: run escrow_fetch_missed_events",
                    error=True,
                )
            ]
        lifted = radar_holds.lift_refusal_holds(
            payment, why, charge_id=current.stripe_object_id, refused_before=read_at
        )
        if not lifted:
            return [
                Change(
                    subject,
                    f"charge_disputed hold {hold.pk} kept: Stripe refused an operation of "
                    f"charge {charge.id} again while it was read",
                    "the next escrow_reconcile reads it again",
                )
            ]
        unheld = tips.tips_unheld(payment)
    changes = [Change(subject, f"charge_disputed hold {hold.pk} lifted", why)]
    # Sent here, the lift committed and no lock held, rather than on commit
    # as staff's Resolve does: each tip's outcome is a line of this run, and
    # a transfer refused or left unanswered fails it (exit 1).
    for tip_pk in unheld:
        tips.send_paid_tip(tip_pk, hold.payment_id, changes)
    return changes


def _settle(operation: Any, dry_run: bool) -> list[Change]:
    """Finish one unresolved money operation from Stripe's facts."""
    subject = str(operation.payment_id)
    what = f"{operation.kind} {operation.idempotency_key}"
    if dry_run:
        return [Change(subject, f"would settle {what}", operation.status)]
    before = _status(operation.payment_id)
    # The operation being driven: the one visited, then what it committed.
    current = operation
    try:
        outcomes.drive(operation, wanted=True, look_first=True)
        # An operation may commit the next one (a reversal, its refund).
        for _ in range(3):
            following = model("MoneyOperation").objects.filter(
                payment_id=operation.payment_id, status__in=UNRESOLVED_OPERATION_STATES
            )
            current = following.exclude(pk=operation.pk).first()
            if current is None:
                break
            outcomes.drive(current, wanted=True)
    except errors.ServiceError as exc:
        # Reported as the operation that failed: the refund a reversal made
        # room for, refused, is not the reversal's (which succeeded); and an
        # operation drive replaced under a new key (Stripe had nothing under
        # a key it may have forgotten) by that new attempt, whose key is the
        # one to look for at Stripe and in the journal (the old one is
        # ``failed``, ``not_made``: naming it said a pending release failed).
        current = last_attempt(current)
        what = f"{current.kind} {current.idempotency_key}"
        if current.is_unresolved:
            return [failed_change(subject, f"settle {what}", exc)]
        after = _status(operation.payment_id)
        return [
            Change(
                subject,
                f"{what}: {current.status}",
                f"{before} -> {after}: {exc.message}",
                error=True,
            )
        ]
    after = _status(operation.payment_id)
    # Named by the attempt that settled it: under a new key when drive
    # replaced the one visited.
    latest = last_attempt(operation)
    action = f"{before} -> {after}" if before != after else f"{operation.kind} settled"
    return [Change(subject, action, f"{latest.kind} {latest.idempotency_key}: {latest.status}")]


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
        return [failed_change(payment.pk, "retry the release", exc)]
    return [Change(str(payment.pk), f"{before} -> {payment.status}", "release retried")]


def _refunds(changes: list[Change], payment_id: Any, dry_run: bool, cutoff: datetime) -> None:
    """Settle the refunds still pending; each one's change is added to ``changes`` as made."""
    refunds = model("Refund").objects.filter(
        status__in=[RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION]
    )
    if payment_id is not None:
        refunds = refunds.filter(payment_id=payment_id)
    else:
        refunds = refunds.filter(updated_at__lte=cutoff)
    journaled = model("MoneyOperation").objects.values_list("idempotency_key", flat=True)
    for refund in refunds.order_by("created_at"):
        if not refund.stripe_refund_id:
            if journaled.filter(idempotency_key=refund.idempotency_key).exists():
                continue  # settled above, with its operation
            # A refund sent by version 0.1 whose answer was lost: journaled
            # (after a release, the doer's reversal first), looked up at
            # Stripe and sent again with its own key, for its own amount
            # (not the rest: a partial one was 409 refund_pending each run).
            if dry_run:
                changes.append(Change(str(refund.payment_id), "would retry refund", str(refund.pk)))
                continue
            try:
                retry_legacy_refund(refund.payment_id)
            except errors.ServiceError as exc:
                changes.append(failed_change(refund.payment_id, f"retry refund {refund.pk}", exc))
                continue
            refund.refresh_from_db()
            changes.append(
                Change(str(refund.payment_id), "refund retried", f"{refund.pk}: {refund.status}")
            )
            continue
        try:
            snapshot = gateway().retrieve_refund(refund.stripe_refund_id)
        except GatewayError as exc:
            changes.append(failed_change(refund.payment_id, f"look up refund {refund.pk}", exc))
            continue
        if snapshot.status == refund.status:
            continue
        if dry_run:
            changes.append(
                Change(str(refund.payment_id), "would apply refund status", str(snapshot.status))
            )
            continue
        try:
            with transaction.atomic():
                updated = apply_refund(snapshot)
        except errors.UnknownObject as exc:
            # The payment's release is still unconfirmed (it could not be
            # settled above): the refund waits for it, until the next run.
            changes.append(failed_change(refund.payment_id, f"apply refund {refund.pk}", exc))
            continue
        changes.append(
            Change(
                str(refund.payment_id),
                f"refund {refund.pk}: {refund.status} -> {getattr(updated, 'status', '?')}",
            )
        )
