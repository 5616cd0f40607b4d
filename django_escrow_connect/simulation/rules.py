"""Stripe's rules and limits the simulation enforces, and the checks that raise them.

Each check answers with the error Stripe answers (message, code, param), built by
the store so it carries the request id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import (
    BalanceInsufficient,
    InvalidRequest,
)
from ..money import MAX_CHARGE_AMOUNT, MAX_CHARGE_AMOUNTS, MIN_CHARGE_AMOUNTS

if TYPE_CHECKING:
    from .store import SimulatedStripe

JSON = dict[str, Any]

#: The API version that replaced a PaymentIntent's ``charges`` list with ``latest_charge``.
_LATEST_CHARGE_SINCE = "2022-11-15"

#: A card authorisation (manual capture) lapses after seven days.
AUTHORIZATION_VALIDITY_SECONDS = 7 * 24 * 3600
ACCOUNT_LINK_TTL_SECONDS = 300
ACCOUNT_SESSION_TTL_SECONDS = 1800
DISPUTE_EVIDENCE_SECONDS = 7 * 24 * 3600
#: Stripe's dispute fee, in the disputed currency's minor unit (simplified).
DISPUTE_FEE = 1500
#: Stripe's largest charge: a currency's MAXIMUM_CHARGE entry, or MAX_AMOUNT
#: (the package's tables, so the simulation refuses what Stripe would).
MAX_AMOUNT = MAX_CHARGE_AMOUNT
MAXIMUM_CHARGE = MAX_CHARGE_AMOUNTS
#: Card payments reach the platform's *available* balance this long after
#: the charge (Stripe's standard US payout schedule: two business days).
SETTLEMENT_DELAY_SECONDS = 2 * 24 * 3600
#: Stripe removes idempotency keys once they are at least 24 hours old.
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600
#: Stripe's minimum charge amounts (others: 1): the package's table, so the
#: simulation refuses what Stripe would.
MINIMUM_CHARGE = MIN_CHARGE_AMOUNTS

_EU = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
        "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    }
)  # fmt: skip
_CURRENCY_BY_COUNTRY = {
    "US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "NZ": "nzd", "JP": "jpy",
    "CH": "chf", "SG": "sgd", "HK": "hkd", "MX": "mxn", "BR": "brl", "NO": "nok",
    "SE": "sek", "DK": "dkk", "PL": "pln", "CZ": "czk", "HU": "huf", "RO": "ron",
    "BG": "bgn",
}  # fmt: skip

#: Stripe's "Europe" for Connect regions: the EEA, the United Kingdom and Switzerland.
_EUROPE = _EU | {"GB", "CH", "NO", "IS", "LI"}


def same_region(platform_country: str, account_country: str) -> bool:
    """Whether Stripe treats a platform and an account as in the same region.

    Europe (EEA, UK, Switzerland) is one region; elsewhere a region is the country.
    """
    a, b = platform_country.upper(), account_country.upper()
    return a == b or (a in _EUROPE and b in _EUROPE)


#: The embedded components an AccountSession can enable at API version
#: ``2026-10-28.endive`` (``components[...]`` of "Create an Account Session";
#: a test compares it with stripe-python's typed parameters).
ACCOUNT_SESSION_COMPONENTS = frozenset(
    {
        "account_management", "account_onboarding", "balance_report", "balances",
        "disputes_list", "documents", "financial_account", "financial_account_transactions",
        "instant_payouts_promotion", "issuing_card", "issuing_cards_list",
        "notification_banner", "payment_details", "payment_disputes",
        "payment_method_settings", "payments", "payout_details",
        "payout_reconciliation_report", "payouts", "payouts_list", "reporting_chart",
        "tax_registrations", "tax_settings", "terminal_hardware_orders",
        "terminal_hardware_shop",
    }
)  # fmt: skip

#: The controller properties the package creates accounts with (see
#: :meth:`~django_escrow_connect.gateway.stripe_gateway.StripeGateway.create_account`).
PACKAGE_CONTROLLER: Mapping[str, Any] = {
    "fees": {"payer": "application"},
    "losses": {"payments": "application"},
    "requirement_collection": "stripe",
    "stripe_dashboard": {"type": "express"},
}
_CONTROLLER_CHOICES = {
    "fees.payer": ("account", "application"),
    "losses.payments": ("application", "stripe"),
    "requirement_collection": ("application", "stripe"),
    "stripe_dashboard.type": ("express", "full", "none"),
}

_CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
_CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")
_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_CANCELABLE = (
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "requires_capture",
    "processing",
)
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
#: An inquiry (a pre-dispute "retrieval request"): no money is withdrawn yet.
_OPEN_INQUIRY_STATUSES = ("warning_needs_response", "warning_under_review")
#: Dispute statuses that leave a charge refundable: inquiries (a refund closes
#: them) and disputes that ended in the merchant's favour.
_REFUNDABLE_DISPUTE_STATUSES = (*_OPEN_INQUIRY_STATUSES, "warning_closed", "won", "prevented")

# --- test cards -----------------------------------------------------------------------


def unexpected_state(
    s: SimulatedStripe, intent: JSON, done: str, allowed: Sequence[str]
) -> InvalidRequest:
    return s.error(
        InvalidRequest,
        f"This PaymentIntent could not be {done} because it has a status of "
        f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
        f"may be {done}: {', '.join(allowed)}.",
        code="payment_intent_unexpected_state",
        param="intent",
    )


def check_settlement_merchant(s: SimulatedStripe, account: JSON) -> None:
    """``on_behalf_of``: the account settles the charge, as a full-agreement merchant."""
    if account["tos_acceptance"].get("service_agreement") == "recipient":
        raise s.error(
            InvalidRequest,
            f"The account {account['id']} is under the `recipient` service agreement "
            "and cannot be the settlement merchant (`on_behalf_of`) of a charge.",
            param="on_behalf_of",
        )
    if account["capabilities"].get("card_payments") != "active":
        raise s.error(
            InvalidRequest,
            f"The `on_behalf_of` account {account['id']} must have the `card_payments` "
            "capability active.",
            code="insufficient_capabilities_for_transfer",
            param="on_behalf_of",
        )


def check_same_region(
    s: SimulatedStripe, account: JSON, param: str, *, recipient_ok: bool = False
) -> None:
    """Stripe moves funds across regions only to ``recipient`` accounts (transfers)
    or with the connected account as settlement merchant (destination charges)."""
    if same_region(s.platform_country, account["country"]):
        return
    if recipient_ok and account["tos_acceptance"].get("service_agreement") == "recipient":
        return
    remedy = (
        "the account must be under the `recipient` service agreement"
        if recipient_ok
        else "set `on_behalf_of` to the connected account (the settlement merchant)"
    )
    raise s.error(
        InvalidRequest,
        f"Funds can't be sent to accounts located in {account['country']} from a "
        f"platform in {s.platform_country}: the regions differ, so {remedy}.",
        param=param,
    )


def check_transfers_capability(s: SimulatedStripe, account: JSON, param: str) -> None:
    if account["capabilities"].get("transfers") != "active":
        raise s.error(
            InvalidRequest,
            "Your destination account needs to have at least one of the following "
            "capabilities enabled: transfers, crypto_transfers, legacy_payments",
            code="insufficient_capabilities_for_transfer",
            param=param,
        )


def check_controller(s: SimulatedStripe, controller: Mapping[str, Any]) -> None:
    settings = _controller_settings(controller)
    for name, value in settings.items():
        choices = _CONTROLLER_CHOICES.get(name)
        param = "controller[" + "][".join(name.split(".")) + "]"
        if choices is None:
            raise s.error(InvalidRequest, f"Received unknown parameter: {param}", param=param)
        if value not in choices:
            raise s.error(
                InvalidRequest,
                f"Invalid {param}: must be one of {', '.join(choices)}",
                param=param,
            )
    if settings.get("requirement_collection") == "application" and (
        settings.get("stripe_dashboard.type") != "none"
        or settings.get("fees.payer") != "application"
        or settings.get("losses.payments") != "application"
    ):
        raise s.error(
            InvalidRequest,
            "When the platform collects requirements "
            "(controller[requirement_collection]=application), the account cannot have "
            "a Stripe Dashboard and the platform must pay fees and losses: set "
            "controller[stripe_dashboard][type]=none, controller[fees][payer]=application "
            "and controller[losses][payments]=application.",
            param="controller[requirement_collection]",
        )


def check_reversible(s: SimulatedStripe, transfer: JSON, amount: int) -> None:
    destination = transfer["destination"]
    s.account(destination, "destination")
    balance = s.balances.get(destination, {}).get(transfer["currency"], 0)
    if amount > balance:
        raise s.error(
            BalanceInsufficient,
            f"The connected account {destination} has insufficient funds ({balance}) to "
            f"reverse {amount} of transfer {transfer['id']}.",
            code="balance_insufficient",
            param="amount",
        )


def _controller_settings(controller: Mapping[str, Any]) -> dict[str, Any]:
    """``{"fees.payer": "application", ...}`` from nested controller properties."""
    flat: dict[str, Any] = {}
    for key, value in controller.items():
        if isinstance(value, Mapping):
            for inner, setting in value.items():
                flat[f"{key}.{inner}"] = setting
        else:
            flat[str(key)] = value
    return flat
