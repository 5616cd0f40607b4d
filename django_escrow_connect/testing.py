"""Helpers for tests of hosts and of the package itself.

:func:`assert_books_balanced` is the books audit used as an oracle: after a
scenario (a crash, a lost answer, a webhook storm), the app's books and
Stripe's (the simulated one, or a test-mode account) agree.
"""

from __future__ import annotations

from typing import Any

from .services.audit import AuditResult, audit_books

__all__ = ["assert_books_balanced"]


def assert_books_balanced(
    *, payment_id: Any = None, payments: Any = None, allow_unsettled: bool = False, **kwargs: Any
) -> AuditResult:
    """Audit the books (:func:`audit_books`); raise ``AssertionError`` listing what is off.

    Fails on any divergence, on a payment Stripe could not be asked about,
    and, unless ``allow_unsettled``, on a payment whose money is still in
    flight (balanced books are settled ones: run ``escrow_reconcile`` first).
    Returns the :class:`AuditResult` otherwise. Other keyword arguments go
    to :func:`audit_books` (``since``, ``gateway``, ...).
    """
    result = audit_books(payment_id=payment_id, payments=payments, **kwargs)
    problems = [f"divergence: {d}" for d in result.divergences]
    problems += [f"not audited: {e}" for e in result.errors]
    if not allow_unsettled:
        problems += [f"unsettled: {u}" for u in result.unsettled]
    if problems:
        raise AssertionError(
            f"The books do not balance ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    return result
