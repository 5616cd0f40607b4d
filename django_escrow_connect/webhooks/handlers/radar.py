"""``review.*`` and ``radar.early_fraud_warning.*``: Radar freezes release."""

from __future__ import annotations

from ...services import radar
from ..context import EventContext
from . import note_payment


def review(context: EventContext) -> None:
    """review.opened, review.closed."""
    note_payment(context, radar.apply_review(context.object, event_id=context.id))


def early_fraud_warning(context: EventContext) -> None:
    """radar.early_fraud_warning.created, .updated."""
    note_payment(context, radar.apply_early_fraud_warning(context.object, event_id=context.id))
