"""The package's exceptions.

Everything the package raises on purpose derives from :class:`EscrowConnectError`.
Errors from the payment provider are translated by the gateway into
:class:`GatewayError` subclasses, so services and views never handle ``stripe.*``
types: they catch these, read ``code`` / ``decline_code`` / ``param`` and ask
:attr:`GatewayError.is_transient` whether trying again later can help.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = [
    "BalanceInsufficient",
    "CardDeclined",
    "EscrowConnectError",
    "GatewayAuthenticationFailed",
    "GatewayError",
    "GatewayPermissionDenied",
    "IdempotencyConflict",
    "InvalidRequest",
    "InvalidWebhookPayload",
    "PeriodicJobFailed",
    "RateLimited",
    "ResourceMissing",
    "SignatureVerificationFailed",
    "TemporarilyUnavailable",
    "UnreadableAnswer",
]

#: Error codes that mean "someone else holds the object right now": retrying
#: later, with the same idempotency key, is safe and expected to succeed.
TRANSIENT_ERROR_CODES = frozenset({"lock_timeout"})


class EscrowConnectError(Exception):
    """Base class of every exception the package raises on purpose."""


class GatewayError(EscrowConnectError):
    """A call to the payment provider failed.

    Attributes mirror Stripe's error object and response:

    - ``message``: the provider's human-readable message (safe to log; never
      contains a secret key);
    - ``code``: e.g. ``"card_declined"``, ``"resource_missing"``;
    - ``param``: the request parameter at fault, if any;
    - ``decline_code``: the issuer's reason for a card decline;
    - ``request_id``: Stripe's ``Request-Id`` (quote it to Stripe support);
    - ``http_status``: the HTTP status, ``None`` when no response arrived;
    - ``should_retry``: the provider's ``Stripe-Should-Retry`` hint (``True`` /
      ``False``), or ``None`` when it gave none;
    - ``error_type``: Stripe's ``error.type`` (``card_error``,
      ``invalid_request_error``, ``idempotency_error``, ``api_error``);
    - ``payment_intent``: the PaymentIntent a confirming request left behind
      (a :class:`~django_escrow_connect.gateway.types.PaymentIntentSnapshot`,
      Stripe's ``error.payment_intent``): an off-session charge that needs
      the customer (``authentication_required``) or was declined still made
      one, which the customer can confirm. ``None`` for other errors.
    """

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        should_retry: bool | None = None,
        error_type: str | None = None,
        payment_intent: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.request_id = request_id
        self.http_status = http_status
        self.should_retry = should_retry
        self.error_type = error_type
        self.payment_intent = payment_intent

    @property
    def is_transient(self) -> bool:
        """Whether the same request may succeed if tried again later.

        True for rate limiting, lock timeouts, 5xx answers and network
        failures (see the subclasses); False for declines and invalid requests.
        """
        if self.code in TRANSIENT_ERROR_CODES:
            return True
        if self.http_status is not None and (self.http_status == 429 or self.http_status >= 500):
            return True
        return bool(self.should_retry)

    def __str__(self) -> str:
        parts = [self.message or self.__class__.__name__]
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", self.http_status),
                ("code", self.code),
                ("decline_code", self.decline_code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(message={self.message!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, request_id={self.request_id!r})"
        )


class CardDeclined(GatewayError):
    """The card was declined (HTTP 402, ``card_error``); see ``decline_code``."""

    @property
    def is_transient(self) -> bool:
        return False


class RateLimited(GatewayError):
    """Too many requests (HTTP 429): back off and try again later."""

    @property
    def is_transient(self) -> bool:
        return True


class TemporarilyUnavailable(GatewayError):
    """The provider could not answer now: 5xx, lock timeout, connection error or timeout.

    For a network failure ``http_status`` is ``None`` and it is unknown whether
    the request took effect: retry it with the *same* idempotency key.
    """

    @property
    def is_transient(self) -> bool:
        return True


class UnreadableAnswer(TemporarilyUnavailable):
    """Stripe answered, but the gateway cannot read the answer.

    A changed shape after an API version change, a proxy's error page, an
    emulator's quirk: the request may well have taken effect (a transfer
    made, a refund created), so this is "outcome unknown", never a refusal.
    As after a timeout, ``http_status`` is ``None`` and the *same*
    idempotency key must be used again: Stripe replays what it did, once the
    answer can be read. ``request_id`` is Stripe's, when the answer had one.
    """


class InvalidRequest(GatewayError):
    """The request was rejected as invalid (HTTP 400/404 and other 4xx); see ``param``."""

    @property
    def is_transient(self) -> bool:
        return False


class ResourceMissing(InvalidRequest):
    """The object does not exist, or not on this account (``resource_missing``)."""


class BalanceInsufficient(InvalidRequest):
    """The balance cannot cover a transfer, reversal or payout (``balance_insufficient``)."""


class GatewayAuthenticationFailed(GatewayError):
    """The API key is missing, wrong or revoked (HTTP 401)."""

    @property
    def is_transient(self) -> bool:
        return False


class GatewayPermissionDenied(GatewayError):
    """The key may not perform this request, e.g. a restricted key (HTTP 403)."""

    @property
    def is_transient(self) -> bool:
        return False


class IdempotencyConflict(GatewayError):
    """An idempotency key was misused (``idempotency_error``).

    HTTP 400: the key was first used with other parameters or another endpoint;
    a bug in how the key is derived, never fixed by retrying. HTTP 409: another
    request with the same key is still running; nothing was stored, so trying
    again later with the same key is safe.
    """

    @property
    def is_transient(self) -> bool:
        return self.http_status == 409


class SignatureVerificationFailed(EscrowConnectError):
    """A webhook's ``Stripe-Signature`` is missing, malformed, wrong or too old."""


class InvalidWebhookPayload(EscrowConnectError):
    """A webhook body is not UTF-8 encoded JSON describing an object."""


class PeriodicJobFailed(Exception):
    """Part of a periodic job failed, or its arguments were refused before it began;
    ``summary`` is what the task would have returned.

    Raised by the tasks of :mod:`django_escrow_connect.tasks` (which exports
    it too) and by ``audit_books_task``.
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


#: Names before 0.2: they read like Django's and DRF's own exceptions, which
#: the same modules often import too.
_RENAMED = {
    "AuthenticationFailed": "GatewayAuthenticationFailed",
    "PermissionDenied": "GatewayPermissionDenied",
}


def __getattr__(name: str) -> Any:
    """The old names still work, with a ``DeprecationWarning`` (removed in 0.3)."""
    if name in _RENAMED:
        warnings.warn(
            f"django_escrow_connect.exceptions.{name} is deprecated; "
            f"use {_RENAMED[name]} (it will be removed in 0.3)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
