"""A payment from creation to release, for both escrow strategies and both
kinds of payee, through the API and the simulated Stripe."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE

from .conftest import calls, money_calls


def task_status(payment):
    return type(payment.task).objects.get(pk=payment.task_id).payment_status


@pytest.mark.parametrize("to_org", [False, True], ids=["user-payee", "org-payee"])
def test_full_lifecycle(market, sim_stripe, strategy, to_org):
    task = market.task(to_org=to_org)
    account = market.org_account if to_org else market.doer_account

    created = market.create(task)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["amount"] == 10_000
    assert body["currency"] == "usd"
    assert body["status"] == "awaiting_payment"
    assert body["client_secret"].startswith("pi_")
    intent = sim_stripe.payment_intents[market.payment(body["payment_id"]).stripe_payment_intent_id]
    assert intent["amount"] == 10_000
    assert intent["capture_method"] == ("manual" if strategy == MANUAL_CAPTURE else "automatic")
    if strategy == MANUAL_CAPTURE:
        assert intent["transfer_data"] == {"destination": account.stripe_account_id}
        assert intent["application_fee_amount"] == 1_000
    else:
        assert intent["transfer_data"] is None
        assert intent["application_fee_amount"] is None

    payment = market.pay(body["payment_id"])
    assert payment.status == "held"
    assert payment.stripe_charge_id == intent["latest_charge"]
    assert task_status(payment) == "payment_in_escrow"
    if strategy == MANUAL_CAPTURE:
        expected = timezone.now() + timedelta(days=7)
        assert abs(payment.capture_before - expected) < timedelta(minutes=5)
    else:
        assert payment.capture_before is None

    sim_stripe.calls.clear()
    confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.json()["status"] == "released"
    payment = market.payment(payment.pk)
    assert payment.status == "released"
    assert payment.amount_transferred == 9_000
    assert payment.platform_fee == 1_000
    assert task_status(payment) == "payment_released"
    if strategy == MANUAL_CAPTURE:
        assert money_calls(sim_stripe) == ["capture_payment_intent"]
        assert sim_stripe.payment_intents[payment.stripe_payment_intent_id]["status"] == "succeeded"
    else:
        assert money_calls(sim_stripe) == ["create_transfer"]
        (row,) = payment.transfers.all()
        assert row.status == "created"
        sent = sim_stripe.transfers[row.stripe_transfer_id]
        assert sent["amount"] == 9_000
        assert sent["destination"] == account.stripe_account_id
        assert sent["source_transaction"] == payment.stripe_charge_id
        assert sent["transfer_group"] == payment.transfer_group
    (stripe_transfer,) = [
        t for t in sim_stripe.transfers.values() if t["transfer_group"] == payment.transfer_group
    ]
    # A destination charge's transfer is the whole charge; Stripe takes the
    # application fee back from the connected account.
    assert stripe_transfer["amount"] == (10_000 if strategy == MANUAL_CAPTURE else 9_000)
    assert sim_stripe.balances[account.stripe_account_id] == {"usd": 9_000}

    detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
    assert detail["status"] == "released"
    assert detail["formatted"]["amount_transferred"] == "90.00 USD"
    assert detail["timestamps"]["released_at"] is not None


def test_create_calls_stripe_once_and_a_second_create_returns_the_same_payment(market, sim_stripe):
    task = market.task()
    first = market.create(task)
    second = market.create(task)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["payment_id"] == second.json()["payment_id"]
    assert first.json()["client_secret"] == second.json()["client_secret"]
    assert calls(sim_stripe, "create_payment_intent") == ["create_payment_intent"]
    assert swappable.load("EscrowPayment").objects.filter(task_id=task.pk).count() == 1


def test_create_after_the_payment_is_held_is_refused(market):
    payment = market.held_payment()
    response = market.create(payment.task)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_paid"


def test_declined_card_fails_the_payment_and_retry_pays_on_the_same_intent(market, sim_stripe):
    body = market.create(market.task()).json()
    payment = market.pay(body["payment_id"], card="declined")
    assert payment.status == "failed"
    assert payment.failure_code == "card_declined"
    (incident,) = payment.incidents.all()
    assert (incident.kind, incident.decline_code) == ("payment_failed", "generic_decline")
    assert market.payment(payment.pk).task.payment_status == "payment_failed"

    retried = market.post(market.customer, "payment-retry", payment_id=payment.pk)
    assert retried.status_code == 200, retried.content
    assert retried.json()["status"] == "awaiting_payment"
    assert retried.json()["client_secret"] == body["client_secret"]
    assert market.pay(payment.pk).status == "held"
    assert calls(sim_stripe, "create_payment_intent") == ["create_payment_intent"]


def test_cancel_before_payment_voids_the_intent_and_the_task_can_be_paid_again(market, sim_stripe):
    task = market.task()
    first = market.create(task).json()
    canceled = market.post(market.customer, "payment-cancel", payment_id=first["payment_id"])
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    pi = market.payment(first["payment_id"]).stripe_payment_intent_id
    assert sim_stripe.payment_intents[pi]["status"] == "canceled"

    again = market.create(task)
    assert again.status_code == 201
    assert again.json()["payment_id"] != first["payment_id"]


def test_manual_capture_hold_can_be_voided_by_the_doer(market, sim_stripe, settings):
    from .conftest import configure

    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
    payment = market.held_payment()
    response = market.post(market.doer, "payment-cancel", payment_id=payment.pk)
    assert response.status_code == 200, response.content
    assert market.payment(payment.pk).status == "canceled"
    assert sim_stripe.payment_intents[payment.stripe_payment_intent_id]["status"] == "canceled"
    assert market.payment(payment.pk).task.payment_status == "pending_payment"


def test_a_lapsed_authorisation_cancels_the_payment_with_an_incident(market, sim_stripe, settings):
    from .conftest import configure

    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
    payment = market.held_payment()
    with market.capture(execute=True):
        sim_stripe.advance_time(8 * 24 * 3600)
    payment = market.payment(payment.pk)
    assert payment.status == "canceled"
    (incident,) = payment.incidents.all()
    assert incident.kind == "capture_expired"
    assert payment.task.payment_status == "pending_payment"


@pytest.mark.parametrize("to_org", [False, True], ids=["user-payee", "org-payee"])
def test_full_lifecycle_through_the_real_webhook_pipeline(market, sim_stripe, strategy, to_org):
    """The simulated Stripe's signed events go through the package's own
    webhook receiver (every event type, not only payment_intent.*)."""
    from django_escrow_connect import simulation as simulated

    simulated.set_event_sink(None)  # the default: webhooks.receiver.receive
    payment = market.released_payment(to_org=to_org)
    assert payment.status == "released"
    assert payment.task.payment_status == "payment_released"
    refund = market.post(
        market.doer if not to_org else market.org_admin,
        "payment-refund",
        {"amount": 2_000},
        payment_id=payment.pk,
    )
    assert refund.status_code == 200, refund.content
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 2_000)
    events = swappable.load("WebhookEvent").objects.all()
    assert events.filter(
        type="payment_intent.succeeded"
        if strategy != MANUAL_CAPTURE
        else "payment_intent.amount_capturable_updated"
    ).exists()
    assert not events.filter(status__in=["failed", "deferred"]).exists(), [
        (e.type, e.status, e.last_error) for e in events.filter(status__in=["failed", "deferred"])
    ]
    assert not payment.incidents.exists()
    assert not payment.transfer_incidents.exists()
