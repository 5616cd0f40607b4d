"""Row locks: no database transaction is open when a money call starts.

Each money call of the matrix, made once without a crash through the
server; :class:`~tests.crash.gateway.CrashGateway` records
``connection.in_atomic_block`` at the start of every money call. A
transaction open across a network call holds the payment's row lock for as
long as Stripe takes to answer, and rolls back the record of what Stripe
did when the process dies (issue 11).
"""

from __future__ import annotations

import pytest

from .cases import BY_NAME, CALLS, set_up

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("call", [call.name for call in CALLS])
def test_no_transaction_is_open_when_a_money_call_starts(world, call):
    money_call = BY_NAME[call]
    scene = set_up(world, money_call)
    before = len(world.shared.money_calls())
    answer = money_call.send(world, scene)
    assert answer.status is not None, answer
    assert answer.status < 300, answer
    made = world.shared.money_calls()[before:]
    assert money_call.method in [c["method"] for c in made], made
    in_transaction = [c["method"] for c in made if c["in_atomic"]]
    assert not in_transaction, f"called inside a transaction (row lock held): {in_transaction}"
