"""The holds of a payment, as the services that wait for them read them.

A hold is a :class:`PaymentIncident` of a kind in
:data:`~django_escrow_connect.states.PAYMENT_HOLD_KINDS`, open while
``resolved_at`` is null. While one is open nothing is paid out of the
payment: its release (:func:`check_not_held`) and its tips' transfers
(:mod:`.tips`) answer 409 with the hold's code (:data:`FREEZE_CODES`).

- Radar's (``radar_review``, ``early_fraud_warning``): :mod:`.radar` records
  them from ``review.*`` and ``radar.early_fraud_warning.*``; only Stripe
  closes them.
- ``charge_disputed``: Stripe refused an operation of the payment (a refund,
  a transfer, a reversal, a tip's transfer...) saying its charge is disputed
  (:data:`DISPUTED_CHARGE_CODES`) before the dispute's webhook was recorded.
  :func:`hold_for_refusal` opens it in the transaction that commits the
  refusal; it is lifted when the dispute is recorded (:mod:`.disputes`: the
  dispute then governs), by ``escrow_reconcile`` once Stripe's charge says it
  is not disputed (or its dispute is found recorded), or by staff (the
  admin's "Resolve"). Each lift of the payment's last hold sends the tips
  it held (:func:`.tips.transfer_held_tips_once_unheld`).

Kept apart from :mod:`.radar` because closing a hold sends the tips it held
(:mod:`.tips`), which must not import the module that calls it back.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext_lazy

from ..states import DISPUTE_KEPT_STATES, PAYMENT_HOLD_KINDS, IncidentKind, MoneyOperationKind
from . import errors
from .common import model

logger = logging.getLogger("django_escrow_connect.services")

#: Stripe's refusal codes saying the charge is disputed (charged back):
#: Stripe freezes the disputed funds. Such a refusal stops the request that
#: meets it and opens a ``charge_disputed`` hold on the payment
#: (:func:`hold_for_refusal`), so nothing else pays out until the dispute is
#: recorded or Stripe says the charge is not disputed (docs/recovery.md).
DISPUTED_CHARGE_CODES = frozenset({"charge_disputed"})

#: The 409 code release (and a tip's transfer) answers with while a hold of
#: this kind is open.
FREEZE_CODES = {
    IncidentKind.RADAR_REVIEW: "radar_review_open",
    IncidentKind.EARLY_FRAUD_WARNING: "early_fraud_warning_open",
    # The code the refused request got: the same reason, the same answer.
    IncidentKind.CHARGE_DISPUTED: "charge_disputed",
}
_FREEZE_MESSAGES = {
    IncidentKind.RADAR_REVIEW: gettext_lazy(
        "Stripe Radar is reviewing this payment; release is frozen."
    ),
    IncidentKind.EARLY_FRAUD_WARNING: gettext_lazy(
        "The card issuer reported this payment as possibly fraudulent; release is frozen."
    ),
    IncidentKind.CHARGE_DISPUTED: gettext_lazy(
        "Stripe refused an operation of this payment because its charge is disputed; "
        "release is frozen until the dispute is recorded."
    ),
}


def open_holds(payment: Any) -> Any:
    """The payment's unresolved holds (Radar's, and Stripe's ``charge_disputed``)."""
    return model("PaymentIncident").objects.filter(
        payment=payment, kind__in=list(PAYMENT_HOLD_KINDS), resolved_at__isnull=True
    )


def check_not_held(payment: Any) -> None:
    """Raise a 409 :class:`~.errors.Conflict` while a hold freezes ``payment``."""
    hold = open_holds(payment).order_by("created_at").first()
    if hold is not None:
        raise errors.Conflict(freeze_message(hold), code=FREEZE_CODES[hold.kind])


def freeze_message(hold: Any) -> str:
    """Why release is frozen by ``hold`` (the 409's message)."""
    return str(_FREEZE_MESSAGES[hold.kind])


def refusal_holds(payment: Any) -> Any:
    """The payment's open ``charge_disputed`` holds."""
    return open_holds(payment).filter(kind=IncidentKind.CHARGE_DISPUTED)


def _refused_charge(payment: Any, operation: Any) -> str:
    """The charge Stripe says is disputed: a tip's transfer is sent from the
    tip's own charge; every other operation moves the payment's."""
    if operation.kind == MoneyOperationKind.TIP_TRANSFER:
        return str(operation.request.get("source_transaction") or "")
    return str(payment.stripe_charge_id or "")


def governing_disputes(payment: Any, charge_id: str) -> Any:
    """The recorded disputes of ``charge_id`` (the payment's own charge when
    blank) whose rules hold its money: open, or lost.

    A dispute closed otherwise (won, an inquiry closed, prevented) holds
    nothing: a chargeback after it may be a new dispute whose events have
    not arrived, and a refusal saying the charge is disputed then holds the
    payment as if no dispute were recorded.
    """
    disputes = model("Dispute").objects.filter(payment=payment)
    if charge_id:
        disputes = disputes.filter(stripe_charge_id=charge_id)
    else:
        disputes = disputes.filter(tip__isnull=True)
    return disputes.exclude(status__in=list(DISPUTE_KEPT_STATES))


def _dispute_recorded(payment: Any, charge_id: str) -> bool:
    return bool(governing_disputes(payment, charge_id).exists())


def hold_for_refusal(payment: Any, operation: Any, exc: Any) -> Any:
    """Open a ``charge_disputed`` hold when Stripe's refusal says the charge is disputed.

    Called with the payment locked, in the transaction that commits the
    refusal (so a crash never leaves the refusal committed without its
    hold, and the dispute's webhook, which locks the payment too, is
    ordered before or after it, never between). Nothing when the code says
    something else, or when the payment already records a dispute of that
    charge that is open or lost (:func:`governing_disputes`): that
    dispute's own rules govern release. One open hold per charge.
    Returns the hold, or None.
    """
    if (exc.code or "") not in DISPUTED_CHARGE_CODES:
        return None
    charge_id = _refused_charge(payment, operation)
    if _dispute_recorded(payment, charge_id):
        return None
    held = refusal_holds(payment).filter(stripe_object_id=charge_id).select_for_update().first()
    if held is not None:
        # Stripe said it again: the hold's ``updated_at`` is its latest
        # refusal (nothing else writes an open hold), so a read of the
        # charge, or a dispute recorded, from before it cannot lift it
        # (:func:`lift_refusal_holds`' ``refused_before``). The line keeps
        # the refusal in the hold's audit trail.
        held.message = (
            f"{held.message}\nRefused again: the {operation.kind} "
            f"{operation.idempotency_key} ({exc.code})"
        )
        held.save(update_fields=["message", "updated_at"])
        return held
    hold = model("PaymentIncident").objects.create(
        payment=payment,
        kind=IncidentKind.CHARGE_DISPUTED,
        code=(exc.code or "")[:255],
        message=(
            f"Stripe refused the {operation.kind} {operation.idempotency_key} "
            f"({exc.code}): {exc.message} (nothing is paid out until the dispute is recorded)"
        ),
        stripe_request_id=getattr(exc, "request_id", None) or "",
        stripe_payment_intent_id=payment.stripe_payment_intent_id,
        stripe_object_id=charge_id,
    )
    logger.warning(
        "charge_disputed hold opened on charge %s (%s refused)",
        charge_id or "?",
        operation.kind,
        extra={"payment_id": str(payment.pk), "connected_account": payment.destination_account_id},
    )
    return hold


def lift_refusal_holds(
    payment: Any, why: str, *, charge_id: str | None = None, refused_before: Any = None
) -> list[Any]:
    """Resolve the payment's open ``charge_disputed`` holds (of ``charge_id`` only,
    and whose latest refusal is before ``refused_before`` only, if given).

    Run with the payment locked. ``refused_before``: when the fact that lifts
    them was learnt (a read of the charge began, a dispute was first
    recorded); a hold Stripe's refusal opened, or said again
    (:func:`hold_for_refusal`), since then is newer than that fact and
    stays. ``why`` (who lifted it and on what fact) is added to each hold's
    message: the incident is the audit trail. Returns the holds resolved.
    """
    holds = refusal_holds(payment)
    if charge_id is not None:
        holds = holds.filter(stripe_object_id=charge_id)
    if refused_before is not None:
        holds = holds.filter(updated_at__lt=refused_before)
    lifted = list(holds.select_for_update())
    now = timezone.now()
    for hold in lifted:
        hold.resolved_at = now
        hold.message = f"{hold.message}\nLifted: {why}"
        hold.save(update_fields=["resolved_at", "message", "updated_at"])
        logger.info(
            "charge_disputed hold lifted on charge %s: %s",
            hold.stripe_object_id or "?",
            why,
            extra={
                "payment_id": str(payment.pk),
                "connected_account": payment.destination_account_id,
            },
        )
    return lifted
