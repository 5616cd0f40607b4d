"""What a new connected account asks Stripe for: country, capabilities, service agreement.

Defaults follow the escrow strategy; the host's ``ACCOUNT_OWNER_DETAILS`` hook
may override them per owner (docs/onboarding.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..conf import MANUAL_CAPTURE, escrow_settings
from ..gateway.types import ServiceAgreement

__all__ = ["AccountConfiguration", "account_configuration"]

_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class AccountConfiguration:
    """What a new connected account is created with (the owner-details hook, checked)."""

    country: str
    email: str
    #: Requested with ``capabilities[<name>][requested]=true``.
    capabilities: tuple[str, ...]
    #: Sent as ``tos_acceptance[service_agreement]``.
    service_agreement: ServiceAgreement


_AGREEMENTS: tuple[ServiceAgreement, ...] = ("full", "recipient")
_HOOK = "ESCROW_CONNECT['ACCOUNT_OWNER_DETAILS']"


def _strategy_defaults() -> tuple[tuple[str, ...], ServiceAgreement]:
    """The capabilities and service agreement the escrow strategy needs.

    Separate charges and transfers: the doer only receives transfers, so
    ``transfers`` under the ``recipient`` agreement (what cross-border payouts
    require). Manual-capture destination charges: ``card_payments`` and
    ``transfers`` under the ``full`` agreement, so the account can be the
    settlement merchant (``on_behalf_of``) that Stripe requires across regions.
    """
    if escrow_settings.ESCROW_STRATEGY == MANUAL_CAPTURE:
        return ("transfers", "card_payments"), "full"
    return ("transfers",), "recipient"


def _hook_capabilities(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(
            f"{_HOOK} returned capabilities {value!r}; it must be a list of capability names."
        )
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name:
            raise ImproperlyConfigured(
                f"{_HOOK} returned capabilities {value!r}; each must be a non-empty name."
            )
        if name not in names:
            names.append(name)
    if "transfers" not in names:
        raise ImproperlyConfigured(
            f"{_HOOK} returned capabilities {value!r}; they must include 'transfers' "
            "(the doer is paid by transfer)."
        )
    return tuple(names)


def account_configuration(owner: Any) -> AccountConfiguration:
    """Country, email, capabilities and service agreement for the owner's new account.

    The owner-details hook gives ``country`` and ``email`` and may override the
    escrow strategy's ``capabilities`` and ``service_agreement`` for this owner.
    Raises ImproperlyConfigured for values Stripe would refuse: a ``recipient``
    account with ``card_payments``, capabilities without ``transfers``, or,
    with ``DESTINATION_ON_BEHALF_OF``, an account that cannot be the settlement
    merchant (not ``full``, or without ``card_payments``).
    """
    details = escrow_settings.ACCOUNT_OWNER_DETAILS(owner) or {}
    country = str(details.get("country") or escrow_settings.DEFAULT_ACCOUNT_COUNTRY).upper()
    if not _COUNTRY.match(country):
        raise ImproperlyConfigured(
            f"{_HOOK} returned country {country!r}; "
            "it must be a two-letter ISO 3166-1 code (or set DEFAULT_ACCOUNT_COUNTRY)."
        )
    email = str(details.get("email") or "")
    default_capabilities, default_agreement = _strategy_defaults()
    agreement = details.get("service_agreement")
    if agreement is not None and agreement not in _AGREEMENTS:
        raise ImproperlyConfigured(
            f"{_HOOK} returned service_agreement {agreement!r}; it must be 'full' or 'recipient'."
        )
    if details.get("capabilities") is not None:
        capabilities = _hook_capabilities(details["capabilities"])
    elif agreement == "recipient":
        capabilities = tuple(c for c in default_capabilities if c != "card_payments")
    else:
        capabilities = default_capabilities
    if agreement is None:
        agreement = "full" if "card_payments" in capabilities else default_agreement
    if agreement == "recipient" and "card_payments" in capabilities:
        raise ImproperlyConfigured(
            f"{_HOOK} asks for card_payments under the 'recipient' service agreement; "
            "Stripe refuses it (a recipient account cannot process payments)."
        )
    if (
        escrow_settings.ESCROW_STRATEGY == MANUAL_CAPTURE
        and escrow_settings.DESTINATION_ON_BEHALF_OF is True
        and (agreement != "full" or "card_payments" not in capabilities)
    ):
        raise ImproperlyConfigured(
            f"{_HOOK} asks for a {agreement!r} account with {list(capabilities)}; with "
            "DESTINATION_ON_BEHALF_OF the account is the settlement merchant and needs "
            "card_payments under the 'full' service agreement."
        )
    return AccountConfiguration(
        country=country, email=email, capabilities=capabilities, service_agreement=agreement
    )
