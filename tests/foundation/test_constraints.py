"""Every invariant that can live in the database does: violating rows are
rejected by the database itself (SQLite and PostgreSQL), not only by code."""

from __future__ import annotations

import uuid

import pytest
from django.db import DataError, IntegrityError, transaction

from django_escrow_connect import swappable
from django_escrow_connect.states import PaymentStatus, TransferStatus
from tests.factories import make_account, make_organization, make_task, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def parties():
    customer = make_user("customer")
    doer = make_user("doer")
    task = make_task(customer, payee_user=doer)
    return customer, doer, task


def payment_row(customer, doer, task, **overrides):
    Payment = swappable.load("EscrowPayment")
    pid = uuid.uuid4()
    values = {
        "id": pid,
        "task": task,
        "payer": customer,
        "payee_user": doer,
        "amount": 10_000,
        "platform_fee": 1_000,
        "currency": "usd",
        "strategy": "separate_charges_and_transfers",
        "transfer_group": f"escrow_{pid.hex}",
    }
    values.update(overrides)
    return Payment(**values)


def assert_rejected(obj):
    # PostgreSQL refuses an over-long value with DataError before any check runs.
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        obj.save(force_insert=True)


def test_a_valid_payment_is_accepted(parties):
    payment_row(*parties).save(force_insert=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -5),
        ("platform_fee", -1),
        ("platform_fee", 10_001),
        ("amount_refunded", -1),
        ("amount_refunded", 10_001),
        ("amount_disputed", 10_001),
        ("amount_transferred", 9_001),
        # Null says "all of it": a capture of the whole amount is not stored.
        ("amount_captured", 10_000),
        ("amount_captured", -1),
        ("currency", "USD"),
        ("currency", "us"),
        ("currency", "usdx"),
    ],
)
def test_payment_amount_and_currency_invariants(parties, field, value):
    assert_rejected(payment_row(*parties, **{field: value}))


def test_a_capture_for_less_than_the_amount_is_accepted(parties):
    payment_row(*parties, amount_captured=4_000).save(force_insert=True)


def test_reversed_cannot_exceed_transferred(parties):
    assert_rejected(payment_row(*parties, amount_transferred=100, amount_reversed=101))


def test_payee_is_a_user_xor_an_organization(parties):
    customer, doer, task = parties
    org = make_organization(admins=(doer,))
    assert_rejected(payment_row(customer, None, task, payee_user=None))
    assert_rejected(payment_row(customer, doer, task, payee_organization=org))


def test_customer_cannot_be_the_payee(parties):
    customer, _doer, task = parties
    assert_rejected(payment_row(customer, customer, task))


def test_one_live_payment_per_task(parties):
    payment_row(*parties).save(force_insert=True)
    assert_rejected(payment_row(*parties))


def test_one_live_payment_per_milestone_funded_on_its_own(parties):
    payment_row(*parties, funded_milestone=1, milestone_count=2).save(force_insert=True)
    # Another milestone of the same task is another part.
    payment_row(*parties, funded_milestone=2, milestone_count=2).save(force_insert=True)
    assert_rejected(payment_row(*parties, funded_milestone=1, milestone_count=2))


def test_a_funded_milestone_is_one_of_the_tasks(parties):
    assert_rejected(payment_row(*parties, funded_milestone=3, milestone_count=2))


def test_a_canceled_payment_leaves_room_for_a_new_one(parties):
    payment_row(*parties, status=PaymentStatus.CANCELED).save(force_insert=True)
    payment_row(*parties).save(force_insert=True)


def test_stripe_ids_are_unique(parties):
    customer, doer, task = parties
    other_task = make_task(customer, payee_user=doer)
    payment_row(customer, doer, task, stripe_payment_intent_id="pi_1").save(force_insert=True)
    assert_rejected(payment_row(customer, doer, other_task, stripe_payment_intent_id="pi_1"))


def test_blank_stripe_ids_do_not_collide(parties):
    customer, doer, task = parties
    other_task = make_task(customer, payee_user=doer)
    payment_row(customer, doer, task).save(force_insert=True)
    payment_row(customer, doer, other_task).save(force_insert=True)


def test_connected_account_owner_is_a_user_xor_an_organization():
    user = make_user()
    org = make_organization(admins=(user,))
    with pytest.raises(IntegrityError), transaction.atomic():
        make_account(owner_user=user, owner_organization=org)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_account()


def test_one_connected_account_per_owner():
    user = make_user()
    make_account(owner_user=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_account(owner_user=user)


def test_connected_account_ids_are_unique():
    make_account(owner_user=make_user(), stripe_account_id="acct_same")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_account(owner_user=make_user(), stripe_account_id="acct_same")


def _transfer(payment, **overrides):
    Transfer = swappable.load("Transfer")
    values = {
        "payment": payment,
        "idempotency_key": f"k-{uuid.uuid4()}",
        "amount": 9_000,
        "currency": "usd",
        "destination_account_id": "acct_x",
    }
    values.update(overrides)
    return Transfer(**values)


def test_a_payment_has_at_most_one_transfer_that_did_not_fail(parties):
    payment = payment_row(*parties)
    payment.save(force_insert=True)
    _transfer(payment, status=TransferStatus.FAILED).save(force_insert=True)
    _transfer(payment).save(force_insert=True)
    assert_rejected(_transfer(payment))


@pytest.mark.parametrize(
    ("field", "value"), [("amount", 0), ("amount_reversed", 9_001), ("currency", "EUR")]
)
def test_transfer_invariants(parties, field, value):
    payment = payment_row(*parties)
    payment.save(force_insert=True)
    assert_rejected(_transfer(payment, **{field: value}))


@pytest.mark.parametrize("name", ["Refund", "TransferReversal"])
def test_refunds_and_reversals_are_positive(parties, name):
    payment = payment_row(*parties)
    payment.save(force_insert=True)
    Model = swappable.load(name)
    values = {"payment": payment, "idempotency_key": "k", "amount": 0, "currency": "usd"}
    if name == "TransferReversal":
        values["stripe_transfer_id"] = "tr_1"
    assert_rejected(Model(**values))


def test_webhook_event_ids_are_unique():
    Event = swappable.load("WebhookEvent")
    Event.objects.create(stripe_event_id="evt_1", type="x", endpoint="platform")
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(stripe_event_id="evt_1", type="x", endpoint="platform")
