"""Operations the state machine does not allow answer 409 (never 500) and
change nothing; a repeated release is not an error."""

from __future__ import annotations

import pytest

from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS

from .conftest import configure, money_calls


def snapshot(payment):
    payment.refresh_from_db()
    return (
        payment.status,
        payment.amount_refunded,
        payment.amount_transferred,
        payment.updated_at,
        payment.transfers.count(),
        payment.refunds.count(),
    )


def test_releasing_twice_answers_200_with_the_same_state(market, sim_stripe, strategy):
    payment = market.released_payment()
    before = snapshot(payment)
    sim_stripe.calls.clear()
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 200
    assert response.json()["status"] == "released"
    assert snapshot(payment) == before
    assert money_calls(sim_stripe) == []


def test_releasing_a_payment_still_awaiting_payment_is_a_conflict(market, sim_stripe, strategy):
    body = market.create(market.task()).json()
    payment = market.payment(body["payment_id"])
    before = snapshot(payment)
    sim_stripe.calls.clear()
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "transition_not_allowed"
    assert snapshot(payment) == before
    assert money_calls(sim_stripe) == []


@pytest.mark.parametrize("state", ["canceled", "refunded", "awaiting_payment"])
def test_refunding_a_payment_with_nothing_to_refund_is_a_conflict(
    market, sim_stripe, settings, state
):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)
    body = market.create(market.task()).json()
    payment = market.payment(body["payment_id"])
    if state == "canceled":
        market.post(market.customer, "payment-cancel", payment_id=payment.pk)
    elif state == "refunded":
        market.pay(payment.pk)
        market.post(market.doer, "payment-refund", payment_id=payment.pk)
    assert market.payment(payment.pk).status == state
    before = snapshot(payment)
    sim_stripe.calls.clear()
    response = market.post(market.staff, "payment-refund", {"amount": 100}, payment_id=payment.pk)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "transition_not_allowed"
    assert snapshot(payment) == before
    assert money_calls(sim_stripe) == []


def test_canceling_a_held_payment_with_separate_charges_is_a_conflict(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)
    payment = market.held_payment()
    before = snapshot(payment)
    sim_stripe.calls.clear()
    response = market.post(market.staff, "payment-cancel", payment_id=payment.pk)
    assert response.status_code == 409
    assert "refund" in response.json()["error"]["message"].lower()
    assert snapshot(payment) == before
    assert money_calls(sim_stripe) == []


def test_canceling_a_released_payment_is_a_conflict(market, sim_stripe, strategy):
    payment = market.released_payment()
    response = market.post(market.staff, "payment-cancel", payment_id=payment.pk)
    assert response.status_code == 409
    assert market.payment(payment.pk).status == "released"


def test_retrying_a_payment_that_did_not_fail_is_a_conflict(market, sim_stripe):
    payment = market.held_payment()
    response = market.post(market.customer, "payment-retry", payment_id=payment.pk)
    assert response.status_code == 409
    assert market.payment(payment.pk).status == "held"


def test_a_disputed_payment_is_not_released(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
    payment = market.held_payment()
    market.payment(payment.pk)
    # A dispute row for the hold (as the dispute webhook records it).
    from django_escrow_connect import swappable

    swappable.load("Dispute").objects.create(
        payment=payment,
        stripe_dispute_id="dp_test",
        stripe_charge_id=payment.stripe_charge_id,
        amount=payment.amount,
        currency=payment.currency,
        status="needs_response",
    )
    sim_stripe.calls.clear()
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 409
    assert market.payment(payment.pk).status == "held"
    assert money_calls(sim_stripe) == []
