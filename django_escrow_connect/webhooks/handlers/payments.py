"""``payment_intent.*`` and ``charge.*``: the customer's money arriving."""

from __future__ import annotations

from typing import Any

from ...gateway.types import ChargeSnapshot, PaymentIntentSnapshot
from ...services import payment_intents, stripe_objects, tip_refunds, tips
from ...services.common import lock_payment_for
from ...services.operations import is_other_installation
from ...services.shortcut import Shortcut
from ..context import EventContext
from . import PARSE_ERRORS, ignore_unless, note_payment, snapshot


def payment_intent(context: EventContext) -> None:
    """processing, succeeded, amount_capturable_updated, payment_failed, canceled."""
    intent = snapshot(context, PaymentIntentSnapshot)
    if intent.metadata.get("escrow_tip_id"):
        # A tip's own PaymentIntent: it moves the tip, never the payment.
        note_payment(
            context,
            ignore_unless(tips.apply_tip_payment_intent(intent, event_id=context.id), "Not ours."),
        )
        return
    if not _is_ours(intent):
        # Not created by this app: a missing row is not "late", it never comes.
        ignore_unless(lock_payment_for(payment_intent=intent.id), "Not an escrow payment.")
    elif is_other_installation(intent.metadata):
        # Another installation's on the same Stripe account (its own
        # escrow_namespace): no row of this one will ever have it, so it is
        # not deferred for seven days.
        ignore_unless(lock_payment_for(payment_intent=intent.id), "Another installation's payment.")
    note_payment(context, payment_intents.apply_payment_intent(intent, event_id=context.id))


def charge(context: EventContext) -> None:
    """charge.succeeded / charge.updated: remember the charge id (and capture deadline)."""
    payment = stripe_objects.apply_charge(snapshot(context, ChargeSnapshot), event_id=context.id)
    note_payment(context, ignore_unless(payment, "Not an escrow payment's charge."))


def charge_refunded(context: EventContext) -> None:
    """charge.refunded: catch up with refunds whose own events are missing."""
    charge = snapshot(context, ChargeSnapshot)
    payment = stripe_objects.apply_charge_refunded(
        charge, reads=context.fetched, event_id=context.id
    )
    if payment is None:
        # A tip's charge, refunded in the Stripe dashboard: recorded on the tip.
        payment = tip_refunds.apply_tip_charge_refunded(charge, event_id=context.id)
    note_payment(context, ignore_unless(payment, "Not an escrow payment's charge."))


# --- shortcuts: the common case in the event's own statement (webhooks/shortcuts.py) ---


def _is_ours(intent: PaymentIntentSnapshot) -> bool:
    return bool(intent.metadata.get("escrow_payment_id")) or (
        intent.transfer_group or ""
    ).startswith("escrow_")


def payment_intent_shortcut(payload: dict[str, Any], condition: str) -> Shortcut | None:
    """:func:`payment_intent` when it holds an escrow payment (not a tip's PaymentIntent)."""
    try:
        intent = PaymentIntentSnapshot.from_dict(payload["data"]["object"])
    except PARSE_ERRORS:
        return None  # the handler reports it
    if intent.metadata.get("escrow_tip_id") or not _is_ours(intent):
        return None
    return payment_intents.hold_shortcut(intent, condition=condition)


def charge_shortcut(payload: dict[str, Any], condition: str) -> Shortcut | None:
    """:func:`charge` when the charge is already recorded on its payment."""
    try:
        charge = ChargeSnapshot.from_dict(payload["data"]["object"])
    except PARSE_ERRORS:
        return None
    return stripe_objects.charge_shortcut(charge, condition=condition)
