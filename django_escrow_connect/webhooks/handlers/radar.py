"""``review.*`` and ``radar.early_fraud_warning.*``: Radar freezes release."""

from __future__ import annotations

from typing import Any

from ...gateway.types import MAX_ID_LENGTH
from ...services import radar
from ..context import EventContext, UnparseableEvent
from . import note_payment


def review(context: EventContext) -> None:
    """review.opened, review.closed."""
    note_payment(context, radar.apply_review(_radar_object(context), event_id=context.id))


def early_fraud_warning(context: EventContext) -> None:
    """radar.early_fraud_warning.created, .updated."""
    note_payment(
        context, radar.apply_early_fraud_warning(_radar_object(context), event_id=context.id)
    )


def _radar_object(context: EventContext) -> Any:
    """The review or warning, if it has a Stripe id; else :class:`UnparseableEvent`.

    These objects are read as they come (no snapshot parser): without this
    check an object with no id, or one longer than a Stripe id (no column
    holds it), failed the event with a 500 on every delivery.
    """
    obj = context.object
    object_id = obj.get("id")
    if not isinstance(object_id, str) or not 0 < len(object_id) <= MAX_ID_LENGTH:
        raise UnparseableEvent(
            f"{context.type}: data.object has no Stripe id (a string of 1-{MAX_ID_LENGTH} "
            "characters)"
        )
    return obj
