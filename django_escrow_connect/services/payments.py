"""Payment use cases: create, release, refund, cancel, retry.

Every function follows the same shape: open a transaction, lock the row,
check the transition and the caller's permission, call the gateway with a
key derived from the row (stored on a row before the call), apply the
transition, save, and notify on commit. A gateway failure that leaves the
outcome unknown (timeout, 5xx) is committed as such and reported as
``OperationPending``/``ProviderUnavailable``: running the same operation
again reuses the same key and cannot move money twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django_fsm import can_proceed

from .. import permissions
from ..conf import escrow_settings
from ..exceptions import GatewayError
from ..fees import compute_platform_fee
from ..money import InvalidAmount, validate_minor_amount
from ..notifications import notify
from ..states import (
    AccountStatus,
    EscrowStrategy,
    IncidentKind,
    RefundStatus,
    TransferReversalStatus,
    TransferStatus,
)
from ..states import PaymentStatus as S
from ..terms import TermsUnavailable, get_terms
from . import errors
from .common import (
    account_for_payee,
    gateway,
    idempotency_key,
    lock_payment,
    model,
    payment_model,
    translate,
)
from .tasks import sync_task_status

logger = logging.getLogger("django_escrow_connect.payments")

#: Namespace for payment ids derived from the task: a retried create after a
#: crash produces the same id, the same metadata and so the same Stripe key.
PAYMENT_ID_NAMESPACE = uuid.UUID("6f1c1a3e-5b0e-4e53-9a55-6c0a1e7f3b21")


def _log(payment: Any, message: str, *args: Any, level: int = logging.INFO) -> None:
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


@dataclass(frozen=True)
class PaymentStart:
    """What the customer's browser needs to pay: never stored."""

    payment: Any
    client_secret: str | None
    #: True when this call created the payment; False when it returned the open one.
    created: bool = False


# --------------------------------------------------------------------------
# Create
# --------------------------------------------------------------------------


def create_payment(task_id: Any, user: Any, *, expected_amount: int | None = None) -> PaymentStart:
    """Create (or return the open) payment for a task, with its PaymentIntent.

    The amount, currency and parties come from the task's terms, never from
    the request; ``expected_amount`` is only compared with them.
    """
    Task = model("Task")
    with transaction.atomic():
        try:
            # Locking the task serialises concurrent "pay" clicks.
            task = Task.objects.select_for_update().get(pk=task_id)
        except (Task.DoesNotExist, ValueError, TypeError, ValidationError) as exc:
            # ValidationError: a malformed value for a UUID primary key.
            raise errors.NotFound("No such task.") from exc
        try:
            terms = get_terms(task)
        except TermsUnavailable as exc:
            raise errors.Conflict(str(exc), code="no_payment_terms") from exc
        if terms.payer.pk != user.pk:
            raise errors.Forbidden("Only the task's customer can pay for it.")
        if terms.payee_user is not None and terms.payee_user.pk == user.pk:
            raise errors.InvalidInput("You cannot pay for your own task.", code="self_payment")
        if terms.payee_organization is not None and permissions.is_organization_admin(
            user, terms.payee_organization
        ):
            # Whoever administers the payee organization controls its payouts.
            raise errors.InvalidInput(
                "You cannot pay an organization you administer.", code="self_payment"
            )
        if expected_amount is not None and expected_amount != terms.amount:
            raise errors.InvalidInput(
                "The amount does not match the accepted bid.", code="amount_mismatch"
            )

        Payment = payment_model()
        existing = Payment.objects.filter(task=task).exclude(status=S.CANCELED).first()
        if existing is not None:
            return _resume(existing, user)

        account = account_for_payee(terms.payee_user, terms.payee_organization)
        if (
            account is None
            or account.status == AccountStatus.DEAUTHORIZED
            or not account.can_transfer
        ):
            raise errors.AccountNotReady(
                "The task doer has no connected account that can receive money yet."
            )
        attempt = Payment.objects.filter(task=task, status=S.CANCELED).count()
        payment_id = uuid.uuid5(
            PAYMENT_ID_NAMESPACE, f"{task._meta.label_lower}:{task.pk}:{attempt}"
        )
        strategy = escrow_settings.ESCROW_STRATEGY
        fee = compute_platform_fee(terms.amount, terms.currency)
        payment = Payment(
            id=payment_id,
            task=task,
            payer=terms.payer,
            payee_user=terms.payee_user,
            payee_organization=terms.payee_organization,
            destination_account_id=account.stripe_account_id,
            amount=terms.amount,
            currency=terms.currency,
            platform_fee=fee,
            strategy=strategy,
            transfer_group=f"escrow_{payment_id.hex}",
        )
        payment.intent_idempotency_key = idempotency_key("payment", payment.pk, "intent", 0)
        try:
            with transaction.atomic():
                payment.save(force_insert=True)
        except IntegrityError as exc:
            raise errors.Conflict("This task already has a payment.", code="already_paid") from exc

        manual = strategy == EscrowStrategy.MANUAL_CAPTURE
        try:
            intent = gateway().create_payment_intent(
                idempotency_key=payment.intent_idempotency_key,
                amount=payment.amount,
                currency=payment.currency,
                transfer_group=payment.transfer_group,
                metadata=_metadata(payment),
                capture_method="manual" if manual else "automatic",
                destination=account.stripe_account_id if manual else None,
                application_fee_amount=fee if manual else None,
                description=terms.description[:500] or None,
            )
        except GatewayError as exc:
            # Nothing is kept: no money moved, and the same request later
            # derives the same id and key.
            transaction.set_rollback(True)
            raise translate(exc, "create the payment") from exc
        payment.stripe_payment_intent_id = intent.id
        payment.save(update_fields=["stripe_payment_intent_id", "updated_at"])
        sync_task_status(payment)
        _log(payment, "payment created")
        notify("payment_required", payment=payment, client_secret=intent.client_secret)
        return PaymentStart(payment=payment, client_secret=intent.client_secret, created=True)


def _metadata(payment: Any) -> dict[str, str]:
    return {
        "escrow_payment_id": str(payment.pk),
        "task_id": str(payment.task_id),
        "transfer_group": payment.transfer_group,
    }


def _resume(payment: Any, user: Any) -> PaymentStart:
    """A second "pay" for the same task: the open payment, not a new one."""
    if payment.payer_id != user.pk:
        raise errors.Forbidden("Only the task's customer can pay for it.")
    if payment.status not in (S.AWAITING_PAYMENT, S.FAILED, S.PROCESSING):
        raise errors.Conflict("This task is already paid for.", code="already_paid")
    client_secret = None
    if payment.stripe_payment_intent_id:
        try:
            intent = gateway().retrieve_payment_intent(payment.stripe_payment_intent_id)
        except GatewayError as exc:
            raise translate(exc, "look up the payment") from exc
        client_secret = intent.client_secret
    return PaymentStart(payment=payment, client_secret=client_secret)


# --------------------------------------------------------------------------
# Release
# --------------------------------------------------------------------------


def release_payment(payment_id: Any, user: Any = None, *, system: bool = False) -> Any:
    """Send the held money (less the platform fee) to the doer. Exactly once.

    A payment already released is returned unchanged: a repeated confirm is
    not an error. ``system=True`` is for the automatic-release policy.
    """
    pending_error: errors.ServiceError | None = None
    with transaction.atomic():
        payment = lock_payment(payment_id)
        if not system and not permissions.may_release(payment, user):
            raise errors.Forbidden("Only the customer or platform staff can release a payment.")
        if payment.status in (S.RELEASED, S.PARTIALLY_REFUNDED):
            return payment
        if payment.status not in (S.HELD, S.RELEASING):
            raise errors.TransitionNotAllowed(
                f"A payment that is {payment.get_status_display().lower()} cannot be released."
            )
        if payment.disputes.exclude(status__in=_CLOSED_DISPUTES).exists():
            raise errors.TransitionNotAllowed("The payment is disputed; release is frozen.")
        pending_error = _capture(payment) if payment.is_manual_capture else _transfer(payment)
    if pending_error is not None:
        raise pending_error
    return payment


def _closed_disputes() -> list[str]:
    from ..states import DISPUTE_CLOSED_STATES

    return list(DISPUTE_CLOSED_STATES)


_CLOSED_DISPUTES = _closed_disputes()


def _transfer(payment: Any) -> errors.ServiceError | None:
    """Separate charges and transfers: one Transfer, sourced from the charge."""
    account = account_for_payee(payment.payee_user, payment.payee_organization)
    if account is None or not account.can_transfer:
        raise errors.AccountNotReady("The doer's connected account cannot receive transfers now.")
    net = payment.amount - payment.amount_refunded
    fee = compute_platform_fee(net, payment.currency)
    amount = net - fee
    if amount <= 0:
        payment.release(amount_transferred=0, platform_fee=fee)
        return _released(payment, None)
    if not payment.stripe_charge_id:
        raise errors.Conflict(
            "The charge is not known yet; try again shortly.", code="charge_pending"
        )

    Transfer = model("Transfer")
    key = idempotency_key("payment", payment.pk, "transfer", payment.release_attempts)
    transfer, _ = Transfer.objects.get_or_create(
        idempotency_key=key,
        defaults={
            "payment": payment,
            "amount": amount,
            "currency": payment.currency,
            "destination_account_id": account.stripe_account_id,
            "source_transaction": payment.stripe_charge_id,
        },
    )
    try:
        result = gateway().create_transfer(
            idempotency_key=key,
            amount=transfer.amount,
            currency=transfer.currency,
            destination=transfer.destination_account_id,
            source_transaction=transfer.source_transaction,
            transfer_group=payment.transfer_group,
            metadata=_metadata(payment),
        )
    except GatewayError as exc:
        return _release_call_failed(payment, exc, transfer=transfer)
    transfer.mark_created(result.id)
    transfer.save()
    payment.release(amount_transferred=transfer.amount, platform_fee=fee)
    return _released(payment, transfer)


def _capture(payment: Any) -> errors.ServiceError | None:
    """Manual capture: capturing the authorised charge is the release."""
    key = idempotency_key("payment", payment.pk, "capture", payment.release_attempts)
    try:
        intent = gateway().capture_payment_intent(
            payment.stripe_payment_intent_id,
            idempotency_key=key,
            application_fee_amount=payment.platform_fee,
        )
    except GatewayError as exc:
        return _release_call_failed(payment, exc, transfer=None)
    if intent.status != "succeeded":
        payment.start_release() if payment.status == S.HELD else None
        payment.save()
        return errors.OperationPending("Stripe is still capturing the payment.")
    payment.stripe_charge_id = intent.latest_charge or payment.stripe_charge_id
    payment.release(amount_transferred=payment.amount - payment.platform_fee)
    return _released(payment, None)


def _released(payment: Any, transfer: Any) -> None:
    payment.save()
    sync_task_status(payment)
    _log(payment, "payment released")
    notify("payment_released", payment=payment, transfer=transfer)
    return None


def _release_call_failed(payment: Any, exc: GatewayError, *, transfer: Any) -> errors.ServiceError:
    if exc.is_transient:
        # Stripe may or may not have acted: remember that, keep the key.
        if payment.status == S.HELD:
            payment.start_release()
            payment.save()
        _log(payment, "release outcome unknown: %s", exc.code or exc.message, level=logging.WARNING)
        return errors.OperationPending(
            "The release was sent but Stripe did not confirm it; retrying is safe."
        )
    # A definite refusal: the money stays held; the next try gets a new key.
    if transfer is not None:
        transfer.mark_failed(code=exc.code or "", message=exc.message)
        transfer.save()
    if payment.status == S.RELEASING:
        payment.release_failed()
    else:
        payment.release_attempts += 1
    payment.save()
    incident = model("TransferIncident").objects.create(
        payment=payment,
        kind=IncidentKind.TRANSFER_FAILED,
        code=exc.code or "",
        message=exc.message,
        stripe_request_id=exc.request_id or "",
        destination_account_id=payment.destination_account_id,
        amount=transfer.amount if transfer is not None else payment.amount,
        currency=payment.currency,
    )
    _log(payment, "release failed: %s", exc.code or exc.message, level=logging.WARNING)
    notify("transfer_failed", payment=payment, incident=incident)
    return errors.Conflict(
        f"Stripe refused the release ({exc.code or 'error'}); the money is still held "
        "and the release can be retried.",
        code="release_failed",
    )


# --------------------------------------------------------------------------
# Refund
# --------------------------------------------------------------------------


def refund_payment(
    payment_id: Any,
    user: Any = None,
    *,
    amount: int | None = None,
    reason: str = "",
    system: bool = False,
) -> Any:
    """Give money back to the customer, in full or in part.

    Before release the charge is refunded (or, with manual capture, the hold
    is voided). After release the doer's share is first reversed from their
    connected account, then the charge is refunded; if the reversal fails no
    refund is made.
    """
    outcome: errors.ServiceError | None = None
    with transaction.atomic():
        payment = lock_payment(payment_id)
        if not system and not permissions.may_refund(payment, user):
            raise errors.Forbidden("Only the doer or platform staff can refund a payment.")
        # A refund whose outcome is unknown is finished first, with its own
        # key: sending a new one could refund twice.
        unconfirmed = payment.refunds.filter(
            status=RefundStatus.PENDING, stripe_refund_id=""
        ).first()
        if unconfirmed is not None:
            if amount is not None and amount != unconfirmed.amount:
                raise errors.Conflict(
                    f"A refund of {unconfirmed.amount} is still unconfirmed; retry it first.",
                    code="refund_pending",
                )
            try:
                return _send_refund(payment, unconfirmed)
            except errors.ServiceError as failure:
                # Committed, not rolled back: the refund's failed state (and a
                # reversal already made at Stripe) must stay recorded.
                outcome = failure
        else:
            outcome = _new_refund(payment, user, amount, reason)
    if outcome is not None:
        raise outcome
    return payment


def _new_refund(
    payment: Any, user: Any, amount: int | None, reason: str
) -> errors.ServiceError | None:
    # The state first: refunding a canceled or refunded payment is a conflict
    # (409), whatever amount was asked for.
    if not can_proceed(payment.refund):
        raise errors.TransitionNotAllowed(
            f"A payment that is {payment.get_status_display().lower()} cannot be refunded."
        )
    refundable = payment.amount - payment.amount_refunded
    if amount is None:
        amount = refundable
    try:
        validate_minor_amount(amount, payment.currency)
    except (InvalidAmount, TypeError) as exc:
        raise errors.InvalidInput(str(exc), code="invalid_amount") from exc
    if amount <= 0 or amount > refundable:
        raise errors.InvalidInput(
            f"The refund must be between 1 and {refundable} (minor units).",
            code="invalid_amount",
        )
    released = payment.status in (S.RELEASED, S.PARTIALLY_REFUNDED)
    if payment.is_manual_capture and not released:
        if amount != payment.amount:
            raise errors.InvalidInput(
                "With manual capture a held payment can only be voided in full; "
                "release it first for a partial refund.",
                code="partial_refund_unsupported",
            )
        _void_hold(payment)
        return None

    seq = payment.refunds.count()
    if released and not payment.is_manual_capture:
        failure = _reverse_for_refund(payment, amount, seq)
        if failure is not None:
            return failure
    refund = model("Refund").objects.create(
        payment=payment,
        idempotency_key=idempotency_key("payment", payment.pk, "refund", seq),
        amount=amount,
        currency=payment.currency,
        reason=reason[:64],
        requested_by=user if getattr(user, "pk", None) else None,
    )
    try:
        _send_refund(payment, refund)
    except errors.ServiceError as failure:
        # Keep the refund row: pending, its key finishes it on a retry; failed,
        # it stays on record, and so does the reversal made before it.
        return failure
    return None


STRIPE_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def _send_refund(payment: Any, refund: Any) -> Any:
    released = payment.status in (S.RELEASED, S.PARTIALLY_REFUNDED)
    destination_charge = released and payment.is_manual_capture
    try:
        result = gateway().create_refund(
            idempotency_key=refund.idempotency_key,
            payment_intent=payment.stripe_payment_intent_id,
            amount=refund.amount,
            metadata=_metadata(payment),
            reason=refund.reason if refund.reason in STRIPE_REFUND_REASONS else None,
            # Destination charges: take the doer's share and the fee back in
            # proportion, as Stripe does with these two flags.
            reverse_transfer=destination_charge,
            refund_application_fee=destination_charge,
        )
    except GatewayError as exc:
        if exc.is_transient:
            _log(payment, "refund outcome unknown", level=logging.WARNING)
            raise errors.OperationPending(
                "The refund was sent but Stripe did not confirm it; retrying is safe."
            ) from exc
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
        raise translate(exc, "refund the payment") from exc
    _apply_refund_result(payment, refund, result)
    return payment


def _apply_refund_result(payment: Any, refund: Any, result: Any) -> None:
    refund.stripe_refund_id = result.id
    status = result.status or RefundStatus.PENDING
    if status != refund.status and can_proceed(refund.apply_stripe_status):
        refund.apply_stripe_status(status, result.failure_reason or "")
    refund.save()
    if refund.status in (RefundStatus.FAILED, RefundStatus.CANCELED):
        return
    payment.refund(refund.amount)
    payment.save()
    sync_task_status(payment)
    _log(payment, "payment refunded: %s", refund.amount)
    notify("payment_refunded", payment=payment, refund=refund)


def reversal_target(payment: Any, total_refunded: int) -> int:
    """How much of the transfer should be reversed once ``total_refunded`` is.

    Proportional to the refund, like Stripe's ``reverse_transfer``; a full
    refund reverses everything that was transferred.
    """
    if payment.amount_transferred <= 0:
        return 0
    if total_refunded >= payment.amount:
        return payment.amount_transferred
    return (total_refunded * payment.amount_transferred) // payment.amount


def _reverse_for_refund(payment: Any, amount: int, seq: int) -> errors.ServiceError | None:
    """Pull the doer's share of ``amount`` back before refunding it.

    Returns the error to raise once the failure record is committed, or None.
    """
    needed = reversal_target(payment, payment.amount_refunded + amount) - payment.amount_reversed
    if needed <= 0:
        return None
    transfer = payment.transfers.filter(
        status__in=[TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED]
    ).first()
    if transfer is None:
        raise errors.Conflict("No transfer to reverse was found.", code="transfer_missing")
    # Stripe keeps a definite refusal under its key: after one, the next try
    # needs a new key (a crash or timeout keeps the count, and so the key).
    refused = payment.transfer_reversals.filter(status=TransferReversalStatus.FAILED).count()
    key = idempotency_key("payment", payment.pk, "reversal", f"{seq}.{refused}" if refused else seq)
    reversal, _ = model("TransferReversal").objects.get_or_create(
        idempotency_key=key,
        defaults={
            "payment": payment,
            "stripe_transfer_id": transfer.stripe_transfer_id,
            "amount": needed,
            "currency": payment.currency,
        },
    )
    try:
        result = gateway().create_transfer_reversal(
            transfer_id=transfer.stripe_transfer_id,
            idempotency_key=key,
            amount=reversal.amount,
            metadata=_metadata(payment),
        )
    except GatewayError as exc:
        if exc.is_transient:
            # Nothing is recorded; the same refund later derives the same key.
            raise translate(exc, "reverse the transfer") from exc
        reversal.mark_failed(code=exc.code or "", message=exc.message)
        reversal.save()
        incident = model("TransferIncident").objects.create(
            payment=payment,
            kind=IncidentKind.REVERSAL_FAILED,
            code=exc.code or "",
            message=exc.message,
            stripe_request_id=exc.request_id or "",
            stripe_transfer_id=transfer.stripe_transfer_id,
            destination_account_id=transfer.destination_account_id,
            amount=reversal.amount,
            currency=payment.currency,
        )
        notify("transfer_failed", payment=payment, incident=incident)
        return errors.Conflict(
            f"The doer's account could not return the money ({exc.code or 'error'}); "
            "no refund was made.",
            code="reversal_failed",
        )
    reversal.mark_succeeded(result.id)
    reversal.save()
    transfer.apply_reversed_total(transfer.amount_reversed + reversal.amount)
    transfer.save()
    payment.amount_reversed += reversal.amount
    payment.save()
    return None


def _void_hold(payment: Any) -> Any:
    key = idempotency_key("payment", payment.pk, "cancel", payment.intent_attempts)
    try:
        gateway().cancel_payment_intent(
            payment.stripe_payment_intent_id,
            idempotency_key=key,
            cancellation_reason="requested_by_customer",
        )
    except GatewayError as exc:
        transaction.set_rollback(True)
        raise translate(exc, "void the authorisation") from exc
    payment.cancel()
    payment.save()
    sync_task_status(payment)
    _log(payment, "hold voided")
    notify("payment_canceled", payment=payment)
    return None


# --------------------------------------------------------------------------
# Cancel and retry
# --------------------------------------------------------------------------


def cancel_payment(payment_id: Any, user: Any = None, *, system: bool = False) -> Any:
    """Cancel a payment before money moved (void a manual-capture hold)."""
    with transaction.atomic():
        payment = lock_payment(payment_id)
        if payment.status == S.CANCELED:
            return payment
        if not system and not permissions.may_cancel(payment, user):
            raise errors.Forbidden("You cannot cancel this payment.")
        cancellable = payment.status in (S.AWAITING_PAYMENT, S.FAILED) or (
            payment.status == S.HELD and payment.is_manual_capture
        )
        if not cancellable or not can_proceed(payment.cancel):
            hint = " Use a refund instead." if payment.status == S.HELD else ""
            raise errors.TransitionNotAllowed(
                f"A payment that is {payment.get_status_display().lower()} cannot be canceled."
                + hint
            )
        if payment.status == S.HELD and not (
            system or permissions.is_platform_staff(user) or permissions.is_payee(user, payment)
        ):
            raise errors.Forbidden("Only the doer or staff can void money already held.")
        _void_hold(payment)
    return payment


def retry_payment(payment_id: Any, user: Any) -> PaymentStart:
    """After a failed attempt the customer pays again on the same intent."""
    with transaction.atomic():
        payment = lock_payment(payment_id)
        # Not has_transition_perm(): it is also False when the state does not
        # allow the transition, which made every non-failed payment a 403.
        if not permissions.is_payer(user, payment):
            raise errors.Forbidden("Only the customer can retry a payment.")
        if not can_proceed(payment.retry_payment):
            raise errors.TransitionNotAllowed("Only a failed payment can be retried.")
        payment.retry_payment()
        payment.save()
        sync_task_status(payment)
        return _resume(payment, user)
