"""The simulated gateway, refusing a money call made inside a transaction.

Every suite that configures the simulated Stripe through
``tests.payments.conftest.configure`` uses this class, so a service that
calls Stripe while it holds a row lock (or any transaction whose crash would
roll back the record of the call) fails the test that exercises it.
"""

from __future__ import annotations

import functools
from typing import Any

from django_escrow_connect.services.operations import in_transaction
from django_escrow_connect.simulation import SimulatedGateway

#: Calls that create a payment or move money at Stripe (the rest only read).
MONEY_CALLS = (
    "create_payment_intent",
    "capture_payment_intent",
    "cancel_payment_intent",
    "create_transfer",
    "create_transfer_reversal",
    "create_refund",
)


#: Reads a webhook handler makes to catch up with Stripe (a charge's refunds,
#: an account whose events cannot be ordered): the pipeline makes them with no
#: transaction open too (docs/webhooks.md). Not checked by default: creating
#: an account reads Stripe under its row lock on purpose (services/accounts.py).
WEBHOOK_READS = ("list_refunds", "retrieve_account")


class StripeCallInTransaction(AssertionError):
    pass


class MoneyCallInTransaction(StripeCallInTransaction):
    pass


class ReadInTransaction(StripeCallInTransaction):
    pass


def outside_transactions(
    method: Any, error: type[StripeCallInTransaction] = MoneyCallInTransaction
) -> Any:
    """``method``, raising ``error`` when it is called with a transaction open."""

    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if in_transaction():
            raise error(f"{method.__name__} called with a database transaction open")
        return method(self, *args, **kwargs)

    return checked


class TransactionCheckingGateway(SimulatedGateway):
    pass


for _name in MONEY_CALLS:
    setattr(
        TransactionCheckingGateway,
        _name,
        outside_transactions(getattr(SimulatedGateway, _name)),
    )
