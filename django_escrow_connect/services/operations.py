"""The operation journal: every money call to Stripe in three phases.

A use case that moves money (create, release, refund, reversal, cancel)
never calls Stripe inside a database transaction. It

1. **commits its intent** (:func:`begin`): a :class:`MoneyOperation` row with
   the idempotency key and the exact request, plus the payment's in-flight
   state, in one short transaction that holds the payment's row lock;
2. **calls Stripe** (:func:`send`) with no transaction open and no lock held;
3. **commits the outcome** in a second short transaction that locks the
   payment again and re-checks the operation: a webhook may have finished it
   in the meantime (every path converges on Stripe's facts).

A crash between 1 and 3 leaves the operation ``pending``. Whoever comes next
(the same request retried, another operation on the payment, a webhook,
``escrow_reconcile``) settles it first with :func:`settle`: it looks the
object up at Stripe when the answer may be lost for good, and otherwise sends
the same request with the same key, which Stripe answers from its
idempotency store. A payment has at most one unresolved operation (a unique
partial index), so two money operations are never in flight at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import observability, states
from ..conf import escrow_settings
from ..exceptions import GatewayError
from ..states import UNRESOLVED_OPERATION_STATES, MoneyOperationKind
from . import errors
from .common import KEY_PREFIX, gateway, idempotency_key, key_prefix, lock_payment, model

logger = logging.getLogger("django_escrow_connect.operations")

#: The span around one money call (see docs/observability.md).
MONEY_OPERATION_SPAN = "escrow_connect.money_operation"

__all__ = [
    "KEY_WINDOW",
    "Outcome",
    "begin",
    "in_transaction",
    "lease",
    "operation_metadata",
    "request_operations",
    "send",
    "unresolved_operation",
]

K = MoneyOperationKind

#: Stripe may prune an idempotency key after 24 hours; past this age a retry
#: looks the object up first instead of trusting the key.
KEY_WINDOW = timedelta(hours=23)

#: The words each kind uses in its idempotency key (kept from 0.1, so keys of
#: operations started before the journal existed stay the same).
KEY_WORDS: dict[str, str] = {
    K.PAYMENT_INTENT: "intent",
    K.TRANSFER: "transfer",
    K.CAPTURE: "capture",
    K.REVERSAL: "reversal",
    K.REFUND: "refund",
    K.CANCEL: "cancel",
    # Tips key their calls by the tip (services/tips.py), not by the payment.
    K.TIP_INTENT: "tip-intent",
    K.TIP_TRANSFER: "tip-transfer",
    K.CUSTOMER: "customer",
}


def operation_model() -> Any:
    return model("MoneyOperation")


def lease() -> timedelta:
    """How long a sent call may still be running in the process that sent it.

    ``MONEY_OPERATION_LEASE_SECONDS``, or by default the longest the Stripe
    client can take (timeout x tries) plus a margin. Until it has passed,
    nobody else concludes that the call did not happen.
    """
    configured = escrow_settings.MONEY_OPERATION_LEASE_SECONDS
    if configured is not None:
        return timedelta(seconds=float(configured))
    timeout = escrow_settings.STRIPE_TIMEOUT
    longest = max(timeout) if isinstance(timeout, (list, tuple)) else float(timeout)
    tries = int(escrow_settings.STRIPE_MAX_NETWORK_RETRIES) + 1
    return timedelta(seconds=longest * tries + 30)


def in_transaction() -> bool:
    """Whether code opened a transaction on the default connection.

    A test case's own wrapping transaction (Django's ``TestCase``) is not
    one: it stands in for the autocommit a real request has.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return False
    blocks = connection.atomic_blocks
    return not blocks or any(not getattr(b, "_from_testcase", False) for b in blocks)


def operation_metadata(payment: Any, key: str = "") -> dict[str, str]:
    """Metadata every object the package creates at Stripe carries.

    ``escrow_namespace`` (the ``IDEMPOTENCY_KEY_PREFIX``, when it is not the
    default, as on connected accounts) tells installations that share a
    Stripe account apart; ``escrow_operation`` names the journal entry, so a
    lookup or a webhook finds exactly the object one operation made.
    """
    metadata = {
        "escrow_payment_id": str(payment.pk),
        "task_id": str(payment.task_id),
        "transfer_group": payment.transfer_group,
    }
    if key_prefix() != KEY_PREFIX:
        metadata["escrow_namespace"] = key_prefix()
    if key:
        metadata["escrow_operation"] = key
    return metadata


def is_other_installation(metadata: dict[str, str] | None) -> bool:
    """An object created by another installation on the same Stripe account."""
    return (metadata or {}).get("escrow_namespace", KEY_PREFIX) != key_prefix()


def unresolved_operation(payment: Any) -> Any:
    return payment.operations.filter(status__in=UNRESOLVED_OPERATION_STATES).first()


def request_operations(payment: Any, user: Any, request_key: str) -> list[Any]:
    """The operations an API request sent with ``Idempotency-Key: request_key`` began.

    Scoped to the payment and the user who sent it: another user's key, or
    the same key on another payment, is another request. Oldest first (the
    first is the one the request itself began; the others followed from it).
    Read with the payment locked: the lock orders two identical requests, so
    the second one finds what the first committed.
    """
    if not request_key or not getattr(user, "pk", None):
        return []
    return list(
        payment.operations.filter(request_key=request_key, requested_by=user).order_by(
            "created_at", "pk"
        )
    )


def is_request_operation(operation: Any, user: Any, request_key: str) -> bool:
    """Whether ``operation`` belongs to the request ``user`` sent with ``request_key``."""
    return bool(
        request_key
        and operation is not None
        and operation.request_key == request_key
        and operation.requested_by_id == getattr(user, "pk", None)
    )


#: The ``follow_up`` entry of an attempt :func:`.outcomes.drive` marked not
#: made and sent again under the next key: that key.
REPLACED_BY = "replaced_by"

#: The ``follow_up`` entry of a refund (and of the reversals before it)
#: asked with no amount: the rest, charged less refunded when it was begun.
#: A later request without a key and without an amount asks for the rest
#: too, and takes it for its own even once the rest has changed (a refund
#: made in the Stripe Dashboard since): :func:`.payments.refund_payment`.
ASKED_THE_REST = "asked_the_rest"

#: The ``follow_up`` entry of a transfer sent after the payment's dispute was
#: lost (:data:`..states.AFTER_LOSS`, defined there for :mod:`..holdings`).
AFTER_LOSS = states.AFTER_LOSS

#: The ``follow_up`` entry of a refund 0.1 sent without a journal whose
#: answer was lost, once journaled (its own key), and of the reversals begun
#: before it: that refund's key. The reversals commit it, not a new refund
#: (:func:`.outcomes.begin_legacy_refund`), and it is looked up at Stripe
#: before it is sent again (:func:`.outcomes.drive`).
LEGACY_REFUND = "legacy_refund"

#: The ``follow_up`` entry of a refund 0.1 sent whose reversal Stripe
#: refused (:func:`.outcomes.reversal_refused`): the refused reversal's key.
#: Such a refund is only looked up at Stripe, never sent (the doer's money
#: could not come back): found, 0.1 made it and it is recorded; not found,
#: it is ``failed`` (:func:`.outcomes.drive`). Journaled with the refusal,
#: so a crash before the lookup leaves it for the next request or
#: ``escrow_reconcile``, and the refund is not adopted (and its reversal
#: tried) again.
REVERSAL_REFUSED = "reversal_refused"


def last_attempt(operation: Any) -> Any:
    """``operation`` as it now stands, or the attempt sent in its place.

    Followed through every replacement (:data:`REPLACED_BY`): the attempt
    whose key Stripe holds and whose status is the operation's outcome.
    """
    operations = operation_model().objects.filter(payment_id=operation.payment_id)
    current = operations.get(pk=operation.pk)
    seen = {current.pk}
    while key := current.follow_up.get(REPLACED_BY):
        successor = operations.filter(idempotency_key=key).first()
        if successor is None or successor.pk in seen:
            break
        seen.add(successor.pk)
        current = successor
    return current


def next_key(payment: Any, kind: str) -> tuple[str, int]:
    """The key for a new operation of ``kind`` (sequence = earlier ones of that kind)."""
    attempt = payment.operations.filter(kind=kind).count()
    return idempotency_key("payment", payment.pk, KEY_WORDS[kind], attempt), attempt


def begin(
    payment: Any,
    kind: str,
    request: dict[str, Any],
    *,
    amount: int | None = None,
    target_id: str = "",
    user: Any = None,
    key: str | None = None,
    attempt: int | None = None,
    follow_up: dict[str, Any] | None = None,
    sent: bool = True,
    request_key: str = "",
) -> Any:
    """Phase 1: record the operation (inside the caller's transaction, payment locked).

    ``sent=False`` records an operation nobody is about to send (the refund a
    reversal commits for later): ``sent_count`` 0, so nobody waits for it.
    ``request_key``: the client's ``Idempotency-Key`` of the request this
    operation belongs to, committed with it (see :func:`request_operations`).
    """
    if key is None or attempt is None:
        key, attempt = next_key(payment, kind)
    try:
        # No savepoint of its own (two statements): the error ends the
        # caller's phase-1 transaction, which must not commit without its
        # operation anyway.
        return operation_model().objects.create(
            payment=payment,
            kind=kind,
            idempotency_key=key,
            attempt=attempt,
            amount=amount,
            currency=payment.currency,
            request=request,
            target_id=target_id,
            follow_up=follow_up or {},
            sent_count=1 if sent else 0,
            lease_expires_at=timezone.now() + lease(),
            requested_by=user if getattr(user, "pk", None) else None,
            request_key=request_key,
        )
    except IntegrityError as exc:
        # The unique index: another operation on this payment is unresolved.
        raise errors.OperationInFlight() from exc


# --------------------------------------------------------------------------
# Phase 2: the call
# --------------------------------------------------------------------------


def gateway_method(kind: str, g: Any = None) -> Callable[..., Any]:
    """The gateway method an operation of ``kind`` calls (on ``g``, or the configured one)."""
    g = g if g is not None else gateway()
    methods: dict[str, Callable[..., Any]] = {
        K.PAYMENT_INTENT: g.create_payment_intent,
        K.TRANSFER: g.create_transfer,
        K.CAPTURE: g.capture_payment_intent,
        K.REVERSAL: g.create_transfer_reversal,
        K.REFUND: g.create_refund,
        K.CANCEL: g.cancel_payment_intent,
        K.TIP_INTENT: g.create_payment_intent,
        K.TIP_TRANSFER: g.create_transfer,
        K.CUSTOMER: g.create_customer,
    }
    return methods[kind]


def call_arguments(kind: str, target_id: str) -> list[Any]:
    """The positional arguments of the call: the PaymentIntent a capture or void acts on."""
    return [target_id] if kind in (K.CAPTURE, K.CANCEL) else []


@dataclass(frozen=True)
class Outcome:
    """What Stripe answered to one call: a result, or the error it raised."""

    result: Any = None
    error: GatewayError | None = None

    @property
    def unknown(self) -> bool:
        return self.error is not None and self.error.is_transient


def send(operation: Any) -> Outcome:
    """Phase 2: the Stripe call, with no transaction open and no row lock held."""
    if in_transaction():
        raise RuntimeError(
            "A money call to Stripe must not run inside a database transaction: "
            "a crash would roll back the record of the call (and its key)."
        )
    args = call_arguments(operation.kind, operation.target_id)
    logger.info(
        "money call %s sent",
        operation.kind,
        extra={
            "payment_id": str(operation.payment_id),
            "idempotency_key": operation.idempotency_key,
            "operation_id": operation.pk,
        },
    )
    with observability.span(
        MONEY_OPERATION_SPAN,
        **{
            "money_operation.kind": str(operation.kind),
            "money_operation.id": str(operation.pk),
            "money_operation.attempt": operation.attempt,
            "payment.id": str(operation.payment_id),
        },
    ) as span:
        try:
            result = gateway_method(operation.kind)(
                *args, idempotency_key=operation.idempotency_key, **operation.request
            )
        except GatewayError as exc:
            outcome = Outcome(error=exc)
            # unknown: Stripe may have acted (timeout, 5xx); failed: it refused.
            span.set_attributes(
                **{"money_operation.outcome": "unknown" if outcome.unknown else "failed"}
            )
            span.set_error(exc)
            return outcome
        span.set_attributes(**{"money_operation.outcome": "succeeded"})
    return Outcome(result=result)


def record_unknown(operation: Any, exc: GatewayError) -> None:
    """Stripe may or may not have acted: keep the operation unresolved."""
    operation.mark_unknown(
        exc.code or "",
        exc.message,
        http_status=exc.http_status,
        stripe_request_id=exc.request_id or "",
        should_retry=exc.should_retry,
    )
    operation.save()


def record_failed(operation: Any, exc: GatewayError) -> None:
    operation.mark_failed(
        exc.code or "",
        exc.message,
        http_status=exc.http_status,
        stripe_request_id=exc.request_id or "",
    )
    operation.save()


def lock_operation(payment_id: Any, operation_pk: Any) -> tuple[Any, Any]:
    """Phase 3 starts here: the payment locked, the operation re-read under it."""
    payment = lock_payment(payment_id)
    operation = operation_model().objects.get(pk=operation_pk)
    return payment, operation


# --------------------------------------------------------------------------
# Settling an operation whose outcome was never committed
# --------------------------------------------------------------------------


def answer_may_be_lost(operation: Any, now: Any = None) -> bool:
    """Whether the same key may no longer reproduce Stripe's first answer.

    After ~24 hours Stripe may have pruned the key; a 5xx it answered is
    itself stored under the key (a replay says only that the first attempt
    errored); and ``Stripe-Should-Retry: false`` says the same request cannot
    succeed. In each case the object is looked up first.
    """
    now = now or timezone.now()
    if now - operation.created_at >= KEY_WINDOW or operation.should_retry is False:
        return True
    return operation.http_status is not None and operation.http_status >= 500


def lease_expired(operation: Any, now: Any = None) -> bool:
    now = now or timezone.now()
    return operation.lease_expires_at is None or operation.lease_expires_at <= now


def renew(operation_pk: Any, payment_id: Any) -> Any:
    """Mark an unresolved operation as being sent again (same key, new lease)."""
    with transaction.atomic():
        _, operation = lock_operation(payment_id, operation_pk)
        if not operation.is_unresolved:
            return None
        # Sending the same key again is always safe, even while the first
        # call may still be running elsewhere: Stripe answers both alike.
        operation.mark_sending(timezone.now() + lease())
        operation.save()
        return operation
