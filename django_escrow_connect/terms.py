"""Where a payment's amount and parties come from: the host's task, never
the request.

The default adapter asks the task (``task.get_escrow_terms()``, see
:class:`~django_escrow_connect.base.models.EscrowTaskMixin`). A host that
prefers not to put this on the model names its own callable in
``ESCROW_CONNECT["PAYMENT_TERMS"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conf import escrow_settings
from .money import normalize_currency, validate_minor_amount

__all__ = [
    "EscrowTerms",
    "TermsUnavailable",
    "get_terms",
    "terms_from_task",
]


class TermsUnavailable(Exception):
    """The task cannot be paid for now (no accepted bid, not the payer, ...)."""


@dataclass(frozen=True)
class EscrowTerms:
    """Who pays whom, how much, in which currency.

    ``amount`` is an int in the currency's minor unit. Exactly one of
    ``payee_user`` and ``payee_organization`` is set.
    """

    payer: Any
    amount: int
    currency: str
    payee_user: Any = None
    payee_organization: Any = None
    description: str = ""

    def __post_init__(self) -> None:
        if (self.payee_user is None) == (self.payee_organization is None):
            raise ValueError("EscrowTerms needs exactly one of payee_user and payee_organization")
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        validate_minor_amount(self.amount, self.currency)
        if self.amount <= 0:
            raise ValueError("EscrowTerms.amount must be positive")

    @property
    def payee(self) -> Any:
        return self.payee_user if self.payee_user is not None else self.payee_organization


def terms_from_task(task: Any) -> EscrowTerms:
    """The default terms hook: ask the task (``task.get_escrow_terms()``)."""
    terms = task.get_escrow_terms()
    if not isinstance(terms, EscrowTerms):
        raise TypeError(
            f"{type(task).__name__}.get_escrow_terms() must return EscrowTerms, "
            f"not {type(terms).__name__}"
        )
    return terms


def get_terms(task: Any) -> EscrowTerms:
    """The terms of ``task`` from the configured ``PAYMENT_TERMS`` hook, validated."""
    terms = escrow_settings.PAYMENT_TERMS(task)
    if not isinstance(terms, EscrowTerms):
        raise TypeError('ESCROW_CONNECT["PAYMENT_TERMS"] must return EscrowTerms')
    return terms
