"""Hooks about connected-account owners."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from .conf import escrow_settings


class OwnerDetails(TypedDict, total=False):
    country: str
    email: str
    #: ``"full"`` or ``"recipient"``; absent: the escrow strategy's default.
    service_agreement: Literal["full", "recipient"]
    #: Capability names to request; absent: the escrow strategy's default.
    capabilities: list[str]


def default_owner_details(owner: Any) -> OwnerDetails:
    """Country and email for a new Stripe account, from the owner.

    Reads ``country`` and the model's email field when the owner has them and
    falls back to ``ESCROW_CONNECT["DEFAULT_ACCOUNT_COUNTRY"]``. Hosts name
    their own callable in ``ESCROW_CONNECT["ACCOUNT_OWNER_DETAILS"]``; it may
    also return ``service_agreement`` and ``capabilities`` for one account
    (the default leaves both to the escrow strategy, see
    :func:`django_escrow_connect.services.accounts.account_configuration`).
    """
    details: OwnerDetails = {
        "country": (getattr(owner, "country", "") or escrow_settings.DEFAULT_ACCOUNT_COUNTRY)
    }
    email_field = getattr(owner, "get_email_field_name", None)
    email = getattr(owner, email_field(), "") if callable(email_field) else ""
    if not email:
        email = getattr(owner, "email", "") or ""
    if email:
        details["email"] = email
    return details
