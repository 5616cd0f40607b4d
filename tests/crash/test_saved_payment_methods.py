"""Saved cards survive a worker SIGKILLed mid-call, on PostgreSQL.

Two calls, each killed ``before`` Stripe acted and ``after`` it acted (the
answer lost), followed by the orders of ``test_tips`` (webhooks ``W``, the
client's retry ``R``, ``escrow_reconcile`` ``C``):

- ``customer``: ``POST payments/create/`` with ``save_payment_method`` dies in
  ``create_customer``. The retry or reconcile sends the same key: the payer
  has exactly one Customer, and the payment's PaymentIntent saves the card
  to it.
- ``off-session tip``: ``POST payments/{id}/tips/`` on a payment with a saved
  card dies in ``create_payment_intent`` (confirmed off-session). The tip is
  never given up: Stripe may have charged the card without the customer, so
  it is finished with the same key, at most one PaymentIntent per tip, and
  whatever Stripe charged is the tip's.
- ``keyed off-session tip``: the same request with an ``Idempotency-Key``,
  killed in ``create_payment_intent`` or in the tip's ``create_transfer``
  (made in the same request once the card is charged); every retry, and one
  more after the follow-ups, sends the same key: one tip, one charge, one
  transfer (``test_tips.run_keyed_tip``).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from tests.payments.conftest import configure

from .harness import World, check_case
from .test_tips import (
    ORDERS,
    TIP,
    Tip,
    assert_tips_clean,
    post,
    run_keyed_tip,
    tip_books,
    tips_url,
)

pytestmark = pytest.mark.django_db(transaction=True)


def create_saving(world: World, task: Any, label: str) -> Any:
    body = {"task_id": str(task.pk), "save_payment_method": True}
    return post(world, world.market.customer, world.url("payment-create"), body, label)


def customers_of(world: World, payer: Any) -> list[dict[str, Any]]:
    with world.shared.session() as store:
        return [
            dict(c)
            for c in store.customers.values()
            if c["metadata"].get("escrow_payer_id") == str(payer.pk)
        ]


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
def test_customer_crash(world: World, crash: str, order: str) -> None:
    configure(settings, SAVE_PAYMENT_METHODS=True)
    task = world.task()
    world.steps.append(f"case: customer, worker dies {crash} Stripe acts, then {order}")
    world.crash("create_customer", crash, lambda: create_saving(world, task, "pay (crashing)"))
    for step in ORDERS[order]:
        if step == "W":
            world.deliver()
        elif step == "R":
            answer = create_saving(world, task, "pay again")
            world.steps.append(f"the customer paid again: {answer}")
            assert answer.status in (200, 201), answer
        else:
            world.reconcile()
    (payment,) = world.payments_of(task)

    def one_customer_saving_the_card() -> None:
        customers = customers_of(world, world.market.customer)
        assert len(customers) == 1, f"the payer has {len(customers)} Customers"
        current = world.payment(payment.pk)
        assert current.stripe_customer_id == customers[0]["id"]
        assert current.payment_method_consent_at is not None
        assert current.stripe_payment_intent_id, "the PaymentIntent was never made"
        with world.shared.session() as store:
            intent = store.payment_intents[current.stripe_payment_intent_id]
        assert intent["customer"] == current.stripe_customer_id
        assert intent["setup_future_usage"] == "off_session"

    check_case(world, payment, one_customer_saving_the_card)


def released_saving_payment(world: World) -> Any:
    answer = world.api(
        world.market.customer,
        "payment-create",
        data={"task_id": str(world.task().pk), "save_payment_method": True},
    )
    assert answer.status == 201, answer
    payment = world.pay(world.payment(answer.body["payment_id"]))
    assert payment.saved_payment_method_id, "the card was not saved"
    answer = world.api(world.market.customer, "payment-confirm", payment.pk)
    assert answer.status == 200, answer
    world.deliver_in_process()
    return world.payment(payment.pk)


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
def test_off_session_tip_crash(world: World, crash: str, order: str) -> None:
    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000}, SAVE_PAYMENT_METHODS=True)
    payment = released_saving_payment(world)
    customer = world.market.customer
    world.steps.append(f"case: off-session tip, worker dies {crash} Stripe acts, then {order}")
    world.crash(
        "create_payment_intent",
        crash,
        lambda: post(world, customer, tips_url(payment), {"amount": TIP}, "tip (crashing)"),
    )
    retries = []
    for step in ORDERS[order]:
        if step == "W":
            world.deliver()
        elif step == "R":
            answer = post(world, customer, tips_url(payment), {"amount": TIP}, "tip again")
            retries.append(answer)
            world.steps.append(f"the customer tipped again: {answer}")
        else:
            world.reconcile()

    def crashed_tip_finished() -> None:
        tips = list(Tip().objects.filter(payment=payment).order_by("created_at"))
        crashed = tips[0]
        # The same request again while the crashed tip is unconfirmed
        # (retried first) is that tip, never a second charge; once a webhook
        # confirmed it, a new request is a new tip.
        new = {a.body["id"] for a in retries} - {str(crashed.pk)}
        assert len(tips) == 1 + len(new)
        if ORDERS[order][0] == "R":
            assert [a.body["id"] for a in retries] == [str(crashed.pk)]
        # Never given up: finished with its key, so charged off-session (now
        # or before the crash), and it is the tip's charge.
        assert crashed.status in ("paid", "transferred"), crashed.status
        assert crashed.stripe_payment_intent_id
        for answer in retries:
            assert answer.status == 201, answer
            assert answer.body["confirmation"] == "off_session", answer
        charged = {c["payment_intent"] for c in tip_books(world, payment)["charges"]}
        assert crashed.stripe_payment_intent_id in charged

    check_case(world, payment, lambda: assert_tips_clean(world, payment), crashed_tip_finished)


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
@pytest.mark.parametrize("method", ["create_payment_intent", "create_transfer"])
def test_keyed_off_session_tip_crash(world: World, method: str, crash: str, order: str) -> None:
    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000}, SAVE_PAYMENT_METHODS=True)
    payment = released_saving_payment(world)
    run_keyed_tip(world, payment, method, crash, order, off_session=True)
