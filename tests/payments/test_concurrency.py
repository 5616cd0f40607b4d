"""Concurrent confirms of one payment move money once (PostgreSQL row locks).

Sixteen threads, each with its own database connection, confirm the same
payment at the same moment through the API. The payment row lock serialises
them: exactly one transfer reaches Stripe, the others see the released
payment and answer 200 with the same state.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.simulation import SimulatedGateway
from tests import factories
from tests.reliability.conftest import run_concurrently

from .conftest import configure, money_calls, stripe_account

THREADS = 16
#: Each race is run this many times: one lucky interleaving proves little.
REPEAT = 5


def held_through_the_api() -> tuple[Any, Any, APIClient, Any]:
    """A payment created and paid as a customer does it, held:
    ``(customer, doer, the customer's client, payment id)``."""
    customer = factories.make_user("customer")
    doer = factories.make_user("doer")
    stripe_account(owner_user=doer)
    task = factories.make_task(customer, payee_user=doer)
    client = APIClient()
    client.force_authenticate(customer)
    created = client.post("/escrow/payments/create/", {"task_id": str(task.pk)}, format="json")
    assert created.status_code == 201, created.content
    payment_id = created.json()["payment_id"]
    Payment = swappable.load("EscrowPayment")
    intent_id = Payment.objects.get(pk=payment_id).stripe_payment_intent_id
    SimulatedGateway().confirm_payment_intent(intent_id, "success")  # not in a transaction
    assert Payment.objects.get(pk=payment_id).status == "held"
    return customer, doer, client, payment_id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(REPEAT))
@pytest.mark.parametrize("escrow_strategy", [SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE])
def test_sixteen_concurrent_confirms_make_one_transfer(
    settings, sim_stripe, escrow_strategy, iteration
):
    configure(settings, ESCROW_STRATEGY=escrow_strategy)
    customer, _doer, _client, payment_id = held_through_the_api()
    Payment = swappable.load("EscrowPayment")
    sim_stripe.calls.clear()

    barrier = threading.Barrier(THREADS)
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def confirm() -> None:
        try:
            own = APIClient()
            own.force_authenticate(customer)
            barrier.wait(timeout=30)
            response = own.post(f"/escrow/payments/confirm/{payment_id}/", {}, format="json")
            with lock:
                statuses.append(response.status_code)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=confirm) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert statuses == [200] * THREADS
    payment = Payment.objects.get(pk=payment_id)
    assert payment.status == "released"
    expected_call = (
        "capture_payment_intent" if escrow_strategy == MANUAL_CAPTURE else "create_transfer"
    )
    # The confirms that found the first one's call in flight waited for its
    # outcome instead of sending the same key again: one Stripe call.
    assert money_calls(sim_stripe) == [expected_call]
    transfers = [
        t for t in sim_stripe.transfers.values() if t["transfer_group"] == payment.transfer_group
    ]
    assert len(transfers) == 1
    if escrow_strategy == SEPARATE_CHARGES_AND_TRANSFERS:
        assert payment.transfers.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(REPEAT))
def test_concurrent_creates_of_one_milestone_make_one_payment(settings, sim_stripe, iteration):
    """Funding per milestone: the same milestone's "pay", clicked in sixteen
    requests at once, creates one payment and one PaymentIntent."""
    from django_escrow_connect.terms import FUND_PER_MILESTONE

    from .test_milestones import EXTRA, three_milestones

    configure(
        settings,
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
        FUND_NEXT_MILESTONE="any_time",
    )
    customer = factories.make_user("customer")
    doer = factories.make_user("doer")
    stripe_account(owner_user=doer)
    task = factories.make_task(customer, payee_user=doer)
    EXTRA[task.pk] = {"milestones": three_milestones(), "funding": FUND_PER_MILESTONE}
    barrier = threading.Barrier(THREADS)
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            own = APIClient()
            own.force_authenticate(customer)
            barrier.wait(timeout=30)
            response = own.post(
                "/escrow/payments/create/",
                {"task_id": str(task.pk), "milestone": 2},
                format="json",
            )
            with lock:
                answers.append((response.status_code, response.json()["payment_id"]))
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    try:
        threads = [threading.Thread(target=create) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        EXTRA.pop(task.pk, None)
    assert not errors, errors
    # One created it (201); the others returned it (200), or finished the
    # creation the first one had begun (201 too: the same payment and intent).
    statuses = [status for status, _id in answers]
    assert len(statuses) == THREADS
    assert set(statuses) <= {200, 201}, statuses
    assert len({payment_id for _status, payment_id in answers}) == 1
    Payment = swappable.load("EscrowPayment")
    (payment,) = Payment.objects.filter(task=task)
    assert (payment.funded_milestone, payment.amount) == (2, 5_000)
    # A request that found the creation committed but not sent yet sends the
    # same request with the same key: Stripe makes one PaymentIntent.
    intents = [
        i for i in sim_stripe.payment_intents.values() if i["metadata"]["task_id"] == str(task.pk)
    ]
    assert [i["id"] for i in intents] == [payment.stripe_payment_intent_id]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(REPEAT))
def test_concurrent_keyed_partial_refunds_make_one_refund(settings, sim_stripe, iteration):
    """One partial refund, sent sixteen times at once with the same
    Idempotency-Key (a client retrying after a proxy timeout while the first
    is still running): the payment row lock orders them, the first commits
    its reversal with the key, the others find it; one reversal and one
    refund at Stripe."""
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)
    _customer, doer, client, payment_id = held_through_the_api()
    Payment = swappable.load("EscrowPayment")
    confirmed = client.post(f"/escrow/payments/confirm/{payment_id}/", {}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    sim_stripe.calls.clear()

    def client_for(user: object) -> APIClient:
        own = APIClient()
        own.force_authenticate(user)
        return own

    def refund() -> tuple[int, int]:
        response = client_for(doer).post(
            f"/escrow/payments/{payment_id}/refund/",
            {"amount": 3_000},
            format="json",
            headers={"Idempotency-Key": "3f0c9a52-refund"},
        )
        return response.status_code, response.json().get("amount_refunded")

    answers = run_concurrently(*[refund] * THREADS)
    errors = [answer for answer in answers if isinstance(answer, BaseException)]
    assert not errors, errors
    assert answers == [(200, 3_000)] * THREADS
    # And once more after all of them: answered, nothing sent.
    late = client_for(doer).post(
        f"/escrow/payments/{payment_id}/refund/",
        {"amount": 3_000},
        format="json",
        headers={"Idempotency-Key": "3f0c9a52-refund"},
    )
    assert (late.status_code, late.json()["amount_refunded"]) == (200, 3_000)
    payment = Payment.objects.get(pk=payment_id)
    assert (payment.amount_refunded, payment.amount_reversed) == (3_000, 2_700)
    assert money_calls(sim_stripe).count("create_transfer_reversal") == 1
    assert len(sim_stripe.refunds) == 1
    assert payment.refunds.count() == 1
