"""Shared set-up for the reliability suites (concurrency, ordering, faults).

The people of a marketplace and the API helpers are the payment suite's
(:class:`tests.payments.conftest.Marketplace`); the simulated Stripe here
delivers its events through the package's real webhook receiver (the
default event sink), so every check sees what production would see.

:func:`assert_money_invariants` is the one definition of "money moved at
most once" that the three suites check, against the simulated Stripe's
own books rather than the application's rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections

from django_escrow_connect import simulation as simulated
from tests.payments.conftest import Marketplace, configure, market  # noqa: F401

__all__ = [
    "Marketplace",
    "assert_money_invariants",
    "run_concurrently",
    "stripe_books",
]


@pytest.fixture
def sim_stripe(settings: Any) -> Iterator[simulated.SimulatedStripe]:
    """The simulated Stripe, empty, delivering events to the real webhook receiver."""
    configure(settings)
    simulated.reset()
    previous = simulated.set_event_sink(None)
    yield simulated.simulated_stripe
    simulated.set_event_sink(previous)
    simulated.reset()


def stripe_books(store: Any, payment: Any) -> dict[str, Any]:
    """What the simulated Stripe holds for ``payment``: transfers, reversals, refunds."""
    with store.lock:
        transfers = [
            dict(t)
            for t in store.transfers.values()
            if t["transfer_group"] == payment.transfer_group
        ]
        intent = store.payment_intents.get(payment.stripe_payment_intent_id) or {}
        refunds = [
            dict(r)
            for r in store.refunds.values()
            if r.get("payment_intent") == payment.stripe_payment_intent_id
            and r["status"] in ("pending", "succeeded", "requires_action")
        ]
        charge = dict(store.charges.get(intent.get("latest_charge") or "", {}))
        disputes = [dict(d) for d in store.disputes.values() if d["charge"] == charge.get("id")]
        fee = dict(store.application_fees.get(charge.get("application_fee") or "", {}))
    # A destination charge's transfer is the whole charge; Stripe takes the
    # application fee back from the connected account and returns part of it
    # with refunds. "transferred" and "reversed" are the doer's share, as the
    # payment's amount_transferred / amount_reversed are.
    application_fee = fee.get("amount", 0)
    application_fee_refunded = fee.get("amount_refunded", 0)
    return {
        "intent": dict(intent),
        "charge": charge,
        "transfers": transfers,
        "gross_transferred": sum(t["amount"] for t in transfers),
        "gross_reversed": sum(t["amount_reversed"] for t in transfers),
        "application_fee": application_fee,
        "application_fee_refunded": application_fee_refunded,
        "transferred": sum(t["amount"] for t in transfers) - application_fee,
        "reversed": sum(t["amount_reversed"] for t in transfers) - application_fee_refunded,
        "refunded": sum(r["amount"] for r in refunds),
        "disputes": disputes,
    }


def assert_money_invariants(store: Any, payment: Any) -> dict[str, Any]:
    """Money moved at most once for ``payment``, by Stripe's books.

    - at most one transfer that is not fully reversed;
    - what the doer kept (transferred - reversed, net of a destination
      charge's application fee and its refunds) never exceeds the doer's
      share (amount - fee), nor what the customer did not get back
      (amount - refunded);
    - refunds never exceed what was captured.
    """
    books = stripe_books(store, payment)
    live = [t for t in books["transfers"] if t["amount_reversed"] < t["amount"]]
    assert len(live) <= 1, f"more than one live transfer: {books['transfers']}"
    assert len(books["transfers"]) <= 1, f"money sent twice: {books['transfers']}"
    kept = books["transferred"] - books["reversed"]
    assert kept <= payment.amount - payment.platform_fee, books
    assert kept <= payment.amount - books["refunded"], books
    captured = books["charge"].get("amount_captured", 0) if books["charge"] else 0
    assert books["refunded"] <= captured, books
    assert payment.amount_refunded <= payment.amount
    return books


def run_concurrently(*actions: Callable[[], Any], timeout: float = 60) -> list[Any]:
    """Start ``actions`` in threads at the same instant; their results (or exceptions).

    Each thread has its own database connection, closed when it ends.
    """
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(index: int, action: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = action()
        except BaseException as exc:  # reported to the test, not swallowed
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, action)) for i, action in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    return results
