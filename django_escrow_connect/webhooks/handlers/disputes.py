"""``charge.dispute.*``: chargebacks and inquiries freeze the payment."""

from __future__ import annotations

from ...gateway.types import DisputeSnapshot
from ...services import disputes
from ..context import EventContext
from . import check_amounts, note_payment, snapshot


def dispute(context: EventContext) -> None:
    """created, updated, closed, funds_withdrawn, funds_reinstated."""
    parsed = snapshot(context, DisputeSnapshot)
    balance_transactions = context.object.get("balance_transactions")
    if not isinstance(balance_transactions, list):
        balance_transactions = None
    # Their totals are stored on the dispute: refused here if no column holds them.
    withdrawn, reinstated = disputes.funds_totals(balance_transactions)
    check_amounts(context, {"funds withdrawn": withdrawn, "funds reinstated": reinstated})
    result = disputes.apply_dispute(
        parsed,
        event_id=context.id,
        balance_transactions=balance_transactions,
        as_of=context.created,
    )
    note_payment(context, result)
