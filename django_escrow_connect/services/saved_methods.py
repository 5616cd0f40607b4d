"""Saved payment methods: the payer's consent, their Customer, the card Stripe keeps.

A payer may agree, per payment, to save the card they pay with so that a
later tip can be charged without them (docs/tips.md, "Off-session tips").
The platform allows it with ``SAVE_PAYMENT_METHODS`` (it must show the
consent text Stripe requires first). The consent's time is stored on the
payment: it is the audit trail of every later charge without the payer.

Reusing a card needs a Stripe **Customer**. One is found or created per
payer: a payer's later payment reuses the ``stripe_customer_id`` of their
latest payment that has one. Creating it is a journaled call (kind
``customer``, key ``...:payment:<id>:customer:<n>``): the key is committed
before the call, Stripe is called with no transaction open, and a crashed
call is finished with the same key (Stripe answers with the Customer it
made, never a second one). Its outcome commits the payment's PaymentIntent
operation, which then carries ``customer`` and
``setup_future_usage="off_session"``.

When that PaymentIntent succeeds (the webhook, the synchronous answer, or
``escrow_reconcile``), :func:`record_saved_payment_method` keeps its
``payment_method``. :func:`withdraw_saved_payment_method` ends the consent
and detaches the card at Stripe.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import permissions
from ..conf import escrow_settings
from ..exceptions import GatewayError
from ..gateway.types import PaymentIntentSnapshot
from ..states import MoneyOperationKind, PaymentStatus
from . import errors, operations
from .common import gateway, lock_payment, payment_model, translate

__all__ = [
    "check_saving_allowed",
    "customer_request",
    "known_customer",
    "record_saved_payment_method",
    "withdraw_saved_payment_method",
]

logger = logging.getLogger("django_escrow_connect.payments")

K = MoneyOperationKind

#: Stripe errors of a detach that mean the card is not attached (any more).
_ALREADY_DETACHED = ("resource_missing", "payment_method_unexpected_state")


def check_saving_allowed() -> None:
    """Refuse a payer's request to save their card when the platform does not offer it."""
    if not escrow_settings.SAVE_PAYMENT_METHODS:
        raise errors.InvalidInput(
            _("This platform does not save payment methods."),
            code="saving_payment_methods_off",
        )


def known_customer(payer: Any) -> str:
    """The payer's Stripe Customer, from their latest payment that has one ("" if none)."""
    return (
        payment_model()
        .objects.filter(payer=payer)
        .exclude(stripe_customer_id="")
        .order_by("-created_at")
        .values_list("stripe_customer_id", flat=True)
        .first()
        or ""
    )


def customer_request(payment: Any, key: str) -> dict[str, Any]:
    """The payer's Customer (``create_customer``): ids only, no personal data."""
    return {
        "metadata": {
            **operations.operation_metadata(payment, key),
            "escrow_payer_id": str(payment.payer_id),
        },
        "description": f"Payer {payment.payer_id} of escrow payments",
    }


# --------------------------------------------------------------------------
# Phase 3 of the ``customer`` operation (outcomes dispatches here, payment locked)
# --------------------------------------------------------------------------


def customer_created(payment: Any, operation: Any, customer: Any, *, event_id: str = "") -> None:
    """Keep the Customer and commit the PaymentIntent operation that uses it.

    The operation's ``follow_up`` holds the PaymentIntent's request as
    ``create_payment`` built it before the Customer existed; it only lacks
    the Customer and the card's saving.
    """
    operation.mark_succeeded(customer.id)
    operation.save()
    if not payment.stripe_customer_id:
        payment.stripe_customer_id = customer.id
        payment.save(update_fields=["stripe_customer_id", "updated_at"])
    if payment.stripe_payment_intent_id or not payment.intent_idempotency_key:
        return
    if payment.operations.filter(idempotency_key=payment.intent_idempotency_key).exists():
        return
    if payment.status != PaymentStatus.AWAITING_PAYMENT:
        return
    request = {
        **operation.follow_up["intent_request"],
        "customer": payment.stripe_customer_id,
        "setup_future_usage": "off_session",
    }
    operations.begin(
        payment,
        K.PAYMENT_INTENT,
        request,
        amount=payment.amount,
        user=operation.requested_by,
        key=payment.intent_idempotency_key,
        attempt=0,
    )


# --------------------------------------------------------------------------
# Stripe's facts: the card saved by the payment's PaymentIntent
# --------------------------------------------------------------------------


def record_saved_payment_method(payment: Any, snapshot: PaymentIntentSnapshot) -> bool:
    """Keep the card a succeeded PaymentIntent saved; True when it was recorded now.

    Only for a payment whose payer consented (and has not withdrawn), whose
    PaymentIntent asked to save the card for off-session use, for the
    payment's own Customer. Repeated or late events change nothing.
    """
    if not payment.saves_payment_method or payment.saved_payment_method_id:
        return False
    if snapshot.setup_future_usage != "off_session" or not snapshot.payment_method:
        return False
    if not payment.stripe_customer_id or snapshot.customer != payment.stripe_customer_id:
        return False
    payment.saved_payment_method_id = snapshot.payment_method
    payment.save(update_fields=["saved_payment_method_id", "updated_at"])
    logger.info(
        "payment method saved for off-session charges",
        extra={"payment_id": str(payment.pk)},
    )
    return True


# --------------------------------------------------------------------------
# The payer withdraws their consent
# --------------------------------------------------------------------------


def withdraw_saved_payment_method(payment_id: Any, user: Any) -> Any:
    """End the payer's consent and detach the saved card at Stripe; return the payment.

    The withdrawal commits first: from then on no tip is charged
    off-session. The detach follows with no transaction open; the card id is
    forgotten only once Stripe confirms it (or says it is not attached), so
    a detach that failed is sent again by the next call. Repeating it is
    harmless.
    """
    with transaction.atomic():
        payment = lock_payment(payment_id)
        if not permissions.is_payer(user, payment) and not permissions.is_platform_staff(user):
            raise errors.Forbidden(
                _("Only the customer who paid can withdraw the saved payment method.")
            )
        if payment.payment_method_consent_at is None:
            raise errors.TransitionNotAllowed(
                _("This payment did not save a payment method."), code="no_saved_payment_method"
            )
        if payment.payment_method_consent_withdrawn_at is None:
            payment.payment_method_consent_withdrawn_at = timezone.now()
            payment.save(update_fields=["payment_method_consent_withdrawn_at", "updated_at"])
        method = payment.saved_payment_method_id
    if not method:
        return payment
    try:
        gateway().detach_payment_method(method)
    except GatewayError as exc:
        if exc.code not in _ALREADY_DETACHED:
            raise translate(exc, _("detach the saved payment method")) from exc
    with transaction.atomic():
        payment = lock_payment(payment_id)
        if payment.saved_payment_method_id == method:
            payment.saved_payment_method_id = ""
            payment.save(update_fields=["saved_payment_method_id", "updated_at"])
    logger.info("saved payment method withdrawn", extra={"payment_id": str(payment.pk)})
    return payment
