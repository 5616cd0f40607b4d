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


# --------------------------------------------------------------------------
# A capture for less than the hold, made in the Stripe dashboard
# --------------------------------------------------------------------------


def test_a_capture_for_less_in_the_dashboard_is_the_release_of_what_was_captured(
    market, sim_stripe, manual
):
    payment = market.capture_in_dashboard(market.held_payment(), 4_000)
    books = assert_money_invariants(sim_stripe, payment)
    # Stripe: 4,000 captured and transferred, the fee taken back from it; the
    # other 6,000 went back to the card without a refund.
    assert (books["charge"]["amount_captured"], books["charge"]["amount_refunded"]) == (4_000, 0)
    (transfer,) = books["transfers"]
    assert transfer["amount"] == 4_000
    assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 3_000
    # The app: released for what was captured; nothing is left held.
    assert payment.status == "released"
    assert (payment.amount_captured, payment.amount_released, payment.amount_held) == (
        4_000,
        4_000,
        0,
    )
    assert (payment.amount_transferred, payment.platform_fee, payment.refundable_amount) == (
        3_000,
        1_000,
        4_000,
    )
    (incident,) = payment.incidents.all()
    assert incident.kind == IncidentKind.AMOUNT_MISMATCH
    assert "released the other 6000 to the customer" in incident.message
    (row,) = payment.transfers.all()
    assert row.amount == 4_000
    shown = market.get(market.doer, "payment-detail", payment_id=payment.pk).json()
    assert (shown["amount"], shown["amount_captured"], shown["amount_held"]) == (10_000, 4_000, 0)
    (item,) = shown["transfers"]
    assert item["amount"] - item["application_fee"] == shown["amount_transferred"] == 3_000
    assert_books_balanced(payment_id=payment.pk)
    # The customer's confirm now answers as for any released payment, and
    # sends nothing: Stripe's capture was the release.
    sim_stripe.calls.clear()
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "released"
    assert [c for c in sim_stripe.calls if c[0] == "capture_payment_intent"] == []
    assert market.payment(payment.pk).amount_released == 4_000


def test_a_capture_for_less_books_the_application_fee_stripe_took(market, sim_stripe, manual):
    # Staff lowered the fee too when capturing 4,000 of 10,000 (fee 1,000).
    payment = market.capture_in_dashboard(market.held_payment(), 4_000, application_fee_amount=400)
    books = assert_money_invariants(sim_stripe, payment)
    assert books["charge"]["application_fee_amount"] == 400
    assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 3_600
    # The books take Stripe's fee, not the app's fee capped at the capture.
    assert (payment.platform_fee, payment.amount_transferred) == (400, 3_600)
    shown = market.get(market.doer, "payment-detail", payment_id=payment.pk).json()
    assert shown["amount_transferred"] == 3_600
    assert_books_balanced(payment_id=payment.pk)


def test_refunds_after_a_capture_for_less_count_against_what_was_captured(
    market, sim_stripe, manual
):
    payment = market.capture_in_dashboard(market.held_payment(), 4_000)
    # More than was captured: a clear 400, nothing sent, nothing written.
    response = market.post(market.doer, "payment-refund", {"amount": 4_001}, payment_id=payment.pk)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_amount"
    assert not payment.refunds.exists()

    payment = refund(market, payment, 2_000)
    assert payment.status == "partially_refunded"
    books = assert_money_invariants(sim_stripe, payment)
    (transfer,) = books["transfers"]
    # Half of the capture: half of the transfer reversed, half of the fee back.
    assert transfer["amount_reversed"] == 2_000
    fee = sim_stripe.application_fees[books["charge"]["application_fee"]]
    assert fee["amount_refunded"] == 500
    assert (payment.amount_refunded, payment.amount_reversed, payment.refundable_amount) == (
        2_000,
        1_500,
        2_000,
    )
    assert not transfer_incidents(payment).exists()
    assert_books_balanced(payment_id=payment.pk)

    payment = refund(market, payment)  # the rest of what was captured
    assert payment.status == "refunded"
    books = assert_money_invariants(sim_stripe, payment)
    assert books["charge"]["amount_refunded"] == 4_000
    assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 0
    assert (payment.amount_refunded, payment.amount_reversed) == (4_000, 3_000)
    assert (payment.amount_released, payment.amount_held, payment.refundable_amount) == (0, 0, 0)
    assert not transfer_incidents(payment).exists()
    assert_books_balanced(payment_id=payment.pk)
