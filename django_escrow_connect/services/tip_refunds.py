"""Refunds of a tip's charge, made in the Stripe Dashboard: recorded on the tip.

The package never refunds a tip itself; the platform may, in the Stripe
Dashboard (a tip its payment's lost dispute held, a customer's complaint).
Stripe's facts reach the tip three ways, and all three record the same
thing, the charge's running refund total (``charge.amount_refunded``), on
``tip.amount_refunded``:

- ``charge.refunded``: the total is in the event's charge;
- ``refund.created|updated|failed``: one refund, not the total; the charge is
  read from Stripe with no transaction open (:func:`~.common.read_first`);
- ``escrow_reconcile`` and a transfer that reads the charge first
  (:func:`catch_up`).

The recorded total only ever grows: setting it (never adding to it) makes a
repeated event change nothing, and taking the higher of the recorded and the
reported one makes an older event arriving late change nothing either. A
refund that fails after it was counted is not taken back (its money may
already be on the customer's way back): a ``refund_failed`` incident names
the tip, and staff decide.

What the refund means for the tip (docs/tips.md):

- nothing sent to a recipient yet (no transfer made or in flight): the tip
  becomes ``refunded`` and is never transferred. Refunded in full, that is
  all. Refunded in part, the rest stays on the platform: sending it would be
  a decision about who bears the refund (the doer's share, the platform's
  ``TIP_FEE``) that Stripe's facts do not make, and a partial refund may be
  the first of two; a ``tip_refunded`` incident tells staff.
- a transfer made (or in flight): the platform refunded money it had sent to
  the doer. The tip keeps its state; a ``tip_refunded`` incident says so,
  and reversing the tip's transfer is staff's decision (nothing is reversed
  by the package). Every other transfer of the tip is refused from then on.

``tip_refunded(payment, tip)`` is sent each time the recorded total grows.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from ..exceptions import GatewayError
from ..gateway.types import ChargeSnapshot, RefundSnapshot
from ..notifications import notify
from ..states import IncidentKind, TipTransferStatus
from . import errors
from .common import gateway, lock_payment, model, read_first, translate
from .tip_outcomes import lock_tip_for, log_tip, require_tip_paid, tip_model

__all__ = [
    "apply_tip_charge_refunded",
    "apply_tip_refund",
    "catch_up",
    "require_not_refunded",
]

#: The states of a refund that gave the customer nothing back.
_FAILED_REFUND_STATES = ("failed", "canceled")


def apply_tip_charge_refunded(snapshot: ChargeSnapshot, *, event_id: str = "") -> Any:
    """``charge.refunded`` of a tip's charge: record its total; the tip, or None (not a tip's)."""
    found = lock_tip_for(payment_intent=snapshot.payment_intent, charge=snapshot.id)
    if found is None:
        return None
    payment, tip = found
    require_tip_paid(tip, f"Refund of charge {snapshot.id}")
    return _record(payment, tip, snapshot.amount_refunded, event_id=event_id)


def apply_tip_refund(snapshot: RefundSnapshot, *, reads: dict[str, Any], event_id: str = "") -> Any:
    """``refund.*`` of a tip's charge: record the charge's total; the tip, or None.

    The refund carries its own amount, not the charge's total: the charge is
    read (with no transaction open: the first attempt raises
    :class:`~.errors.ReadFirst`) and its total recorded, so the same refund
    reported twice, or by ``charge.refunded`` too, is never counted twice.
    """
    found = lock_tip_for(payment_intent=snapshot.payment_intent, charge=snapshot.charge)
    if found is None:
        return None
    payment, tip = found
    require_tip_paid(tip, f"Refund {snapshot.id}")
    charge_id = tip.stripe_charge_id or snapshot.charge
    if not charge_id:
        raise errors.UnknownObject(f"Refund {snapshot.id}: the tip's charge is not known yet.")
    charge = read_first(
        reads, f"charge:{charge_id}", functools.partial(gateway().retrieve_charge, charge_id)
    )
    tip = _record(payment, tip, charge.amount_refunded, event_id=event_id)
    if snapshot.status in _FAILED_REFUND_STATES:
        _refund_failed(payment, tip, snapshot, event_id=event_id)
    return tip


def catch_up(tip_pk: Any) -> Any:
    """Read the tip's charge and record what Stripe says was refunded; return the tip.

    For ``escrow_reconcile`` and a transfer that checks the charge first: a
    refund whose events were lost is recorded the same way. Stripe is read
    with no transaction open; raises :class:`~.errors.ServiceError` when it
    cannot be.
    """
    tip = tip_model().objects.get(pk=tip_pk)
    if not tip.stripe_charge_id:
        return tip
    try:
        charge = gateway().retrieve_charge(tip.stripe_charge_id)
    except GatewayError as exc:
        raise translate(exc, _("transfer the tip")) from exc
    with transaction.atomic():
        payment = lock_payment(tip.payment_id)
        tip = tip_model().objects.select_for_update().get(pk=tip_pk)
        return _record(payment, tip, charge.amount_refunded, event_id="")


def require_not_refunded(tip: Any) -> None:
    """Refuse to send a tip whose charge is recorded refunded (in full or in part)."""
    if tip.amount_refunded:
        raise errors.TransitionNotAllowed(
            _("The tip's charge was refunded at Stripe; the tip is not transferred.")
        )


# --------------------------------------------------------------------------
# Recording (the payment and the tip locked)
# --------------------------------------------------------------------------


def _record(payment: Any, tip: Any, reported: int, *, event_id: str) -> Any:
    total = min(int(reported or 0), tip.amount)
    if total <= tip.amount_refunded:
        return tip  # a repeated or older fact: nothing new
    before = tip.status
    if not _sent(tip) and can_proceed(tip.mark_refunded):
        tip.mark_refunded(total)
    else:
        tip.note_refunded(total)
    tip.save()
    log_tip(
        tip,
        "tip refunded at Stripe: %s of %s %s (was %s)",
        total,
        tip.amount,
        tip.currency,
        before,
        level=logging.WARNING,
    )
    # Staff decide when money was sent, or some is left on the platform; an
    # incident already open is brought up to date either way.
    _open_incident(payment, tip, event_id=event_id, new=_sent(tip) or total < tip.amount)
    notify("tip_refunded", payment=payment, tip=tip)
    return tip


def _sent(tip: Any) -> bool:
    """Whether a transfer of the tip was made, or is in flight (its outcome unknown)."""
    live = (TipTransferStatus.PENDING, TipTransferStatus.CREATED)
    return bool(tip.transfers.filter(status__in=live).exists())


def _open_incident(payment: Any, tip: Any, *, event_id: str, new: bool) -> None:
    """One open ``tip_refunded`` incident per tip, its message brought up to date.

    ``new``: open one when none is open (otherwise only an open one is updated).
    """
    sent = _sent(tip)
    if sent:
        message = (
            f"Tip {tip.pk}: {tip.amount_refunded} of {tip.amount} {tip.currency} refunded "
            "at Stripe after its transfer to the doer was made (or sent); the platform "
            "refunded money it had sent. Reversing the tip's transfer is staff's decision."
        )
    else:
        rest = tip.amount - tip.amount_refunded
        message = (
            f"Tip {tip.pk}: {tip.amount_refunded} of {tip.amount} {tip.currency} refunded "
            f"at Stripe before its transfer; the rest ({rest}) stays on the platform and "
            "is not transferred by the package. Staff decide: refund the rest, or pay "
            "the doer outside the package."
        )
    Incident = model("PaymentIncident")
    incident = Incident.objects.filter(
        payment=payment,
        kind=IncidentKind.TIP_REFUNDED,
        stripe_payment_intent_id=tip.stripe_payment_intent_id,
        resolved_at__isnull=True,
    ).first()
    if incident is None:
        if not new:
            return
        Incident.objects.create(
            payment=payment,
            kind=IncidentKind.TIP_REFUNDED,
            message=message,
            stripe_event_id=event_id,
            stripe_payment_intent_id=tip.stripe_payment_intent_id,
        )
    else:
        incident.message = message
        incident.save(update_fields=["message"])


def _refund_failed(payment: Any, tip: Any, snapshot: RefundSnapshot, *, event_id: str) -> None:
    """A tip's refund failed: its amount stays recorded; staff are told, once per refund."""
    Incident = model("PaymentIncident")
    message = (
        f"Tip {tip.pk}: refund {snapshot.id} of {snapshot.amount} {snapshot.currency} "
        f"ended {snapshot.status}; the tip's recorded refunds ({tip.amount_refunded}) are "
        "not taken back. Staff decide."
    )
    failed = Incident.objects.filter(kind=IncidentKind.REFUND_FAILED, stripe_object_id=snapshot.id)
    if failed.exists():
        return
    Incident.objects.create(
        payment=payment,
        kind=IncidentKind.REFUND_FAILED,
        code=(snapshot.failure_reason or "")[:255],
        message=message,
        stripe_event_id=event_id,
        stripe_payment_intent_id=tip.stripe_payment_intent_id,
        stripe_object_id=snapshot.id,
    )
    log_tip(tip, "tip refund failed: %s", snapshot.id, level=logging.WARNING)
