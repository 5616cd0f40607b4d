"""Platform fee policy: how much of a payment the platform keeps.

The fee is computed once, in minor units, when a payment is created and is
stored with it; with separate charges and transfers it is what the platform
does *not* transfer to the connected account, with a manual-capture
destination charge it becomes ``application_fee_amount``. Either way it has
to be an exact integer that Stripe will accept, so the policy works in
integer arithmetic only and :func:`compute_platform_fee` checks whatever a
host-supplied policy returns before it can reach Stripe.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_escrow_connect.conf import SETTING_NAME, escrow_settings
from django_escrow_connect.money import (
    InvalidAmount,
    amount_step,
    amount_step_rule,
    normalize_currency,
)

__all__ = ["compute_platform_fee", "compute_tip_fee", "default_fee_policy", "no_tip_fee"]

#: 10000 basis points = 100 %.
BASIS_POINTS_PER_WHOLE = 10_000


def default_fee_policy(amount: int, currency: str) -> int:
    """Charge ``PLATFORM_FEE_BASIS_POINTS`` of ``amount`` plus a fixed fee per currency.

    * The percentage part is rounded half up (0.5 minor units becomes 1), the
      way Stripe rounds its own fees, using integer arithmetic so no float or
      Decimal context can introduce an error.
    * ``PLATFORM_FEE_FIXED`` maps a currency code to a fixed fee in that
      currency's minor units (a currency without an entry pays none); a fixed
      amount only makes sense per currency, since 30 cents is not 30 yen.
    * The total is clamped to ``[0, amount]``: the platform can never keep
      more than was paid, and a negative fixed fee (a subsidy) cannot turn
      into a negative fee.
    * The fee is then rounded *down* to the currency's
      :func:`~django_escrow_connect.money.amount_step` (a multiple of 10 in a
      three-decimal currency, of 100 - whole krónur - in ISK), because Stripe
      refuses other amounts there; rounding down keeps the fee within the
      clamp and favours the seller.
    """
    code = normalize_currency(currency)
    _require_non_negative_int(amount)
    basis_points = _basis_points()
    fixed = _fixed_fee(code)

    fee = (amount * basis_points + BASIS_POINTS_PER_WHOLE // 2) // BASIS_POINTS_PER_WHOLE
    fee = min(max(fee + fixed, 0), amount)
    return fee - fee % amount_step(code)


def compute_platform_fee(amount: int, currency: str, **context: Any) -> int:
    """Return the platform fee for a payment, using the configured policy.

    ``context`` describes a release of a split payment (``payment`` and
    ``payees``, see docs/splits.md); it is passed to a policy that accepts
    those keyword arguments (or ``**kwargs``) and left out for one that
    takes only ``(amount, currency)``, so existing policies keep working.

    ``ESCROW_CONNECT["PLATFORM_FEE_POLICY"]`` is a callable (or dotted path
    to one) taking ``(amount, currency)`` with the currency already
    normalised. Its result is validated here rather than trusted, because a
    wrong fee is only discovered when Stripe refuses a transfer or, worse,
    when a seller is paid the wrong amount: it must be an ``int`` (not a
    ``bool``), between 0 and ``amount``, and a multiple of the currency's
    :func:`~django_escrow_connect.money.amount_step` (ending in 0 in a
    three-decimal currency, whole krónur in ISK). Anything else raises
    :class:`ImproperlyConfigured`.
    """
    return _checked_fee("PLATFORM_FEE_POLICY", amount, currency, context)


def no_tip_fee(amount: int, currency: str) -> int:
    """The default ``TIP_FEE``: the whole tip goes to the payee(s)."""
    return 0


def compute_tip_fee(amount: int, currency: str) -> int:
    """What the platform keeps of a tip: ``TIP_FEE(amount, currency)``, checked like
    :func:`compute_platform_fee` (an int between 0 and the amount, Stripe-valid)."""
    return _checked_fee("TIP_FEE", amount, currency, {})


def _checked_fee(name: str, amount: int, currency: str, context: dict[str, Any]) -> int:
    code = normalize_currency(currency)
    _require_non_negative_int(amount)
    setting = f'{SETTING_NAME}["{name}"]'
    policy = getattr(escrow_settings, name)
    if not callable(policy):
        raise ImproperlyConfigured(f"{setting} must be a callable, got {policy!r}.")

    fee = policy(amount, code, **_accepted(policy, context))
    if isinstance(fee, bool) or not isinstance(fee, int):
        raise ImproperlyConfigured(
            f"{setting} must return an int in minor units, "
            f"got {type(fee).__name__} ({fee!r}) for {amount} {code}."
        )
    if not 0 <= fee <= amount:
        raise ImproperlyConfigured(
            f"{setting} returned {fee} for {amount} {code}; "
            f"the fee must be between 0 and the amount."
        )
    if fee % amount_step(code):
        raise ImproperlyConfigured(
            f"{setting} returned {fee} for {amount} {code}; {amount_step_rule(code)}."
        )
    return fee


def _accepted(policy: Any, context: dict[str, Any]) -> dict[str, Any]:
    """The part of ``context`` the policy's signature takes."""
    if not context:
        return {}
    try:
        parameters = inspect.signature(policy).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return context
    return {k: v for k, v in context.items() if k in parameters}


def _require_non_negative_int(amount: object) -> None:
    """Fees are computed on a payment amount: a non-negative int in minor units."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount(
            f"Amount must be an int in minor units, not {type(amount).__name__} ({amount!r})."
        )
    if amount < 0:
        raise InvalidAmount(f"Amount must not be negative, got {amount}.")


def _basis_points() -> int:
    """Read and check ``PLATFORM_FEE_BASIS_POINTS`` (an int from 0 to 10000)."""
    value = escrow_settings.PLATFORM_FEE_BASIS_POINTS
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= BASIS_POINTS_PER_WHOLE
    ):
        raise ImproperlyConfigured(
            f'{SETTING_NAME}["PLATFORM_FEE_BASIS_POINTS"] must be an int from 0 to '
            f"{BASIS_POINTS_PER_WHOLE} (1000 = 10 %), got {value!r}."
        )
    return value


def _fixed_fee(currency: str) -> int:
    """Look up the fixed fee for ``currency`` in ``PLATFORM_FEE_FIXED`` (0 if absent).

    Keys are normalised, so ``{"USD": 30}`` works as well as ``{"usd": 30}``.
    """
    setting = f'{SETTING_NAME}["PLATFORM_FEE_FIXED"]'
    table = escrow_settings.PLATFORM_FEE_FIXED
    if not isinstance(table, Mapping):
        raise ImproperlyConfigured(
            f"{setting} must be a dict of currency code to minor units, got {table!r}."
        )
    normalized: dict[str, int] = {}
    for key, value in table.items():
        try:
            code = normalize_currency(key)
        except (TypeError, ValueError):
            raise ImproperlyConfigured(f"{setting} has an invalid currency code {key!r}.") from None
        if code in normalized:
            raise ImproperlyConfigured(f"{setting} lists {code.upper()} more than once.")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ImproperlyConfigured(
                f"{setting}[{key!r}] must be an int in minor units, got {value!r}."
            )
        normalized[code] = value
    return normalized.get(currency, 0)
