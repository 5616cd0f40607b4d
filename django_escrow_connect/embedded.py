"""Connect embedded components: which ones the package lets a doer open, with which features.

``POST stripe/account-session/`` asks Stripe for an AccountSession that
enables some of Stripe's embedded components (Connect.js renders them on the
host's pages). The host chooses them with ``ESCROW_CONNECT["EMBEDDED_COMPONENTS"]``;
each is sent with the features in :data:`DEFAULT_FEATURES`, overridden by
``ESCROW_CONNECT["EMBEDDED_COMPONENT_FEATURES"]``.

The defaults are the safe ones for an escrow platform whose accounts are made
by this package (Stripe collects requirements, the platform is liable for
negative balances): no instant or manual payouts, no payout-schedule edits, and
in the payments and disputes components no refunds, captures or dispute
answers by the doer, because escrow release, refunds and disputes are the
platform's, through its own state machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .conf import MANUAL_CAPTURE, escrow_settings

__all__ = [
    "CHARGE_COMPONENTS",
    "COMPONENT_FEATURES",
    "DEFAULT_FEATURES",
    "ESCROW_OWNED_FEATURES",
    "charge_components_allowed",
    "component_features",
    "enabled_components",
    "session_components",
]

_AUTHENTICATION = ("disable_stripe_user_authentication", "external_account_collection")
_PAYOUTS = (*_AUTHENTICATION, "edit_payout_schedule", "instant_payouts", "standard_payouts")
_CHARGES = (
    "capture_payments",
    "destination_on_behalf_of_charge_management",
    "dispute_management",
    "refund_management",
    "smart_disputes_management",
)

#: The components this package can enable, each with the feature names Stripe
#: accepts for it at API version ``2026-10-28.endive`` (stripe-python's
#: ``AccountSessionCreateParamsComponents...Features``; a test compares them).
COMPONENT_FEATURES: dict[str, frozenset[str]] = {
    "account_onboarding": frozenset(_AUTHENTICATION),
    "account_management": frozenset(_AUTHENTICATION),
    "notification_banner": frozenset(_AUTHENTICATION),
    "payouts": frozenset(_PAYOUTS),
    "balances": frozenset(_PAYOUTS),
    "documents": frozenset(),
    "payments": frozenset(_CHARGES),
    "disputes_list": frozenset(_CHARGES),
}

#: Components that list the connected account's *own* charges and disputes.
#: With separate charges and transfers, and with destination charges without
#: ``on_behalf_of``, the customer's charge and its disputes live on the
#: platform: Stripe shows the doer only the transfer's ``py_`` payment, with
#: almost no detail. They are useful only with destination charges made
#: ``on_behalf_of`` the doer (``manual_capture`` + ``DESTINATION_ON_BEHALF_OF``)
#: and ``destination_on_behalf_of_charge_management``.
CHARGE_COMPONENTS = frozenset({"payments", "disputes_list"})

#: Features that would let the doer move the escrow's money behind the
#: platform's back (refund, capture, accept a dispute): always off.
ESCROW_OWNED_FEATURES = frozenset(
    {"capture_payments", "dispute_management", "refund_management", "smart_disputes_management"}
)

_NO_EARLY_PAYOUTS = {
    # The platform is liable for the account's negative balance and reverses
    # transfers to fund refunds after release; a reversal needs the money to
    # still be in the account, so payouts stay on the account's schedule.
    "instant_payouts": False,
    "standard_payouts": False,
    "edit_payout_schedule": False,
}
_VIEW_ONLY_CHARGES = {
    # Without it Stripe shows destination charges made on_behalf_of the doer
    # as bare transfers.
    "destination_on_behalf_of_charge_management": True,
    "capture_payments": False,
    "dispute_management": False,
    "refund_management": False,
}

#: The features sent for each component unless
#: ``EMBEDDED_COMPONENT_FEATURES`` overrides them. An empty dict sends none:
#: Stripe's defaults apply (for the package's accounts, Stripe collects bank
#: details and authenticates the doer, which is the only setting it allows
#: when Stripe collects requirements).
DEFAULT_FEATURES: dict[str, dict[str, bool]] = {
    "account_onboarding": {},
    "account_management": {},
    "notification_banner": {},
    "payouts": dict(_NO_EARLY_PAYOUTS),
    "balances": dict(_NO_EARLY_PAYOUTS),
    "documents": {},
    "payments": dict(_VIEW_ONLY_CHARGES),
    "disputes_list": dict(_VIEW_ONLY_CHARGES),
}


def charge_components_allowed(
    strategy: str | None = None, on_behalf_of: bool | None = None
) -> bool:
    """Whether :data:`CHARGE_COMPONENTS` can show the doer anything under this strategy."""
    if strategy is None:
        strategy = escrow_settings.ESCROW_STRATEGY
    if on_behalf_of is None:
        on_behalf_of = bool(escrow_settings.DESTINATION_ON_BEHALF_OF)
    return strategy == MANUAL_CAPTURE and on_behalf_of


def enabled_components() -> tuple[str, ...]:
    """``EMBEDDED_COMPONENTS`` as configured, in order, without duplicates."""
    return tuple(dict.fromkeys(escrow_settings.EMBEDDED_COMPONENTS))


def component_features(name: str) -> dict[str, bool]:
    """The features sent to Stripe for component ``name``: defaults, then the host's overrides."""
    overrides: Mapping[str, Any] = escrow_settings.EMBEDDED_COMPONENT_FEATURES.get(name) or {}
    features = {**DEFAULT_FEATURES.get(name, {}), **overrides}
    return {key: bool(features[key]) for key in sorted(features)}


def session_components(names: tuple[str, ...]) -> dict[str, dict[str, bool]]:
    """``{component: features}`` for an AccountSession enabling ``names``."""
    return {name: component_features(name) for name in names}
