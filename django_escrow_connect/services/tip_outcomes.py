"""Phase 3 of the tips' money operations, and Stripe's facts about tips.

The appliers here are what :mod:`.outcomes` dispatches to for the journal
kinds ``tip_intent`` and ``tip_transfer`` (with the payment locked and the
operation re-read under that lock); :func:`apply_tip_payment_intent` and
:func:`apply_tip_transfer` bring a tip in line with a ``payment_intent.*`` or
``transfer.*`` event. The use cases are in :mod:`.tips`; see its docstring.
The payment's own state and books are never touched here.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from .. import transitions
from ..exceptions import GatewayError
from ..gateway.types import PaymentIntentSnapshot, TransferSnapshot
from ..money import amount_step
from ..notifications import notify
from ..states import (
    DISPUTE_CLOSED_STATES,
    DISPUTE_KEPT_STATES,
    UNRESOLVED_OPERATION_STATES,
    IncidentKind,
    MoneyOperationKind,
    PaymentStatus,
    TipStatus,
    TipTransferStatus,
    WebhookEventStatus,
)
from ..terms import split_amount
from . import errors, operations
from .common import lock_payment, model, refuses_the_amount, translate

logger = logging.getLogger("django_escrow_connect.payments")

K = MoneyOperationKind
T = TipStatus


def payment_frozen_states() -> frozenset[str]:
    """The payment states in which its own charge's dispute decides it (open
    or lost): those a release's outcome is booked from during a dispute."""
    return transitions.sources(model("EscrowPayment"), "release_during_dispute")


def tip_model() -> Any:
    return model("EscrowTip")


def tip_transfer_model() -> Any:
    return model("EscrowTipTransfer")


def tip_recipients(tip: Any) -> list[tuple[str, int]]:
    """Who receives a tip and how much: ``[(connected account id, amount)]``.

    The one place that decides it. A payment with one payee sends it the
    whole tip less the platform's ``TIP_FEE`` share. A payment split between
    several payees (docs/splits.md) shares the tip the way its net is shared:
    in proportion to each payee's basis points (or agreed amount), exactly,
    by largest remainder (:func:`~django_escrow_connect.terms.split_amount`).
    The amounts add up to ``tip.amount - tip.platform_fee``; an entry of 0 is
    left out.
    """
    net = tip.amount - tip.platform_fee
    if net <= 0:
        return []
    payees = list(tip.payment.payees.order_by("position"))
    if len(payees) <= 1:
        destination = payees[0].destination_account_id if payees else ""
        return [(destination or tip.payment.destination_account_id, net)]
    weights = [p.basis_points if p.basis_points is not None else p.amount for p in payees]
    shares = split_amount(net, weights, unit=amount_step(tip.currency))
    return [
        (payee.destination_account_id, share)
        for payee, share in zip(payees, shares, strict=True)
        if share > 0
    ]


def log_tip(tip: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    logger.log(
        level,
        message,
        *args,
        extra={"payment_id": str(tip.payment_id), "tip_id": str(tip.pk), "tip_status": tip.status},
    )


# --------------------------------------------------------------------------
# Requests (what the journal stores and the gateway is called with)
# --------------------------------------------------------------------------


def _metadata(tip: Any, key: str) -> dict[str, str]:
    return {**operations.operation_metadata(tip.payment, key), "escrow_tip_id": str(tip.pk)}


def tip_intent_request(tip: Any) -> dict[str, Any]:
    """The tip's PaymentIntent (``create_payment_intent``): charged on the platform.

    When the payment saved the payer's card with their consent (not
    withdrawn), the tip is charged on it at once, off-session; otherwise
    the customer confirms it in the browser.
    """
    request: dict[str, Any] = {
        "amount": tip.amount,
        "currency": tip.currency,
        "transfer_group": tip.transfer_group,
        "metadata": _metadata(tip, tip.intent_idempotency_key),
        "capture_method": "automatic",
        # Ids only: no task title (personal data) in Stripe, and stable across hosts.
        "description": f"Tip on escrow payment {tip.payment_id}",
    }
    saved = tip.payment.off_session_payment_method
    if saved:
        request.update(
            customer=tip.payment.stripe_customer_id,
            payment_method=saved,
            off_session=True,
            confirm=True,
        )
    return request


def charged_off_session(operation: Any) -> bool:
    """Whether a tip's PaymentIntent operation charges the saved card without the customer."""
    return bool(operation.request.get("off_session"))


def disputed_tips() -> Any:
    """Tips held by a dispute (their ids): nothing more is sent to the doer.

    A tip is held while its own charge has a dispute open (an inquiry too)
    or lost, and while its payment's own charge does (the payment
    ``disputed`` or ``dispute_lost``): the customer's bank says the work
    was not received or the card was not theirs, and the tip is for that
    same work, on the same card. Transferred now, the tip would be the
    doer's before the dispute is decided.
    """
    own = (
        model("Dispute")
        .objects.filter(tip__isnull=False)
        .exclude(status__in=sorted(DISPUTE_KEPT_STATES))
        .values("tip")
    )
    return (
        tip_model()
        .objects.filter(Q(pk__in=own) | Q(payment__status__in=payment_frozen_states()))
        .values("pk")
    )


def tip_charge_disputed(tip: Any) -> bool:
    """Whether the tip's own charge has a dispute open (an inquiry too) or lost."""
    own = model("Dispute").objects.filter(tip=tip.pk)
    return bool(own.exclude(status__in=sorted(DISPUTE_KEPT_STATES)).exists())


def payment_dispute_decided_lost(payment: Any) -> bool:
    """Whether the payment's own dispute is lost, with no appeal of it under way.

    Nothing is left to wait for: the tips it holds are the platform's to
    send (staff's ``retry-transfer``) or to give back.
    """
    if payment.status != PaymentStatus.DISPUTE_LOST:
        return False
    own = model("Dispute").objects.filter(payment=payment.pk, tip__isnull=True)
    return not own.exclude(status__in=sorted(DISPUTE_CLOSED_STATES)).exists()


def payment_dispute_was_lost(payment: Any) -> bool:
    """Whether the payment's own dispute was lost: still, or until an appeal was won.

    Meanwhile the platform may have refunded the tips it held in the Stripe
    Dashboard, which the package does not record (docs/tips.md).
    """
    if payment.status == PaymentStatus.DISPUTE_LOST:
        return True
    appealed = model("Dispute").objects.filter(
        payment=payment.pk, tip__isnull=True, appealed_at__isnull=False
    )
    return bool(appealed.exists())


#: The states of a webhook event not applied yet, nor given up: a dispute
#: event in one of them may still record a dispute.
EVENT_PENDING_STATES = (
    WebhookEventStatus.RECEIVED,
    WebhookEventStatus.FAILED,
    WebhookEventStatus.DEFERRED,
)


def dispute_waiting(tip: Any) -> Any:
    """The oldest dispute event naming the tip's charge not applied yet, or None.

    Stripe's events come in any order: ``charge.dispute.created`` can be
    delivered before the tip's ``payment_intent.succeeded`` (a lost or
    late delivery). It is deferred, not applied (:func:`require_tip_paid`),
    and is applied by ``escrow_reconcile``'s retry of deferred events. It is
    ``received`` before that: the deferral is written after the handler's
    rolled-back transaction, and under task processing until the worker
    runs; ``failed`` until a retry applies it. In every one of these states
    the tip's transfer waits, as it would for the dispute recorded; an event
    applied (``processed``: the Dispute row holds the tip, or not) or given
    up (``ignored``) holds nothing. Few events are pending, and the status
    is indexed.
    """
    found = Q()
    if tip.stripe_charge_id:
        found |= Q(payload__data__object__charge=tip.stripe_charge_id)
    if tip.stripe_payment_intent_id:
        found |= Q(payload__data__object__payment_intent=tip.stripe_payment_intent_id)
    if not found:
        return None
    pending = model("WebhookEvent").objects.filter(
        status__in=EVENT_PENDING_STATES, type__startswith="charge.dispute."
    )
    return pending.filter(found).only("stripe_event_id", "status").order_by("received_at").first()


def transfer_frozen_by_dispute(operation: Any) -> bool:
    """Whether a tip transfer operation's tip is held by a dispute (:func:`disputed_tips`).

    A transfer staff sent after the payment's own dispute was lost (their
    decision is on the operation: ``follow_up["after_loss"]``, see
    :func:`.tips.retry_tip_transfer`) is held only by what staff could not
    decide: a dispute of the tip's own charge, or the payment's dispute no
    longer decided lost (an appeal, another dispute). Otherwise whoever
    drives it next (``escrow_reconcile``) finishes it with its key, as the
    rest a lost dispute left is (``outcomes.drive``).
    """
    rows = tip_transfer_model().objects.filter(idempotency_key=operation.idempotency_key)
    if not operation.follow_up.get(operations.AFTER_LOSS):
        return bool(disputed_tips().filter(pk__in=rows.values("tip")).exists())
    tip = tip_model().objects.select_related("payment").filter(pk__in=rows.values("tip")).first()
    if tip is None:
        return False
    if tip_charge_disputed(tip):
        return True
    payment = tip.payment
    return payment.status in payment_frozen_states() and not payment_dispute_decided_lost(payment)


def tip_transfer_request(tip: Any, destination: str, amount: int, key: str) -> dict[str, Any]:
    """One recipient's share of a tip (``create_transfer``), funded by the tip's charge."""
    return {
        "amount": amount,
        "currency": tip.currency,
        "destination": destination,
        "source_transaction": tip.stripe_charge_id,
        "transfer_group": tip.transfer_group,
        "metadata": _metadata(tip, key),
    }


# --------------------------------------------------------------------------
# Phase 3 appliers (called by outcomes with the payment locked)
# --------------------------------------------------------------------------


def _tip_of(operation: Any) -> Any:
    if operation.kind == K.TIP_INTENT:
        return (
            tip_model()
            .objects.select_for_update()
            .filter(intent_idempotency_key=operation.idempotency_key)
            .first()
        )
    row = _transfer_row(operation)
    return tip_model().objects.select_for_update().get(pk=row.tip_id) if row is not None else None


def _transfer_row(operation: Any) -> Any:
    return (
        tip_transfer_model()
        .objects.select_for_update()
        .filter(idempotency_key=operation.idempotency_key)
        .first()
    )


def tip_intent_created(payment: Any, operation: Any, intent: Any, *, event_id: str = "") -> None:
    operation.mark_succeeded(intent.id)
    operation.save()
    tip = _tip_of(operation)
    if tip is None:
        return
    if not tip.stripe_payment_intent_id:
        tip.stripe_payment_intent_id = intent.id
        tip.save(update_fields=["stripe_payment_intent_id", "updated_at"])
    _apply_intent_status(payment, tip, intent, event_id=event_id)


def tip_intent_refused(
    payment: Any, operation: Any, exc: GatewayError
) -> errors.ServiceError | None:
    if exc.payment_intent is not None and charged_off_session(operation):
        # The saved card needs the customer (authentication_required) or was
        # declined: Stripe made the PaymentIntent all the same, and the
        # customer can confirm it on-session. It is the tip's PaymentIntent.
        tip_intent_created(payment, operation, exc.payment_intent)
        return None
    operations.record_failed(operation, exc)
    _give_up_on_tip(_tip_of(operation), exc.code or "", exc.message)
    return tip_refusal(exc)


def tip_refusal(exc: GatewayError) -> errors.ServiceError:
    """What the customer is told when Stripe refused a tip's PaymentIntent.

    An amount Stripe will not charge (its bounds apply in the currency the
    charge settles in, which the early check cannot know) is the same 400
    as the early check's: ``amount_too_small``, or ``invalid_amount`` above
    its largest charge. Another tip, of another amount, may be added.
    """
    if not refuses_the_amount(exc):
        return translate(exc, _("create the tip"))
    logger.warning("Stripe refused a tip's amount: %s", exc.message)
    if exc.code == "amount_too_small":
        return errors.InvalidInput(
            _("Stripe refused the tip as below its smallest charge: %(reason)s")
            % {"reason": exc.message},
            code="amount_too_small",
        )
    return errors.InvalidInput(
        _("Stripe refused the tip as above its largest charge: %(reason)s")
        % {"reason": exc.message},
        code="invalid_amount",
    )


def tip_intent_not_made(payment: Any, operation: Any) -> None:
    operation.mark_failed("not_made", "Stripe has no record of this PaymentIntent.")
    operation.save()
    _give_up_on_tip(_tip_of(operation), "not_made", "The PaymentIntent was never created.")


def _give_up_on_tip(tip: Any, code: str, message: str) -> None:
    # Nothing was charged: the customer never had a client secret. Should
    # Stripe report the PaymentIntent after all, its events find the tip.
    if tip is not None and can_proceed(tip.mark_canceled):
        tip.failure_message = message
        tip.mark_canceled(code)
        tip.save()


def tip_transfer_made(payment: Any, operation: Any, snapshot: Any, *, event_id: str = "") -> Any:
    operation.mark_succeeded(snapshot.id)
    operation.save()
    row = _transfer_row(operation)
    if row is None:
        return None
    if can_proceed(row.mark_created):
        row.mark_created(snapshot.id)
        row.save()
    tip = tip_model().objects.select_for_update().get(pk=row.tip_id)
    mark_transferred_if_done(tip)
    return row


#: How a tip's refused-transfer incident begins (the incident has no tip
#: link): what tells it from the payment's own transfers' incidents.
TIP_INCIDENT_PREFIX = "Tip "


def tip_transfer_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    """Stripe refused a tip transfer: the money stays on the platform, retryable."""
    operations.record_failed(operation, exc)
    row = _transfer_row(operation)
    if row is not None and can_proceed(row.mark_failed):
        row.mark_failed(code=exc.code or "", message=exc.message)
        row.save()
    tip = _tip_of(operation)
    incident = model("TransferIncident").objects.create(
        payment=payment,
        kind=IncidentKind.TRANSFER_FAILED,
        code=exc.code or "",
        message=f"{TIP_INCIDENT_PREFIX}{tip.pk if tip is not None else '?'}: {exc.message}",
        stripe_request_id=exc.request_id or "",
        destination_account_id=operation.request.get("destination", ""),
        amount=operation.amount,
        currency=payment.currency,
    )
    if tip is not None and can_proceed(tip.mark_transfer_failed):
        tip.mark_transfer_failed(exc.code or "", exc.message)
        tip.save()
        log_tip(tip, "tip transfer failed: %s", exc.code or exc.message, level=logging.WARNING)
        notify("tip_transfer_failed", payment=payment, tip=tip, incident=incident)
    return errors.Conflict(
        _(
            "Stripe refused the tip's transfer (%(code)s); the tip is kept "
            "and the transfer can be retried."
        )
        % {"code": exc.code or "error"},
        code="tip_transfer_failed",
    )


def tip_transfer_not_made(payment: Any, operation: Any) -> None:
    """Stripe has no such transfer: the tip stays paid; the next attempt gets a new key."""
    operation.mark_failed("not_made", "Stripe has no record of this transfer.")
    operation.save()
    row = _transfer_row(operation)
    if row is not None and can_proceed(row.mark_failed):
        row.mark_failed(code="not_made", message="Stripe has no record of this transfer.")
        row.save()


#: How much earlier than the operation Stripe's clock may date its PaymentIntent.
INTENT_LIST_CLOCK_SKEW = timedelta(minutes=10)


def lookup_tip_intent(operation: Any, g: Any) -> Any:
    """The PaymentIntent the tip's creation made at Stripe, or None: none was made.

    Known by an event already: read. Charged off-session on the saved card,
    it is found among the payer's Customer's PaymentIntents created since
    the operation (by its ``escrow_operation`` metadata): Stripe lists them
    at once, unlike its search by metadata, and the card may have been
    charged, so a tip Stripe charged is never given up for lack of an
    answer. A customer-present tip is not listed (no Customer): whatever
    Stripe made, nobody could pay it, since its client secret was never
    answered.
    """
    tip = tip_model().objects.filter(intent_idempotency_key=operation.idempotency_key).first()
    if tip is not None and tip.stripe_payment_intent_id:
        return g.retrieve_payment_intent(tip.stripe_payment_intent_id)
    customer = operation.request.get("customer")
    if not charged_off_session(operation) or not customer:
        return None
    since = operation.created_at - INTENT_LIST_CLOCK_SKEW
    try:
        intents = g.list_payment_intents(customer=customer, created_gte=since)
    except NotImplementedError:
        # A host's gateway without the hook (docs/gateways.md): as before it
        # existed, the tip is given up and only its events can find it.
        logger.warning(
            "the gateway cannot list PaymentIntents: tip creation %s not looked up",
            operation.idempotency_key,
        )
        return None
    for intent in intents:
        if intent.metadata.get("escrow_operation") == operation.idempotency_key:
            return intent
    return None


def mark_transferred_if_done(tip: Any) -> None:
    if tip.status not in (T.PAID, T.TRANSFER_FAILED):
        return
    live = {
        (t.destination_account_id, t.amount)
        for t in tip.transfers.filter(status=TipTransferStatus.CREATED)
    }
    if all((account, amount) in live for account, amount in tip_recipients(tip)):
        tip.mark_transferred()
        tip.save()
        log_tip(tip, "tip transferred")


def lock_tip_for(*, payment_intent: str | None, charge: str | None) -> tuple[Any, Any] | None:
    """``(payment, tip)`` of the tip with this PaymentIntent or charge, both locked; or None.

    For Stripe objects about a charge (disputes, Radar) that may be a tip's
    rather than a payment's. By the PaymentIntent when the object names one
    (a tip's always does; it is indexed, the charge id is not), else by the
    charge. The payment is locked first, as every tip applier does, so the
    two never wait on each other in opposite orders.
    """
    if payment_intent:
        found = Q(stripe_payment_intent_id=payment_intent)
    elif charge:
        found = Q(stripe_charge_id=charge)
    else:
        return None
    tip = tip_model().objects.filter(found).first()
    if tip is None:
        return None
    payment = lock_payment(tip.payment_id)
    return payment, tip_model().objects.select_for_update().get(pk=tip.pk)


def require_tip_paid(tip: Any, what: str) -> None:
    """Defer an event about a tip's money that, locally, has not arrived yet.

    Like :func:`~.stripe_objects.require_funded` for a payment: a tip that
    can still become paid has not seen Stripe's ``succeeded`` yet, and the
    event waits for it.
    """
    if can_proceed(tip.mark_paid):
        raise errors.UnknownObject(f"{what} arrived before the tip was paid; retried later.")


def tip_paid_out(tip: Any) -> dict[str, Any]:
    """What a tip had sent to its recipients: recorded on its dispute, not acted on.

    The tip itself is the dispute's ``tip``.
    """
    return {
        "transfers": [
            {
                "transfer": row.stripe_transfer_id,
                "destination": row.destination_account_id,
                "amount": row.amount,
            }
            for row in tip.transfers.filter(status=TipTransferStatus.CREATED).order_by("created_at")
        ],
    }


# --------------------------------------------------------------------------
# Stripe's facts about the tip's PaymentIntent (webhooks, the answer, reconcile)
# --------------------------------------------------------------------------


def apply_tip_payment_intent(snapshot: PaymentIntentSnapshot, *, event_id: str = "") -> Any:
    """A ``payment_intent.*`` event of a tip: bring the tip in line; return it.

    Runs inside the webhook's transaction. The payment's own state is never
    touched. Raises :class:`~.errors.UnknownObject` when the tip row does not
    exist (yet): the event is deferred.
    """
    with transaction.atomic():
        return _apply_tip_payment_intent(snapshot, event_id=event_id)


def _apply_tip_payment_intent(snapshot: PaymentIntentSnapshot, *, event_id: str) -> Any:
    tip_id = snapshot.metadata.get("escrow_tip_id")
    if operations.is_other_installation(snapshot.metadata):
        return None
    tip = tip_model().objects.filter(pk=parse_uuid(tip_id)).first() if tip_id else None
    if tip is None:
        tip = tip_model().objects.filter(stripe_payment_intent_id=snapshot.id).first()
    if tip is None:
        raise errors.UnknownObject(f"No tip has PaymentIntent {snapshot.id} (yet).")
    payment = lock_payment(tip.payment_id)
    tip = tip_model().objects.select_for_update().get(pk=tip.pk)
    if not tip.stripe_payment_intent_id:
        operation = payment.operations.filter(
            idempotency_key=tip.intent_idempotency_key, status__in=UNRESOLVED_OPERATION_STATES
        ).first()
        if operation is not None:
            # The creation's answer was not committed (in flight, or lost in
            # a crash): this event settles it, as the answer would have.
            tip_intent_created(payment, operation, snapshot, event_id=event_id)
            return tip_model().objects.get(pk=tip.pk)
        tip.stripe_payment_intent_id = snapshot.id
        tip.save(update_fields=["stripe_payment_intent_id", "updated_at"])
    _apply_intent_status(payment, tip, snapshot, event_id=event_id)
    return tip


def parse_uuid(value: Any) -> Any:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _apply_intent_status(payment: Any, tip: Any, intent: Any, *, event_id: str = "") -> None:
    if intent.amount != tip.amount or str(intent.currency).lower() != tip.currency:
        # Never transfer money that does not match the tip.
        log_tip(tip, "tip PaymentIntent amount mismatch: %s", intent.id, level=logging.ERROR)
        model("PaymentIncident").objects.get_or_create(
            payment=payment,
            kind=IncidentKind.AMOUNT_MISMATCH,
            stripe_payment_intent_id=intent.id,
            resolved_at__isnull=True,
            defaults={
                "message": f"Tip PaymentIntent {intent.id} is {intent.amount} {intent.currency}, "
                f"the tip is {tip.amount} {tip.currency}.",
                "stripe_event_id": event_id,
            },
        )
        return
    status = intent.status
    if status == "processing" and can_proceed(tip.mark_processing):
        tip.mark_processing()
        tip.save()
    elif status == "succeeded":
        if can_proceed(tip.mark_paid):
            tip.mark_paid(intent.latest_charge or "")
            tip.save()
            log_tip(tip, "tip paid")
            notify("tip_paid", payment=payment, tip=tip)
        elif not tip.stripe_charge_id and intent.latest_charge:
            tip.stripe_charge_id = intent.latest_charge
            tip.save(update_fields=["stripe_charge_id", "updated_at"])
    elif status == "requires_payment_method" and intent.last_payment_error:
        if can_proceed(tip.mark_failed):
            error = intent.last_payment_error or {}
            tip.mark_failed(error.get("code") or "", error.get("message") or "")
            tip.save()
            log_tip(tip, "tip payment failed: %s", tip.failure_code)
    elif status == "canceled" and can_proceed(tip.mark_canceled):
        tip.mark_canceled(intent.cancellation_reason or "")
        tip.save()


# --------------------------------------------------------------------------
# Stripe's facts about tip transfers (transfer.* events)
# --------------------------------------------------------------------------


def apply_tip_transfer(snapshot: TransferSnapshot, *, event_id: str = "") -> Any:
    """A ``transfer.*`` event of a tip transfer: confirm the row; return it.

    The payment's transfers and totals are never touched. The app's own
    transfer whose answer was not committed is finished by the event.
    """
    with transaction.atomic():
        return _apply_tip_transfer(snapshot, event_id=event_id)


def _apply_tip_transfer(snapshot: TransferSnapshot, *, event_id: str) -> Any:
    if operations.is_other_installation(snapshot.metadata):
        return None
    Row = tip_transfer_model()
    row = Row.objects.filter(stripe_transfer_id=snapshot.id).first()
    key = snapshot.metadata.get("escrow_operation", "")
    if row is None and key:
        row = Row.objects.filter(idempotency_key=key).first()
    if row is None:
        raise errors.UnknownObject(f"No tip transfer for {snapshot.id} (yet).")
    tip = tip_model().objects.get(pk=row.tip_id)
    payment = lock_payment(tip.payment_id)
    row = Row.objects.select_for_update().get(pk=row.pk)
    if row.status == TipTransferStatus.PENDING:
        operation = payment.operations.filter(
            idempotency_key=row.idempotency_key, status__in=UNRESOLVED_OPERATION_STATES
        ).first()
        if operation is not None:
            return tip_transfer_made(payment, operation, snapshot, event_id=event_id)
        row.mark_created(snapshot.id)
        row.save()
        mark_transferred_if_done(tip_model().objects.select_for_update().get(pk=row.tip_id))
    return row
