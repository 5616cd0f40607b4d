"""Slow Stripe: a money call slower than the worker's timeout ends like a crash.

The ``slow`` server runs gunicorn with ``--timeout 2``; the gateway call
waits (30 s) before or after Stripe acted, and gunicorn kills the worker
itself (SIGABRT, then SIGKILL). The follow-ups and checks are the crash
matrix's (:func:`.cases.run_case`), against the worker gunicorn restarted.
"""

from __future__ import annotations

import pytest

from .cases import BY_NAME, CALLS, run_case

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_CASES = [(call.name, "after", "webhook-retry") for call in CALLS] + [
    ("release-transfer", "after", "webhook-other"),  # the scenario at the top of issue 11
    ("release-transfer", "before", "retry"),
]


@pytest.mark.parametrize(("call", "crash", "order"), SLOW_CASES)
def test_slow_stripe(world, slow_server, call, crash, order):
    run_case(world, BY_NAME[call], crash, order, slow_server=slow_server)
