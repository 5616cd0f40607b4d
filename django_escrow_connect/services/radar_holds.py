"""The Radar holds of a payment, as the services that wait for them read them.

:mod:`.radar` records the holds (``review.*``, ``radar.early_fraud_warning.*``
as :class:`PaymentIncident` rows); what an open hold freezes reads them here:
a payment's release (:func:`check_not_held`) and its tips' transfers
(:mod:`.tips`). Kept apart from :mod:`.radar` because closing a hold sends
the tips it held (:mod:`.tips`), which must not import the module that calls
it back.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy

from ..states import RADAR_HOLD_KINDS, IncidentKind
from . import errors
from .common import model

#: The 409 code release answers with while a hold of this kind is open.
FREEZE_CODES = {
    IncidentKind.RADAR_REVIEW: "radar_review_open",
    IncidentKind.EARLY_FRAUD_WARNING: "early_fraud_warning_open",
}
_FREEZE_MESSAGES = {
    IncidentKind.RADAR_REVIEW: gettext_lazy(
        "Stripe Radar is reviewing this payment; release is frozen."
    ),
    IncidentKind.EARLY_FRAUD_WARNING: gettext_lazy(
        "The card issuer reported this payment as possibly fraudulent; release is frozen."
    ),
}


def open_holds(payment: Any) -> Any:
    """The payment's unresolved Radar incidents."""
    return model("PaymentIncident").objects.filter(
        payment=payment, kind__in=list(RADAR_HOLD_KINDS), resolved_at__isnull=True
    )


def check_not_held(payment: Any) -> None:
    """Raise a 409 :class:`~.errors.Conflict` while Radar holds ``payment``."""
    hold = open_holds(payment).order_by("created_at").first()
    if hold is not None:
        raise errors.Conflict(str(_FREEZE_MESSAGES[hold.kind]), code=FREEZE_CODES[hold.kind])
