"""The package against a simulated Stripe as strict as Stripe (issue 12).

Stripe stores an error under its idempotency key, settles refunds later
(and may fail them after they succeeded), and keeps card money pending
before it is available. These tests drive the public API against the
simulated Stripe doing all of that, with its events going through the real
webhook receiver, and check that the app's books converge on Stripe's.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import TemporarilyUnavailable
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.testing import assert_books_balanced

from .conftest import assert_money_invariants, configure

pytestmark = pytest.mark.django_db


@pytest.fixture
def separate_charges(settings: Any, sim_stripe: Any) -> None:
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)


def paid_with(market: Any, card: str) -> Any:
    response = market.create(market.task())
    assert response.status_code == 201, response.content
    payment = market.pay(response.json()["payment_id"], card)
    assert payment.status == "held"
    return payment


def confirm(market: Any, payment: Any) -> Any:
    return market.post(market.customer, "payment-confirm", payment_id=payment.pk)


def refund(market: Any, payment: Any, **body: Any) -> Any:
    return market.post(market.doer, "payment-refund", body, payment_id=payment.pk)


def stripe_refunds(sim_stripe: Any, payment: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in sim_stripe.refunds.values()
        if r["payment_intent"] == payment.stripe_payment_intent_id
    ]


def settle(market: Any, refund_id: str) -> None:
    with market.capture(execute=True):
        SimulatedGateway().settle_refund(refund_id)


def test_a_release_answered_with_a_stored_500_is_looked_up_then_sent_under_a_new_key(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    """Stripe replays a stored 500 for its key: retrying the same key can never succeed."""
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer",
        TemporarilyUnavailable("An unknown error occurred", http_status=500),
        stored=True,
    )
    assert confirm(market, payment).status_code == 503
    [first] = payment.operations.filter(kind="transfer")
    assert (first.status, first.http_status) == ("unknown", 500)
    sim_stripe.calls.clear()

    response = confirm(market, payment)

    assert response.status_code == 200, response.content
    payment = market.payment(payment.pk)
    assert payment.status == "released"
    assert [name for name, _ in sim_stripe.calls if name != "retrieve_account"][:2] == [
        "list_transfers",
        "create_transfer",
    ]
    keys = list(
        payment.operations.filter(kind="transfer")
        .order_by("created_at")
        .values_list("idempotency_key", "status")
    )
    assert [status for _, status in keys] == ["failed", "succeeded"]
    assert keys[0][0] != keys[1][0]
    assert len(sim_stripe.transfers) == 1
    assert_money_invariants(sim_stripe, payment)
    assert_books_balanced(payment_id=payment.pk)


def test_a_release_refused_then_made_possible_is_sent_under_a_new_key(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    """The refusal is stored under its key; the next release must not reuse that key."""
    payment = market.held_payment()
    doer_account = market.doer_account.stripe_account_id
    with market.capture(execute=True):
        SimulatedGateway().require_information(doer_account)
    assert confirm(market, payment).status_code == 409
    with market.capture(execute=True):
        SimulatedGateway().complete_onboarding(doer_account)

    response = confirm(market, payment)

    assert response.status_code == 200, response.content
    assert market.payment(payment.pk).status == "released"
    assert_money_invariants(sim_stripe, market.payment(payment.pk))


def test_every_release_transfer_names_its_source_charge(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    """Card money is still pending at release: only source_transaction makes it transferable."""
    payment = market.held_payment()
    assert sim_stripe.platform_balance("usd") == {"available": 0, "pending": 10_000}
    assert confirm(market, payment).status_code == 200
    [(_, params)] = [call for call in sim_stripe.calls if call[0] == "create_transfer"]
    assert params["source_transaction"] == market.payment(payment.pk).stripe_charge_id
    assert sim_stripe.platform_balance("usd") == {"available": 0, "pending": 1_000}


def test_a_pending_refund_is_counted_once_when_it_succeeds(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    payment = paid_with(market, "refund_pending")
    assert refund(market, payment).status_code == 200
    [stripe_refund] = stripe_refunds(sim_stripe, payment)
    assert stripe_refund["status"] == "pending"
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
    [row] = payment.refunds.all()
    assert row.status == "pending"

    settle(market, stripe_refund["id"])

    # refund.updated and charge.refund.updated were both answered 2xx.
    assert sim_stripe.undelivered == []
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
    [row] = payment.refunds.all()
    assert row.status == "succeeded"
    assert_books_balanced(payment_id=payment.pk)


def test_a_refund_that_fails_after_release_converges(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    """Card 4000000000005126: the refund succeeds, then fails; the money is the platform's."""
    payment = paid_with(market, "refund_fails")
    assert confirm(market, payment).status_code == 200
    assert refund(market, payment).status_code == 200
    [stripe_refund] = stripe_refunds(sim_stripe, payment)
    assert stripe_refund["status"] == "succeeded"
    assert market.payment(payment.pk).status == "refunded"

    settle(market, stripe_refund["id"])

    assert sim_stripe.undelivered == []
    payment = market.payment(payment.pk)
    # The doer's share stays reversed (Stripe does not transfer it again);
    # the customer got nothing back, so nothing counts as refunded.
    assert (payment.amount_refunded, payment.amount_reversed) == (0, 9_000)
    assert payment.status == "released"
    [row] = payment.refunds.all()
    assert (row.status, row.failure_reason) == ("failed", "expired_or_canceled_card")
    [incident] = swappable.load("PaymentIncident").objects.filter(payment=payment.pk)
    assert incident.kind == "refund_failed"
    assert sim_stripe.charges[payment.stripe_charge_id]["amount_refunded"] == 0
    assert (
        sim_stripe.platform_balance("usd")["available"]
        + sim_stripe.platform_balance("usd")["pending"]
        == 10_000
    )
    assert_money_invariants(sim_stripe, payment)
    assert_books_balanced(payment_id=payment.pk)

    # Refunding again sends a new refund without reversing the doer a second time.
    sim_stripe.calls.clear()
    assert refund(market, payment).status_code == 200
    assert [name for name, _ in sim_stripe.calls if name.startswith("create_")] == ["create_refund"]
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
    assert_books_balanced(payment_id=payment.pk)


def test_a_destination_charge_refund_that_fails_after_release_is_not_reversed_twice(
    settings: Any, market: Any, sim_stripe: Any
) -> None:
    """The refund's transfer reversal and fee refund stay made when it fails.

    The reversed money is on the platform's balance, so the refund sent
    again must not reverse the doer's transfer (nor return the fee) again.
    """
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
    payment = paid_with(market, "refund_fails")
    assert confirm(market, payment).status_code == 200
    assert refund(market, payment, amount=5_000).status_code == 200
    [stripe_refund] = stripe_refunds(sim_stripe, payment)
    doer = market.doer_account.stripe_account_id
    assert sim_stripe.balances[doer]["usd"] == 4_500

    settle(market, stripe_refund["id"])

    payment = market.payment(payment.pk)
    [transfer] = payment.transfers.all()
    stripe_transfer = sim_stripe.transfers[transfer.stripe_transfer_id]
    # Stripe's facts: the reversal (5,000, of which 500 of the fee went back
    # to the doer's account) stays made; the refund's 5,000 is back on the
    # platform's balance.
    assert stripe_transfer["amount_reversed"] == 5_000
    assert sim_stripe.balances[doer]["usd"] == 4_500
    assert (payment.status, payment.amount_refunded, payment.amount_reversed) == (
        "released",
        0,
        4_500,
    )
    assert (payment.amount_released, payment.amount_held) == (5_000, 5_000)
    assert_books_balanced(payment_id=payment.pk)

    # One refund cannot take both the held money and more of the transfer:
    # a clear 400, nothing sent, nothing written.
    sim_stripe.calls.clear()
    response = refund(market, payment)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_amount"
    assert sim_stripe.calls == []
    assert payment.refunds.count() == 1

    # Refunding it again refunds from the platform's balance: no second
    # reversal of the doer's transfer, no second fee refund.
    assert refund(market, payment, amount=5_000).status_code == 200
    assert stripe_transfer["amount_reversed"] == 5_000
    assert sim_stripe.balances[doer]["usd"] == 4_500
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded, payment.amount_reversed) == (
        "partially_refunded",
        5_000,
        4_500,
    )
    assert (payment.amount_released, payment.amount_held) == (5_000, 0)
    assert_money_invariants(sim_stripe, payment)
    assert_books_balanced(payment_id=payment.pk)

    # The rest reverses the rest of the transfer, as any refund after release.
    assert refund(market, payment).status_code == 200
    assert stripe_transfer["amount_reversed"] == 10_000
    assert sim_stripe.balances[doer]["usd"] == 0
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded, payment.amount_reversed) == (
        "refunded",
        10_000,
        9_000,
    )
    assert_books_balanced(payment_id=payment.pk)


def test_a_refund_made_before_release_that_fails_after_it_is_given_back(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    """Refunded in part while held, then released: the refund's failure still counts."""
    payment = paid_with(market, "refund_fails")
    assert refund(market, payment, amount=3_000).status_code == 200
    assert confirm(market, payment).status_code == 200
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded, payment.amount_transferred) == (
        "released",
        3_000,
        6_300,
    )
    [stripe_refund] = stripe_refunds(sim_stripe, payment)

    settle(market, stripe_refund["id"])

    assert sim_stripe.undelivered == []
    payment = market.payment(payment.pk)
    # The 3,000 never reached the doer: back on the platform's balance, held.
    assert (payment.status, payment.amount_refunded, payment.amount_held) == (
        "released",
        0,
        3_000,
    )
    [incident] = swappable.load("PaymentIncident").objects.filter(payment=payment.pk)
    assert incident.kind == "refund_failed"
    assert_money_invariants(sim_stripe, payment)
    assert_books_balanced(payment_id=payment.pk)


def test_a_refund_that_fails_during_a_dispute_is_given_back(
    market: Any, sim_stripe: Any, separate_charges: None
) -> None:
    payment = paid_with(market, "refund_fails")
    assert refund(market, payment, amount=4_000).status_code == 200
    with market.capture(execute=True):
        dispute = SimulatedGateway().open_dispute(payment.stripe_payment_intent_id)
    [stripe_refund] = stripe_refunds(sim_stripe, payment)

    settle(market, stripe_refund["id"])

    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("disputed", 0)
    assert payment.incidents.filter(kind="refund_failed").count() == 1
    with market.capture(execute=True):
        SimulatedGateway().close_dispute(dispute.id, True)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_held) == ("held", 10_000)
    # The whole net goes to the doer, not the net of a refund that failed.
    assert confirm(market, payment).status_code == 200
    assert market.payment(payment.pk).amount_transferred == 9_000
    assert_books_balanced(payment_id=payment.pk)
