"""Helpers shared by the services: models, keys, locks, gateway errors."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from .. import swappable
from ..conf import escrow_settings
from ..exceptions import CardDeclined, GatewayError
from ..gateway import AccountsV2Gateway, PaymentGateway, get_gateway
from ..states import DISPUTE_CLOSED_STATES
from . import errors

logger = logging.getLogger("django_escrow_connect.services")

T = TypeVar("T")

#: The default ``IDEMPOTENCY_KEY_PREFIX``.
KEY_PREFIX = "escrow-connect"


def key_prefix() -> str:
    return str(escrow_settings.IDEMPOTENCY_KEY_PREFIX or KEY_PREFIX)


def idempotency_key(kind: str, pk: Any, operation: str, attempt: int | str = 0) -> str:
    """Deterministic key for one operation on one row.

    The same row, operation and attempt always give the same key, so a retry
    after a crash or a timeout cannot move money twice; ``attempt`` advances
    only after Stripe definitely refused the previous one. The prefix
    (``IDEMPOTENCY_KEY_PREFIX``) tells installations sharing a Stripe account apart.
    """
    return f"{key_prefix()}:{kind}:{pk}:{operation}:{attempt}"


def payment_model() -> Any:
    return swappable.load("EscrowPayment")


def account_model() -> Any:
    return swappable.load("ConnectedAccount")


def model(name: str) -> Any:
    return swappable.load(name)


def gateway() -> PaymentGateway:
    return get_gateway()


def accounts_v2_gateway() -> AccountsV2Gateway:
    """The gateway, for an Accounts v2 call (E071 refuses a gateway without them at startup)."""
    configured = get_gateway()
    if not isinstance(configured, AccountsV2Gateway):
        raise ImproperlyConfigured(
            f"The gateway {type(configured).__qualname__} has no Accounts v2 methods "
            "(create_account_v2, ...): subclass django_escrow_connect.gateway.BaseGateway "
            "and implement them, or keep ESCROW_CONNECT['ACCOUNTS_API'] = 'v1'."
        )
    return configured


def lock_payment(payment_id: Any) -> Any:
    """The payment row, locked until the surrounding transaction ends."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_payment() must run inside transaction.atomic()")
    try:
        return payment_model().objects.select_for_update().get(pk=payment_id)
    except (payment_model().DoesNotExist, ValueError, TypeError, ValidationError) as exc:
        # A malformed UUID raises ValidationError, not ValueError.
        raise errors.NotFound(_("No such payment.")) from exc


def open_disputes(disputes: Any) -> Any:
    """The disputes of ``disputes`` (a Dispute queryset or manager) not decided yet.

    One definition of "open" for every check that freezes a payment or lists
    what still needs an answer: a first-round dispute, or an appeal under way
    (``AbstractDispute.is_open`` for one row). A helper, not a manager method,
    because a host's swapped Dispute may declare its own manager.
    """
    return disputes.exclude(status__in=list(DISPUTE_CLOSED_STATES))


def account_for_payee(payee_user: Any = None, payee_organization: Any = None) -> Any:
    Account = account_model()
    if payee_user is not None:
        return Account.objects.filter(owner_user=payee_user).first()
    return Account.objects.filter(owner_organization=payee_organization).first()


def transfer_account(payee_user: Any, payee_organization: Any, refusal: str) -> Any:
    """The payee's connected account, if Stripe will accept a transfer to it now.

    Else :class:`~.errors.AccountNotReady` (409 ``account_not_ready``) with
    ``refusal``: no account, disconnected, or transfers not active. A
    release checks it before anything is written or sent, and
    ``escrow_auto_release --dry-run`` by the same rule.
    """
    account = account_for_payee(payee_user, payee_organization)
    if account is None or not account.can_transfer:
        raise errors.AccountNotReady(refusal)
    return account


#: Stripe's codes for a charge it will not make at that amount: below its
#: smallest or above its largest charge once converted to the currency the
#: charge settles in, which :func:`~..money.validate_charge_amount`'s table
#: cannot know. A definitive refusal: Stripe created nothing.
AMOUNT_REFUSAL_CODES = frozenset({"amount_too_small", "amount_too_large"})


def refuses_the_amount(exc: GatewayError) -> bool:
    """Whether Stripe refused the charge for its amount alone (see :data:`AMOUNT_REFUSAL_CODES`)."""
    return not exc.is_transient and exc.code in AMOUNT_REFUSAL_CODES


def translate(exc: GatewayError, action: str) -> errors.ServiceError:
    """A gateway failure as the error the caller shows (``action`` already translated)."""
    if exc.is_transient:
        return errors.ProviderUnavailable(
            # Translators: action is a phrase such as "refund the payment".
            _("Stripe is not reachable right now; %(action)s can be retried safely.")
            % {"action": action}
        )
    if isinstance(exc, CardDeclined):
        return errors.PaymentDeclined(exc.message or _("The card was declined."), code=exc.code)
    return errors.Conflict(
        # Translators: action is a phrase such as "refund the payment"; reason is Stripe's.
        _("Stripe refused to %(action)s: %(reason)s") % {"action": action, "reason": exc.message},
        code=exc.code or "provider_error",
    )


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def lock_payment_for(
    *,
    payment_intent: str | None = None,
    charge: str | None = None,
    transfer_group: str | None = None,
    payment_id: Any = None,
) -> Any:
    """The payment any of these Stripe identifiers belongs to, locked; or None.

    One query; call it inside ``transaction.atomic()`` (the pipeline does).
    """
    q = Q()
    if payment_intent:
        q |= Q(stripe_payment_intent_id=payment_intent)
    if charge:
        q |= Q(stripe_charge_id=charge)
    if transfer_group:
        q |= Q(transfer_group=transfer_group)
    pk = _uuid_or_none(payment_id) if payment_id else None
    if pk is not None:
        q |= Q(pk=pk)
    if not q:
        return None
    return payment_model().objects.select_for_update().filter(q).first()


def read_first(reads: dict[str, Any], key: str, read: Callable[[], T]) -> T:
    """Stripe's answer to ``read()`` from ``reads``, or :class:`~.errors.ReadFirst`.

    For an applier that runs in the webhook pipeline's transaction with a row
    locked: the pipeline keeps the answers of the reads it made before this
    attempt (``EventContext.fetched``) in ``reads``. A missing one raises
    ``ReadFirst``: the pipeline rolls back, reads Stripe with no transaction
    open, and runs the handler again, which finds the answer here and applies
    it under its lock, after checking the row again (it may have moved while
    Stripe was asked).
    """
    if key in reads:
        return cast(T, reads[key])
    raise errors.ReadFirst(key, read)
