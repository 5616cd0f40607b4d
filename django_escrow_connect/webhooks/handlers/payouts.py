"""``payout.*`` on connected accounts: the doer's bank payouts."""

from __future__ import annotations

from ...gateway.types import PayoutSnapshot
from ...services import stripe_objects
from ..context import EventContext
from . import snapshot


def payout(context: EventContext) -> None:
    """payout.failed (or .updated to failed) records an incident and notifies;
    paid, canceled and other updates are logged."""
    stripe_objects.apply_payout(
        snapshot(context, PayoutSnapshot), account_id=context.account, event_id=context.id
    )
    context.connected_account = context.account
