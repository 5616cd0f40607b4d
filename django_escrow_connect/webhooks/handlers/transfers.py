"""``transfer.*``: money sent to the doer's connected account.

There is no ``transfer.paid`` or ``transfer.failed`` in the current API: a
transfer fails synchronously, when the app creates it.
"""

from __future__ import annotations

from ...gateway.types import TransferSnapshot
from ...services import stripe_objects, tip_outcomes
from ..context import EventContext
from . import check_amounts, ignore_unless, note_payment, snapshot


def transfer(context: EventContext) -> None:
    """transfer.created, transfer.updated, transfer.reversed."""
    transfer_snapshot = snapshot(context, TransferSnapshot)
    if transfer_snapshot.metadata.get("escrow_tip_id"):
        # A tip's transfer: it is not the payment's release.
        row = tip_outcomes.apply_tip_transfer(transfer_snapshot, event_id=context.id)
        note_payment(context, ignore_unless(row and row.tip.payment, "Not ours."))
        return
    result = stripe_objects.apply_transfer(transfer_snapshot, event_id=context.id)
    note_payment(context, ignore_unless(result, "Not an escrow payment's transfer."))


def application_fee(context: EventContext) -> None:
    """application_fee.created, application_fee.refunded (destination charges)."""
    fee = context.object
    check_amounts(
        context, {"amount": fee.get("amount"), "amount_refunded": fee.get("amount_refunded")}
    )
    result = stripe_objects.apply_application_fee(fee, event_id=context.id)
    note_payment(context, ignore_unless(result, "Not an escrow payment's application fee."))
