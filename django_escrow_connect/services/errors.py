"""Errors a service raises for its caller to show: each carries a stable
``code`` and the HTTP status the API answers with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.translation import gettext

from ..exceptions import EscrowConnectError

__all__ = [
    "AccountNotReady",
    "Conflict",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidInput",
    "NotFound",
    "OperationInFlight",
    "OperationPending",
    "PaymentDeclined",
    "ProviderUnavailable",
    "ReadFirst",
    "ServiceError",
    "TransitionNotAllowed",
    "UnknownObject",
]


class ServiceError(EscrowConnectError):
    """Base of the errors a use case refuses with: an HTTP status and a stable ``code``."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(ServiceError):
    """The request's input is invalid (400)."""

    status_code = 400
    code = "invalid"


class IdempotencyKeyReused(InvalidInput):
    """An ``Idempotency-Key`` sent again with another request (400): nothing is done."""

    code = "idempotency_key_reused"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(
            message
            or gettext(
                "This Idempotency-Key was already used for another request on this payment; "
                "use a new key for a new request."
            ),
            code=code,
        )


class Forbidden(ServiceError):
    """The user may not do this (403)."""

    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    """No such object visible to the user (404)."""

    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    """The request is valid but the object's state does not allow it."""

    status_code = 409
    code = "conflict"


class TransitionNotAllowed(Conflict):
    """The object's state does not allow the action (409)."""

    code = "transition_not_allowed"


class AccountNotReady(Conflict):
    """The payee's connected account cannot receive money yet (409)."""

    code = "account_not_ready"


class PaymentDeclined(ServiceError):
    """Stripe declined the payment (402)."""

    status_code = 402
    code = "payment_declined"


class ProviderUnavailable(ServiceError):
    """Stripe did not answer; the same request can be retried safely."""

    status_code = 503
    code = "provider_unavailable"


class OperationPending(ServiceError):
    """The money-moving call was sent but its outcome is not known yet.

    Retrying the same operation reuses the same idempotency key, so it either
    completes the operation or returns the result Stripe already produced.
    """

    status_code = 503
    code = "operation_pending"


class OperationInFlight(Conflict):
    """Another money operation on the payment is unresolved and Stripe cannot
    settle it now (its call may still be running, or Stripe did not answer)."""

    code = "operation_pending"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(
            message
            or gettext(
                "An earlier operation on this payment is still in progress at Stripe; "
                "try again in a moment."
            ),
            code=code,
        )


class UnknownObject(EscrowConnectError):
    """A Stripe object this app has no row for (yet): the webhook event is
    deferred and retried by the reconcile command."""


class ReadFirst(EscrowConnectError):
    """A webhook's applier needs an answer from Stripe it must not ask for under its locks.

    Raised inside the webhook pipeline's transaction, with the payment or
    account row locked: asking Stripe there would hold the lock and the
    transaction for as long as Stripe takes, and a Stripe error would roll
    the event back. The pipeline rolls the transaction back (nothing is
    written, no lock is held), calls :attr:`read` with no transaction open,
    keeps its answer under :attr:`key` and runs the handler again, which
    checks the row again under its lock and applies the answer (see
    :func:`~.common.read_first`).
    """

    def __init__(self, key: str, read: Callable[[], Any]) -> None:
        super().__init__(f"Stripe must be read first: {key}")
        self.key = key
        self.read = read
