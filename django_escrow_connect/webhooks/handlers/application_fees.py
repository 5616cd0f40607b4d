"""``application_fee.refunded``: logged only.

The platform's fee on a destination charge comes back (in part) when the
charge is refunded with ``refund_application_fee``. The payment's books are
kept by the refund itself; this handler only logs the fee refund against the
payment so that it can be traced. A fee on a charge that is not this app's is
ignored.
"""

from __future__ import annotations

import logging

from ...services.transfers import lock_payment_for
from ..pipeline import EventContext, log_extra
from . import ignore_unless, note_payment

logger = logging.getLogger("django_escrow_connect.webhooks")


def _id(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def refunded(context: EventContext) -> None:
    obj = context.object
    charge = _id(obj.get("charge"))
    payment = ignore_unless(
        lock_payment_for(charge=charge), f"application fee on charge {charge or '?'} is not ours"
    )
    note_payment(context, payment)
    logger.info(
        "application fee refunded: %s of %s %s",
        obj.get("amount_refunded"),
        obj.get("amount"),
        obj.get("currency"),
        extra=log_extra(context.event, object_id=_id(obj.get("id")), payment_id=str(payment.pk)),
    )
