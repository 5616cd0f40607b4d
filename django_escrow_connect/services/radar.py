"""Apply what Stripe Radar reports: reviews and early fraud warnings.

Both arrive before a chargeback could, and an escrow platform must not pay
the doer while either is open: release answers 409 (``radar_review_open`` or
``early_fraud_warning_open``) until it closes. Each is kept as a
:class:`PaymentIncident` (kind ``radar_review`` / ``early_fraud_warning``,
``stripe_object_id`` the review or warning id) that is open while
``resolved_at`` is null.

- ``review.opened`` / ``review.closed``: open while the review's ``open`` is
  true. Closing (approved, refunded, disputed...) unfreezes; a refund or a
  dispute then freezes or ends the payment on its own.
- ``radar.early_fraud_warning.created`` / ``.updated``: open while the
  warning is ``actionable`` (Stripe: not yet disputed nor fully refunded).

A review or warning only ever closes, so events in any order and repeated
converge: once resolved, an incident is never reopened. Opening sends
``radar_hold_opened``; closing an open one sends ``radar_hold_closed``.

A review or warning of a tip's charge (docs/tips.md) is the same incident
on the tip's payment (its ``stripe_payment_intent_id`` the tip's, its
message naming the tip), freezing that payment's release while open; the
signals carry ``tip`` as well.

While a hold is open the payment's tips are not transferred either (the
same card, the same work): a tip paid meanwhile waits ``paid``
(:func:`.tips.transfer_tip` answers 409 with the release's code), and goes
to the doer once the payment's last hold closes, unless a dispute holds it
then. Its charge is read from Stripe first: Stripe often closes a hold
because of a refund (a warning of a fully refunded charge is no longer
actionable, a review closes ``refunded``), whose own events may come later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from ..notifications import notify
from ..states import IncidentKind
from . import errors, tip_outcomes, tips
from .common import lock_payment_for, model
from .radar_holds import FREEZE_CODES, check_not_held, open_holds

__all__ = [
    "FREEZE_CODES",
    "apply_early_fraud_warning",
    "apply_review",
    "check_not_held",
    "open_holds",
]

logger = logging.getLogger("django_escrow_connect.services")


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, Mapping):  # expanded
        value = value.get("id")
    return value if isinstance(value, str) else ""


def apply_review(obj: Mapping[str, Any], *, event_id: str = "") -> Any:
    """``review.opened`` / ``review.closed``. Returns the incident."""
    is_open = obj.get("open") is True
    reason = _str(obj, "reason") if is_open else _str(obj, "closed_reason") or _str(obj, "reason")
    return _apply(
        obj,
        kind=IncidentKind.RADAR_REVIEW,
        is_open=is_open,
        code=reason,
        message=f"Radar review {'opened' if is_open else 'closed'}: {reason or 'unknown'}",
        event_id=event_id,
    )


def apply_early_fraud_warning(obj: Mapping[str, Any], *, event_id: str = "") -> Any:
    """``radar.early_fraud_warning.created`` / ``.updated``. Returns the incident."""
    is_open = obj.get("actionable") is True
    fraud_type = _str(obj, "fraud_type")
    return _apply(
        obj,
        kind=IncidentKind.EARLY_FRAUD_WARNING,
        is_open=is_open,
        code=fraud_type,
        message=f"Early fraud warning ({fraud_type or 'unknown type'})"
        + ("" if is_open else ": no longer actionable"),
        event_id=event_id,
    )


def _apply(
    obj: Mapping[str, Any],
    *,
    kind: str,
    is_open: bool,
    code: str,
    message: str,
    event_id: str,
) -> Any:
    object_id = _str(obj, "id")
    if not object_id:
        raise ValueError(f"{kind}: the object has no id")
    payment_intent, charge = _str(obj, "payment_intent"), _str(obj, "charge")
    payment = lock_payment_for(payment_intent=payment_intent, charge=charge)
    signal_extra: dict[str, Any] = {}
    if payment is None:
        found = tip_outcomes.lock_tip_for(payment_intent=payment_intent, charge=charge)
        if found is None:
            raise errors.UnknownObject(f"No payment for {kind} {object_id} (yet).")
        payment, tip = found
        # The same customer, and off-session the same card, as the payment.
        message = f"Tip {tip.pk}: {message}"
        payment_intent = payment_intent or tip.stripe_payment_intent_id
        signal_extra["tip"] = tip
    Incident = model("PaymentIncident")
    incident = Incident.objects.filter(kind=kind, stripe_object_id=object_id).first()
    extra = {
        "stripe_event_id": event_id,
        "payment_id": str(payment.pk),
        "connected_account": payment.destination_account_id,
    }
    if incident is None:
        incident = Incident.objects.create(
            payment=payment,
            kind=kind,
            code=code[:255],
            message=message,
            stripe_event_id=event_id,
            stripe_payment_intent_id=payment_intent or payment.stripe_payment_intent_id,
            stripe_object_id=object_id,
            resolved_at=None if is_open else timezone.now(),
        )
        if is_open:
            logger.warning("%s opened: %s", kind, object_id, extra=extra)
            notify("radar_hold_opened", payment=payment, incident=incident, **signal_extra)
        else:
            logger.info("%s recorded closed: %s", kind, object_id, extra=extra)
        return incident
    if incident.resolved_at is None and not is_open:
        # Closes once; a resolved hold is never reopened (Stripe only closes).
        incident.resolved_at = timezone.now()
        incident.message = message
        if code:
            incident.code = code[:255]
        incident.save(update_fields=["resolved_at", "message", "code", "updated_at"])
        logger.info("%s closed: %s", kind, object_id, extra=extra)
        notify("radar_hold_closed", payment=payment, incident=incident, **signal_extra)
        # The last hold closed: the tips it held go to the doer once this
        # event commits, as the payment's release may now go, each tip's
        # charge read first (a refund may be why it closed). A hold closed
        # by a dispute leaves them to that dispute.
        tips.transfer_held_tips_once_unheld(payment)
    return incident
