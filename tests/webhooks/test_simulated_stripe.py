"""End to end: the simulated Stripe signs its events and delivers them to the
real receiver (its default event sink), exactly as Stripe would post them.

A customer pays, the payment is released, a dispute is opened and won, and
the doer's account data arrives on the Connect endpoint; every event ends
processed or ignored, none failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from django_escrow_connect import simulation as simulated
from django_escrow_connect import swappable
from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable
from django_escrow_connect.services import errors
from django_escrow_connect.services.payments import (
    create_payment,
    refund_payment,
    release_payment,
)
from django_escrow_connect.simulation import SimulatedGateway
from tests import factories
from tests.webhooks.conftest import SIMULATED_GATEWAY, events, simulated_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def live_sink(settings: Any) -> Iterator[Any]:
    """The simulated Stripe, delivering to the package's receiver."""
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "GATEWAY": SIMULATED_GATEWAY}
    simulated.reset()
    previous = simulated.set_event_sink(None)
    yield simulated.simulated_stripe
    simulated.set_event_sink(previous)
    undelivered = list(simulated.simulated_stripe.undelivered)
    simulated.reset()
    assert not undelivered


def test_a_payment_from_pay_to_dispute_won(
    live_sink: Any, django_capture_on_commit_callbacks: Any, sent: Any
) -> None:
    capture = django_capture_on_commit_callbacks
    gateway = SimulatedGateway()
    customer = factories.make_user("customer")
    doer = factories.make_user("doer")
    acct = simulated_account(onboarded=False)
    account = factories.make_account(owner_user=doer, stripe_account_id=acct, ready=False)
    with capture(execute=True):
        gateway.complete_onboarding(acct)
    account.refresh_from_db()
    assert account.status == "verified"  # account.updated + capability.updated, Connect endpoint

    task = factories.make_task(customer, payee_user=doer, amount=10_000)
    with capture(execute=True):
        start = create_payment(task.pk, customer)
    with capture(execute=True):
        gateway.confirm_payment_intent(start.payment.stripe_payment_intent_id, "success")
    Payment = swappable.load("EscrowPayment")
    payment = Payment.objects.get(pk=start.payment.pk)
    assert payment.status == "held"
    assert payment.stripe_charge_id

    with capture(execute=True):
        release_payment(payment.pk, customer)
    with capture(execute=True):
        dispute = gateway.open_dispute(payment.stripe_charge_id)
    payment.refresh_from_db()
    assert payment.status == "disputed"
    with capture(execute=True):
        gateway.close_dispute(dispute.id, won=True)
    payment.refresh_from_db()
    assert payment.status == "released"

    statuses = dict(events().values_list("type", "status"))
    assert statuses["payment_intent.succeeded"] == "processed"
    assert statuses["transfer.created"] == "processed"
    assert statuses["charge.dispute.created"] == "processed"
    assert statuses["charge.dispute.closed"] == "processed"
    assert statuses["account.updated"] == "processed"
    assert not events().exclude(status__in=["processed", "ignored"]).exists()
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == ["won"]


def test_a_lost_dispute_appealed_and_won_can_be_released(
    live_sink: Any, django_capture_on_commit_callbacks: Any, sent: Any
) -> None:
    """API version 2026-10-28.endive: lost -> appeal -> won reinstates the payment."""
    capture = django_capture_on_commit_callbacks
    gateway = SimulatedGateway()
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    with capture(execute=True):
        acct = simulated_account()
    factories.make_account(owner_user=doer, stripe_account_id=acct)
    task = factories.make_task(customer, payee_user=doer, amount=10_000)
    with capture(execute=True):
        start = create_payment(task.pk, customer)
    with capture(execute=True):
        gateway.confirm_payment_intent(start.payment.stripe_payment_intent_id, "success")
    Payment = swappable.load("EscrowPayment")
    payment = Payment.objects.get(pk=start.payment.pk)

    with capture(execute=True):
        dispute = gateway.open_dispute(payment.stripe_charge_id)
    with capture(execute=True):
        gateway.close_dispute(dispute.id, won=False)
    assert Payment.objects.get(pk=payment.pk).status == "dispute_lost"

    live_sink.advance_time(60)
    with capture(execute=True):
        gateway.appeal_dispute(dispute.id)
    live_sink.advance_time(60)
    with capture(execute=True):
        gateway.appeal_dispute(dispute.id, submitted=True)
    row = swappable.load("Dispute").objects.get(stripe_dispute_id=dispute.id)
    assert (row.status, row.is_open) == ("appeal_under_review", True)
    with capture(execute=True), pytest.raises(errors.TransitionNotAllowed):
        release_payment(payment.pk, customer)

    live_sink.advance_time(60)
    with capture(execute=True):
        gateway.close_dispute(dispute.id, won=True)
    payment = Payment.objects.get(pk=payment.pk)
    assert payment.status == "held"
    row.refresh_from_db()
    assert (row.status, row.funds_withdrawn, row.funds_reinstated) == ("won", 10_000, 10_000)

    with capture(execute=True):
        release_payment(payment.pk, customer)
    assert Payment.objects.get(pk=payment.pk).status == "released"
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == ["lost", "won"]
    dispute_events = events().filter(type__startswith="charge.dispute.")
    assert set(dispute_events.values_list("status", flat=True)) == {"processed"}


def test_the_simulated_stripe_appeals_only_a_lost_dispute_once(live_sink: Any) -> None:
    gateway = SimulatedGateway()
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    acct = simulated_account()
    factories.make_account(owner_user=doer, stripe_account_id=acct)
    task = factories.make_task(customer, payee_user=doer, amount=10_000)
    start = create_payment(task.pk, customer)
    gateway.confirm_payment_intent(start.payment.stripe_payment_intent_id, "success")
    dispute = gateway.open_dispute(start.payment.stripe_payment_intent_id)

    with pytest.raises(InvalidRequest):
        gateway.appeal_dispute(dispute.id)  # still open: nothing to appeal
    gateway.close_dispute(dispute.id, won=False)
    gateway.appeal_dispute(dispute.id)
    gateway.close_dispute(dispute.id, won=False)
    with pytest.raises(InvalidRequest):
        gateway.appeal_dispute(dispute.id)  # an appeal lost is final
    with pytest.raises(InvalidRequest):
        gateway.close_dispute(dispute.id, won=True)


def test_refund_whose_answer_was_lost_is_counted_once(
    live_sink: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """Stripe refunded, the app timed out: the refund's own event finishes it."""
    capture = django_capture_on_commit_callbacks
    gateway = SimulatedGateway()
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    with capture(execute=True):
        acct = simulated_account()
    factories.make_account(owner_user=doer, stripe_account_id=acct)
    task = factories.make_task(customer, payee_user=doer, amount=10_000)
    with capture(execute=True):
        start = create_payment(task.pk, customer)
    with capture(execute=True):
        gateway.confirm_payment_intent(start.payment.stripe_payment_intent_id, "success")

    live_sink.fail_next("create_refund", TemporarilyUnavailable("timed out"), after_effect=True)
    with capture(execute=True), pytest.raises(errors.OperationPending):
        refund_payment(start.payment.pk, doer, amount=3_000)
    # The journal entry was committed before the call: refund.created names
    # it (metadata escrow_operation) and completes it.
    [event] = events().filter(type="refund.created")
    assert event.status == "processed"
    Payment = swappable.load("EscrowPayment")
    payment = Payment.objects.get(pk=start.payment.pk)
    assert payment.amount_refunded == 3_000
    (operation,) = payment.operations.filter(kind="refund")
    assert operation.status == "succeeded"

    # Reconcile and a retry change nothing: counted once.
    with capture(execute=True):
        call_command("escrow_reconcile", "--older-than", "0", stdout=StringIO())
    with capture(execute=True):
        refund_payment(start.payment.pk, doer, amount=3_000)
    payment = Payment.objects.get(pk=start.payment.pk)
    assert payment.amount_refunded == 6_000
    assert swappable.load("Refund").objects.filter(payment=payment.pk).count() == 2
    assert len(live_sink.refunds) == 2
