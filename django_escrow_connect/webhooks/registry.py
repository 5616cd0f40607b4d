"""Every event type the app handles, and on which endpoint: the one place.

An event whose type is not listed here, or that arrives on the other
endpoint, is recorded and marked ``ignored`` (HTTP 200). Enable exactly
these types on each endpoint in the Stripe dashboard (docs/webhooks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..services.shortcut import Shortcut
from ..states import WebhookEndpoint
from .context import EventContext
from .handlers import (
    accounts,
    disputes,
    payments,
    payouts,
    radar,
    refunds,
    thin,
    transfers,
)

Handler = Callable[[EventContext], None]
#: ``(payload, condition) -> Shortcut | None``: see :mod:`.shortcuts`.
ShortcutPlanner = Callable[[dict[str, Any], str], Shortcut | None]

PLATFORM = frozenset({WebhookEndpoint.PLATFORM})
CONNECT = frozenset({WebhookEndpoint.CONNECT})
THIN = frozenset({WebhookEndpoint.THIN})


@dataclass(frozen=True)
class Route:
    handler: Handler
    endpoints: frozenset[str]
    #: The handler's common case as SQL joined to the event's insert, when it has one.
    shortcut: ShortcutPlanner | None = None


HANDLERS: dict[str, Route] = {
    # --- payments (platform) ---------------------------------------------------
    "payment_intent.processing": Route(payments.payment_intent, PLATFORM),
    "payment_intent.succeeded": Route(
        payments.payment_intent, PLATFORM, payments.payment_intent_shortcut
    ),
    "payment_intent.amount_capturable_updated": Route(
        payments.payment_intent, PLATFORM, payments.payment_intent_shortcut
    ),
    "payment_intent.payment_failed": Route(payments.payment_intent, PLATFORM),
    "payment_intent.canceled": Route(payments.payment_intent, PLATFORM),
    "charge.succeeded": Route(payments.charge, PLATFORM, payments.charge_shortcut),
    "charge.updated": Route(payments.charge, PLATFORM, payments.charge_shortcut),
    "charge.refunded": Route(payments.charge_refunded, PLATFORM),
    # --- refunds (platform) --------------------------------------------------------
    "refund.created": Route(refunds.refund, PLATFORM),
    "refund.updated": Route(refunds.refund, PLATFORM),
    "refund.failed": Route(refunds.refund, PLATFORM),
    # --- disputes (platform) ---------------------------------------------------------
    "charge.dispute.created": Route(disputes.dispute, PLATFORM),
    "charge.dispute.updated": Route(disputes.dispute, PLATFORM),
    "charge.dispute.closed": Route(disputes.dispute, PLATFORM),
    "charge.dispute.funds_withdrawn": Route(disputes.dispute, PLATFORM),
    "charge.dispute.funds_reinstated": Route(disputes.dispute, PLATFORM),
    # --- Radar (platform): release is frozen while one is open -------------------------
    "review.opened": Route(radar.review, PLATFORM),
    "review.closed": Route(radar.review, PLATFORM),
    "radar.early_fraud_warning.created": Route(radar.early_fraud_warning, PLATFORM),
    "radar.early_fraud_warning.updated": Route(radar.early_fraud_warning, PLATFORM),
    # --- application fees (platform; destination charges): logged ----------------------
    # --- transfers (platform) ----------------------------------------------------------
    "transfer.created": Route(transfers.transfer, PLATFORM),
    "transfer.updated": Route(transfers.transfer, PLATFORM),
    "transfer.reversed": Route(transfers.transfer, PLATFORM),
    # --- application fees of destination charges (platform) -----------------------------
    "application_fee.created": Route(transfers.application_fee, PLATFORM),
    "application_fee.refunded": Route(transfers.application_fee, PLATFORM),
    # --- connected accounts (Connect) ---------------------------------------------------
    "account.updated": Route(accounts.account_updated, CONNECT, accounts.account_updated_shortcut),
    "account.application.authorized": Route(accounts.application_authorized, CONNECT),
    "account.application.deauthorized": Route(accounts.application_deauthorized, CONNECT),
    "capability.updated": Route(accounts.capability_updated, CONNECT),
    "person.updated": Route(accounts.refresh, CONNECT),
    "person.deleted": Route(accounts.refresh, CONNECT),
    "account.external_account.created": Route(accounts.external_account, CONNECT),
    "account.external_account.updated": Route(accounts.external_account, CONNECT),
    "account.external_account.deleted": Route(accounts.external_account, CONNECT),
    "payout.failed": Route(payouts.payout, CONNECT),
    "payout.paid": Route(payouts.payout, CONNECT),
    "payout.canceled": Route(payouts.payout, CONNECT),
    "payout.updated": Route(payouts.payout, CONNECT),
    # --- Accounts v2 (thin events, event destination): read the account again -----------
    "v2.core.account[requirements].updated": Route(thin.account_changed, THIN),
    "v2.core.account[configuration.recipient].capability_status_updated": Route(
        thin.account_changed, THIN
    ),
    "v2.core.account[configuration.merchant].capability_status_updated": Route(
        thin.account_changed, THIN
    ),
    "v2.core.account.closed": Route(thin.account_changed, THIN),
}


def handler_for(event_type: str, endpoint: str) -> Handler | None:
    route = HANDLERS.get(event_type)
    if route is None or endpoint not in route.endpoints:
        return None
    return route.handler


def shortcut_for(event_type: str, endpoint: str) -> ShortcutPlanner | None:
    route = HANDLERS.get(event_type)
    if route is None or endpoint not in route.endpoints:
        return None
    return route.shortcut


def event_types(endpoint: str) -> list[str]:
    """The types to enable on ``endpoint`` in the Stripe dashboard."""
    return sorted(name for name, route in HANDLERS.items() if endpoint in route.endpoints)
