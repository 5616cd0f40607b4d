"""Phase 3 of a money operation: commit what Stripe answered.

One applier per kind and outcome (success, refusal, "never happened"). They
run with the payment locked and the operation re-read under that lock, and
are called from three places that must agree: the request that sent the call,
a webhook carrying the object the call made, and :func:`drive` (a retry, a
competing operation, ``escrow_reconcile``) after looking the object up at
Stripe. Whoever comes first settles the operation; the others find it
settled and change nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from ..exceptions import GatewayError
from ..money import format_money
from ..notifications import notify
from ..states import (
    UNRESOLVED_OPERATION_STATES,
    IncidentKind,
    MilestoneStatus,
    MoneyOperationKind,
    RefundStatus,
    ReleaseStatus,
    TransferStatus,
)
from ..states import MoneyOperationStatus as OS
from ..states import PaymentStatus as S
from . import books, errors, radar_holds, saved_methods
from . import tip_outcomes as tips
from .common import gateway, model, open_disputes, payment_model, refuses_the_amount, translate
from .operations import (
    AFTER_LOSS,
    ASKED_THE_REST,
    LEGACY_REFUND,
    REPLACED_BY,
    REVERSAL_REFUSED,
    Outcome,
    answer_may_be_lost,
    begin,
    lease,
    lease_expired,
    lock_operation,
    next_key,
    operation_metadata,
    record_failed,
    record_unknown,
    renew,
    send,
)
from .task_status import sync_task_status

logger = logging.getLogger("django_escrow_connect.payments")

K = MoneyOperationKind


def log_payment(payment: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
    """A structured log record about one payment (payments logger)."""
    logger.log(
        level,
        message,
        *args,
        extra={
            "payment_id": str(payment.pk),
            "payment_status": payment.status,
            "connected_account": payment.destination_account_id,
        },
    )


def _row(name: str, operation: Any) -> Any:
    """The domain row (Transfer, Refund, TransferReversal) an operation created."""
    return model(name).objects.filter(idempotency_key=operation.idempotency_key).first()


def _release_transfer_failed(operation: Any, code: str, message: str) -> Any:
    """The release's Transfer row (if it made one), failed while still pending."""
    transfer = _row("Transfer", operation) if operation.kind == K.TRANSFER else None
    if transfer is not None and transfer.status == TransferStatus.PENDING:
        transfer.mark_failed(code=code, message=message)
        transfer.save()
    return transfer


def _reversal_failed(operation: Any, code: str, message: str) -> None:
    reversal = _row("TransferReversal", operation)
    if reversal is not None and can_proceed(reversal.mark_failed):
        reversal.mark_failed(code=code, message=message)
        reversal.save()


def _transfer_incident(
    payment: Any, exc: GatewayError, *, destination_account_id: str, amount: int
) -> Any:
    """A refused transfer, for staff (the payment's, or one payee's)."""
    return model("TransferIncident").objects.create(
        payment=payment,
        kind=IncidentKind.TRANSFER_FAILED,
        code=exc.code or "",
        message=exc.message,
        stripe_request_id=exc.request_id or "",
        destination_account_id=destination_account_id,
        amount=amount,
        currency=payment.currency,
    )


# --------------------------------------------------------------------------
# PaymentIntent creation
# --------------------------------------------------------------------------


def intent_created(payment: Any, operation: Any, intent: Any, *, event_id: str = "") -> None:
    # The payment's state does not change here (it awaits payment, as phase 1
    # left it, and phase 1 moved the task): no task sync, no read of the task.
    operation.mark_succeeded(intent.id)
    operation.save()
    if not payment.stripe_payment_intent_id:
        payment.stripe_payment_intent_id = intent.id
        payment.save(update_fields=["stripe_payment_intent_id", "updated_at"])
        log_payment(payment, "payment created")


def intent_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    record_failed(operation, exc)
    _give_up_on_intent(payment, exc.code or "", exc.message)
    if refuses_the_amount(exc):
        log_payment(payment, "Stripe refused its amount: %s", exc.message, level=logging.ERROR)
        return amount_refused(payment, exc.message)
    return translate(exc, _("create the payment"))


def amount_refused(payment: Any, reason: str) -> errors.ServiceError:
    """Stripe will not charge the payment's amount: what the customer is told.

    The early check (``validate_charge_amount``) knows the bounds in the
    charge's own currency; Stripe applies them in the currency the charge
    settles in, at the day's rate. Its refusal is as final as the early
    check's: the same ``409 no_payment_terms``, naming the amount, so the
    host knows the price (or the milestone) must change before it is paid.
    Also the answer to a second "pay" that waited for that refusal.
    """
    amount = format_money(payment.amount, payment.currency)
    if payment.funded_milestone:
        # Named as the early check names it (payments._require_chargeable):
        # the payment's one milestone row is the milestone funded.
        name = payment.milestones.order_by("position").values_list("name", flat=True).first()
        message = _(
            "Milestone %(index)s ('%(name)s'), %(amount)s, cannot be charged by Stripe "
            "once converted to the currency it settles in: %(reason)s"
        ) % {"index": payment.funded_milestone, "name": name, "amount": amount, "reason": reason}
    else:
        message = _(
            "This task's price, %(amount)s, cannot be charged by Stripe once converted "
            "to the currency it settles in: %(reason)s"
        ) % {"amount": amount, "reason": reason}
    return errors.Conflict(message, code="no_payment_terms")


def intent_not_made(payment: Any, operation: Any) -> None:
    operation.mark_failed("not_made", "Stripe has no record of this PaymentIntent.")
    operation.save()
    _give_up_on_intent(payment, "not_made", "The PaymentIntent was never created.")


def customer_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    """Stripe refused the payer's Customer: the payment is closed like a refused PaymentIntent."""
    record_failed(operation, exc)
    _give_up_on_intent(payment, exc.code or "", exc.message)
    return translate(exc, _("create the payment"))


def customer_not_made(payment: Any, operation: Any) -> None:
    operation.mark_failed("not_made", "Stripe has no record of this Customer.")
    operation.save()
    _give_up_on_intent(payment, "not_made", "The payer's Customer was never created.")


def _give_up_on_intent(payment: Any, code: str, message: str) -> None:
    # No money moved and the customer never saw a client secret: the payment
    # is closed, and the next "pay" starts a new one (a new id, a new key).
    if not payment.stripe_payment_intent_id and can_proceed(payment.cancel):
        payment.failure_code = code[:255]
        payment.failure_message = message
        payment.cancel()
        payment.save()
        sync_task_status(payment)


# --------------------------------------------------------------------------
# Release: transfer (separate charges and transfers) or capture
# --------------------------------------------------------------------------


def transfer_made(payment: Any, operation: Any, snapshot: Any, *, event_id: str = "") -> Any:
    """Stripe made the release's transfer (answered, looked up, or by webhook)."""
    operation.mark_succeeded(snapshot.id)
    operation.save()
    transfer = _row("Transfer", operation)
    if transfer is not None and transfer.release_id is not None:
        return split_transfer_made(payment, transfer, snapshot, event_id=event_id)
    if transfer is not None and transfer.status == TransferStatus.PENDING:
        transfer.mark_created(snapshot.id)
        transfer.save()
        resolve_refused_transfers(payment, snapshot.id)
    if record_release(payment, amount_transferred=snapshot.amount):
        payment.save()
        sync_task_status(payment)
        log_payment(
            payment,
            "payment released"
            + _during_dispute(payment)
            + (" (confirmed by webhook)" if event_id else ""),
        )
        notify("payment_released", payment=payment, transfer=transfer)
    return transfer


def resolve_refused_transfers(
    payment: Any,
    transfer_id: str,
    *,
    destination_account_id: str | None = None,
    amount: int | None = None,
    made: str = "transfer",
    note: str = "",
) -> None:
    """Resolve the open ``transfer_failed`` incidents the transfer just made
    settles: the payment's (one payee), or, for a split payment, those of the
    same payee's transfer (account and amount). Left open, a refusal handled
    by a later release stayed in ``escrow_report``'s open incidents for ever.
    A tip's (its own transfer, money staff may still send) stays open. The
    note says why, for the audit trail (``note``: staff's own, for a transfer
    they made outside the app and recorded)."""
    incidents = model("TransferIncident").objects.filter(
        payment=payment, kind=IncidentKind.TRANSFER_FAILED, resolved_at__isnull=True
    )
    if destination_account_id is not None:
        incidents = incidents.filter(destination_account_id=destination_account_id, amount=amount)
    now = timezone.now()
    for incident in incidents:
        if incident.message.startswith(tips.TIP_INCIDENT_PREFIX):
            continue
        incident.resolved_at = now
        said = note or f"Resolved: the release was sent again and Stripe made {made} {transfer_id}."
        incident.message = "\n".join(filter(None, [incident.message, said]))
        incident.save(update_fields=["resolved_at", "message", "updated_at"])
        log_payment(
            payment, "transfer_failed incident %s resolved: %s made", incident.pk, transfer_id
        )


def record_release(
    payment: Any,
    amount_transferred: int = 0,
    *,
    platform_fee: int | None = None,
    amount_captured: int | None = None,
) -> bool:
    """Apply a release Stripe made to the payment's books (not saved); False if none applies.

    Stripe's fact wins over a dispute that opened after the transfer (or
    capture) was sent: the release is recorded while the payment stays
    frozen, and the dispute's close returns it to ``released``. Without
    that the operation would be settled with the payment's books saying
    nothing was released, and a won dispute would return it to
    ``releasing`` with nothing left to finish.
    """
    amounts = {
        "amount_transferred": amount_transferred,
        "platform_fee": platform_fee,
        "amount_captured": amount_captured,
    }
    if can_proceed(payment.release):
        payment.release(**amounts)
    elif can_proceed(payment.release_during_dispute):
        payment.release_during_dispute(**amounts)
    else:
        return False
    return True


def _during_dispute(payment: Any) -> str:
    return " during a dispute" if payment.frozen_by_dispute else ""


def split_transfer_made(payment: Any, transfer: Any, snapshot: Any, *, event_id: str = "") -> Any:
    """One payee's transfer of a release was made; the release (and the
    payment) complete when the last one is."""
    if transfer.status == TransferStatus.PENDING:
        transfer.mark_created(snapshot.id)
        transfer.save()
        room = payment.amount - payment.platform_fee - payment.amount_transferred
        payment.amount_transferred += max(0, min(transfer.amount, room))
        payment.save()
        log_payment(
            payment,
            "payee transfer made: %s" + (" (confirmed by webhook)" if event_id else ""),
            snapshot.id,
        )
        resolve_refused_transfers(
            payment,
            snapshot.id,
            destination_account_id=transfer.destination_account_id,
            amount=transfer.amount,
        )
    release = transfer.release
    if finish_release(payment, release):
        _finish_split_payment(payment)
    return transfer


def finish_release(payment: Any, release: Any, nothing_owed: Collection[int] = ()) -> bool:
    """Mark ``release`` released once every payee's transfer was made.

    ``nothing_owed``: payees (ids) not paid yet whose whole share a refund
    took back (:mod:`.releases`); no transfer of theirs is waited for.
    """
    if release.status == ReleaseStatus.RELEASED:
        return True
    made = set(
        release.transfers.filter(
            status__in=[
                TransferStatus.CREATED,
                TransferStatus.PARTIALLY_REVERSED,
                TransferStatus.REVERSED,
            ]
        ).values_list("payee_id", flat=True)
    )
    made.update(nothing_owed)
    if any(int(k) not in made for k, v in release.allocations.items() if int(v) > 0):
        return False
    release.mark_released()
    release.save()
    milestone = release.milestone
    if milestone is not None and can_proceed(milestone.mark_released):
        milestone.mark_released()
        milestone.save()
    transfers = list(release.transfers.filter(status=TransferStatus.CREATED))
    log_payment(payment, "release %s done", release.position)
    if milestone is not None:
        notify("milestone_released", payment=payment, milestone=milestone, transfers=transfers)
    return True


def _finish_split_payment(payment: Any) -> None:
    # Leaving a lost dispute aside: what it took is not released, and a won
    # appeal gives it back to escrow (amount_held_before_loss).
    if payment.amount_held_before_loss > 0 or payment.amount_released <= 0:
        return
    if payment.releases.filter(status=ReleaseStatus.PENDING).exists():
        return
    payment_fully_released(payment)


def payment_fully_released(payment: Any) -> None:
    """A split payment's last release is done: the payment is released.

    Also when a dispute opened while its last transfer was unconfirmed: the
    dispute's close then returns the payment to ``released``.
    """
    if payment.settled_status != S.PARTIALLY_RELEASED or not record_release(payment):
        return
    payment.save()
    sync_task_status(payment)
    log_payment(payment, "payment released (all releases done)" + _during_dispute(payment))
    notify("payment_released", payment=payment, transfer=None)


def capture_done(payment: Any, operation: Any, intent: Any, *, event_id: str = "") -> bool:
    """The capture's PaymentIntent; False while Stripe is still capturing."""
    if intent.status != "succeeded":
        return False
    if intent.amount_received != payment.amount:
        # The app captures the whole authorisation: this capture was made
        # outside the app, and the app's own call made nothing.
        operation.mark_failed(
            "captured_outside_app", "Captured for another amount outside the app."
        )
        operation.save()
        if not record_capture(payment, intent, event_id=event_id):
            # Captured for more than the payment (no release is booked):
            # the money is held as far as the books go, for staff to settle.
            if can_proceed(payment.release_failed):
                payment.release_failed()
                payment.save()
                sync_task_status(payment)
            return True
    else:
        operation.mark_succeeded(intent.id)
        operation.save()
        if not record_capture(payment, intent, event_id=event_id):
            return True
    payment.stripe_charge_id = intent.latest_charge or payment.stripe_charge_id
    payment.save()
    # A refused capture opened a transfer_failed incident (release_refused).
    resolve_refused_transfers(payment, intent.id, made="the capture of")
    sync_task_status(payment)
    log_payment(payment, "payment released (captured)" + _during_dispute(payment))
    notify("payment_released", payment=payment, transfer=None)
    return True


def record_amount_mismatch(payment: Any, snapshot: Any, event_id: str, message: str = "") -> None:
    message = message or (
        f"PaymentIntent {snapshot.id} is {snapshot.amount} {snapshot.currency}, "
        f"the payment is {payment.amount} {payment.currency}."
    )
    # One incident per fact: the same mismatch seen again (another event,
    # every escrow_reconcile run) updates the open incident.
    open_incident = model("PaymentIncident").objects.filter(
        payment=payment,
        kind=IncidentKind.AMOUNT_MISMATCH,
        stripe_payment_intent_id=snapshot.id,
        resolved_at__isnull=True,
    )
    if open_incident.filter(message=message).exists():
        return
    if open_incident.update(message=message, updated_at=timezone.now()):
        return
    model("PaymentIncident").objects.create(
        payment=payment,
        kind=IncidentKind.AMOUNT_MISMATCH,
        message=message,
        stripe_event_id=event_id,
        stripe_payment_intent_id=snapshot.id,
    )
    log_payment(payment, "payment intent amount mismatch", level=logging.ERROR)


def record_capture(payment: Any, snapshot: Any, *, event_id: str = "") -> bool:
    """Book a manual-capture PaymentIntent's capture as the release (not saved).

    False when no release applies (already booked, or the payment cannot be
    released) or the capture took more than the payment (see below).

    The app captures the whole authorisation. A capture made outside the app
    (the Stripe dashboard) may take less (``amount_received`` < ``amount``):
    Stripe releases the rest of the authorisation to the customer's card
    (no Refund, no ``charge.refunded`` since API 2025-03-31), transfers what
    was captured to the doer's account and caps the application fee at it.
    The fee booked is Stripe's, the PaymentIntent's ``application_fee_amount``
    (the capture may have set another one), whatever was captured.
    That is a release of what was captured: it is booked so, with
    ``amount_captured``, the uncaptured rest counted neither held nor
    refunded; later refunds, reversals and fee shares are counted against
    the captured amount as Stripe counts them. An ``amount_mismatch``
    incident tells staff it happened. A capture for more than the payment
    (overcapture) cannot be booked: incident only, nothing released.
    """
    captured = snapshot.amount_received
    fee = _captured_fee(payment, snapshot, captured)
    if captured == payment.amount:
        return record_release(payment, amount_transferred=payment.amount - fee, platform_fee=fee)
    if captured > payment.amount:
        record_amount_mismatch(
            payment,
            snapshot,
            event_id,
            message=(
                f"PaymentIntent {snapshot.id} was captured for {captured} {payment.currency} "
                f"outside the app, more than the payment's {payment.amount} "
                f"{payment.currency}. The payment is not marked released; settle it by hand."
            ),
        )
        return False
    # The message names only Stripe's facts: the same capture seen again
    # (a replay, escrow_reconcile) finds the same open incident.
    record_amount_mismatch(
        payment,
        snapshot,
        event_id,
        message=(
            f"PaymentIntent {snapshot.id} was captured for {captured} {payment.currency} "
            f"outside the app, the payment is {payment.amount} {payment.currency}: "
            f"Stripe released the other {payment.amount - captured} to the customer "
            "and transferred only what was captured. The payment is booked as released "
            f"for {captured} (amount_captured); only that can be refunded."
        ),
    )
    return record_release(
        payment, amount_transferred=captured - fee, platform_fee=fee, amount_captured=captured
    )


def _captured_fee(payment: Any, snapshot: Any, captured: int) -> int:
    """The application fee Stripe took on a capture of ``captured``.

    Stripe's figure when the PaymentIntent carries it: a capture may set
    another fee than the one the app asked for at creation (the Stripe
    dashboard lets staff change it when capturing for less), and the charge
    Stripe books is the truth the audit compares with. Stripe caps the fee
    at what was captured. Only a PaymentIntent without the field (an older
    payload, a fee never set) falls back to the app's fee, capped alike.
    """
    stripe_fee = getattr(snapshot, "application_fee_amount", None)
    fee = payment.platform_fee if stripe_fee is None else int(stripe_fee)
    return max(0, min(fee, captured))


def release_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    """A definite refusal: the money stays held; the next try gets a new key."""
    record_failed(operation, exc)
    transfer = _release_transfer_failed(operation, exc.code or "", exc.message)
    if transfer is not None and transfer.release_id is not None:
        return _split_transfer_refused(payment, operation, transfer, exc)
    _release_undone(payment)
    incident = _transfer_incident(
        payment,
        exc,
        destination_account_id=payment.destination_account_id,
        amount=operation.amount if operation.amount is not None else payment.amount,
    )
    log_payment(payment, "release failed: %s", exc.code or exc.message, level=logging.WARNING)
    notify("transfer_failed", payment=payment, incident=incident)
    return errors.Conflict(
        _(
            "Stripe refused the release (%(code)s); the money is still held "
            "and the release can be retried."
        )
        % {"code": exc.code or "error"},
        code="release_failed",
    )


def _split_transfer_refused(
    payment: Any, operation: Any, transfer: Any, exc: GatewayError
) -> errors.ServiceError:
    """One payee's transfer refused: the others stand; this one is retryable alone."""
    payment.release_attempts += 1
    payment.save(update_fields=["release_attempts", "updated_at"])
    incident = _transfer_incident(
        payment, exc, destination_account_id=transfer.destination_account_id, amount=transfer.amount
    )
    log_payment(
        payment, "payee transfer refused: %s", exc.code or exc.message, level=logging.WARNING
    )
    notify("payee_transfer_failed", payment=payment, transfer=transfer, payee=transfer.payee)
    notify("transfer_failed", payment=payment, incident=incident)
    return errors.Conflict(
        _(
            "Stripe refused a payee's transfer (%(code)s); the other payees were paid and "
            "this one can be retried by releasing again."
        )
        % {"code": exc.code or "error"},
        code="release_failed",
    )


def release_not_made(payment: Any, operation: Any) -> None:
    """Stripe has no transfer (or capture) for the operation and none can come."""
    operation.mark_failed("not_made", "Stripe has no record of this release.")
    operation.save()
    transfer = _release_transfer_failed(
        operation, "not_made", "Stripe has no record of this transfer."
    )
    if transfer is not None and transfer.release_id is not None:
        # Still owed to that payee: the next release request sends it again.
        return
    _release_undone(payment)
    log_payment(
        payment, "release was never made at Stripe; the money is held", level=logging.WARNING
    )


def _release_undone(payment: Any) -> None:
    # Also when a dispute opened meanwhile: its close returns the payment to
    # held, not to a releasing with nothing left to finish.
    if can_proceed(payment.release_failed):
        payment.release_failed()
    else:
        payment.release_attempts += 1
    payment.save()
    sync_task_status(payment)


# --------------------------------------------------------------------------
# Transfer reversals (before a refund after release)
# --------------------------------------------------------------------------


def reversal_made(payment: Any, operation: Any, snapshot: Any, *, event_id: str = "") -> None:
    operation.mark_succeeded(snapshot.id)
    operation.save()
    reversal = _row("TransferReversal", operation)
    if reversal is not None and can_proceed(reversal.mark_succeeded):
        reversal.mark_succeeded(snapshot.id)
        reversal.save()
    transfer = (
        model("Transfer").objects.filter(stripe_transfer_id=operation.target_id).first()
        if operation.target_id
        else None
    )
    if transfer is not None and can_proceed(transfer.apply_reversed_total):
        before = transfer.amount_reversed
        transfer.apply_reversed_total(transfer.amount_reversed + snapshot.amount)
        transfer.save()
        added = transfer.amount_reversed - before
    else:
        added = snapshot.amount
    room = payment.amount_transferred - payment.amount_reversed
    payment.amount_reversed += max(0, min(added, room))
    payment.save()
    refund = operation.follow_up.get("refund")
    if refund:
        # The refund this reversal made room for (or, for a split payment,
        # the next payee's reversal before it), committed now: whoever
        # settles the journal next (the request, a retry, escrow_reconcile)
        # sends it.
        _continue_refund(payment, operation)


def _continue_refund(payment: Any, operation: Any) -> Any:
    """Phase 1 of what follows a refund's reversal: the next reversal of the
    plan its follow-up carries, or the refund; committed, not sent."""
    follow_up = operation.follow_up
    refund, reason = int(follow_up["refund"]), str(follow_up.get("reason") or "")
    legacy = str(follow_up.get(LEGACY_REFUND) or "")
    for index, (transfer_id, amount) in enumerate(follow_up.get("next") or []):
        transfer = model("Transfer").objects.filter(stripe_transfer_id=transfer_id).first()
        # At most what the transfer still carries: a reversal made outside
        # the app since the plan was made cannot be asked twice.
        room = transfer.amount - transfer.amount_reversed if transfer is not None else 0
        if min(int(amount), room) > 0:
            rest = {**follow_up, "next": follow_up["next"][index + 1 :]}
            return begin_reversal(
                payment,
                transfer_id,
                min(int(amount), room),
                operation.requested_by,
                follow_up=rest,
                sent=False,
                request_key=operation.request_key,
            )
    if legacy:
        # The reversals were made for a refund 0.1 sent (no journal, answer
        # lost): that very refund is journaled now, with its own key, not a
        # new one (which would refund the customer twice were 0.1's made).
        row = legacy_refund_row(payment, legacy)
        return begin_legacy_refund(payment, row) if row is not None else None
    # The client's key rides along like the requester: a retry of the request
    # finds the whole chain and never begins a second one. So does what the
    # request asked for (no amount: the rest), which a retry without a key
    # is matched on.
    return begin_refund(
        payment,
        refund,
        reason,
        operation.requested_by,
        sent=False,
        request_key=operation.request_key,
        asked_the_rest=bool(follow_up.get(ASKED_THE_REST)),
    )


def begin_reversal(
    payment: Any,
    transfer_id: str,
    amount: int,
    user: Any,
    *,
    follow_up: dict[str, Any] | None = None,
    sent: bool = True,
    request_key: str = "",
) -> Any:
    """Phase 1 of a transfer reversal before a refund: its journal entry and row."""
    key, attempt = next_key(payment, K.REVERSAL)
    request = {
        "transfer_id": transfer_id,
        "amount": amount,
        "metadata": operation_metadata(payment, key),
    }
    operation = begin(
        payment,
        K.REVERSAL,
        request,
        amount=amount,
        target_id=transfer_id,
        user=user,
        key=key,
        attempt=attempt,
        follow_up=follow_up,
        sent=sent,
        request_key=request_key,
    )
    model("TransferReversal").objects.create(
        payment=payment,
        idempotency_key=key,
        stripe_transfer_id=transfer_id,
        amount=amount,
        currency=payment.currency,
    )
    return operation


#: The reasons Stripe accepts on a refund (others are kept locally only).
STRIPE_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def refund_request(payment: Any, amount: int, reason: str, key: str) -> dict[str, Any]:
    """The refund of the charge (``create_refund``), as the journal stores it."""
    # Destination charges: take the doer's share and the fee back in
    # proportion, as Stripe does with these two flags. Not for money already
    # on the platform's balance (held): a refund after release that failed
    # left its reversal and fee refund made, and refunding that money again
    # must not take it from the doer a second time. (A refund reaching past
    # the held money is refused before this: _begin_refund_step.)
    reverse = bool(payment.is_manual_capture and amount > payment.amount_held)
    return {
        "payment_intent": payment.stripe_payment_intent_id,
        "amount": amount,
        "metadata": operation_metadata(payment, key),
        "reason": reason if reason in STRIPE_REFUND_REASONS else None,
        "reverse_transfer": reverse,
        "refund_application_fee": reverse,
    }


def legacy_refund_row(payment: Any, key: str = "") -> Any:
    """A refund 0.1 sent (``pending``, no Stripe id) with no journal entry
    (its answer was lost), the one of ``key`` if given, else the oldest; or None."""
    rows = payment.refunds.filter(status=RefundStatus.PENDING, stripe_refund_id="").exclude(
        idempotency_key__in=payment.operations.values("idempotency_key")
    )
    if key:
        rows = rows.filter(idempotency_key=key)
    return rows.order_by("created_at", "pk").first()


def begin_legacy_refund(
    payment: Any, refund: Any, *, refused_reversal: Any = None, incident: Any = None
) -> Any:
    """Phase 1 of a refund 0.1 sent (``refund``: :func:`legacy_refund_row`):
    journaled with its own key and 0.1's request, so that Stripe answers it
    as it did 0.1 while it remembers the key; committed, not sent.

    It carries :data:`.operations.LEGACY_REFUND`: :func:`drive` looks it up
    at Stripe before sending it again (0.1 may have sent it days ago, the
    key forgotten since). ``refused_reversal``: the reversal before it that
    Stripe refused (and ``incident``, that refusal's ``reversal_failed``
    incident): it carries :data:`.operations.REVERSAL_REFUSED` and is only
    looked up, never sent (:func:`_look_up_refund_of_refused_reversal`).
    """
    # Captured and transferred: the refund takes the doer's share back with
    # it. Where it stands leaving a dispute aside: under an inquiry (which
    # does not stop a refund) the payment is ``disputed`` but released.
    destination_charge = payment.is_manual_capture and payment.settled_status in (
        S.RELEASED,
        S.PARTIALLY_REFUNDED,
    )
    request = {
        "payment_intent": payment.stripe_payment_intent_id,
        "amount": refund.amount,
        "metadata": {
            "escrow_payment_id": str(payment.pk),
            "task_id": str(payment.task_id),
            "transfer_group": payment.transfer_group,
        },
        "reason": refund.reason if refund.reason in STRIPE_REFUND_REASONS else None,
        "reverse_transfer": destination_charge,
        "refund_application_fee": destination_charge,
    }
    refused: dict[str, str] = {}
    if refused_reversal is not None:
        refused[REVERSAL_REFUSED] = refused_reversal.idempotency_key
        if incident is not None:
            refused[_REFUSAL_INCIDENT] = str(incident.pk)
    return begin(
        payment,
        K.REFUND,
        request,
        amount=refund.amount,
        key=refund.idempotency_key,
        attempt=payment.refunds.count(),
        follow_up={LEGACY_REFUND: refund.idempotency_key, **refused},
        sent=False,
    )


def begin_refund(
    payment: Any,
    amount: int,
    reason: str,
    user: Any,
    *,
    sent: bool = True,
    request_key: str = "",
    asked_the_rest: bool = False,
) -> Any:
    """Phase 1 of a refund of the charge: its journal entry and Refund row.

    ``asked_the_rest``: the request gave no amount (``amount`` is the rest
    then), recorded in ``follow_up`` (:data:`.operations.ASKED_THE_REST`).
    """
    key, attempt = next_key(payment, K.REFUND)
    request = refund_request(payment, amount, reason, key)
    operation = begin(
        payment,
        K.REFUND,
        request,
        amount=amount,
        user=user,
        key=key,
        attempt=attempt,
        follow_up={ASKED_THE_REST: True} if asked_the_rest else None,
        sent=sent,
        request_key=request_key,
    )
    model("Refund").objects.create(
        payment=payment,
        idempotency_key=key,
        amount=amount,
        currency=payment.currency,
        reason=reason[:64],
        requested_by=user if getattr(user, "pk", None) else None,
    )
    return operation


#: The ``follow_up`` entry of a refund journaled by :func:`reversal_refused`:
#: the refused reversal's ``reversal_failed`` incident (its pk), which
#: :func:`refund_made` annotates should 0.1 have made the refund after all.
_REFUSAL_INCIDENT = "reversal_incident"


def reversal_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    record_failed(operation, exc)
    _reversal_failed(operation, exc.code or "", exc.message)
    incident = model("TransferIncident").objects.create(
        payment=payment,
        kind=IncidentKind.REVERSAL_FAILED,
        code=exc.code or "",
        message=exc.message,
        stripe_request_id=exc.request_id or "",
        stripe_transfer_id=operation.target_id,
        destination_account_id=payment.destination_account_id,
        amount=operation.amount,
        currency=payment.currency,
    )
    legacy = operation.follow_up.get(LEGACY_REFUND)
    row = legacy_refund_row(payment, str(legacy)) if legacy else None
    if row is not None:
        # A refund 0.1 sent waited for this reversal: no refund is sent when
        # the doer's money cannot come back, as for any refund. But 0.1 may
        # have made it (its answer was lost, not its call): failed at once,
        # the books said so while Stripe had refunded the customer, and
        # nothing converged them. It is journaled, with this refusal, to be
        # looked up only (after this commit, no lock held: execute, drive);
        # a crash before that leaves it for the next request or
        # escrow_reconcile. Journaled, it is no longer adopted: left pending
        # and unjournaled, a new reversal was tried (and refused, an incident
        # and transfer_failed each time) by every request and reconcile run.
        begin_legacy_refund(payment, row, refused_reversal=operation, incident=incident)
    notify("transfer_failed", payment=payment, incident=incident)
    return _reversal_refused_error(exc.code or "")


def _reversal_refused_error(code: str, legacy_refund: str = "") -> errors.ServiceError:
    """``409 reversal_failed``: what a refund whose reversal Stripe refused answers.

    ``legacy_refund``: a refund 0.1 sent waited for it and is ``made`` (its
    lookup found it at Stripe) or ``unknown`` (Stripe could not be asked
    yet); by default no refund was made.
    """
    if legacy_refund == "made":
        message = _(
            "The doer's account could not return the money (%(code)s); the refund an "
            "earlier version of the app sent was made at Stripe all the same, from the "
            "platform's balance."
        )
    elif legacy_refund == "unknown":
        message = _(
            "The doer's account could not return the money (%(code)s); no refund was sent. "
            "Whether an earlier version of the app made this refund at Stripe is checked "
            "again later."
        )
    else:
        message = _("The doer's account could not return the money (%(code)s); no refund was made.")
    return errors.Conflict(message % {"code": code or "error"}, code="reversal_failed")


def reversal_not_made(payment: Any, operation: Any) -> None:
    operation.mark_failed("not_made", "Stripe has no record of this reversal.")
    operation.save()
    _reversal_failed(operation, "not_made", "Stripe has no record of this reversal.")


# --------------------------------------------------------------------------
# Refunds
# --------------------------------------------------------------------------


def refund_made(payment: Any, operation: Any, snapshot: Any, *, event_id: str = "") -> Any:
    operation.mark_succeeded(snapshot.id)
    operation.save()
    refund = _row("Refund", operation)
    if refund is None:
        return None
    refund.stripe_refund_id = snapshot.id
    status = snapshot.status or RefundStatus.PENDING
    if status != refund.status and can_proceed(refund.apply_stripe_status):
        refund.apply_stripe_status(status, snapshot.failure_reason or "")
    refund.save()
    if refund.status in (RefundStatus.FAILED, RefundStatus.CANCELED):
        return refund
    if operation.follow_up.get(REVERSAL_REFUSED):
        _refunded_without_reversal(payment, operation, refund)
    if record_refund(payment, refund.amount):
        mark_refunded_milestones(payment)
        if operation.request.get("reverse_transfer"):
            _book_destination_reversal(payment)
        payment.save()
        sync_task_status(payment)
        log_payment(payment, "payment refunded: %s", refund.amount)
        notify("payment_refunded", payment=payment, refund=refund)
    return refund


def _refunded_without_reversal(payment: Any, operation: Any, refund: Any) -> None:
    """A refund 0.1 sent whose reversal Stripe refused was made at Stripe
    (found by its lookup, or its event): the customer was refunded from the
    platform's balance and the doer kept the share the reversal asked back.

    Recorded as made (Stripe's fact); the refusal's ``reversal_failed``
    incident stays open and says so, for staff to recover that money.
    """
    incident = (
        model("TransferIncident")
        .objects.filter(pk=operation.follow_up.get(_REFUSAL_INCIDENT), payment=payment)
        .first()
        if operation.follow_up.get(_REFUSAL_INCIDENT)
        else None
    )
    note = (
        f"The refund an earlier version (0.1) sent, {refund.idempotency_key}, was made at "
        f"Stripe all the same ({refund.stripe_refund_id}, {refund.amount} "
        f"{refund.currency}): the platform refunded the customer from its own balance and "
        "the doer kept the share this reversal asked back."
    )
    if incident is not None and note not in incident.message:
        incident.message = "\n".join(filter(None, [incident.message, note]))
        incident.save(update_fields=["message", "updated_at"])
    log_payment(
        payment,
        "refund %s made by 0.1 although its reversal was refused (%s): the doer kept "
        "the share, incident %s stays open",
        refund.stripe_refund_id,
        operation.follow_up.get(REVERSAL_REFUSED),
        getattr(incident, "pk", None),
        level=logging.ERROR,
    )


def record_refund(payment: Any, amount: int) -> bool:
    """Count a refund Stripe made in the payment's books (not saved); False if it cannot be.

    Stripe's fact whatever the payment's state: a refund confirmed while a
    dispute is open (Stripe refunds a charge under an inquiry; or the
    refund was sent before the dispute) is counted, and the dispute's close
    returns the payment to the state the totals lead to. (A refund asked for
    through the API is still refused while a dispute is open: ``refund``'s
    sources.)
    """
    if can_proceed(payment.refund):
        payment.refund(amount)
    elif can_proceed(payment.refund_during_dispute):
        payment.refund_during_dispute(amount)
    else:
        return False
    return True


def mark_refunded_milestones(payment: Any) -> list[Any]:
    """Mark ``refunded`` the still-held milestones a refund left without money.

    Call after ``payment.refund()``. A refund takes held money first, and the
    held money is the milestones' not yet released (those with no release), so
    what they add up to beyond ``amount_held`` was refunded: the latest ones
    that fit wholly in that shortfall become ``refunded`` (all of them once
    nothing is held). A milestone only partly refunded stays held; its release
    sends what is left of it (a release never takes more than is held).
    """
    still_held = list(
        payment.milestones.filter(
            status__in=[MilestoneStatus.HELD, MilestoneStatus.DELIVERED], releases__isnull=True
        ).order_by("-position")
    )
    # A refund, not a lost dispute, is what leaves milestones without money.
    shortfall = sum(m.amount for m in still_held) - payment.amount_held_before_loss
    refunded = []
    for milestone in still_held:
        if shortfall <= 0 or milestone.amount > shortfall:
            break
        milestone.mark_refunded()
        milestone.save()
        shortfall -= milestone.amount
        refunded.append(milestone)
    return refunded


def _book_destination_reversal(payment: Any) -> None:
    """Count what a destination charge's refund reversed, from the refund's answer.

    Stripe reverses the (whole-charge) transfer and refunds the application
    fee in proportion to the refund; the app knows the amounts from its own
    request, so the books are right even if ``transfer.reversed`` never
    arrives. Totals only grow (an event may already have counted them).
    """
    gross = books.destination_refund_reversed(payment)
    charged = payment.amount_charged
    transfer = (
        payment.transfers.filter(
            status__in=[TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED],
            amount=charged,
        )
        .order_by("created_at")
        .first()
    )
    if transfer is not None and gross > transfer.amount_reversed:
        transfer.apply_reversed_total(gross)
        transfer.save()
    share = books.doer_share_reversed(payment, charged, gross)
    payment.amount_reversed = max(payment.amount_reversed, min(share, payment.amount_transferred))


def refund_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    record_failed(operation, exc)
    refund = _row("Refund", operation)
    if refund is not None and can_proceed(refund.apply_stripe_status):
        refund.apply_stripe_status(RefundStatus.FAILED, exc.code or exc.message)
        refund.save()
    model("PaymentIncident").objects.create(
        payment=payment,
        kind=IncidentKind.REFUND_FAILED,
        code=exc.code or "",
        message=exc.message,
        stripe_request_id=exc.request_id or "",
        stripe_payment_intent_id=payment.stripe_payment_intent_id,
    )
    if refund is not None:
        # As transfer_failed for a refused transfer: the 409 reaches only the
        # requester (nobody, when escrow_reconcile sent it again), and after
        # a release the reversal stays made, so the customer is owed money
        # that now sits on the platform's balance.
        notify("refund_failed", payment=payment, refund=refund)
    return translate(exc, _("refund the payment"))


def refund_not_made(payment: Any, operation: Any) -> None:
    operation.mark_failed("not_made", "Stripe has no record of this refund.")
    operation.save()
    refund = _row("Refund", operation)
    if refund is not None and can_proceed(refund.apply_stripe_status):
        refund.apply_stripe_status(RefundStatus.CANCELED, "not_made")
        refund.save()


# --------------------------------------------------------------------------
# Voiding a manual-capture hold
# --------------------------------------------------------------------------


def cancel_done(payment: Any, operation: Any, intent: Any, *, event_id: str = "") -> bool:
    if intent.status != "canceled":
        return False
    operation.mark_succeeded(intent.id)
    operation.save()
    if can_proceed(payment.mark_canceled):
        mark_voided(payment)
        sync_task_status(payment)
        log_payment(payment, "hold voided")
        notify("payment_canceled", payment=payment)
    return True


def mark_voided(payment: Any) -> None:
    """Book Stripe's void of ``payment``'s authorisation (saved), and what it settles.

    A manual-capture payment an older version left ``partially_released``
    (docs/recovery.md) has a ``pending`` release and an open
    ``transfer_failed`` incident for the part Stripe refused. The void is
    Stripe's last word: that transfer was never made and can no longer be,
    so the release is ``canceled`` and nobody has to act on the incident.
    """
    refused_part = payment.status == S.PARTIALLY_RELEASED
    payment.mark_canceled()
    payment.save()
    if refused_part:
        _resolve_refused_part(payment)


#: Appended to the incident's message: why it was resolved without staff.
REFUSED_PART_VOIDED = (
    "Resolved when the hold was voided: the payment and its release are canceled, "
    "this transfer was never made and nothing of the payment was released."
)


def _resolve_refused_part(payment: Any) -> None:
    # mark_canceled left partially_released only if no transfer was made.
    pending = list(payment.releases.filter(status=ReleaseStatus.PENDING))
    refused = set(
        payment.transfers.filter(release__in=pending, status=TransferStatus.FAILED).values_list(
            "destination_account_id", "amount"
        )
    )
    for release in pending:
        release.mark_canceled()
        release.save()
    # Only the incidents of the refused part's transfers: a tip's refused
    # transfer (also a transfer_failed incident of this payment) is money on
    # the platform's balance that staff can still send.
    incidents = [
        incident
        for incident in model("TransferIncident").objects.filter(
            payment=payment, kind=IncidentKind.TRANSFER_FAILED, resolved_at__isnull=True
        )
        if (incident.destination_account_id, incident.amount) in refused
        and not incident.message.startswith(tips.TIP_INCIDENT_PREFIX)
    ]
    for incident in incidents:
        incident.resolved_at = timezone.now()
        incident.message = "\n".join(filter(None, [incident.message, REFUSED_PART_VOIDED]))
        incident.save(update_fields=["resolved_at", "message", "updated_at"])
    log_payment(payment, "refused part closed: the hold was voided")


def cancel_refused(payment: Any, operation: Any, exc: GatewayError) -> errors.ServiceError:
    record_failed(operation, exc)
    return translate(exc, _("void the authorisation"))


def cancel_not_made(payment: Any, operation: Any) -> None:
    operation.mark_failed("not_made", "Stripe has no record of this cancellation.")
    operation.save()


# --------------------------------------------------------------------------
# Dispatch by kind
# --------------------------------------------------------------------------

_SUCCEEDED: dict[str, Any] = {
    K.PAYMENT_INTENT: intent_created,
    K.TRANSFER: transfer_made,
    K.CAPTURE: capture_done,
    K.REVERSAL: reversal_made,
    K.REFUND: refund_made,
    K.CANCEL: cancel_done,
    K.TIP_INTENT: tips.tip_intent_created,
    K.TIP_TRANSFER: tips.tip_transfer_made,
    K.CUSTOMER: saved_methods.customer_created,
}
_REFUSED: dict[str, Any] = {
    K.PAYMENT_INTENT: intent_refused,
    K.TRANSFER: release_refused,
    K.CAPTURE: release_refused,
    K.REVERSAL: reversal_refused,
    K.REFUND: refund_refused,
    K.CANCEL: cancel_refused,
    K.TIP_INTENT: tips.tip_intent_refused,
    K.TIP_TRANSFER: tips.tip_transfer_refused,
    K.CUSTOMER: customer_refused,
}
_NOT_MADE: dict[str, Any] = {
    K.PAYMENT_INTENT: intent_not_made,
    K.TRANSFER: release_not_made,
    K.CAPTURE: release_not_made,
    K.REVERSAL: reversal_not_made,
    K.REFUND: refund_not_made,
    K.CANCEL: cancel_not_made,
    K.TIP_INTENT: tips.tip_intent_not_made,
    K.TIP_TRANSFER: tips.tip_transfer_not_made,
    K.CUSTOMER: customer_not_made,
}


def apply_outcome(operation: Any, outcome: Outcome) -> Any:
    """Phase 3: commit the answer; raise the error to show once it is committed.

    Returns the payment as committed: the instance read under its lock here
    (so a caller needs no read of its own afterwards).
    """
    failure: errors.ServiceError | None = None
    with transaction.atomic():
        payment, operation = lock_operation(operation.payment_id, operation.pk)
        if not operation.is_unresolved:
            # A webhook (or a concurrent retry) settled it first, from Stripe's facts.
            return payment
        if outcome.error is None:
            done = _SUCCEEDED[operation.kind](payment, operation, outcome.result)
            if done is False:
                operation.mark_unknown("in_progress", "Stripe has not finished the operation.")
                operation.save()
                failure = errors.OperationPending(
                    _("Stripe is still processing the operation; it completes by itself.")
                )
        elif outcome.unknown:
            record_unknown(operation, outcome.error)
            log_payment(
                payment,
                "%s outcome unknown: %s",
                operation.kind,
                outcome.error.code or outcome.error.message,
                level=logging.WARNING,
            )
            failure = errors.OperationPending(
                _("The request was sent but Stripe did not confirm it; retrying is safe.")
            )
        else:
            failure = _REFUSED[operation.kind](payment, operation, outcome.error)
            # Committed with the refusal, not after it: a refusal saying the
            # charge is disputed holds the payment until the dispute is
            # recorded, so no later request pays out meanwhile.
            radar_holds.hold_for_refusal(payment, operation, outcome.error)
    if failure is not None:
        raise failure
    return payment


def execute(operation: Any) -> None:
    """Phases 2 and 3 of a freshly begun (or renewed) operation.

    A reversal made for a refund 0.1 sent that Stripe refused is followed by
    that refund's lookup (:func:`_after_refused_reversal`) before its
    refusal is raised.
    """
    try:
        apply_outcome(operation, send(operation))
    except errors.ServiceError as failure:
        if operation.kind != K.REVERSAL or not operation.follow_up.get(LEGACY_REFUND):
            raise
        answer = _after_refused_reversal(operation, failure)
        if answer is failure:
            raise
        raise answer from failure


# --------------------------------------------------------------------------
# Looking an operation up at Stripe
# --------------------------------------------------------------------------


def lookup(operation: Any) -> Any:
    """The object ``operation`` made at Stripe, or None when Stripe has none.

    Raises :class:`GatewayError` when Stripe cannot be asked. A payment's
    PaymentIntent creation cannot be looked up (Stripe lists PaymentIntents
    by customer, not metadata): None; a tip's charged off-session is listed
    by its Customer (:func:`.tip_outcomes.lookup_tip_intent`). Nor can a
    Customer (Stripe's search by metadata is not immediately consistent):
    None, so a wanted one is sent again with its key, which returns the
    Customer already made.
    """
    g = gateway()
    key = operation.idempotency_key
    request = operation.request
    if operation.kind == K.TIP_INTENT:
        return tips.lookup_tip_intent(operation, g)
    if operation.kind in (K.TRANSFER, K.TIP_TRANSFER):
        found = g.list_transfers(transfer_group=request["transfer_group"])
        return _match(found, key, operation.amount, request.get("destination"))
    if operation.kind == K.REFUND:
        refunds = g.list_refunds(payment_intent=request["payment_intent"])
        return _match(
            refunds,
            key,
            operation.amount,
            None,
            recorded=_recorded_refund_ids(operation),
            payment_id=str(request.get("metadata", {}).get("escrow_payment_id") or ""),
        )
    if operation.kind == K.REVERSAL:
        transfer = g.retrieve_transfer(request["transfer_id"])
        return _match(list(transfer.reversals), key, operation.amount, None)
    if operation.kind in (K.CAPTURE, K.CANCEL):
        intent = g.retrieve_payment_intent(operation.target_id)
        wanted = "succeeded" if operation.kind == K.CAPTURE else "canceled"
        return intent if intent.status == wanted else None
    return None


def _match(
    objects: Any,
    key: str,
    amount: int | None,
    destination: str | None,
    *,
    recorded: Collection[str] = (),
    payment_id: str = "",
) -> Any:
    """The object the operation made: by its ``escrow_operation`` metadata.

    Objects made before the journal carried the key (by 0.1) are matched by
    amount (and destination) among those not recorded yet: neither by an
    operation nor in ``recorded`` (the refunds' Stripe ids on other Refund
    rows: a refund made in the Stripe Dashboard of the same amount, its
    webhook recorded, was taken for 0.1's and two rows claimed one Stripe
    id). With ``payment_id``, only one carrying it as 0.1 did
    (``metadata[escrow_payment_id]``): a Dashboard refund carries none.
    """
    for obj in objects:
        if obj.metadata.get("escrow_operation") == key:
            return obj
    known = _known_ids()
    for obj in objects:
        if obj.metadata.get("escrow_operation"):
            continue
        if obj.id in known or obj.id in recorded:
            continue
        if payment_id and obj.metadata.get("escrow_payment_id") != payment_id:
            continue
        if amount is not None and obj.amount != amount:
            continue
        if destination and getattr(obj, "destination", None) not in (None, destination):
            continue
        return obj
    return None


def _recorded_refund_ids(operation: Any) -> set[str]:
    """The Stripe ids of the payment's Refund rows other than ``operation``'s own."""
    return set(
        model("Refund")
        .objects.filter(payment_id=operation.payment_id)
        .exclude(stripe_refund_id="")
        .exclude(idempotency_key=operation.idempotency_key)
        .values_list("stripe_refund_id", flat=True)
    )


def _known_ids() -> set[str]:
    # Small: only objects without the operation key (made by 0.1) reach here.
    return set(
        model("MoneyOperation")
        .objects.exclude(stripe_object_id="")
        .values_list("stripe_object_id", flat=True)[:10000]
    )


# --------------------------------------------------------------------------
# Settling an unresolved operation
# --------------------------------------------------------------------------


#: The calls that move held money to the doer.
_RELEASE_KINDS = frozenset({K.TRANSFER, K.CAPTURE})


def _frozen_by_dispute(operation: Any) -> bool:
    payment = payment_model().objects.only("status").get(pk=operation.payment_id)
    if radar_holds.refusal_holds(payment).exists():
        # Stripe refused an operation saying the charge is disputed and the
        # dispute is not recorded yet: held as by the dispute itself.
        return True
    if operation.follow_up.get(AFTER_LOSS):
        # The rest a lost dispute left, sent after the loss: only another
        # dispute opened since freezes it, as it refuses a new release.
        return bool(open_disputes(payment.disputes).exists())
    return bool(payment.frozen_by_dispute)


def drive(
    operation: Any,
    *,
    wanted: bool,
    look_first: bool = False,
    for_another: bool | None = None,
    pays_out: bool = False,
) -> None:
    """Settle an unresolved operation; no transaction may be open.

    ``wanted``: the caller asks for this very operation (the request retried,
    ``escrow_reconcile``): it is finished, by sending the same request with
    the same key; not a release's transfer or capture while a dispute is
    open, nor a tip's transfer while its charge is disputed (open or lost),
    nor either while a ``charge_disputed`` hold is open (Stripe refused an
    operation saying the charge is disputed), which is only looked up (as
    when not ``wanted``). When Stripe may no longer remember that key
    (older than 23 h, or a 5xx stored under it), or with ``look_first``, the
    object is looked up first; the next attempt gets a new key only if
    Stripe has nothing and the key may be forgotten.

    Not ``wanted``: another operation waits for the payment. The object is
    looked up; found, the operation is finished; not found, it is settled as
    never made once its lease has passed (no process can still be sending
    it), otherwise the caller is told to wait (409 ``operation_pending``).

    ``for_another`` (by default: not ``wanted``): the caller is not the
    request that began ``operation``, and finishes it only because it waits
    for the payment (a refund, a reversal or an off-session tip, which are
    never given up; another tip's transfer). Stripe's refusal of it is
    committed with it (incident, notification) and answers its own
    requester, not the caller, which goes on with its own work
    (:func:`_finish`).

    ``pays_out``: the caller goes on to move money out of the charge (a
    release, a split release, a tip's transfer). A refusal saying the charge
    is disputed (:data:`DISPUTED_CHARGE_CODES`) stops it all the same: it is
    raised to the caller, still committed with the operation it refused.
    """
    if for_another is None:
        for_another = not wanted
    if operation.kind == K.REFUND and operation.follow_up.get(REVERSAL_REFUSED):
        # A refund 0.1 sent whose reversal Stripe refused: never sent, only
        # looked up, whoever asks.
        _look_up_refund_of_refused_reversal(operation, for_another=for_another)
        return
    if operation.kind == K.REFUND and operation.follow_up.get(LEGACY_REFUND):
        # A refund 0.1 sent: Stripe may have made it under a key it has
        # forgotten since (the operation is new, its key is not): looked up
        # before it is sent again.
        look_first = True
    # Money owed back to the customer is never given up for another
    # operation: a refund (or the reversal before it) is finished instead.
    wanted = wanted or operation.kind in (K.REFUND, K.REVERSAL)
    # A tip charged off-session on the saved card is never given up either:
    # Stripe may have charged it without the customer, who asked for it; the
    # same key finishes it (it is the customer's request, not a second one).
    wanted = wanted or tips.charged_off_session(operation)
    if wanted and operation.kind in _RELEASE_KINDS and _frozen_by_dispute(operation):
        # A dispute opened while the release's answer was unknown: what Stripe
        # did is learnt (and booked), but nothing is sent while it is open;
        # not found once the lease has passed, the release was never made and
        # the dispute's close returns the payment to held.
        wanted = False
    if (
        wanted
        and operation.kind == K.TIP_TRANSFER
        and (
            tips.transfer_frozen_by_dispute(operation)
            or radar_holds.refusal_holds(operation.payment_id).exists()
        )
    ):
        # Likewise a tip's transfer begun before its charge was disputed (or
        # before Stripe refused an operation saying so): a transfer made is
        # booked, one never made is given up once its lease has passed, and
        # the tip waits (paid) for the dispute's close.
        wanted = False
    if wanted and not look_first and not answer_may_be_lost(operation):
        if _settled_while_waiting(operation):
            return
        renewed = renew(operation.pk, operation.payment_id)
        if renewed is not None:
            _finish(renewed, for_another=for_another, pays_out=pays_out)
        return
    found = _look_up_or_in_flight(operation)
    with transaction.atomic():
        payment, current = lock_operation(operation.payment_id, operation.pk)
        if not current.is_unresolved:
            return
        if found is not None and _SUCCEEDED[current.kind](payment, current, found) is not False:
            return
        if not wanted:
            if not lease_expired(current):
                raise errors.OperationInFlight()
            _NOT_MADE[current.kind](payment, current)
            return
        if answer_may_be_lost(current) and current.kind == K.TIP_INTENT:
            if tips.charged_off_session(current) and not lease_expired(current):
                # Not listed yet: the call that answered a 5xx (or timed out)
                # may still be making the PaymentIntent at Stripe. Given up
                # now, the customer's retry would charge the card again under
                # a new tip; the answer stays pending until the lease passes
                # (409 operation_pending, as for any operation in its lease).
                raise errors.OperationInFlight()
            # Not found by the lookup (an off-session charge is listed by its
            # Customer): none was made, or, customer-present, none could be
            # paid (its client secret was never answered). Sent again under a
            # new key it would be a second tip: the tip is given up, and should
            # a PaymentIntent exist after all, its events find the tip.
            _NOT_MADE[current.kind](payment, current)
            return
        if answer_may_be_lost(current):
            # Stripe has nothing under a key it may have forgotten: this
            # attempt never happened; the next one gets a new key.
            key, attempt = next_key(payment, current.kind)
            carried = current.follow_up
            current.mark_failed("not_made", "Stripe has no record of this attempt; sent again.")
            # The attempt sent in its place, for whoever reads this one's
            # outcome (reconcile's report, a retried release's answer): the
            # next row of its kind may be another operation (the next
            # payee's reversal, the next milestone's transfer).
            current.follow_up = {**carried, REPLACED_BY: key}
            current.save()
            request = dict(current.request)
            if "metadata" in request:
                request["metadata"] = {**request["metadata"], "escrow_operation": key}
            successor = begin(
                payment,
                current.kind,
                request,
                amount=current.amount,
                target_id=current.target_id,
                key=key,
                attempt=attempt,
                # What the operation commits on success goes with it (the
                # refund a reversal makes room for): without it the payee's
                # money came back and the customer was never refunded.
                follow_up=carried,
                user=current.requested_by,
                # Still the same client request: its retry must find this one.
                request_key=current.request_key,
            )
            _rekey_row(current, successor)
        else:
            current.mark_sending(timezone.now() + lease())
            current.save()
            successor = current
    _finish(successor, for_another=for_another, pays_out=pays_out)


def _look_up_or_in_flight(operation: Any) -> Any:
    """Stripe's object the unresolved ``operation`` made, or None; Stripe
    cannot be asked: ``OperationInFlight`` (left for the next request or
    ``escrow_reconcile``). No transaction open, no lock held."""
    try:
        return lookup(operation)
    except GatewayError as exc:
        if not exc.is_transient:
            # A refusal, not an outage (a restricted key without read access,
            # an object of another account): asking again gets the same
            # answer. Nothing is assumed about what Stripe did, so the
            # operation stays unresolved, but "try again shortly" hid the
            # cause on every request and run for ever: the answer says Stripe
            # refused, and an ERROR log line what Stripe said, for staff.
            logger.error(
                "Payment %s: Stripe refused to look up %s operation %s (%s, status %s, "
                "request %s): %s; it stays unresolved until the cause is fixed",
                operation.payment_id,
                operation.kind,
                operation.idempotency_key,
                exc.code or exc.error_type or type(exc).__name__,
                exc.http_status,
                exc.request_id or "-",
                exc.message,
            )
            # Stripe's own words stay in the log: the answer goes to whoever
            # asked (a customer too), and a refusal can name the platform's
            # key or account.
            raise errors.OperationInFlight(
                _(
                    "An earlier payment operation has not been confirmed, and Stripe refused "
                    "to look it up. It stays unresolved until staff fix the cause; trying "
                    "again does not help until then."
                )
            ) from exc
        raise errors.OperationInFlight(
            _(
                "An earlier payment operation has not been confirmed and Stripe cannot be "
                "asked about it right now; try again shortly."
            )
        ) from exc


def _look_up_refund_of_refused_reversal(operation: Any, *, for_another: bool) -> None:
    """Settle a refund 0.1 sent whose reversal Stripe refused
    (:data:`.operations.REVERSAL_REFUSED`) from Stripe's facts alone.

    Looked up as before sending any 0.1 refund (:func:`lookup`: a refund of
    the charge carrying the payment's ``metadata[escrow_payment_id]``, of its
    amount, recorded on no other row), with no transaction open and no lock
    held. Found, 0.1 made it: recorded as made (:func:`refund_made`; the
    ``reversal_failed`` incident stays open and says so). Not found, 0.1
    never made it, and it is not sent (the doer's money could not come back):
    ``failed``, and that is the answer (``409 reversal_failed``) unless
    ``for_another``. Stripe cannot be asked: ``OperationInFlight``, the
    operation left unresolved for the next request or ``escrow_reconcile``.
    """
    found = _look_up_or_in_flight(operation)
    with transaction.atomic():
        payment, current = lock_operation(operation.payment_id, operation.pk)
        if not current.is_unresolved:
            return
        if found is not None:
            refund_made(payment, current, found)
            return
        code = _refused_reversal_code(current)
        current.mark_failed(
            "not_made",
            "Stripe has no record of this refund and its reversal was refused: not sent.",
        )
        current.save()
        refund = _row("Refund", current)
        if refund is not None and can_proceed(refund.apply_stripe_status):
            refund.apply_stripe_status(RefundStatus.FAILED, f"reversal_failed: {code}")
            refund.save()
        log_payment(
            payment,
            "refund %s left by 0.1 not made at Stripe; its reversal was refused: failed",
            current.idempotency_key,
            level=logging.WARNING,
        )
    if not for_another:
        raise _reversal_refused_error(code)


def _refused_reversal_code(operation: Any) -> str:
    """Stripe's code for the refusal of the reversal ``operation`` (a refund) waited for."""
    key = operation.follow_up.get(REVERSAL_REFUSED)
    code = (
        model("MoneyOperation")
        .objects.filter(payment_id=operation.payment_id, idempotency_key=key)
        .values_list("error_code", flat=True)
        .first()
    )
    return str(code or "error")


def _refund_of_refused_reversal(reversal: Any) -> Any:
    """The refund :func:`reversal_refused` journaled to be looked up, still unresolved, or None."""
    pending = (
        model("MoneyOperation")
        .objects.filter(
            payment_id=reversal.payment_id,
            kind=K.REFUND,
            status__in=UNRESOLVED_OPERATION_STATES,
        )
        .first()
    )
    if pending is None or pending.follow_up.get(REVERSAL_REFUSED) != reversal.idempotency_key:
        return None
    return pending


def _after_refused_reversal(reversal: Any, failure: errors.ServiceError) -> errors.ServiceError:
    """Stripe refused ``reversal``, made for a refund 0.1 sent: that refund is
    looked up now (the refusal committed, no lock held) and the answer says
    what Stripe did. Stripe cannot be asked: left unresolved (the next
    request or ``escrow_reconcile`` looks it up) and the answer says so.
    """
    pending = _refund_of_refused_reversal(reversal)
    if pending is None:
        return failure
    code = _refused_reversal_code(pending)
    try:
        drive(pending, wanted=True, for_another=True)
    except errors.ServiceError as exc:
        logger.warning(
            "Payment %s: the refund 0.1 sent could not be looked up after its reversal was "
            "refused (%s); the next request or escrow_reconcile looks it up",
            reversal.payment_id,
            exc.code,
        )
        return _reversal_refused_error(code, "unknown")
    refund = _row("Refund", pending)
    if refund is not None and refund.status not in (RefundStatus.FAILED, RefundStatus.CANCELED):
        return _reversal_refused_error(code, "made")
    return failure


#: Stripe's refusal codes saying the charge is disputed (charged back):
#: Stripe freezes the disputed funds. The refusal stops the request that
#: meets it (when it would pay out, :func:`_finish`) and, committed with it,
#: opens a ``charge_disputed`` hold on the payment that stops every later
#: release and tip transfer until the dispute is recorded
#: (:func:`.radar_holds.hold_for_refusal`, docs/recovery.md).
DISPUTED_CHARGE_CODES = radar_holds.DISPUTED_CHARGE_CODES


def _finish(operation: Any, *, for_another: bool, pays_out: bool = False) -> None:
    """Send ``operation`` and commit its outcome (:func:`execute`).

    ``for_another``: finished because another request waits for the payment
    (a staff refund, a release, a tip, their webhooks). Stripe's refusal of
    it is committed with it (the refund failed, its incident and
    ``refund_failed``; the reversal's ``transfer_failed``; the tip canceled)
    and is the answer of its own request (its keyed replay, the admin action
    or command that sent it), not this one's, which goes on with its own
    work: only an operation still unresolved stops it, or, for a caller that
    ``pays_out``, a refusal saying the charge is disputed.
    """
    try:
        execute(operation)
    except errors.ServiceError as exc:
        if not for_another or _still_unresolved(operation):
            raise
        if pays_out and exc.code in DISPUTED_CHARGE_CODES:
            # The refund was refused because the charge is disputed: a
            # release (or tip transfer) going on would pay out money the
            # dispute may take back.
            raise
        logger.info(
            "Payment %s: Stripe refused the %s another request finished (%s); that request goes on",
            operation.payment_id,
            operation.kind,
            exc.code,
        )


def _still_unresolved(operation: Any) -> bool:
    return bool(
        model("MoneyOperation")
        .objects.filter(pk=operation.pk, status__in=UNRESOLVED_OPERATION_STATES)
        .exists()
    )


#: How long a repeated request waits for the first one's call to finish
#: before sending the same key itself (a double click, a concurrent confirm).
SAME_REQUEST_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.05


def _settled_while_waiting(operation: Any) -> bool:
    """Wait (bounded, no transaction open) for a call another process is sending.

    While an operation is ``pending`` within its lease, its first call may
    still be running: sending the same key again is safe but costs a Stripe
    call, so the request first waits for that call's outcome. A crashed
    sender never settles it, and the wait ends with the lease or after
    :data:`SAME_REQUEST_WAIT_SECONDS`.
    """
    if (
        operation.status != OS.PENDING
        or operation.sent_count == 0
        or operation.lease_expires_at is None
    ):
        return False
    deadline = min(
        operation.lease_expires_at,
        timezone.now() + timedelta(seconds=SAME_REQUEST_WAIT_SECONDS),
    )
    unresolved = model("MoneyOperation").objects.filter(
        pk=operation.pk, status__in=UNRESOLVED_OPERATION_STATES
    )
    while timezone.now() < deadline:
        if not unresolved.exists():
            return True
        time.sleep(_POLL_SECONDS)
    return not unresolved.exists()


def _rekey_row(previous: Any, successor: Any) -> None:
    """The domain row of a restarted operation follows it to the new key."""
    name = {
        K.TRANSFER: "Transfer",
        K.REFUND: "Refund",
        K.REVERSAL: "TransferReversal",
        K.TIP_TRANSFER: "EscrowTipTransfer",
    }.get(previous.kind)
    if name is not None:
        model(name).objects.filter(idempotency_key=previous.idempotency_key).update(
            idempotency_key=successor.idempotency_key
        )


__all__ = [
    "apply_outcome",
    "drive",
    "execute",
    "finish_release",
    "lookup",
    "mark_refunded_milestones",
    "payment_fully_released",
    "record_amount_mismatch",
    "record_capture",
    "record_refund",
    "record_release",
    "resolve_refused_transfers",
    "split_transfer_made",
]
