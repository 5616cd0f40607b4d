"""``refund.*``: refunds made by the app or in the Stripe dashboard."""

from __future__ import annotations

from ...gateway.types import RefundSnapshot
from ...services import stripe_objects
from ..context import EventContext
from . import ignore_unless, note_payment, snapshot


def refund(context: EventContext) -> None:
    """refund.created, refund.updated, refund.failed."""
    result = stripe_objects.apply_refund(snapshot(context, RefundSnapshot), event_id=context.id)
    note_payment(context, ignore_unless(result, "Not an escrow payment's refund."))
