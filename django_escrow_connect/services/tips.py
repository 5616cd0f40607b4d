"""Tips: the customer adds money on a released payment, for the payee(s).

A tip is charged on a PaymentIntent of its own (never added to the escrowed
payment: its amount, refunds and books stay what they were) and, once Stripe
says it succeeded, transferred to each recipient with ``source_transaction``
= the tip's charge, less the ``TIP_FEE`` policy (none by default).

Both Stripe calls are money operations of the payment's journal
(:mod:`.operations`), kinds ``tip_intent`` and ``tip_transfer``: the key and
request are committed first, Stripe is called with no transaction open, the
outcome is committed after. The journal's rule holds: a payment has at most
one unresolved operation, so a tip waits for (or settles) whatever else is
in flight on its payment, and the other way round.

The customer is always present: the tip's PaymentIntent is created without
a payment method and its ``client_secret`` goes back to the browser, which
confirms it like the payment itself (3-D Secure included). Charging a saved
payment method off-session would need the payment to have saved it with the
customer's consent (a Customer and ``setup_future_usage``), which the
package does not do yet (docs/tips.md).

Whatever happens, the rows converge on Stripe's facts: ``payment_intent.*``
events carrying ``escrow_tip_id`` and ``transfer.*`` events of tip transfers
update the tip, never the payment's state; ``escrow_reconcile`` finishes a
tip whose call or transfer a crash interrupted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from ..exceptions import GatewayError
from ..fees import compute_tip_fee
from ..gateway.types import PaymentIntentSnapshot, TransferSnapshot
from ..money import InvalidAmount, validate_minor_amount
from ..notifications import notify
from ..states import (
    UNRESOLVED_OPERATION_STATES,
    IncidentKind,
    MoneyOperationKind,
    TipStatus,
    TipTransferStatus,
)
from ..states import PaymentStatus as S
from . import errors, operations
from .common import idempotency_key, lock_payment, model, translate

__all__ = [
    "TIPPABLE_PAYMENT_STATES",
    "TipStart",
    "apply_tip_payment_intent",
    "apply_tip_transfer",
    "create_tip",
    "max_tip_amount",
    "retry_tip_transfer",
    "tip_intent_request",
    "tip_recipients",
    "tip_transfer_request",
    "transfer_tip",
]

logger = logging.getLogger("django_escrow_connect.payments")

K = MoneyOperationKind
T = TipStatus

#: The payment states a tip may be added in: the doer has been paid. (A
#: partial release, when the package has one, belongs here too.)
TIPPABLE_PAYMENT_STATES: tuple[str, ...] = (S.RELEASED, S.PARTIALLY_REFUNDED)

#: How many unresolved operations one tip request settles before giving up.
_MAX_STEPS = 6


def tip_model() -> Any:
    return model("EscrowTip")


def tip_transfer_model() -> Any:
    return model("EscrowTipTransfer")


@dataclass(frozen=True)
class TipStart:
    """A new tip and what the customer's browser needs to pay it: never stored."""

    tip: Any
    #: The PaymentIntent's client secret, for the customer to confirm the tip.
    client_secret: str | None


def max_tip_amount(currency: str) -> int | None:
    """The largest tip in ``currency`` (minor units), or None: no tips in it."""
    from ..conf import escrow_settings

    table = escrow_settings.TIP_MAX_AMOUNT or {}
    value = table.get(currency.lower()) if isinstance(table, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def tip_recipients(tip: Any) -> list[tuple[str, int]]:
    """Who receives a tip and how much: ``[(connected account id, amount)]``.

    The one place that decides it. Today the payment's payee receives the
    whole tip less the platform's ``TIP_FEE`` share; a payment split between
    several payees would return one entry per payee here (the amounts must
    add up to ``tip.amount - tip.platform_fee``). An entry of 0 is left out.
    """
    net = tip.amount - tip.platform_fee
    return [(tip.payment.destination_account_id, net)] if net > 0 else []


def _log(tip: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
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
    """The tip's PaymentIntent (``create_payment_intent``): charged on the platform."""
    return {
        "amount": tip.amount,
        "currency": tip.currency,
        "transfer_group": tip.transfer_group,
        "metadata": _metadata(tip, tip.intent_idempotency_key),
        "capture_method": "automatic",
        "description": f"Tip for {tip.payment.task}"[:500],
    }


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
# Adding a tip
# --------------------------------------------------------------------------


def create_tip(payment_id: Any, user: Any, amount: Any) -> TipStart:
    """The payer adds a tip of ``amount`` minor units to a released payment.

    Several tips per payment are allowed, each on its own PaymentIntent. The
    tip and its PaymentIntent operation are committed before Stripe is
    called; the answer's client secret is returned for the customer to
    confirm the tip, and ``payment_intent.succeeded`` then transfers it.
    """
    for _step in range(_MAX_STEPS):
        with transaction.atomic():
            payment = lock_payment(payment_id)
            if payment.payer_id != getattr(user, "pk", None):
                raise errors.Forbidden(_("Only the customer who paid can add a tip."))
            pending = operations.unresolved_operation(payment)
            if pending is None:
                tip, operation = _begin_tip(payment, user, amount)
        if pending is not None:
            # Something else is in flight on the payment: settle it first (a
            # tip creation left by a crash included; it is not this one).
            from . import outcomes

            outcomes.drive(pending, wanted=False)
            continue
        from . import outcomes

        outcome = operations.send(operation)
        outcomes.apply_outcome(operation, outcome)
        tip.refresh_from_db()
        _log(tip, "tip created")
        return TipStart(tip=tip, client_secret=outcome.result.client_secret)
    raise errors.OperationInFlight(
        _("The payment kept changing while this request ran; try again.")
    )


def _begin_tip(payment: Any, user: Any, amount: Any) -> tuple[Any, Any]:
    if payment.status not in TIPPABLE_PAYMENT_STATES:
        raise errors.TransitionNotAllowed(
            _("A tip can be added only once the payment is released."), code="not_tippable"
        )
    limit = max_tip_amount(payment.currency)
    if limit is None:
        raise errors.InvalidInput(
            _("Tips are not available for payments in this currency."), code="tips_unavailable"
        )
    try:
        validate_minor_amount(amount, payment.currency)
    except (InvalidAmount, TypeError) as exc:
        raise errors.InvalidInput(str(exc), code="invalid_amount") from exc
    if not 1 <= amount <= limit:
        raise errors.InvalidInput(
            _("A tip must be between 1 and %(limit)s (minor units).") % {"limit": limit},
            code="invalid_amount",
        )
    Tip = tip_model()
    tip = Tip(
        payment=payment,
        payer=user,
        amount=amount,
        currency=payment.currency,
        platform_fee=compute_tip_fee(amount, payment.currency),
    )
    tip.intent_idempotency_key = idempotency_key("tip", tip.pk, "intent", 0)
    tip.save(force_insert=True)
    operation = operations.begin(
        payment,
        K.TIP_INTENT,
        tip_intent_request(tip),
        amount=amount,
        user=user,
        key=tip.intent_idempotency_key,
        attempt=0,
    )
    return tip, operation


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


def tip_intent_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    operations.record_failed(operation, exc)
    _give_up_on_tip(_tip_of(operation), exc.code or "", exc.message)
    return translate(exc, _("create the tip"))


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
    _mark_transferred_if_done(tip)
    return row


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
        message=f"Tip {tip.pk if tip is not None else '?'}: {exc.message}",
        stripe_request_id=exc.request_id or "",
        destination_account_id=operation.request.get("destination", ""),
        amount=operation.amount,
        currency=payment.currency,
    )
    if tip is not None and can_proceed(tip.mark_transfer_failed):
        tip.mark_transfer_failed(exc.code or "", exc.message)
        tip.save()
        _log(tip, "tip transfer failed: %s", exc.code or exc.message, level=logging.WARNING)
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


def lookup_tip_intent(operation: Any, g: Any) -> Any:
    """The tip's PaymentIntent when an event already named it, else None.

    Stripe cannot list PaymentIntents by metadata; a PaymentIntent that was
    made but never recorded reaches the tip through its own events.
    """
    tip = tip_model().objects.filter(intent_idempotency_key=operation.idempotency_key).first()
    if tip is None or not tip.stripe_payment_intent_id:
        return None
    return g.retrieve_payment_intent(tip.stripe_payment_intent_id)


def _mark_transferred_if_done(tip: Any) -> None:
    if tip.status not in (T.PAID, T.TRANSFER_FAILED):
        return
    live = {
        (t.destination_account_id, t.amount)
        for t in tip.transfers.filter(status=TipTransferStatus.CREATED)
    }
    if all((account, amount) in live for account, amount in tip_recipients(tip)):
        tip.mark_transferred()
        tip.save()
        _log(tip, "tip transferred")


# --------------------------------------------------------------------------
# Stripe's facts about the tip's PaymentIntent (webhooks, the answer, reconcile)
# --------------------------------------------------------------------------


def apply_tip_payment_intent(snapshot: PaymentIntentSnapshot, *, event_id: str = "") -> Any:
    """A ``payment_intent.*`` event of a tip: bring the tip in line; return it.

    Runs inside the webhook's transaction. The payment's own state is never
    touched. Raises :class:`~.errors.UnknownObject` when the tip row does not
    exist (yet): the event is deferred.
    """
    tip_id = snapshot.metadata.get("escrow_tip_id")
    if operations.is_other_installation(snapshot.metadata):
        return None
    tip = tip_model().objects.filter(pk=_uuid(tip_id)).first() if tip_id else None
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


def _uuid(value: Any) -> Any:
    import uuid

    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _apply_intent_status(payment: Any, tip: Any, intent: Any, *, event_id: str = "") -> None:
    if intent.amount != tip.amount or str(intent.currency).lower() != tip.currency:
        # Never transfer money that does not match the tip.
        _log(tip, "tip PaymentIntent amount mismatch: %s", intent.id, level=logging.ERROR)
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
            _log(tip, "tip paid")
            notify("tip_paid", payment=payment, tip=tip)
            tip_pk = tip.pk
            transaction.on_commit(lambda: _transfer_after_commit(tip_pk))
        elif not tip.stripe_charge_id and intent.latest_charge:
            tip.stripe_charge_id = intent.latest_charge
            tip.save(update_fields=["stripe_charge_id", "updated_at"])
    elif status == "requires_payment_method" and intent.last_payment_error:
        if can_proceed(tip.mark_failed):
            error = intent.last_payment_error or {}
            tip.mark_failed(error.get("code") or "", error.get("message") or "")
            tip.save()
            _log(tip, "tip payment failed: %s", tip.failure_code)
    elif status == "canceled" and can_proceed(tip.mark_canceled):
        tip.mark_canceled(intent.cancellation_reason or "")
        tip.save()


def _transfer_after_commit(tip_pk: Any) -> None:
    """Transfer a tip that has just been paid; a failure is left for a retry.

    Runs after the commit that recorded the payment (no transaction open). A
    crash or an error here leaves the tip ``paid`` (or its transfer
    operation pending): ``escrow_reconcile`` transfers it.
    """
    try:
        transfer_tip(tip_pk)
    except errors.ServiceError as exc:
        logger.warning(
            "tip transfer not done now: %s",
            exc.message,
            extra={"tip_id": str(tip_pk), "code": exc.code},
        )


# --------------------------------------------------------------------------
# Transferring a paid tip
# --------------------------------------------------------------------------


def transfer_tip(tip_id: Any) -> Any:
    """Send a paid tip to its recipients, one transfer each; return the tip.

    Each transfer is a journaled money operation with its own key
    (``tip:<id>:transfer-<account>:<attempt>``); a recipient is never paid
    twice (a unique index on the live transfer per recipient, and the key).
    A tip that is not ``paid`` is returned unchanged.
    """
    from . import outcomes

    payment_id = tip_model().objects.values_list("payment_id", flat=True).get(pk=tip_id)
    for _step in range(_MAX_STEPS + len(_recipients_of(tip_id))):
        with transaction.atomic():
            payment = lock_payment(payment_id)
            tip = tip_model().objects.select_for_update().get(pk=tip_id)
            if tip.status != T.PAID:
                return tip
            pending = operations.unresolved_operation(payment)
            if pending is None:
                operation = _begin_next_transfer(payment, tip)
                if operation is None:
                    return tip_model().objects.get(pk=tip_id)
        if pending is None:
            outcomes.execute(operation)
        else:
            outcomes.drive(pending, wanted=pending.kind == K.TIP_TRANSFER)
    raise errors.OperationInFlight(
        _("The payment kept changing while this request ran; try again.")
    )


def _recipients_of(tip_id: Any) -> list[tuple[str, int]]:
    return tip_recipients(tip_model().objects.select_related("payment").get(pk=tip_id))


def _begin_next_transfer(payment: Any, tip: Any) -> Any:
    """Phase 1 of the next recipient's transfer; None (tip transferred) when none is left."""
    for destination, amount in tip_recipients(tip):
        done = tip.transfers.filter(
            destination_account_id=destination,
            status__in=[TipTransferStatus.PENDING, TipTransferStatus.CREATED],
        )
        if done.exists():
            continue
        if not tip.stripe_charge_id:
            raise errors.Conflict(
                _("The tip's charge is not known yet; try again shortly."), code="charge_pending"
            )
        attempt = tip.transfers.filter(destination_account_id=destination).count()
        key = idempotency_key("tip", tip.pk, f"transfer-{destination}", attempt)
        operation = operations.begin(
            payment,
            K.TIP_TRANSFER,
            tip_transfer_request(tip, destination, amount, key),
            amount=amount,
            key=key,
            attempt=attempt,
        )
        tip_transfer_model().objects.create(
            tip=tip,
            destination_account_id=destination,
            amount=amount,
            currency=tip.currency,
            idempotency_key=key,
        )
        return operation
    _mark_transferred_if_done(tip)
    return None


def retry_tip_transfer(tip_id: Any, user: Any = None, *, system: bool = False) -> Any:
    """Send a tip whose transfer Stripe refused again (staff, or ``system``)."""
    if not system and not getattr(user, "is_staff", False):
        raise errors.Forbidden(_("Only platform staff can retry a tip transfer."))
    with transaction.atomic():
        tip = tip_model().objects.filter(pk=_uuid(tip_id)).first()
        if tip is None:
            raise errors.NotFound(_("No such tip."))
        lock_payment(tip.payment_id)
        tip = tip_model().objects.select_for_update().get(pk=tip.pk)
        if tip.status == T.TRANSFER_FAILED:
            tip.retry_transfer()
            tip.save()
        elif tip.status != T.PAID:
            raise errors.TransitionNotAllowed(
                _("Only a paid tip whose transfer failed can be retried.")
            )
    return transfer_tip(tip.pk)


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
        _mark_transferred_if_done(tip_model().objects.select_for_update().get(pk=row.tip_id))
    return row


# --------------------------------------------------------------------------
# escrow_reconcile: tips a crash or a lost event left behind
# --------------------------------------------------------------------------


def reconcile_tips(
    *, dry_run: bool = False, payment_id: Any = None, cutoff: Any = None
) -> list[Any]:
    """Transfer paid tips whose transfer never ran; catch up with tip PaymentIntents.

    A tip left ``paid`` (a crash after the payment was recorded, before or
    during the transfer, or an operation in the way) is transferred: the
    journal has already settled its unresolved operation, so the same key
    is not sent twice. A tip still awaiting its payment is looked up (a lost
    ``payment_intent.succeeded``). Refused transfers (``transfer_failed``)
    wait for staff (``retry-transfer``), like a refused release.
    """
    from .changes import Change, failed_change

    tips = tip_model().objects.all()
    if payment_id is not None:
        tips = tips.filter(payment_id=payment_id)
    elif cutoff is not None:
        tips = tips.filter(updated_at__lte=cutoff)
    changes: list[Any] = []
    waiting = tips.filter(status__in=[T.AWAITING_PAYMENT, T.PROCESSING]).exclude(
        stripe_payment_intent_id=""
    )
    for tip in waiting.order_by("created_at"):
        if dry_run:
            changes.append(Change(str(tip.payment_id), "would look up tip", str(tip.pk)))
            continue
        try:
            from .common import gateway

            snapshot = gateway().retrieve_payment_intent(tip.stripe_payment_intent_id)
        except GatewayError as exc:
            changes.append(failed_change(tip.payment_id, f"look up tip {tip.pk}", exc))
            continue
        after = apply_tip_payment_intent(snapshot)
        if after is not None and after.status != tip.status:
            changes.append(
                Change(str(tip.payment_id), f"tip {tip.pk}: {tip.status} -> {after.status}")
            )
    for tip in tips.filter(status=T.PAID).order_by("created_at"):
        if dry_run:
            changes.append(Change(str(tip.payment_id), "would transfer tip", str(tip.pk)))
            continue
        try:
            after = transfer_tip(tip.pk)
        except errors.ServiceError as exc:
            changes.append(failed_change(tip.payment_id, f"transfer tip {tip.pk}", exc))
            continue
        changes.append(Change(str(tip.payment_id), f"tip {tip.pk}: paid -> {after.status}"))
    return changes
