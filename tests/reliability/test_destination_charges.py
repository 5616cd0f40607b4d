"""Destination charges (manual capture) after release, as Stripe books them.

Stripe transfers the *whole* charge to the connected account and takes the
application fee back; a refund with ``reverse_transfer`` and
``refund_application_fee`` reverses the transfer and returns the fee, both in
proportion to the refund. Events go through the real webhook receiver.
"""

from __future__ import annotations

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE
from django_escrow_connect.states import IncidentKind
from django_escrow_connect.testing import assert_books_balanced

from .conftest import assert_money_invariants, configure, stripe_books


@pytest.fixture
def manual(settings, sim_stripe):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)


def refund(market, payment, amount=None):
    body = {} if amount is None else {"amount": amount}
    response = market.post(market.doer, "payment-refund", body, payment_id=payment.pk)
    assert response.status_code == 200, response.content
    return market.payment(payment.pk)


def transfer_incidents(payment):
    return swappable.load("TransferIncident").objects.filter(
        payment=payment, kind=IncidentKind.TRANSFER_REVERSED
    )


def test_release_transfers_the_whole_charge_and_takes_the_fee_back(market, sim_stripe, manual):
    payment = market.released_payment()
    books = stripe_books(sim_stripe, payment)
    (transfer,) = books["transfers"]
    assert transfer["amount"] == 10_000
    fee = sim_stripe.application_fees[books["charge"]["application_fee"]]
    assert (fee["amount"], fee["amount_refunded"]) == (1_000, 0)
    # The doer's share: the transfer less the application fee.
    assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 9_000
    assert payment.amount_transferred == 9_000
    (row,) = payment.transfers.all()
    assert (row.amount, row.amount_reversed) == (10_000, 0)
    shown = market.get(market.doer, "payment-detail", payment_id=payment.pk).json()
    (item,) = shown["transfers"]
    assert (item["amount"], item["application_fee"]) == (10_000, 1_000)
    assert item["amount"] - item["application_fee"] == shown["amount_transferred"] == 9_000
    assert_books_balanced(payment_id=payment.pk)


def test_half_refund_after_release_is_not_a_reversal_outside_the_app(market, sim_stripe, manual):
    payment = refund(market, market.released_payment(), 5_000)
    assert payment.status == "partially_refunded"
    books = assert_money_invariants(sim_stripe, payment)
    (transfer,) = books["transfers"]
    # Stripe reverses 5,000 of the 10,000 transfer and gives 500 of the fee back.
    assert transfer["amount_reversed"] == 5_000
    fee = sim_stripe.application_fees[books["charge"]["application_fee"]]
    assert fee["amount_refunded"] == 500
    assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 4_500
    # The app agrees: the doer gave back 4,500 and keeps 4,500.
    assert (payment.amount_refunded, payment.amount_reversed) == (5_000, 4_500)
    assert payment.amount_transferred - payment.amount_reversed == 4_500
    (row,) = payment.transfers.all()
    assert (row.amount, row.amount_reversed) == (10_000, 5_000)
    assert not transfer_incidents(payment).exists()
    shown = market.get(market.doer, "payment-detail", payment_id=payment.pk).json()
    (item,) = shown["transfers"]
    assert (item["application_fee"], item["application_fee_refunded"]) == (1_000, 500)
    assert item["amount_reversed"] - item["application_fee_refunded"] == shown["amount_reversed"]
    assert_books_balanced(payment_id=payment.pk)


def test_full_refund_after_release_reverses_everything(market, sim_stripe, manual):
    payment = refund(market, market.released_payment())
    assert payment.status == "refunded"
    books = assert_money_invariants(sim_stripe, payment)
    (transfer,) = books["transfers"]
    assert transfer["amount_reversed"] == 10_000
    assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 0
    assert (payment.amount_refunded, payment.amount_reversed) == (10_000, 9_000)
    assert not transfer_incidents(payment).exists()
    assert_books_balanced(payment_id=payment.pk)


def test_two_partial_refunds_after_release(market, sim_stripe, manual):
    payment = refund(market, market.released_payment(), 3_000)
    payment = refund(market, payment, 2_000)
    books = assert_money_invariants(sim_stripe, payment)
    (transfer,) = books["transfers"]
    assert transfer["amount_reversed"] == 5_000
    assert (payment.amount_refunded, payment.amount_reversed) == (5_000, 4_500)
    assert not transfer_incidents(payment).exists()
    assert_books_balanced(payment_id=payment.pk)


def test_a_reversal_beyond_the_refunds_is_still_an_incident(market, sim_stripe, manual):
    """A reversal made in the dashboard on top of a refund is reported."""
    from django_escrow_connect import simulation as simulated

    payment = refund(market, market.released_payment(), 5_000)
    (row,) = payment.transfers.all()
    gateway = simulated.SimulatedGateway()
    with market.capture(execute=True):
        gateway.create_transfer_reversal(
            idempotency_key="dashboard-reversal",
            transfer_id=row.stripe_transfer_id,
            amount=1_000,
            metadata={},
        )
    payment = market.payment(payment.pk)
    (incident,) = transfer_incidents(payment)
    assert incident.amount == 1_000
    assert payment.amount_reversed == 5_500


def fee_events(kind):
    return swappable.load("WebhookEvent").objects.filter(type=f"application_fee.{kind}")


def test_application_fee_events_are_handled(market, sim_stripe, manual, caplog):
    payment = market.released_payment()
    (created,) = fee_events("created")
    assert created.status == "processed"
    payment = refund(market, payment, 5_000)
    (refunded,) = fee_events("refunded")
    assert refunded.status == "processed"
    assert not [
        r
        for r in caplog.records
        if r.message.startswith("application fee ") and r.levelname == "WARNING"
    ]


def test_an_application_fee_other_than_the_payment_s_is_logged(market, sim_stripe, manual, caplog):
    from django_escrow_connect.services import stripe_objects as transfers

    payment = market.released_payment()
    fee = dict(
        sim_stripe.application_fees[stripe_books(sim_stripe, payment)["charge"]["application_fee"]]
    )
    fee["amount"] = 900
    assert transfers.apply_application_fee(fee, event_id="evt_1").pk == payment.pk
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "the app counts 1000" in warning.getMessage()
    fee["charge"] = "ch_of_another_product"
    assert transfers.apply_application_fee(fee) is None
