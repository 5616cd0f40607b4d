"""``refund.*``: refunds made by the app or in the Stripe dashboard."""

from __future__ import annotations

from ...gateway.types import RefundSnapshot
from ...services import stripe_objects, tip_refunds
from ..context import EventContext
from . import ignore_unless, note_payment, snapshot


def refund(context: EventContext) -> None:
    """refund.created, refund.updated, refund.failed."""
    parsed = snapshot(context, RefundSnapshot)
    result = stripe_objects.apply_refund(parsed, event_id=context.id)
    if result is None:
        # A refund of a tip's charge (made in the Stripe dashboard): the tip's.
        result = tip_refunds.apply_tip_refund(parsed, reads=context.fetched, event_id=context.id)
    note_payment(context, ignore_unless(result, "Not an escrow payment's refund."))
