"""Stripe-shaped objects and events for the webhook tests.

Written for this suite after the shapes of Stripe's own example objects (API
version 2026-10-28): the fields the app reads, their nesting and their nulls.
Every builder takes keyword overrides; ids are fresh unless given.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from django_escrow_connect.conf import STRIPE_API_VERSION

_seq = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_1Test{next(_seq):018d}"


def now() -> int:
    return int(time.time())


def event(
    type_: str,
    obj: dict[str, Any],
    *,
    account: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    previous_attributes: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    evt: dict[str, Any] = {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": STRIPE_API_VERSION,
        "created": created if created is not None else now(),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }
    if account is not None:
        evt["account"] = account
    return evt


def thin_event(
    type_: str,
    related_id: str | None = "acct_1TestConnected000001",
    *,
    related_type: str = "v2.core.account",
    created: str = "2026-11-20T10:00:00.000Z",
    livemode: bool = False,
    event_id: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """A thin event as an event destination delivers it (docs: "Account event types")."""
    evt: dict[str, Any] = {
        "id": event_id or new_id("evt"),
        "object": "v2.core.event",
        "type": type_,
        "created": created,
        "livemode": livemode,
        "context": context,
        "reason": None,
    }
    if related_id is not None:
        evt["related_object"] = {
            "id": related_id,
            "type": related_type,
            "url": f"/v2/core/accounts/{related_id}",
        }
    return evt


def encode(evt: dict[str, Any]) -> bytes:
    return json.dumps(evt, indent=2).encode("utf-8")


# --------------------------------------------------------------------------
# Payments
# --------------------------------------------------------------------------


def payment_intent(**overrides: Any) -> dict[str, Any]:
    pi_id = overrides.pop("id", None) or new_id("pi")
    obj: dict[str, Any] = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": 10_000,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pi_id}_secret_notarealsecret",
        "confirmation_method": "automatic",
        "created": now(),
        "currency": "usd",
        "customer": None,
        "description": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }
    obj.update(overrides)
    return obj


def card_error(code: str = "card_declined", decline_code: str = "insufficient_funds") -> dict:
    return {
        "type": "card_error",
        "code": code,
        "decline_code": decline_code,
        "message": "Your card has insufficient funds.",
        "doc_url": f"https://stripe.com/docs/error-codes/{code}",
        "payment_method": {"id": new_id("pm"), "object": "payment_method", "type": "card"},
    }


def charge(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": new_id("ch"),
        "object": "charge",
        "amount": 10_000,
        "amount_captured": 10_000,
        "amount_refunded": 0,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": new_id("txn"),
        "captured": True,
        "created": now(),
        "currency": "usd",
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": {},
        "outcome": {"network_status": "approved_by_network", "type": "authorized"},
        "paid": True,
        "payment_intent": None,
        "payment_method": new_id("pm"),
        "payment_method_details": {
            "card": {
                "brand": "visa",
                "capture_before": None,
                "country": "US",
                "exp_month": 8,
                "exp_year": 2030,
                "funding": "credit",
                "last4": "4242",
            },
            "type": "card",
        },
        "refunded": False,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    obj.update(overrides)
    return obj


def refund(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": new_id("re"),
        "object": "refund",
        "amount": 10_000,
        "balance_transaction": None,
        "charge": None,
        "created": now(),
        "currency": "usd",
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": {},
        "payment_intent": None,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "pending",
        "transfer_reversal": None,
    }
    obj.update(overrides)
    return obj


# --------------------------------------------------------------------------
# Disputes
# --------------------------------------------------------------------------


def balance_transaction(amount: int, *, fee: int = 1500, currency: str = "usd") -> dict:
    return {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "currency": currency,
        "fee": fee if amount < 0 else 0,
        "net": amount - (fee if amount < 0 else 0),
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "type": "adjustment",
    }


def dispute(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": 10_000,
        "balance_transactions": [],
        "charge": None,
        "created": now(),
        "currency": "usd",
        "evidence": {"customer_name": None, "uncategorized_text": None},
        "evidence_details": {
            "due_by": now() + 14 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": None,
        "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback"}},
        "reason": "fraudulent",
        "status": "needs_response",
    }
    obj.update(overrides)
    return obj


# --------------------------------------------------------------------------
# Transfers and payouts
# --------------------------------------------------------------------------


def transfer_reversal(transfer_id: str, amount: int, **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": new_id("trr"),
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "created": now(),
        "currency": "usd",
        "destination_payment_refund": new_id("pyr"),
        "metadata": {},
        "source_refund": None,
        "transfer": transfer_id,
    }
    obj.update(overrides)
    return obj


def transfer(**overrides: Any) -> dict[str, Any]:
    tr_id = overrides.pop("id", None) or new_id("tr")
    reversals = overrides.pop("reversals", [])
    obj: dict[str, Any] = {
        "id": tr_id,
        "object": "transfer",
        "amount": 9_000,
        "amount_reversed": sum(r["amount"] for r in reversals),
        "balance_transaction": new_id("txn"),
        "created": now(),
        "currency": "usd",
        "description": None,
        "destination": None,
        "destination_payment": new_id("py"),
        "livemode": False,
        "metadata": {},
        "reversals": {
            "object": "list",
            "data": reversals,
            "has_more": False,
            "url": f"/v1/transfers/{tr_id}/reversals",
        },
        "reversed": False,
        "source_transaction": None,
        "source_type": "card",
        "transfer_group": None,
    }
    obj.update(overrides)
    return obj


def payout(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": new_id("po"),
        "object": "payout",
        "amount": 9_000,
        "arrival_date": now() + 2 * 86400,
        "automatic": True,
        "balance_transaction": new_id("txn"),
        "created": now(),
        "currency": "usd",
        "description": "STRIPE PAYOUT",
        "destination": new_id("ba"),
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": {},
        "method": "standard",
        "reconciliation_status": "not_applicable",
        "source_type": "card",
        "statement_descriptor": None,
        "status": "in_transit",
        "type": "bank_account",
    }
    obj.update(overrides)
    return obj


# --------------------------------------------------------------------------
# Connected accounts
# --------------------------------------------------------------------------


def requirements(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": [],
        "disabled_reason": None,
        "errors": [],
        "eventually_due": [],
        "past_due": [],
        "pending_verification": [],
    }
    obj.update(overrides)
    return obj


def account(account_id: str, **overrides: Any) -> dict[str, Any]:
    reqs = overrides.pop("requirements", None) or requirements()
    obj: dict[str, Any] = {
        "id": account_id,
        "object": "account",
        "business_profile": {"mcc": None, "name": None, "url": None},
        "business_type": "individual",
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "controller": {
            "fees": {"payer": "application"},
            "losses": {"payments": "application"},
            "requirement_collection": "stripe",
            "stripe_dashboard": {"type": "express"},
            "type": "application",
        },
        "country": "US",
        "created": now(),
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "future_requirements": requirements(),
        "metadata": {},
        "payouts_enabled": True,
        "requirements": reqs,
        "type": "none",
    }
    obj.update(overrides)
    return obj


def capability(account_id: str, name: str = "transfers", status: str = "active") -> dict:
    return {
        "id": name,
        "object": "capability",
        "account": account_id,
        "future_requirements": requirements(),
        "requested": True,
        "requested_at": now(),
        "requirements": requirements(),
        "status": status,
    }


def application() -> dict[str, Any]:
    return {"id": new_id("ca"), "object": "application", "name": "Marketplace"}


def person(account_id: str) -> dict[str, Any]:
    return {
        "id": new_id("person"),
        "object": "person",
        "account": account_id,
        "first_name": None,
        "last_name": None,
        "requirements": requirements(),
        "verification": {"status": "unverified", "details": None, "details_code": None},
    }


def external_account(account_id: str) -> dict[str, Any]:
    return {
        "id": new_id("ba"),
        "object": "bank_account",
        "account": account_id,
        "account_holder_name": None,
        "bank_name": "STRIPE TEST BANK",
        "country": "US",
        "currency": "usd",
        "default_for_currency": True,
        "last4": "6789",
        "metadata": {},
        "routing_number": "110000000",
        "status": "new",
    }
