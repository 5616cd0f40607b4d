"""The public factories make rows the models (and their constraints) accept."""

from __future__ import annotations

import pytest

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def doer():
    return factories.make_user("doer")


@pytest.fixture
def task(doer):
    return factories.make_task(factories.make_user("customer"), payee_user=doer, amount=10_000)


def test_payment_takes_parties_amount_and_destination_from_the_task(task, doer):
    account = kit.make_account(owner_user=doer)
    payment = kit.make_payment(task)
    assert (payment.status, payment.payee_user_id) == ("awaiting_payment", doer.pk)
    assert (payment.amount, payment.currency) == (10_000, "usd")
    assert payment.destination_account_id == account.stripe_account_id
    assert payment.stripe_charge_id == ""


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("held", {"amount_transferred": 0, "amount_refunded": 0}),
        ("released", {"amount_transferred": 9_000, "amount_refunded": 0}),
        ("refunded", {"amount_refunded": 10_000}),
        ("partially_refunded", {"amount_refunded": 5_000}),
        ("disputed", {"amount_disputed": 10_000, "status_before_dispute": "held"}),
    ],
)
def test_payment_amounts_follow_the_status(task, status, expected):
    payment = kit.make_payment(task, status=status, platform_fee=1_000)
    stored = swappable.load("EscrowPayment").objects.get(pk=payment.pk)
    assert stored.status == status
    assert stored.stripe_charge_id.startswith("ch_")
    assert {name: getattr(stored, name) for name in expected} == expected


def test_transfer_refund_dispute_incidents_and_events_of_a_payment(task):
    payment = kit.make_payment(task, status="released", platform_fee=1_000)
    transfer = kit.make_transfer(payment)
    assert (transfer.amount, transfer.status) == (9_000, "created")
    assert transfer.destination_account_id == payment.destination_account_id
    other = kit.make_payment(
        factories.make_task(task_customer(task), payee_user=factories.make_user())
    )
    assert kit.make_transfer(other, status="pending").stripe_transfer_id == ""
    assert kit.make_refund(payment, amount=2_500).amount == 2_500
    dispute = kit.make_dispute(payment)
    assert (dispute.stripe_charge_id, dispute.amount) == (payment.stripe_charge_id, 10_000)
    assert kit.make_payment_incident(payment).kind == "payment_failed"
    assert kit.make_transfer_incident(payment, kind="payout_failed").amount == 9_000
    assert payment.incidents.count() == 1
    event = kit.make_webhook_event("transfer.created", account="acct_1Kit", status="failed")
    assert (event.endpoint, event.status, event.payload["account"]) == (
        "connect",
        "failed",
        "acct_1Kit",
    )


def test_an_account_not_ready_cannot_receive_transfers():
    account = kit.make_account(owner_user=factories.make_user(), ready=False)
    assert account.status == "pending_verification"
    assert not account.can_transfer


def task_customer(task):
    from django_escrow_connect.terms import get_terms

    return get_terms(task).payer
