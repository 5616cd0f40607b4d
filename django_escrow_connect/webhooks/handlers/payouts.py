"""``payout.*`` on connected accounts: the doer's bank payouts."""

from __future__ import annotations

from ...gateway.types import PayoutSnapshot
from ...services import transfers
from ..pipeline import EventContext
from . import snapshot


def payout(context: EventContext) -> None:
    """payout.failed records an incident and notifies; payout.paid is logged."""
    transfers.apply_payout(
        snapshot(context, PayoutSnapshot), account_id=context.account, event_id=context.id
    )
    context.connected_account = context.account
