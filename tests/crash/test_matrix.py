"""The crash matrix: every money call, killed before and after Stripe acted,
followed up in every order (see :mod:`.cases`).

A real gunicorn worker is killed with SIGKILL while it waits in the gateway
call; then the queued webhooks arrive or not, the client retries, the other
party refunds or cancels, ``escrow_reconcile`` runs. After each case: no
5xx, Stripe's books hold (at most one transfer, the doer never keeps what
the customer got back, refunds within the capture), the app's rows agree
with them, and the payment is where the last follow-up should leave it.
"""

from __future__ import annotations

import pytest

from .cases import BY_NAME, CALLS, CRASH_POINTS, ORDERS, run_case

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", CRASH_POINTS)
@pytest.mark.parametrize("call", [call.name for call in CALLS])
def test_crash(world, call, crash, order):
    run_case(world, BY_NAME[call], crash, order)
