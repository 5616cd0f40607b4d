"""``charge.dispute.*``: chargebacks and inquiries freeze the payment."""

from __future__ import annotations

from ...gateway.types import DisputeSnapshot
from ...services import disputes
from ..context import EventContext
from . import note_payment, snapshot


def dispute(context: EventContext) -> None:
    """created, updated, closed, funds_withdrawn, funds_reinstated."""
    balance_transactions = context.object.get("balance_transactions")
    result = disputes.apply_dispute(
        snapshot(context, DisputeSnapshot),
        event_id=context.id,
        balance_transactions=balance_transactions
        if isinstance(balance_transactions, list)
        else None,
        as_of=context.created,
    )
    note_payment(context, result)
