"""The gateway of the crash suite: the simulated Stripe, shared, with a crash plan.

:class:`CrashGateway` is configured through ``ESCROW_CONNECT["GATEWAY"]`` in
the server processes (``tests/crash/settings.py``) and in the test process.
Every call runs against the file-backed store (:mod:`.shared_stripe`), so
the test process, the server it kills and the server restarted after it
all see one Stripe.

Events are never delivered by the process that made Stripe emit them: the
event sink is a no-op, and the events stay queued in the shared store until
the test delivers them to a webhook endpoint (or decides they never arrive).

In a server process (``ESCROW_CRASH_ROLE=server``) or a management-command
job (``ESCROW_CRASH_ROLE=job``, :mod:`.jobs`), a money call named by
the crash plan blocks ``before`` Stripe acts (Stripe never acted) or
``after`` it acted (its answer is lost): it writes the marker file and
sleeps until the test kills the process (or gunicorn's ``--timeout`` does).

Every money call also records whether a database transaction was open when
it started (``connection.in_atomic_block``): a row lock held across a
network call is what issue 11 removes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from django.db import connection

from django_escrow_connect import simulation as simulated
from django_escrow_connect.simulation import SimulatedGateway

from .shared_stripe import shared_stripe

#: Calls that move money or create money objects at Stripe.
MONEY_CALLS = frozenset(
    {
        "create_payment_intent",
        "capture_payment_intent",
        "cancel_payment_intent",
        "create_transfer",
        "create_transfer_reversal",
        "create_refund",
        # Not money, but journaled like it: a retry must not make a second Customer.
        "create_customer",
    }
)


#: Lookups a crash plan may also block in: the request dies while it asks
#: Stripe, after what it committed before (a read has no effect at Stripe,
#: so ``before`` and ``after`` are the same crash). Not recorded as money calls.
CRASHABLE_LOOKUPS = frozenset({"list_refunds"})


def _drop_event(endpoint: str, payload: bytes, signature: str) -> None:
    """Events stay queued in the shared store; the test delivers them."""


def role() -> str:
    return os.environ.get("ESCROW_CRASH_ROLE", "test")


def killable() -> bool:
    """A process the test kills (a server's worker, a job): it takes crash plans
    and leaves the events it makes Stripe emit queued for the test."""
    return role() != "test"


class CrashGateway(SimulatedGateway):
    """:class:`SimulatedGateway` on the shared store, blocking where the plan says."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = shared_stripe()
        if killable():
            simulated.set_event_sink(_drop_event)


def _wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: CrashGateway, *args: Any, **kwargs: Any) -> Any:
        plan = None
        if name in MONEY_CALLS:
            self.shared.record_money_call(name, role(), connection.in_atomic_block)
        if (name in MONEY_CALLS or name in CRASHABLE_LOOKUPS) and killable():
            plan = self.shared.take_plan(name)
        if plan is not None and plan["when"] == "before":
            self.shared.block(plan, name)  # Stripe never hears of it
        try:
            with self.shared.session():
                return method(self, *args, **kwargs)
        finally:
            if plan is not None and plan["when"] == "after":
                self.shared.block(plan, name)  # Stripe acted; the answer is lost

    return call


for _name in sorted(simulated.GATEWAY_METHODS | simulated.SIMULATION_METHODS):
    setattr(CrashGateway, _name, _wrap(_name, getattr(SimulatedGateway, _name)))
