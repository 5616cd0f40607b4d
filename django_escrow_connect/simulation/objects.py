"""Builders of Stripe-shaped JSON objects (API version ``2026-10-28.endive``) and ids."""

from __future__ import annotations

import copy
import hashlib
import secrets as pysecrets
import string
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .cards import (
    CARDS,
)
from .rules import (
    _CURRENCY_BY_COUNTRY,
    _EU,
    _controller_settings,
)

JSON = dict[str, Any]

_ALPHABET = string.ascii_letters + string.digits


def _random(length: int) -> str:
    return "".join(pysecrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: ``pi_3Pq...``."""
    return f"{prefix}_{_random(length)}"


def iso_time(unix: int) -> str:
    """Simulated unix seconds as a v2 timestamp (RFC 3339, milliseconds, UTC)."""
    moment = datetime.fromtimestamp(unix, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _list(data: list[JSON], url: str) -> JSON:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _requirements(
    currently_due: Sequence[str],
    *,
    past_due: Sequence[str] = (),
    disabled_reason: str | None = None,
) -> JSON:
    return {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": list(currently_due),
        "disabled_reason": disabled_reason,
        "errors": [],
        "eventually_due": list(currently_due),
        "past_due": list(past_due),
        "pending_verification": [],
    }


def _initial_requirements(business_type: str | None) -> list[str]:
    common = ["business_profile.mcc", "business_profile.url", "external_account"]
    tos = ["tos_acceptance.date", "tos_acceptance.ip"]
    if business_type == "individual":
        person = [
            f"individual.{field}"
            for field in (
                "address.city", "address.line1", "address.postal_code", "address.state",
                "dob.day", "dob.month", "dob.year", "email", "first_name", "last_name",
                "phone", "ssn_last_4",
            )
        ]  # fmt: skip
        return sorted([*common, *person, *tos])
    if business_type == "company":
        company = [
            "company.address.city", "company.address.line1", "company.address.postal_code",
            "company.address.state", "company.name", "company.owners_provided",
            "company.phone", "company.tax_id", "representative.dob.day",
            "representative.dob.month", "representative.dob.year",
            "representative.first_name", "representative.last_name",
            "representative.relationship.title",
        ]  # fmt: skip
        return sorted([*common, *company, *tos])
    return sorted([*common, "business_type", *tos])


def _account_object(
    account_id: str,
    country: str,
    email: str | None,
    business_type: str | None,
    metadata: Mapping[str, str],
    created: int,
) -> JSON:
    due = _initial_requirements(business_type)
    currency = _CURRENCY_BY_COUNTRY.get(country) or ("eur" if country in _EU else "usd")
    return {
        "id": account_id,
        "object": "account",
        "business_profile": {
            "mcc": None,
            "name": None,
            "product_description": None,
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
        },
        "business_type": business_type,
        "capabilities": {"card_payments": "inactive", "transfers": "inactive"},
        "charges_enabled": False,
        "controller": {
            "fees": {"payer": "application"},
            "is_controller": True,
            "losses": {"payments": "application"},
            "requirement_collection": "stripe",
            "stripe_dashboard": {"type": "express"},
            "type": "application",
        },
        "country": country,
        "created": created,
        "default_currency": currency,
        "details_submitted": False,
        "email": email,
        "external_accounts": _list([], f"/v1/accounts/{account_id}/external_accounts"),
        "future_requirements": _requirements([]),
        "livemode": False,
        "metadata": dict(metadata),
        "payouts_enabled": False,
        "requirements": _requirements(due, past_due=due, disabled_reason="requirements.past_due"),
        "settings": {
            "payouts": {
                "debit_negative_balances": True,
                "schedule": {"delay_days": 2, "interval": "daily"},
                "statement_descriptor": None,
            }
        },
        "tos_acceptance": {
            "date": None,
            "ip": None,
            "service_agreement": "full",
            "user_agent": None,
        },
        "type": "express",
    }


def _controller_object(controller: Mapping[str, Any]) -> JSON:
    settings = _controller_settings(controller)
    return {
        # Stripe's defaults for what the request leaves out.
        "fees": {"payer": settings.get("fees.payer", "account")},
        "is_controller": True,
        "losses": {"payments": settings.get("losses.payments", "stripe")},
        "requirement_collection": settings.get("requirement_collection", "stripe"),
        "stripe_dashboard": {"type": settings.get("stripe_dashboard.type", "full")},
        "type": "application",
    }


def _account_type(controller: Mapping[str, Any]) -> str:
    """The legacy ``type`` Stripe reports for controller properties ("none" if none fits)."""
    c = _controller_object(controller)
    dashboard = c["stripe_dashboard"]["type"]
    if dashboard == "express" and c["requirement_collection"] == "stripe":
        return "express"
    if dashboard == "none" and c["requirement_collection"] == "application":
        return "custom"
    if dashboard == "full" and c["fees"]["payer"] == "account":
        return "standard"
    return "none"


def _bank_account(account: JSON) -> JSON:
    return {
        "id": new_id("ba"),
        "object": "bank_account",
        "account": account["id"],
        "account_holder_name": None,
        "account_holder_type": None,
        "bank_name": "STRIPE TEST BANK",
        "country": account["country"],
        "currency": account["default_currency"],
        "default_for_currency": True,
        "last4": "6789",
        "metadata": {},
        "routing_number": "110000000",
        "status": "new",
    }


def _capability_object(account: JSON, name: str) -> JSON:
    return {
        "id": name,
        "object": "capability",
        "account": account["id"],
        "future_requirements": _requirements([]),
        "livemode": False,
        "requested": True,
        "requested_at": account["created"],
        "requirements": copy.deepcopy(account["requirements"]),
        "status": account["capabilities"][name],
    }


def _payment_intent_object(
    pi_id: str,
    *,
    amount: int,
    currency: str,
    capture_method: str,
    transfer_group: str | None,
    metadata: Mapping[str, str],
    destination: str | None,
    application_fee_amount: int | None,
    description: str | None,
    receipt_email: str | None,
    created: int,
) -> JSON:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": application_fee_amount,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": capture_method,
        "client_secret": f"{pi_id}_secret_{_random(25)}",
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": None,
        "description": description,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {
            "card": {"installments": None, "network": None, "request_three_d_secure": "automatic"}
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": receipt_email,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": {"destination": destination} if destination is not None else None,
        "transfer_group": transfer_group,
    }


def _charge_object(intent: JSON, number: str, now: int, *, authenticated: bool = False) -> JSON:
    fingerprint = hashlib.sha256(number.encode()).hexdigest()[:16]
    destination = intent["transfer_data"]["destination"] if intent["transfer_data"] else None
    return {
        "id": new_id("ch"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": intent["application_fee_amount"],
        "balance_transaction": None,
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
        },
        "captured": False,
        "created": now,
        "currency": intent["currency"],
        "customer": None,
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": intent["id"],
        "payment_method": intent.get("payment_method") or new_id("pm"),
        "payment_method_details": {
            "card": {
                "amount_authorized": intent["amount"],
                "brand": "visa",
                "capture_before": None,
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "US",
                "exp_month": 12,
                "exp_year": time.gmtime(now).tm_year + 3,
                "fingerprint": fingerprint,
                "funding": "credit",
                "last4": number[-4:],
                "network": "visa",
                "three_d_secure": (
                    {
                        "authentication_flow": "challenge",
                        "result": "authenticated",
                        "version": "2.2.0",
                    }
                    if authenticated
                    else None
                ),
            },
            "type": "card",
        },
        "receipt_email": intent["receipt_email"],
        "receipt_url": None,
        "refunded": False,
        "review": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "status": "succeeded",
        "transfer": None,
        "transfer_data": {"amount": None, "destination": destination} if destination else None,
        "transfer_group": intent["transfer_group"],
    }


def _application_fee_object(charge: JSON, account: str, amount: int, now: int) -> JSON:
    fee_id = new_id("fee")
    return {
        "id": fee_id,
        "object": "application_fee",
        "account": account,
        "amount": amount,
        "amount_refunded": 0,
        "application": "ca_simulated_escrow_connect",
        "balance_transaction": new_id("txn"),
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "livemode": False,
        "originating_transaction": None,
        "refunded": False,
        "refunds": _list([], f"/v1/application_fees/{fee_id}/refunds"),
    }


def _refund_application_fee(fee: JSON, amount: int, now: int) -> None:
    fee_refund = {
        "id": new_id("fr"),
        "object": "fee_refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "created": now,
        "currency": fee["currency"],
        "fee": fee["id"],
        "metadata": {},
    }
    fee["amount_refunded"] += amount
    fee["refunded"] = fee["amount_refunded"] >= fee["amount"]
    fee["refunds"]["data"].insert(0, fee_refund)
    fee["refunds"]["total_count"] = len(fee["refunds"]["data"])


def _balance_transaction(
    *, amount: int, fee: int, currency: str, source: str, description: str, now: int
) -> JSON:
    return {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "created": now,
        "currency": currency,
        "description": description,
        "fee": fee,
        "fee_details": [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Dispute fee",
                "type": "stripe_fee",
            }
        ]
        if fee
        else [],
        "net": amount - fee,
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "source": source,
        "status": "available",
        "type": "adjustment",
    }


# --- small helpers -------------------------------------------------------------------------


def _newest_first(objects: list[JSON]) -> list[JSON]:
    # Insertion order is creation order; reverse it (Stripe lists newest first).
    return objects[::-1]


def _proportion(total: int, part: int, whole: int) -> int:
    """``total * part / whole`` rounded half up, in integers."""
    if whole <= 0:
        return 0
    return (2 * total * part + whole) // (2 * whole)


def _card_number(card: str) -> str:
    if not isinstance(card, str) or not card.strip():
        raise ValueError("card must be a card number or a name from CARDS")
    named = CARDS.get(card.strip())
    if named is not None:
        return named.number
    return "".join(ch for ch in card if ch.isdigit())


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-like data (dicts, lists, scalars), copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
