"""Bring a payment in line with what Stripe says about its PaymentIntent.

The webhook handlers (``payment_intent.*``) and the reconcile command both
call these functions with a snapshot from the gateway
(``PaymentIntentSnapshot.from_dict(event["data"]["object"])`` or a fresh
``retrieve_*``). They are idempotent and tolerate events out of order: a
snapshot that would move a payment backwards (``processing`` after
``succeeded``) changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone
from django_fsm import can_proceed

from .. import transitions
from ..base.models import AbstractEscrowPayment
from ..gateway.types import PaymentIntentSnapshot
from ..notifications import notify
from ..states import (
    UNRESOLVED_OPERATION_STATES,
    EscrowStrategy,
    IncidentKind,
    MoneyOperationKind,
)
from ..states import PaymentStatus as S
from . import conditional, errors, outcomes, saved_methods
from .common import model, payment_model
from .operations import is_other_installation
from .shortcut import Shortcut
from .task_status import log_unmoved, move_task_status, sync_task_status, task_move

logger = logging.getLogger("django_escrow_connect.sync")

__all__ = ["MANUAL_CAPTURE_WINDOW", "apply_payment_intent"]

#: Stripe voids an uncaptured card authorisation after 7 days (customer
#: initiated). The provisional deadline of a hold whose charge has not been
#: seen yet is counted from the PaymentIntent's creation, which precedes the
#: authorisation, so the estimate is never later than Stripe's deadline.
MANUAL_CAPTURE_WINDOW = timedelta(days=7)


def _log(payment: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    logger.log(
        level,
        message,
        *args,
        extra={"payment_id": str(payment.pk), "payment_status": payment.status},
    )


def apply_payment_intent(snapshot: PaymentIntentSnapshot, *, event_id: str = "") -> Any:
    """Apply a PaymentIntent's Stripe status to its escrow payment; return the payment.

    ==========================  ==================================================
    ``snapshot.status``         effect
    ==========================  ==================================================
    ``processing``              awaiting payment -> processing
    ``succeeded`` (automatic)   -> held (the charge id is kept for the transfer)
    ``requires_capture``        -> held, with ``capture_before``
    ``succeeded`` (manual)      held/releasing -> released (capture confirmed);
                                captured for less than the amount (outside
                                the app): released for what was captured
                                (``amount_captured``) + incident
    ``requires_payment_method`` with ``last_payment_error``: -> failed + incident
    ``canceled``                -> canceled (+ incident if Stripe canceled it,
                                e.g. an authorisation that lapsed)
    ==========================  ==================================================

    Raises :class:`~.errors.UnknownObject` when no payment has this
    PaymentIntent yet (the webhook pipeline defers the event). An amount or
    currency that differs from the payment's is recorded as an incident and
    never moves money into escrow.
    """
    payment = _hold_in_one_statement(snapshot)
    if payment is not None:
        return payment
    Payment = payment_model()
    with transaction.atomic():
        # The task comes with the payment (its status follows the payment's);
        # only the payment row is locked.
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("task")
            .filter(stripe_payment_intent_id=snapshot.id)
            .first()
        )
        if payment is None:
            payment = _payment_being_created(snapshot)
        if payment is None:
            raise errors.UnknownObject(f"No escrow payment has PaymentIntent {snapshot.id}.")
        if snapshot.amount != payment.amount or snapshot.currency.lower() != payment.currency:
            outcomes.record_amount_mismatch(payment, snapshot, event_id)
            return payment
        status = snapshot.status
        if status == "processing":
            if can_proceed(payment.mark_processing):
                payment.mark_processing()
                payment.save()
                sync_task_status(payment)
        elif status == "requires_capture":
            _authorised(payment, snapshot)
            saved_methods.record_saved_payment_method(payment, snapshot)
        elif status == "succeeded":
            _succeeded(payment, snapshot, event_id)
            saved_methods.record_saved_payment_method(payment, snapshot)
        elif status == "requires_payment_method" and snapshot.last_payment_error:
            _failed(payment, snapshot, event_id)
        elif status == "canceled":
            _canceled(payment, snapshot, event_id)
        return payment


@dataclass(frozen=True)
class _Hold:
    """The conditional ``UPDATE`` that holds a payment, and its task's move."""

    assignments: dict[str, Any]
    where: dict[str, Any]
    where_in: dict[str, Any]
    task_model: Any
    #: The task's target and the states it leaves from (None: move it with the ORM).
    task: tuple[str, frozenset[str]] | None


def _hold_spec(snapshot: PaymentIntentSnapshot) -> _Hold | None:
    """The common case of :func:`apply_payment_intent` as one conditional ``UPDATE``.

    ``succeeded`` (automatic capture) and ``requires_capture`` move a payment
    that ``mark_held`` may leave from, whose amount and currency match, to
    ``held``, writing exactly the columns :func:`_authorised` / :func:`_hold`
    would. ``None`` when the fast path does not apply (the locked read then
    handles everything: an unknown PaymentIntent, a mismatch, a payment
    already held, a manual-capture ``succeeded``, a card being saved).
    """
    if snapshot.status not in ("succeeded", "requires_capture"):
        return None
    if snapshot.setup_future_usage and snapshot.payment_method:
        # A card saved for later: the locked path records it (saved_methods).
        return None
    authorised = snapshot.status == "requires_capture"
    Payment = payment_model()
    if not conditional.usable(Payment, AbstractEscrowPayment, ["mark_held"]):
        return None
    now = timezone.now()
    # mark_held's body: held_at, and a failure of an earlier attempt forgotten.
    assignments: dict[str, Any] = {
        "status": S.HELD,
        "held_at": now,
        "failure_code": "",
        "failure_message": "",
        "updated_at": now,
    }
    if snapshot.latest_charge:
        assignments["stripe_charge_id"] = snapshot.latest_charge
    where: dict[str, Any] = {
        "stripe_payment_intent_id": snapshot.id,
        "amount": snapshot.amount,
        "currency": snapshot.currency.lower(),
    }
    where_in: dict[str, Any] = {"status": transitions.sources(Payment, "mark_held")}
    if authorised:
        # _capture_deadline: Stripe's deadline, else the one already known,
        # else the conservative estimate.
        estimate = (snapshot.created or now) + MANUAL_CAPTURE_WINDOW
        assignments["capture_before"] = (
            snapshot.capture_before
            if snapshot.capture_before is not None
            else conditional.Raw("COALESCE({column}, %s)", (estimate,))
        )
    else:
        # A manual-capture payment's "succeeded" is its capture: the locked path.
        where_in["strategy"] = [
            s for s in EscrowStrategy.values if s != EscrowStrategy.MANUAL_CAPTURE
        ]
    task_model = Payment.task.field.related_model
    return _Hold(assignments, where, where_in, task_model, task_move(task_model, S.HELD))


def _follow_task(hold: _Hold) -> conditional.Follow:
    assert hold.task is not None
    target, allowed = hold.task
    return conditional.Follow(
        hold.task_model,
        via="task",
        assignments={"payment_status": target},
        where_in={"payment_status": allowed},
    )


def _held(hold: _Hold, payment: Any, moved: int) -> Any:
    """After the one statement held ``payment``: log and notify (on commit)."""
    if not moved and hold.task is not None:
        log_unmoved(hold.task_model, payment.task_id, payment.pk, hold.task[0])
    _log(payment, "payment held")
    notify("payment_held", payment=payment)
    return payment


def hold_shortcut(snapshot: PaymentIntentSnapshot, *, condition: str) -> Shortcut | None:
    """The hold as ``WITH`` items the webhook pipeline joins to the event's insert.

    PostgreSQL only (the payment and its task in one statement). The event is
    recorded ``processed`` only when ``changed`` has the payment; otherwise it
    is recorded ``received`` and the handler runs as usual (:mod:`..webhooks.shortcuts`).
    """
    hold = _hold_spec(snapshot)
    Payment = payment_model()
    if hold is None or hold.task is None or not conditional.can_follow(Payment):
        return None
    ctes, params = conditional.follow_ctes(
        Payment,
        assignments=hold.assignments,
        where=hold.where,
        where_in=hold.where_in,
        follow=_follow_task(hold),
        condition=condition,
    )
    connection = connections[router.db_for_write(Payment)]
    columns = [f"changed.{column}" for column in conditional.changed_columns(Payment, connection)]
    columns.append("(SELECT count(*) FROM followed)")

    def finish(values: tuple[Any, ...]) -> Any:
        *row, moved = values
        payment = conditional.from_row(Payment, connection, tuple(row))
        return _held(hold, payment, int(moved))

    return Shortcut(
        ctes=ctes,
        params=params,
        applied="EXISTS (SELECT 1 FROM changed)",
        joins="LEFT JOIN changed ON TRUE",
        columns=columns,
        finish=finish,
    )


def _hold_in_one_statement(snapshot: PaymentIntentSnapshot) -> Any:
    """:func:`_hold_spec`'s update, without reading the row first; None if it does not apply."""
    hold = _hold_spec(snapshot)
    if hold is None:
        return None
    Payment = payment_model()
    if hold.task is not None and conditional.can_follow(Payment):
        # PostgreSQL: the payment and its task in one statement.
        payment, moved = conditional.update_returning_and_follow(
            Payment,
            assignments=hold.assignments,
            where=hold.where,
            where_in=hold.where_in,
            follow=_follow_task(hold),
        )
        if payment is None:
            return None
        return _held(hold, payment, moved)
    # The payment and its task commit together; inside the webhook
    # pipeline's transaction this adds no savepoint (no round trip).
    with transaction.atomic(savepoint=False):
        payment = conditional.update_returning(
            Payment, assignments=hold.assignments, where=hold.where, where_in=hold.where_in
        )
        if payment is None:
            return None
        if not move_task_status(hold.task_model, payment.task_id, payment.pk, S.HELD):
            sync_task_status(payment)
    _log(payment, "payment held")
    notify("payment_held", payment=payment)
    return payment


def _payment_being_created(snapshot: PaymentIntentSnapshot) -> Any:
    """The payment whose PaymentIntent creation this is, answer not committed yet.

    The event names the payment in its metadata; the creation's journal entry
    is still unresolved (the request is between its call and its commit, or
    crashed there). The event settles it, as the answer would have.
    """
    payment_id = snapshot.metadata.get("escrow_payment_id")
    if not payment_id or is_other_installation(snapshot.metadata):
        return None
    payment = (
        payment_model()
        .objects.select_for_update(of=("self",))
        .select_related("task")
        .filter(pk=payment_id, stripe_payment_intent_id="")
        .first()
    )
    if payment is None:
        return None
    operation = payment.operations.filter(
        kind=MoneyOperationKind.PAYMENT_INTENT, status__in=UNRESOLVED_OPERATION_STATES
    ).first()
    if operation is None:
        return None
    outcomes.intent_created(payment, operation, snapshot)
    return payment


def _unresolved(payment: Any, kind: str) -> Any:
    return payment.operations.filter(kind=kind, status__in=UNRESOLVED_OPERATION_STATES).first()


def _hold(payment: Any, snapshot: PaymentIntentSnapshot) -> None:
    if snapshot.latest_charge:
        payment.stripe_charge_id = snapshot.latest_charge
    payment.mark_held()
    payment.save()
    sync_task_status(payment)
    _log(payment, "payment held")
    notify("payment_held", payment=payment)


def _authorised(payment: Any, snapshot: PaymentIntentSnapshot) -> None:
    """Manual capture: the card is authorised; the money is held until capture."""
    if not can_proceed(payment.mark_held):
        if (
            payment.status == S.HELD
            and snapshot.capture_before is not None
            and payment.capture_before != snapshot.capture_before
        ):
            # An expanded retrieve (escrow_reconcile) knows Stripe's deadline:
            # it replaces an estimate.
            payment.capture_before = snapshot.capture_before
            payment.save(update_fields=["capture_before", "updated_at"])
        return
    payment.capture_before = _capture_deadline(payment, snapshot)
    _hold(payment, snapshot)


def _capture_deadline(payment: Any, snapshot: PaymentIntentSnapshot) -> Any:
    """Stripe's ``capture_before`` if known, else a conservative estimate.

    No Stripe call: a webhook's PaymentIntent names its charge by id only, and
    the charge's own events (``charge.succeeded``/``charge.updated``, full
    objects) bring the deadline; :func:`~.transfers.apply_charge` records it,
    before or after this.
    """
    if snapshot.capture_before is not None:
        return snapshot.capture_before
    if payment.capture_before is not None:
        return payment.capture_before
    return (snapshot.created or timezone.now()) + MANUAL_CAPTURE_WINDOW


def _succeeded(payment: Any, snapshot: PaymentIntentSnapshot, event_id: str) -> None:
    if not payment.is_manual_capture:
        if can_proceed(payment.mark_held):
            _hold(payment, snapshot)
        elif not payment.stripe_charge_id and snapshot.latest_charge:
            payment.stripe_charge_id = snapshot.latest_charge
            payment.save(update_fields=["stripe_charge_id", "updated_at"])
        return
    # Manual capture: "succeeded" means the authorisation was captured, which
    # is the release itself (a capture whose answer was lost, or one made in
    # the Stripe dashboard).
    if can_proceed(payment.mark_held):
        _hold(payment, snapshot)
    capture = _unresolved(payment, MoneyOperationKind.CAPTURE)
    if capture is not None:
        # The app's own capture, whose answer was not committed yet (or, for
        # less than the whole amount, one made outside the app meanwhile).
        outcomes.capture_done(payment, capture, snapshot, event_id=event_id)
        return
    # Stripe's release is recorded, also during a dispute; a capture for less
    # than the whole amount releases what it took (record_capture says how).
    if outcomes.record_capture(payment, snapshot, event_id=event_id):
        if snapshot.latest_charge:
            payment.stripe_charge_id = snapshot.latest_charge
        payment.save()
        sync_task_status(payment)
        _log(payment, "payment released (capture confirmed by Stripe)")
        notify("payment_released", payment=payment, transfer=None)


def _failed(payment: Any, snapshot: PaymentIntentSnapshot, event_id: str) -> None:
    if not can_proceed(payment.mark_failed):
        return
    error = snapshot.last_payment_error or {}
    code = error.get("code") or ""
    message = error.get("message") or ""
    payment.mark_failed(code=code, message=message)
    payment.save()
    incident = model("PaymentIncident").objects.create(
        payment=payment,
        kind=IncidentKind.PAYMENT_FAILED,
        # Cut to their columns, as mark_failed cuts the payment's code:
        # PostgreSQL refuses a longer string, and the event would fail for good.
        code=code[:255],
        decline_code=(error.get("decline_code") or "")[:255],
        message=message,
        stripe_event_id=event_id,
        stripe_payment_intent_id=snapshot.id,
    )
    sync_task_status(payment)
    _log(payment, "payment failed: %s", code)
    notify("payment_failed", payment=payment, incident=incident)


def _canceled(payment: Any, snapshot: PaymentIntentSnapshot, event_id: str) -> None:
    void = _unresolved(payment, MoneyOperationKind.CANCEL)
    if void is not None:
        # The app's own cancellation, whose answer was not committed yet.
        outcomes.cancel_done(payment, void, snapshot)
        return
    if not can_proceed(payment.mark_canceled):
        if payment.status != S.CANCELED:
            _log(
                payment,
                "PaymentIntent canceled but the payment cannot be canceled",
                level=logging.ERROR,
            )
        return
    # Stripe voided an authorisation that was not captured in time: the
    # payment held it (a part of it could be released). Also the hold of a
    # manual-capture payment an older version left partially released
    # (docs/recovery.md): nothing of it was captured.
    held = payment.status in transitions.sources(type(payment), "release_part")
    lapsed = held and snapshot.cancellation_reason in ("automatic", "expired")
    outcomes.mark_voided(payment)
    if lapsed or snapshot.cancellation_reason not in (None, "requested_by_customer", "abandoned"):
        model("PaymentIncident").objects.create(
            payment=payment,
            kind=IncidentKind.CAPTURE_EXPIRED if lapsed else IncidentKind.PAYMENT_CANCELED,
            code=(snapshot.cancellation_reason or "")[:255],
            message=(
                "The card authorisation lapsed before it was captured."
                if lapsed
                else f"Stripe canceled the PaymentIntent ({snapshot.cancellation_reason})."
            ),
            stripe_event_id=event_id,
            stripe_payment_intent_id=snapshot.id,
        )
    sync_task_status(payment)
    _log(payment, "payment canceled by Stripe: %s", snapshot.cancellation_reason or "")
    notify("payment_canceled", payment=payment)
