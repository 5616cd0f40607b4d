"""Rows of the package's models for a host's tests, without Stripe.

Plain functions (no factory_boy): each creates one row through
:func:`django_escrow_connect.swappable.load`, so swapped models get the same
rows, with amounts and ids consistent with the models' constraints. They
write the database directly and call no service: use them to set up a
state (a released payment, a lost dispute, a failed webhook event) for a
view, a receiver or a report. To drive the real flow (Stripe calls, events,
signals), use the pytest plugin's fixtures (docs/testing.md) instead.

The task (the host's model) comes from the host: :func:`make_payment` reads
payer, payee, amount and currency from its escrow terms, as the services do.
"""

from __future__ import annotations

import itertools
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from . import swappable
from .states import (
    AccountStatus,
    DisputeStatus,
    EscrowStrategy,
    IncidentKind,
    PaymentStatus,
    RefundStatus,
    TransferStatus,
    WebhookEndpoint,
    WebhookEventStatus,
)
from .terms import get_terms

__all__ = [
    "make_account",
    "make_dispute",
    "make_payment",
    "make_payment_incident",
    "make_refund",
    "make_transfer",
    "make_transfer_incident",
    "make_webhook_event",
    "stripe_id",
]

_seq = itertools.count(1)

#: Statuses in which the customer's money was charged (a charge id exists).
_CHARGED = frozenset(
    {
        PaymentStatus.HELD,
        PaymentStatus.RELEASING,
        PaymentStatus.RELEASED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
        PaymentStatus.DISPUTED,
    }
)


def stripe_id(prefix: str) -> str:
    """A fresh id shaped like Stripe's (``pi_...``, ``ch_...``, ``acct_...``)."""
    return f"{prefix}_1Kit{secrets.token_hex(10)}"


def make_account(
    *,
    owner_user: Any = None,
    owner_organization: Any = None,
    stripe_account_id: str | None = None,
    ready: bool = True,
    country: str = "US",
    **fields: Any,
) -> Any:
    """A connected account row for one owner (a user or an organization).

    ``ready``: verified, charges and payouts enabled, the ``transfers``
    capability active (a payee that can be paid); otherwise pending
    verification with a bank account due. ``fields`` override any column.
    """
    account_id = stripe_account_id or stripe_id("acct")
    values: dict[str, Any] = {
        "owner_user": owner_user,
        "owner_organization": owner_organization,
        "stripe_account_id": account_id,
        "creation_idempotency_key": f"factory:{account_id}",
        "business_type": "individual" if owner_user is not None else "company",
        "country": country,
        "status": AccountStatus.VERIFIED if ready else AccountStatus.PENDING_VERIFICATION,
        "charges_enabled": ready,
        "payouts_enabled": ready,
        "details_submitted": ready,
        "capabilities": {"transfers": "active" if ready else "inactive"},
        "requirements_currently_due": [] if ready else ["external_account"],
    }
    values.update(fields)
    return swappable.load("ConnectedAccount").objects.create(**values)


def make_payment(
    task: Any,
    *,
    status: str = PaymentStatus.AWAITING_PAYMENT,
    strategy: str = EscrowStrategy.SEPARATE_CHARGES_AND_TRANSFERS,
    platform_fee: int = 0,
    destination_account_id: str | None = None,
    amount_refunded: int | None = None,
    **fields: Any,
) -> Any:
    """A payment for ``task`` in ``status``, its amounts consistent with it.

    Payer, payee, amount and currency come from the task's escrow terms.
    The destination is the payee's connected account if it has one (else a
    fresh ``acct_`` id). By status: a charge id from ``held`` on;
    ``released``: the payee's share (amount minus ``platform_fee``)
    transferred; ``refunded``: all refunded; ``partially_refunded``:
    ``amount_refunded`` (default half); ``disputed``: the whole amount
    disputed from ``held``. ``fields`` override any column.
    """
    terms = get_terms(task)
    if destination_account_id is None:
        owner = (
            {"owner_user": terms.payee_user}
            if terms.payee_user is not None
            else {"owner_organization": terms.payee_organization}
        )
        account = swappable.load("ConnectedAccount").objects.filter(**owner).first()
        destination_account_id = account.stripe_account_id if account else stripe_id("acct")
    payment_id = fields.pop("id", None) or uuid.uuid4()
    now = timezone.now()
    charged = status in _CHARGED
    amount = terms.amount
    values: dict[str, Any] = {
        "id": payment_id,
        "task": task,
        "payer": terms.payer,
        "payee_user": terms.payee_user,
        "payee_organization": terms.payee_organization,
        "destination_account_id": destination_account_id,
        "currency": terms.currency,
        "amount": amount,
        "platform_fee": platform_fee,
        "strategy": strategy,
        "status": status,
        "stripe_payment_intent_id": stripe_id("pi"),
        "stripe_charge_id": stripe_id("ch") if charged else "",
        "transfer_group": f"escrow_{uuid.UUID(str(payment_id)).hex}",
        "intent_idempotency_key": f"factory:{payment_id}",
        "intent_attempts": 1,
        "held_at": now if charged else None,
    }
    if status == PaymentStatus.RELEASED:
        values |= {"amount_transferred": amount - platform_fee, "released_at": now}
    elif status == PaymentStatus.REFUNDED:
        values |= {"amount_refunded": amount, "refunded_at": now}
    elif status == PaymentStatus.PARTIALLY_REFUNDED:
        partial = amount_refunded if amount_refunded is not None else amount // 2
        values |= {"amount_refunded": partial, "refunded_at": now}
    elif status == PaymentStatus.DISPUTED:
        values |= {
            "amount_disputed": amount,
            "status_before_dispute": PaymentStatus.HELD,
            "disputed_at": now,
        }
    elif status == PaymentStatus.FAILED:
        values |= {"failed_at": now, "failure_code": "card_declined"}
    elif status == PaymentStatus.CANCELED:
        values["canceled_at"] = now
    values.update(fields)
    return swappable.load("EscrowPayment").objects.create(**values)


def make_transfer(
    payment: Any,
    *,
    amount: int | None = None,
    status: str = TransferStatus.CREATED,
    **fields: Any,
) -> Any:
    """A transfer of ``payment``'s money to its destination account.

    ``amount`` defaults to the payee's share (amount minus platform fee). A
    ``pending`` transfer has no Stripe id yet (the call is not answered).
    """
    key = f"factory:transfer:{payment.pk}:{next(_seq)}"
    values: dict[str, Any] = {
        "payment": payment,
        "stripe_transfer_id": "" if status == TransferStatus.PENDING else stripe_id("tr"),
        "idempotency_key": key,
        "amount": payment.amount - payment.platform_fee if amount is None else amount,
        "currency": payment.currency,
        "destination_account_id": payment.destination_account_id,
        "source_transaction": payment.stripe_charge_id,
    }
    values.update(fields)
    values["status"] = status
    return swappable.load("Transfer").objects.create(**values)


def make_refund(
    payment: Any,
    *,
    amount: int | None = None,
    status: str = RefundStatus.SUCCEEDED,
    reason: str = "requested_by_customer",
    **fields: Any,
) -> Any:
    """A refund of ``payment`` (default: the whole amount)."""
    values: dict[str, Any] = {
        "payment": payment,
        "stripe_refund_id": stripe_id("re"),
        "idempotency_key": f"factory:refund:{payment.pk}:{next(_seq)}",
        "amount": payment.amount if amount is None else amount,
        "currency": payment.currency,
        "status": status,
        "reason": reason,
    }
    values.update(fields)
    return swappable.load("Refund").objects.create(**values)


def make_dispute(
    payment: Any,
    *,
    status: str = DisputeStatus.NEEDS_RESPONSE,
    amount: int | None = None,
    reason: str = "fraudulent",
    **fields: Any,
) -> Any:
    """A dispute of ``payment``'s charge (default: the whole amount, needing a response)."""
    disputed = payment.amount if amount is None else amount
    values: dict[str, Any] = {
        "payment": payment,
        "stripe_dispute_id": stripe_id("dp"),
        "stripe_charge_id": payment.stripe_charge_id or stripe_id("ch"),
        "amount": disputed,
        "currency": payment.currency,
        "status": status,
        "reason": reason,
        "evidence_due_by": timezone.now() + timedelta(days=7),
        "funds_withdrawn": disputed,
    }
    values.update(fields)
    return swappable.load("Dispute").objects.create(**values)


def make_payment_incident(
    payment: Any, *, kind: str = IncidentKind.PAYMENT_FAILED, **fields: Any
) -> Any:
    """An open incident about ``payment`` (default: its charge failed)."""
    values: dict[str, Any] = {
        "payment": payment,
        "kind": kind,
        "stripe_payment_intent_id": payment.stripe_payment_intent_id,
        "message": f"factory incident: {kind}",
    }
    values.update(fields)
    return swappable.load("PaymentIncident").objects.create(**values)


def make_transfer_incident(
    payment: Any, *, kind: str = IncidentKind.TRANSFER_FAILED, **fields: Any
) -> Any:
    """An open incident about money sent to ``payment``'s payee (default: a failed transfer)."""
    values: dict[str, Any] = {
        "payment": payment,
        "kind": kind,
        "destination_account_id": payment.destination_account_id,
        "amount": payment.amount - payment.platform_fee,
        "currency": payment.currency,
        "message": f"factory incident: {kind}",
    }
    values.update(fields)
    return swappable.load("TransferIncident").objects.create(**values)


def make_webhook_event(
    event_type: str = "payment_intent.succeeded",
    *,
    data_object: dict[str, Any] | None = None,
    status: str = WebhookEventStatus.PROCESSED,
    account: str = "",
    **fields: Any,
) -> Any:
    """A recorded webhook event (default: processed, on the platform endpoint).

    ``account`` makes it a Connect event. The payload is a minimal Stripe
    event around ``data_object``.
    """
    event_id = fields.pop("stripe_event_id", None) or stripe_id("evt")
    data_object = data_object or {"id": stripe_id("pi"), "object": event_type.split(".")[0]}
    now = timezone.now()
    payload: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(now.timestamp()),
        "livemode": False,
        "data": {"object": data_object},
    }
    if account:
        payload["account"] = account
    values: dict[str, Any] = {
        "stripe_event_id": event_id,
        "type": event_type,
        "endpoint": WebhookEndpoint.CONNECT if account else WebhookEndpoint.PLATFORM,
        "account": account,
        "object_id": str(data_object.get("id", "")),
        "stripe_created": now,
        "payload": payload,
        "status": status,
        "processed_at": now if status == WebhookEventStatus.PROCESSED else None,
    }
    values.update(fields)
    return swappable.load("WebhookEvent").objects.create(**values)
