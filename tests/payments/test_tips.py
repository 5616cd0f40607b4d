"""Tips: the customer adds money on a released payment, charged on its own
PaymentIntent and transferred to the payee, through the real webhook pipeline."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_escrow_connect import signals, swappable
from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    InvalidRequest,
    TemporarilyUnavailable,
)
from django_escrow_connect.money import MAX_CHARGE_AMOUNT
from django_escrow_connect.services import errors
from django_escrow_connect.services import tips as tip_services
from django_escrow_connect.simulation import SimulatedGateway

from .conftest import build_marketplace, calls, configure
from .test_refunds import lost_then_refused

TIP_LIMIT = 5_000

try:  # the framework webhooks/tasks.py uses: Django 6's, else the backport
    import django.tasks as _tasks_framework
except ImportError:
    import django_tasks as _tasks_framework

TASK_BACKENDS = f"{_tasks_framework.__name__}.backends"


@pytest.fixture
def market(db, escrow_stripe, settings, django_capture_on_commit_callbacks):
    """The marketplace, with Stripe's events going through the webhook receiver."""
    configure(settings, TIP_MAX_AMOUNT={"usd": TIP_LIMIT})
    return build_marketplace(capture=django_capture_on_commit_callbacks)


@pytest.fixture
def received():
    seen = []

    def receiver(sender, signal, **kwargs):
        seen.append((signal, kwargs))

    watched = (signals.tip_paid, signals.tip_transfer_failed, signals.tip_refunded)
    for signal in watched:
        signal.connect(receiver, weak=False)
    yield seen
    for signal in watched:
        signal.disconnect(receiver)


def Tip():
    return swappable.load("EscrowTip")


def tips_url(payment):
    return reverse("escrow_connect:payment-tips", args=[str(payment.pk)])


def add_tip(market, payment, amount=500, user="customer", key=None):
    user = market.customer if user == "customer" else user
    headers = {"Idempotency-Key": key} if key is not None else None
    with market.capture(execute=True):
        return market.client(user).post(
            tips_url(payment), {"amount": amount}, format="json", headers=headers
        )


def pay_tip(market, tip_id, card="success"):
    tip = Tip().objects.get(pk=tip_id)
    with market.capture(execute=True):
        SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, card)
    return Tip().objects.get(pk=tip_id)


def test_a_tip_is_charged_on_its_own_intent_and_transferred_in_full(market, received):
    payment = market.released_payment()
    before = (payment.amount_transferred, payment.transfers.count(), payment.status)

    response = add_tip(market, payment, 700)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["amount"] == 700
    assert body["currency"] == "usd"
    assert body["status"] == "awaiting_payment"
    assert body["client_secret"]
    tip = Tip().objects.get(pk=body["id"])
    assert tip.stripe_payment_intent_id
    assert tip.stripe_payment_intent_id != payment.stripe_payment_intent_id

    tip = pay_tip(market, tip.pk)
    assert tip.status == "transferred"
    (row,) = tip.transfers.all()
    assert row.status == "created"
    assert row.stripe_transfer_id
    # No platform fee by default: the whole tip goes to the payee.
    assert row.amount == 700
    assert tip.platform_fee == 0
    assert row.destination_account_id == payment.destination_account_id
    # The transfer is funded by the tip's charge, in the tip's own group.
    created = [a for n, a in escrow_calls("create_transfer") if a["amount"] == 700]
    assert created
    assert created[0]["source_transaction"] == tip.stripe_charge_id
    assert created[0]["transfer_group"] == tip.transfer_group

    payment.refresh_from_db()
    assert (payment.amount_transferred, payment.transfers.count(), payment.status) == before
    assert [s for s, _ in received] == [signals.tip_paid]
    assert received[0][1]["tip"].pk == tip.pk
    assert received[0][1]["payment"].pk == payment.pk


def escrow_calls(name):
    from django_escrow_connect.simulation import simulated_stripe

    return [(n, args) for n, args in simulated_stripe.calls if n == name]


def test_the_tip_fee_policy_keeps_the_platform_share(market, settings):
    configure(settings, TIP_FEE=lambda amount, currency: amount // 10)
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 1_000).json()["id"])
    assert tip.status == "transferred"
    assert tip.platform_fee == 100
    assert [t.amount for t in tip.transfers.all()] == [900]


def test_several_tips_each_get_their_own_intent(market):
    payment = market.released_payment()
    first = add_tip(market, payment, 100).json()
    second = add_tip(market, payment, 200).json()
    assert first["id"] != second["id"]
    intents = set(Tip().objects.values_list("stripe_payment_intent_id", flat=True))
    assert len(intents) == 2
    listing = market.get(market.doer, "payment-tips", payment_id=payment.pk)
    assert listing.status_code == 200
    assert [t["amount"] for t in listing.json()["results"]] == [100, 200]
    assert "client_secret" not in listing.json()["results"][0]


@pytest.mark.parametrize(
    ("amount", "code"),
    [(0, "invalid"), (-5, "invalid"), ("1.5", "invalid"), (TIP_LIMIT + 1, "invalid_amount")],
)
def test_tip_amount_bounds(market, amount, code):
    payment = market.released_payment()
    response = add_tip(market, payment, amount)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert not Tip().objects.exists()


def test_the_largest_tip_is_allowed(market):
    payment = market.released_payment()
    assert add_tip(market, payment, TIP_LIMIT).status_code == 201


@pytest.mark.parametrize(
    # Stripe's largest charge: eight digits of minor units, twelve in IDR.
    ("currency", "largest"),
    [("usd", MAX_CHARGE_AMOUNT), ("idr", 999_999_999_999)],
)
def test_a_tip_above_stripes_largest_charge_is_refused_before_stripe(
    market, settings, currency, largest
):
    # A bound above Stripe's largest charge (E060, silenced) still stops there.
    configure(settings, TIP_MAX_AMOUNT={currency: largest * 10})
    payment = market.released_payment(currency=currency)
    response = add_tip(market, payment, largest + 1)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_amount"
    assert not Tip().objects.exists()
    assert not payment.operations.filter(kind="tip_intent").exists()
    # At Stripe's largest charge, the tip is added.
    assert add_tip(market, payment, largest).status_code == 201


@pytest.mark.parametrize(
    ("currency", "amount", "minimum"),
    [("usd", 1, 50), ("usd", 49, 50), ("jpy", 1, 50), ("jpy", 49, 50)],
)
def test_a_tip_below_stripes_smallest_charge_writes_nothing(
    market, settings, currency, amount, minimum
):
    """A tip is a charge of its own: below Stripe's minimum in its currency
    (0.50 USD, 50 JPY, zero-decimal) it is a 400 before the tip or its
    operation is written, not a call Stripe refuses after it was journaled."""
    configure(settings, TIP_MAX_AMOUNT={currency: TIP_LIMIT})
    payment = market.released_payment(currency=currency)
    written = tip_journal(payment)
    intents = len(escrow_calls("create_payment_intent"))

    response = add_tip(market, payment, amount)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "amount_too_small"
    assert f"at least {minimum} " in response.json()["error"]["message"]
    assert tip_journal(payment) == written
    assert len(escrow_calls("create_payment_intent")) == intents
    # At the minimum, the tip is added.
    assert add_tip(market, payment, minimum).status_code == 201


@pytest.mark.parametrize(
    ("code", "answered"),
    [("amount_too_small", "amount_too_small"), ("amount_too_large", "invalid_amount")],
)
def test_a_tip_stripe_refuses_for_its_amount_is_a_400_and_the_tip_is_canceled(
    market, escrow_stripe, code, answered
):
    """Stripe applies its bounds in the currency the charge settles in: a tip
    the table passed can still be refused, for good (nothing created). The
    customer gets the early check's 400, again for the same Idempotency-Key;
    the tip is canceled and its operation failed; another tip may be added."""
    payment = market.released_payment()
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        InvalidRequest(
            "Amount must convert to at least 50 cents. $0.60 converts to approximately \u20ac0.48.",
            code=code,
            param="amount",
            http_status=400,
            error_type="invalid_request_error",
        ),
    )

    for _attempt in range(2):
        response = add_tip(market, payment, 60, key="tip-60")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == answered
        assert "converts to approximately" in response.json()["error"]["message"]

    (tip,) = Tip().objects.all()
    assert (tip.status, tip.failure_code, tip.stripe_payment_intent_id) == ("canceled", code, "")
    (operation,) = payment.operations.filter(kind="tip_intent")
    assert (operation.status, operation.error_code) == ("failed", code)
    assert add_tip(market, payment, 600).status_code == 201


def test_the_hosts_minimum_applies_to_tips(market, settings):
    """MIN_CHARGE_AMOUNTS raises Stripe's 0.50 USD: a tip below is refused
    before it is written, as below Stripe's table."""
    configure(settings, TIP_MAX_AMOUNT={"usd": TIP_LIMIT}, MIN_CHARGE_AMOUNTS={"usd": 100})
    payment = market.released_payment()
    written = tip_journal(payment)
    response = add_tip(market, payment, 60)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "amount_too_small"
    assert "at least 100 " in response.json()["error"]["message"]
    assert tip_journal(payment) == written
    assert add_tip(market, payment, 100).status_code == 201


def test_no_tips_in_a_currency_without_a_limit(market, settings):
    configure(settings, TIP_MAX_AMOUNT={"eur": 100})
    payment = market.released_payment()
    response = add_tip(market, payment, 50)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "tips_unavailable"


def test_only_a_released_payment_takes_tips(market):
    payment = market.held_payment()
    response = add_tip(market, payment, 100)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_tippable"


def test_who_may_tip_and_see_tips(market):
    payment = market.released_payment()
    assert add_tip(market, payment, 100, user=market.doer).status_code == 403
    assert add_tip(market, payment, 100, user=market.staff).status_code == 403
    assert add_tip(market, payment, 100, user=market.other).status_code == 404
    assert market.get(market.other, "payment-tips", payment_id=payment.pk).status_code == 404
    assert market.get(market.customer, "payment-tips", payment_id=payment.pk).status_code == 200
    assert market.get(market.staff, "payment-tips", payment_id=payment.pk).status_code == 200
    assert market.client(None).get(tips_url(payment)).status_code in (401, 403)


def test_a_declined_tip_fails_and_can_be_paid_again(market, received):
    payment = market.released_payment()
    tip_id = add_tip(market, payment, 300).json()["id"]
    tip = pay_tip(market, tip_id, "declined")
    assert tip.status == "failed"
    assert tip.failure_code
    assert received == []
    tip = pay_tip(market, tip_id, "success")
    assert tip.status == "transferred"


def test_duplicate_and_late_events_change_nothing(market, escrow_stripe, escrow_deliver, received):
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 400).json()["id"])
    assert tip.status == "transferred"
    events = [
        e
        for e in escrow_stripe.store.events.values()
        if e["data"]["object"].get("metadata", {}).get("escrow_tip_id") == str(tip.pk)
    ]
    assert {e["type"] for e in events} >= {"payment_intent.succeeded", "transfer.created"}
    transfers_before = escrow_calls("create_transfer")
    for event in reversed(events):  # every one again, newest first
        again = {**event, "id": event["id"] + "_again"}
        assert escrow_deliver(again).status_code == 200
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert tip.transfers.count() == 1
    assert escrow_calls("create_transfer") == transfers_before
    assert len(received) == 1
    payment.refresh_from_db()
    assert payment.transfers.count() == 1


def a_tip_whose_transfer_stripe_refused(market, escrow_stripe):
    """A released payment and its 600 tip, paid, whose transfer Stripe refused."""
    payment = market.released_payment()
    tip_id = add_tip(market, payment, 600).json()["id"]
    escrow_stripe.store.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )
    tip = pay_tip(market, tip_id)
    assert tip.status == "transfer_failed"
    return payment, tip_id, tip


def test_a_refused_tip_transfer_is_an_incident_and_can_be_retried(market, escrow_stripe, received):
    payment, tip_id, tip = a_tip_whose_transfer_stripe_refused(market, escrow_stripe)
    assert tip.failure_code == "balance_insufficient"
    incident = payment.transfer_incidents.get()
    assert incident.kind == "transfer_failed"
    assert str(tip.pk) in incident.message
    assert [s for s, _ in received] == [signals.tip_paid, signals.tip_transfer_failed]

    url = reverse("escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), tip_id])
    with market.capture(execute=True):
        assert market.client(market.customer).post(url, {}, format="json").status_code == 403
    with market.capture(execute=True):
        response = market.client(market.staff).post(url, {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "transferred"
    tip.refresh_from_db()
    assert [t.status for t in tip.transfers.order_by("created_at")] == ["failed", "created"]
    keys = [t.idempotency_key for t in tip.transfers.order_by("created_at")]
    assert keys[0] != keys[1]


def test_staff_who_are_not_active_may_not_retry_a_tip_transfer_through_the_service(market):
    # Refused before the tip is even looked up: platform staff means active staff.
    market.staff.is_active = False
    market.staff.save(update_fields=["is_active"])
    with pytest.raises(errors.Forbidden):
        tip_services.retry_tip_transfer(uuid.uuid4(), market.staff)


def test_tip_creation_query_budget(market):
    payment = market.released_payment()
    with CaptureQueriesContext(connection) as queries:
        assert add_tip(market, payment, 100).status_code == 201
    assert len(queries) <= 30, "\n".join(q["sql"] for q in queries.captured_queries)


def test_openapi_documents_the_tip_endpoints():
    pytest.importorskip("drf_spectacular")
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    assert set(paths["/escrow/payments/{payment_id}/tips/"]) >= {"get", "post"}
    retry = "/escrow/payments/{payment_id}/tips/{tip_id}/retry-transfer/"
    assert "post" in paths[retry]


def test_unknown_tip_events_are_deferred_not_lost(market, escrow_deliver):
    event = {
        "id": "evt_tip_unknown",
        "object": "event",
        "type": "payment_intent.succeeded",
        "api_version": "2026-10-28.endive",
        "created": 1_800_000_000,
        "livemode": False,
        "data": {
            "object": {
                "id": "pi_tip_unknown",
                "object": "payment_intent",
                "amount": 100,
                "amount_received": 100,
                "currency": "usd",
                "status": "succeeded",
                "latest_charge": "ch_x",
                "metadata": {"escrow_tip_id": "00000000-0000-0000-0000-000000000001"},
            }
        },
    }
    assert escrow_deliver(event).status_code == 200
    from django_escrow_connect.states import WebhookEventStatus

    row = swappable.load("WebhookEvent").objects.get(stripe_event_id="evt_tip_unknown")
    assert row.status == WebhookEventStatus.DEFERRED


def test_calls_helper_still_counts(market):
    # The simulated store records tip calls like any other.
    payment = market.released_payment()
    add_tip(market, payment, 100)
    from django_escrow_connect.simulation import simulated_stripe

    assert calls(simulated_stripe, "create_payment_intent")[-1] == "create_payment_intent"


def test_reconcile_transfers_a_tip_whose_transfer_answer_was_lost(market, escrow_stripe):
    from django_escrow_connect.exceptions import TemporarilyUnavailable
    from django_escrow_connect.services.reconcile import reconcile

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 800).json()["id"]
    # Stripe made the transfer, then the connection dropped: outcome unknown.
    escrow_stripe.store.fail_next(
        "create_transfer", TemporarilyUnavailable("timeout", http_status=None), after_effect=True
    )
    from django_escrow_connect import simulation
    from django_escrow_connect.webhooks.receiver import receive

    def losing_transfer_events(endpoint, payload, signature):
        if json.loads(payload)["type"].startswith("transfer."):
            return None  # the transfer's own event is lost too
        return receive(endpoint, payload, signature)

    previous = simulation.set_event_sink(losing_transfer_events)
    try:
        pay_tip(market, tip_id)
    finally:
        simulation.set_event_sink(previous)
    tip = Tip().objects.get(pk=tip_id)
    assert tip.status == "paid"
    made = len(escrow_calls("create_transfer"))
    with market.capture(execute=True):
        reconcile(payment_id=payment.pk)
    tip.refresh_from_db()
    assert tip.status == "transferred"
    (row,) = tip.transfers.all()
    assert row.status == "created"
    # Found at Stripe, or sent again with the same key: one transfer at Stripe.
    tip_transfers = [
        t
        for t in escrow_stripe.store.transfers.values()
        if t["metadata"].get("escrow_tip_id") == tip_id
    ]
    assert len(tip_transfers) == 1
    assert len(escrow_calls("create_transfer")) - made <= 1


def test_reconcile_catches_up_with_a_lost_payment_event(market):
    from django_escrow_connect.services.reconcile import reconcile

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 900).json()["id"]
    tip = Tip().objects.get(pk=tip_id)
    # The customer pays; every event of it is lost.
    SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
    assert Tip().objects.get(pk=tip_id).status == "awaiting_payment"
    with market.capture(execute=True):
        reconcile(payment_id=payment.pk)
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert tip.transfers.get().status == "created"


def test_reconcile_stopped_by_an_error_has_printed_the_tips_it_sent(market, monkeypatch):
    """Two tips left paid (their transfer never ran); a bug in the second's
    transfer. The tips' lines were printed once their step was over: the
    first tip's transfer was made but only the traceback showed. It is
    printed as it is made, and counted before the traceback."""
    payment = market.released_payment()
    real_transfer = tip_services._transfer_after_commit
    monkeypatch.setattr(tip_services, "_transfer_after_commit", lambda *args, **kwargs: None)
    first, second = (pay_tip(market, add_tip(market, payment, n).json()["id"]) for n in (300, 400))
    monkeypatch.setattr(tip_services, "_transfer_after_commit", real_transfer)
    assert [first.status, second.status] == ["paid", "paid"]
    real_transfer_tip = tip_services.transfer_tip

    def transfer_with_a_bug(tip_id, **kwargs):
        if tip_id == second.pk:
            raise ValueError("a bug in the transfer")
        return real_transfer_tip(tip_id, **kwargs)

    monkeypatch.setattr(tip_services, "transfer_tip", transfer_with_a_bug)
    out, err = io.StringIO(), io.StringIO()
    with market.capture(execute=True), pytest.raises(ValueError, match="a bug in the transfer"):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out, stderr=err)
    assert out.getvalue() == f"{payment.pk}: tip {first.pk}: paid -> transferred\n"
    assert err.getvalue() == (
        "Stopped by the error below after 1 changed; the lines above are done.\n"
    )
    assert [Tip().objects.get(pk=t.pk).status for t in (first, second)] == ["transferred", "paid"]


def test_the_admin_shows_tips_on_the_payment(market, client):
    from django.contrib import admin

    Payment = swappable.load("EscrowPayment")
    if not admin.site.is_registered(Payment):
        pytest.skip("the payment model is swapped")
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 321).json()["id"])
    market.staff.is_superuser = True
    market.staff.save()
    client.force_login(market.staff)
    page = client.get(
        reverse(
            f"admin:{Payment._meta.app_label}_{Payment._meta.model_name}_change",
            args=[payment.pk],
        )
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert tip.stripe_payment_intent_id in html
    assert tip.transfers.get().stripe_transfer_id in html
    tip_page = client.get(
        reverse(f"admin:{Tip()._meta.app_label}_{Tip()._meta.model_name}_change", args=[tip.pk])
    )
    assert tip_page.status_code == 200
    assert tip.transfers.get().idempotency_key in tip_page.content.decode()


@pytest.mark.parametrize("model_name", ["EscrowTipTransfer", "Transfer"])
def test_every_transfer_model_has_the_shared_transitions_on_its_own_states(model_name):
    """Both transfer models inherit pending -> created/failed from one base;
    each keeps its own states (a tip transfer is never reversed)."""
    model = swappable.load(model_name)
    field = model._meta.get_field("status")
    transitions = {t.name: (t.source, t.target) for t in field.get_all_transitions(model)}
    assert transitions["mark_created"] == ("pending", "created")
    assert transitions["mark_failed"] == ("pending", "failed")
    expected = {"pending", "created", "failed"}
    if model_name == "Transfer":
        expected |= {"partially_reversed", "reversed"}
    assert {value for value, _label in field.choices} == expected
    row = model(amount=1, currency="usd")
    assert {t.name for t in row.get_available_status_transitions()} == {
        "mark_created",
        "mark_failed",
    }


@pytest.mark.parametrize("why", ["deauthorized", "transfers_inactive"])
def test_no_tip_is_charged_for_a_doer_who_cannot_receive_it(market, why):
    payment = market.released_payment()
    if why == "deauthorized":
        # The doer disconnected the platform after the release (the webhook).
        with market.capture(execute=True):
            SimulatedGateway().deauthorize(market.doer_account.stripe_account_id)
    else:
        market.doer_account.capabilities = {"transfers": "inactive"}
        market.doer_account.save()
    intents_before = len(escrow_calls("create_payment_intent"))

    response = add_tip(market, payment, 500)

    # Refused before any money moves: the customer is not charged for a tip
    # whose transfer Stripe would refuse (it would sit on the platform).
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "account_not_ready"
    assert not Tip().objects.exists()
    assert not swappable.load("MoneyOperation").objects.filter(kind="tip_intent").exists()
    assert len(escrow_calls("create_payment_intent")) == intents_before


def test_reconcile_catches_up_with_a_failed_tip_paid_again(market):
    from django.core.management import call_command

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 300).json()["id"]
    tip = pay_tip(market, tip_id, "declined")
    assert tip.status == "failed"
    # The customer confirms the same PaymentIntent again; its events are lost.
    SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
    assert Tip().objects.get(pk=tip_id).status == "failed"

    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=io.StringIO())

    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert tip.transfers.get().status == "created"


@pytest.mark.parametrize("paid", ["never", "declined"])
def test_abandoned_tips_are_not_looked_up_on_every_reconcile_for_ever(market, paid):
    """A tip the customer never paid stayed ``awaiting_payment`` and cost a
    Stripe request on every scheduled run, for ever; after 30 days untouched
    it is left alone, as an abandoned checkout (and a failed tip) is."""
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from django_escrow_connect.simulation import simulated_stripe

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 400).json()["id"]
    if paid == "declined":
        pay_tip(market, tip_id, "declined")
    Tip().objects.filter(pk=tip_id).update(updated_at=timezone.now() - timedelta(days=31))
    simulated_stripe.calls.clear()

    out = io.StringIO()
    call_command("escrow_reconcile", "--older-than", "0", stdout=out)

    assert "Nothing to reconcile." in out.getvalue()
    assert simulated_stripe.calls == []
    # Named, it is still looked up (an operator's question).
    call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=io.StringIO())
    assert [name for name, _ in simulated_stripe.calls] == ["retrieve_payment_intent"]


@pytest.fixture
def tip_signals():
    seen = []

    def receiver(sender, signal, **kwargs):
        seen.append((signal, kwargs))

    watched = [
        getattr(signals, name)
        for name in (
            "tip_dispute_opened",
            "tip_dispute_closed",
            "dispute_opened",
            "dispute_closed",
            "radar_hold_opened",
            "radar_hold_closed",
        )
        if hasattr(signals, name)
    ]
    for signal in watched:
        signal.connect(receiver, weak=False)
    yield seen
    for signal in watched:
        signal.disconnect(receiver)


def webhook_statuses(*types):
    return {
        e.type: e.status
        for e in swappable.load("WebhookEvent")
        .objects.filter(type__in=types)
        .order_by("received_at")
    }


def test_a_dispute_on_a_tips_charge_is_recorded_and_signalled(market, tip_signals):
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 800).json()["id"])
    assert tip.status == "transferred"

    with market.capture(execute=True):
        opened = SimulatedGateway().open_dispute(tip.stripe_charge_id)

    # Not deferred for days and given up: the tip's dispute is processed.
    assert webhook_statuses("charge.dispute.created", "charge.dispute.funds_withdrawn") == {
        "charge.dispute.created": "processed",
        "charge.dispute.funds_withdrawn": "processed",
    }
    dispute = payment.disputes.get()
    assert dispute.stripe_dispute_id == opened.id
    assert dispute.tip == tip
    assert list(tip.disputes.all()) == [dispute]
    assert dispute.stripe_charge_id == tip.stripe_charge_id
    assert (dispute.amount, dispute.currency, dispute.status) == (800, "usd", "needs_response")
    # Stripe debited the platform; what the tip had sent to the doer is kept.
    assert dispute.funds_withdrawn == 800
    (row,) = tip.transfers.all()
    assert dispute.released_when_opened == {
        "transfers": [
            {
                "transfer": row.stripe_transfer_id,
                "destination": row.destination_account_id,
                "amount": 800,
            }
        ],
    }
    # The payment's own charge is not disputed: its state and books stay.
    payment.refresh_from_db()
    assert (payment.status, payment.amount_disputed) == ("released", 0)
    assert [s for s, _ in tip_signals] == [signals.tip_dispute_opened]
    kwargs = tip_signals[0][1]
    assert (kwargs["payment"].pk, kwargs["tip"].pk, kwargs["dispute"].pk) == (
        payment.pk,
        tip.pk,
        dispute.pk,
    )

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(opened.id, won=False)

    assert webhook_statuses("charge.dispute.closed") == {"charge.dispute.closed": "processed"}
    dispute.refresh_from_db()
    assert dispute.status == "lost"
    assert dispute.closed_at is not None
    payment.refresh_from_db()
    assert payment.status == "released"
    # Never reversed by itself (docs/tips.md): the tip stays transferred.
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert [s for s, _ in tip_signals] == [signals.tip_dispute_opened, signals.tip_dispute_closed]
    assert tip_signals[1][1]["tip"].pk == tip.pk
    assert tip_signals[1][1]["dispute"].status == "lost"


@pytest.mark.parametrize("outcome", ["open", "lost"])
def test_a_tip_whose_charge_is_disputed_is_not_transferred_again(market, escrow_stripe, outcome):
    """The tip's transfer was refused, then its charge disputed: Stripe debited
    the platform for it (lost: the customer has it back). A retry would pay
    the doer money the platform no longer has for this tip: refused, nothing
    sent, nothing written; a dispute won lets it through again."""
    payment, tip_id, tip = a_tip_whose_transfer_stripe_refused(market, escrow_stripe)
    with market.capture(execute=True):
        dispute = SimulatedGateway().open_dispute(tip.stripe_charge_id)
    if outcome == "lost":
        with market.capture(execute=True):
            SimulatedGateway().close_dispute(dispute.id, won=False)
    transfers_before = escrow_calls("create_transfer")

    url = reverse("escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), tip_id])
    with market.capture(execute=True):
        response = market.client(market.staff).post(url, {}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "transition_not_allowed"
    assert escrow_calls("create_transfer") == transfers_before
    tip.refresh_from_db()
    assert tip.status == "transfer_failed"
    assert [t.status for t in tip.transfers.all()] == ["failed"]

    # A retry that committed before the dispute and crashed before its
    # transfer left the tip paid: escrow_reconcile does not send it either.
    Tip().objects.filter(pk=tip_id).update(status="paid")
    reconcile = ("escrow_reconcile", "--payment", str(payment.pk))
    out = io.StringIO()
    with market.capture(execute=True):
        call_command(*reconcile, stdout=out)
    assert escrow_calls("create_transfer") == transfers_before
    # Left waiting for the dispute, not reported as failing on every run.
    assert str(tip.pk) not in out.getvalue()
    assert Tip().objects.get(pk=tip_id).status == "paid"

    if outcome == "open":
        # Won: the platform keeps the money, and the tip goes to the doer.
        with market.capture(execute=True):
            SimulatedGateway().close_dispute(dispute.id, won=True)
        with market.capture(execute=True):
            call_command(*reconcile, stdout=io.StringIO())
        assert Tip().objects.get(pk=tip_id).status == "transferred"


@pytest.mark.parametrize("made_at_stripe", [False, True])
def test_a_tip_transfer_begun_before_its_charge_was_disputed_is_not_finished(
    market, escrow_stripe, made_at_stripe
):
    """The tip's transfer was sent and its answer lost (timeout), then the
    charge was disputed. Retrying the same request would pay the doer money
    Stripe has debited the platform for: the transfer is only looked up.
    Made at Stripe, it is booked; never made, it is given up once its lease
    has passed and the tip waits, paid, for the dispute."""
    from django_escrow_connect import simulation
    from django_escrow_connect.exceptions import TemporarilyUnavailable
    from django_escrow_connect.webhooks.receiver import receive

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 700).json()["id"]
    # The answer is lost (Stripe acted or not).
    escrow_stripe.store.fail_next(
        "create_transfer",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=made_at_stripe,
    )

    def losing_transfer_events(endpoint, payload, signature):
        if json.loads(payload)["type"].startswith("transfer."):
            return None  # the transfer's own event is lost too
        return receive(endpoint, payload, signature)

    previous = simulation.set_event_sink(losing_transfer_events)
    try:
        tip = pay_tip(market, tip_id)
    finally:
        simulation.set_event_sink(previous)
    assert tip.status == "paid"
    with market.capture(execute=True):
        dispute = SimulatedGateway().open_dispute(tip.stripe_charge_id)
    transfers_before = len(escrow_calls("create_transfer"))

    # Staff retry, escrow_reconcile and the service itself: nothing is sent.
    url = reverse("escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), tip_id])
    with market.capture(execute=True):
        response = market.client(market.staff).post(url, {}, format="json")
    reconcile = ("escrow_reconcile", "--payment", str(payment.pk))
    if made_at_stripe:
        with market.capture(execute=True):
            call_command(*reconcile, stdout=io.StringIO())
    else:
        # Still within its lease: someone may be sending it; wait.
        err = io.StringIO()
        with market.capture(execute=True), pytest.raises(CommandError):
            call_command(*reconcile, stdout=io.StringIO(), stderr=err)
        assert "still in progress" in err.getvalue()
        with pytest.raises(errors.OperationInFlight):
            tip_services.transfer_tip(tip_id)
    assert len(escrow_calls("create_transfer")) == transfers_before
    tip.refresh_from_db()
    if made_at_stripe:
        # What Stripe did is learnt and booked, not sent again.
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "transferred"
        assert tip.status == "transferred"
        assert [t.status for t in tip.transfers.all()] == ["created"]
        return
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "operation_pending"
    assert tip.status == "paid"

    # The lease passed: no process can still be sending it. Not found at
    # Stripe, it was never made; the tip waits for the dispute.
    swappable.load("MoneyOperation").objects.filter(kind="tip_transfer").update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    with market.capture(execute=True):
        call_command(*reconcile, stdout=io.StringIO())
    assert len(escrow_calls("create_transfer")) == transfers_before
    tip.refresh_from_db()
    assert tip.status == "paid"
    assert [t.status for t in tip.transfers.all()] == ["failed"]

    # Won: the next escrow_reconcile sends it, under a new key.
    with market.capture(execute=True):
        SimulatedGateway().close_dispute(dispute.id, won=True)
    with market.capture(execute=True):
        call_command(*reconcile, stdout=io.StringIO())
    tip.refresh_from_db()
    assert tip.status == "transferred"
    transfers = list(tip.transfers.order_by("created_at"))
    assert [t.status for t in transfers] == ["failed", "created"]
    assert len(escrow_calls("create_transfer")) == transfers_before + 1
    # Stripe keeps a key's first answer for at least 24 hours: the resend is
    # a new request under a new key, not a replay of the lost one.
    assert transfers[0].idempotency_key != transfers[1].idempotency_key


def disputed_before_its_intent_events(market, tip_id, *, redeliver_disputes=True, inquiry=False):
    """Pay the tip and dispute its charge while the tip's ``payment_intent.*``
    events are held back (a delivery lost, to be retried): the tip, the
    dispute and the held deliveries. ``redeliver_disputes=False``: the
    dispute's events are received but answered as not delivered.
    ``inquiry``: the issuer only asks questions first."""
    from django_escrow_connect import simulation
    from django_escrow_connect.webhooks.receiver import receive

    held_back = []

    def holding_tip_intent_events(endpoint, payload, signature):
        kind = json.loads(payload)["type"]
        if kind.startswith("payment_intent."):
            held_back.append((endpoint, payload, signature))
            return None
        outcome = receive(endpoint, payload, signature)
        return None if not redeliver_disputes and kind.startswith("charge.dispute.") else outcome

    previous = simulation.set_event_sink(holding_tip_intent_events)
    try:
        tip = pay_tip(market, tip_id)
        intent = SimulatedGateway().retrieve_payment_intent(tip.stripe_payment_intent_id)
        with market.capture(execute=True):
            dispute = SimulatedGateway().open_dispute(intent.latest_charge, inquiry=inquiry)
    finally:
        simulation.set_event_sink(previous)
    return tip, dispute, held_back


@pytest.mark.parametrize("inquiry", [False, True])
def test_a_tips_dispute_delivered_before_its_payment_waits_and_holds_the_tip(
    market, tip_signals, inquiry
):
    """Stripe's ``charge.dispute.created`` for a tip's charge is delivered
    before the tip's ``payment_intent.succeeded`` (a delivery lost, then
    retried). The dispute is deferred; the late ``succeeded`` makes the tip
    paid but sends nothing while that dispute waits; escrow_reconcile
    records it (the tip held by it); won (an inquiry: closed without a
    loss), the tip goes to the doer on that event's commit, not at the next
    escrow_reconcile."""
    from django_escrow_connect.webhooks.receiver import receive

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 600).json()["id"]
    tip, dispute, held_back = disputed_before_its_intent_events(market, tip_id, inquiry=inquiry)
    assert tip.status == "awaiting_payment"
    assert held_back
    assert webhook_statuses("charge.dispute.created")["charge.dispute.created"] == "deferred"
    assert not payment.disputes.exists()

    transfers_before = escrow_calls("create_transfer")
    with market.capture(execute=True):
        for delivery in held_back:
            receive(*delivery)
    tip.refresh_from_db()
    # Paid, but not sent: the customer's bank has already disputed it.
    assert tip.status == "paid"
    assert escrow_calls("create_transfer") == transfers_before
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", stdout=out)
    assert webhook_statuses("charge.dispute.created")["charge.dispute.created"] == "processed"
    recorded = payment.disputes.get()
    assert (recorded.stripe_dispute_id, recorded.tip_id) == (dispute.id, tip.pk)
    assert recorded.released_when_opened == {"transfers": []}
    assert [s for s, _ in tip_signals] == [signals.tip_dispute_opened]
    assert escrow_calls("create_transfer") == transfers_before
    assert Tip().objects.get(pk=tip_id).status == "paid"

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(dispute.id, won=True)
    assert payment.disputes.get().status == ("warning_closed" if inquiry else "won")
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert [(t.status, t.amount) for t in tip.transfers.all()] == [("created", 600)]


@pytest.mark.parametrize("pending", ["received", "failed"])
def test_a_tips_dispute_not_applied_yet_holds_the_tip(market, settings, monkeypatch, pending):
    """The tip's ``charge.dispute.created`` is recorded but not applied when the
    tip's late ``succeeded`` arrives: ``received`` (queued for a task worker,
    or its deferral not written yet) or ``failed`` (its handler raised, to be
    retried). Either may still record the dispute: the tip is paid but not
    sent, by its event, staff's retry or escrow_reconcile."""
    from django_escrow_connect.webhooks import registry
    from django_escrow_connect.webhooks.receiver import receive

    payment = market.released_payment()
    tip_id = add_tip(market, payment, 600).json()["id"]

    def handler_failing(context):
        raise RuntimeError("the database went away")

    sync = settings.ESCROW_CONNECT
    if pending == "received":
        settings.ESCROW_CONNECT = {**sync, "WEBHOOK_PROCESSING": "task"}
        settings.TASKS = {"default": {"BACKEND": f"{TASK_BACKENDS}.dummy.DummyBackend"}}
    else:
        route = registry.HANDLERS["charge.dispute.created"]
        monkeypatch.setitem(
            registry.HANDLERS,
            "charge.dispute.created",
            dataclasses.replace(route, handler=handler_failing),
        )
    # A failed dispute is Stripe's to deliver again later, not now.
    tip, _dispute, held_back = disputed_before_its_intent_events(
        market, tip_id, redeliver_disputes=False
    )
    settings.ESCROW_CONNECT = sync
    assert webhook_statuses("charge.dispute.created") == {"charge.dispute.created": pending}

    transfers_before = escrow_calls("create_transfer")
    with market.capture(execute=True):
        for delivery in held_back:
            receive(*delivery)
    tip.refresh_from_db()
    assert tip.status == "paid"
    url = reverse("escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), tip_id])
    with market.capture(execute=True):
        response = market.client(market.staff).post(url, {}, format="json")
    assert response.status_code == 409, response.content
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert escrow_calls("create_transfer") == transfers_before
    assert Tip().objects.get(pk=tip_id).status == "paid"
    # Listed on every run, not skipped silently: a dispute event that keeps
    # failing holds the tip until someone fixes it.
    event = swappable.load("WebhookEvent").objects.get(type="charge.dispute.created")
    assert f"tip {tip_id} held: dispute event {event.stripe_event_id} is {pending}" in (
        out.getvalue()
    )


def test_the_payments_own_dispute_closes_while_a_tips_dispute_is_open(market, tip_signals):
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 500).json()["id"])
    with market.capture(execute=True):
        SimulatedGateway().open_dispute(tip.stripe_charge_id)
        own = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    payment.refresh_from_db()
    assert payment.status == "disputed"
    assert payment.amount_disputed == payment.amount

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(own.id, won=True)

    # The tip's open dispute does not keep the payment disputed.
    payment.refresh_from_db()
    assert payment.status == "released"
    assert sorted(d.status for d in payment.disputes.all()) == ["needs_response", "won"]


@pytest.mark.parametrize("won", [True, False])
def test_a_tip_waits_while_its_payments_own_charge_is_disputed(market, received, won):
    """The customer's bank disputes the payment (the work not received, the
    card not theirs) while a tip for that work is unpaid. Paid meanwhile, the
    tip is not sent to the doer: not by its ``succeeded``, nor staff's retry,
    nor escrow_reconcile. Won, it goes by itself; lost, it stays held."""
    payment = market.released_payment()
    tip_id = add_tip(market, payment, 700).json()["id"]
    with market.capture(execute=True):
        own = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    payment.refresh_from_db()
    assert payment.status == "disputed"
    transfers_before = escrow_calls("create_transfer")

    tip = pay_tip(market, tip_id)
    assert tip.status == "paid"
    assert [s for s, _ in received] == [signals.tip_paid]
    url = reverse("escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), tip_id])
    with market.capture(execute=True):
        response = market.client(market.staff).post(url, {}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "transition_not_allowed"
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert str(tip.pk) not in out.getvalue()
    assert escrow_calls("create_transfer") == transfers_before
    assert not tip.transfers.exists()

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(own.id, won=won)
    tip.refresh_from_db()
    if won:
        assert tip.status == "transferred"
        assert [(t.status, t.amount) for t in tip.transfers.all()] == [("created", 700)]
        return
    # Lost: the customer got the payment back; the tip stays on the platform
    # (paid) for the platform to refund or send, not sent by a later run.
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=io.StringIO())
    assert Tip().objects.get(pk=tip_id).status == "paid"
    assert escrow_calls("create_transfer") == transfers_before


def test_a_tip_refunded_while_its_payments_dispute_held_it_is_not_sent_when_won(market):
    """The platform refunds the held tip in the Dashboard, its refund events
    not here yet when the dispute is won: the tip's charge is read before it
    is sent, its refund recorded, nothing sent."""
    payment = market.released_payment()
    tip_id = add_tip(market, payment, 700).json()["id"]
    with market.capture(execute=True):
        own = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    tip = pay_tip(market, tip_id)
    assert tip.status == "paid"
    with losing_refund_events(), market.capture(execute=True):
        refund_tip(tip)
    transfers_before = escrow_calls("create_transfer")

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(own.id, won=True)
    assert escrow_calls("create_transfer") == transfers_before
    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 700)
    assert not tip.transfers.exists()


def a_tip_held_by_the_payments_lost_dispute(market):
    """A tip paid while its payment's own charge was disputed, the dispute then lost."""
    payment = market.released_payment()
    tip_id = add_tip(market, payment, 700).json()["id"]
    with market.capture(execute=True):
        own = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    tip = pay_tip(market, tip_id)
    with market.capture(execute=True):
        SimulatedGateway().close_dispute(own.id, won=False)
    assert (market.payment(payment.pk).status, Tip().objects.get(pk=tip_id).status) == (
        "dispute_lost",
        "paid",
    )
    return payment, tip, own.id


def retry_tip_transfer(market, payment, tip):
    url = reverse("escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), str(tip.pk)])
    with market.capture(execute=True):
        return market.client(market.staff).post(url, {}, format="json")


def test_a_tip_held_by_a_lost_payment_dispute_waits_for_staff_who_may_send_it(market, caplog):
    """Lost, nothing is left to wait for: escrow_reconcile lists the held tip
    on every run (not an error), and staff's retry-transfer sends it, their
    decision, logged."""
    payment, tip, _ = a_tip_held_by_the_payments_lost_dispute(market)
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert f"tip {tip.pk} held: the payment's dispute was lost" in out.getvalue()
    assert not tip.transfers.exists()

    response = retry_tip_transfer(market, payment, tip)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "transferred"
    assert [(t.status, t.amount) for t in tip.transfers.all()] == [("created", 700)]
    assert any("tip sent by staff" in r.getMessage() for r in caplog.records)


def test_staffs_decision_to_send_a_tip_after_a_loss_is_kept_for_the_next_driver(
    market, escrow_stripe, client
):
    """Staff send a tip the payment's lost dispute held; Stripe's answer is
    lost (the transfer not made). Their decision is on the tip's transfer
    operation: escrow_reconcile finishes that transfer with its key instead
    of only looking it up and giving it up, and the journal (admin) shows
    who decided."""
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment, tip, _ = a_tip_held_by_the_payments_lost_dispute(market)
    escrow_stripe.store.fail_next(
        "create_transfer", TemporarilyUnavailable("timeout", http_status=None), after_effect=False
    )

    response = retry_tip_transfer(market, payment, tip)

    assert response.status_code == 503, response.content
    operation = swappable.load("MoneyOperation").objects.get(kind="tip_transfer")
    assert operation.status != "succeeded"
    assert operation.requested_by == market.staff
    assert operation.follow_up["after_loss"] is True
    assert operation.follow_up["decided_by"] == str(market.staff.pk)
    assert operation.follow_up["decided_at"]
    sent = [args["idempotency_key"] for _, args in escrow_calls("create_transfer")]

    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=io.StringIO())

    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert [(t.status, t.amount) for t in tip.transfers.all()] == [("created", 700)]
    resent = [args["idempotency_key"] for _, args in escrow_calls("create_transfer")]
    assert resent == [*sent, operation.idempotency_key]
    market.staff.is_superuser = True
    market.staff.save()
    client.force_login(market.staff)
    page = client.get(
        reverse("admin:escrow_connect_moneyoperation_change", args=[operation.pk])
    ).content.decode()
    assert "decided_by" in page
    assert str(market.staff) in page


def test_staff_cannot_send_a_tip_while_the_payments_dispute_is_under_appeal(market, escrow_stripe):
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment, tip, own = a_tip_held_by_the_payments_lost_dispute(market)
    with market.capture(execute=True):
        SimulatedGateway().appeal_dispute(own, submitted=True)
    # Refused by the database: Stripe is not read (it could be down).
    escrow_stripe.store.fail_next(
        "retrieve_charge", TemporarilyUnavailable("Stripe is down", http_status=503)
    )

    response = retry_tip_transfer(market, payment, tip)

    assert response.status_code == 409, response.content
    assert "until it is decided" in response.json()["error"]["message"]
    assert not tip.transfers.exists()
    assert escrow_calls("retrieve_charge") == []


def test_an_appeal_won_while_staff_retry_does_not_send_a_refunded_tip(market, monkeypatch):
    """The tip was refunded in the Dashboard while the payment's dispute was
    lost (the refund's events lost, so the tip still reads paid), then
    appealed; the appeal is won between staff's request being refused by
    the database and the lock. The refusal stands (the tip's charge was not
    read): the refunded tip is not sent."""
    payment, tip, own = a_tip_held_by_the_payments_lost_dispute(market)
    gateway = SimulatedGateway()
    with losing_refund_events(), market.capture(execute=True):
        refund_tip(tip)
    with market.capture(execute=True):
        gateway.appeal_dispute(own, submitted=True)
    checked = tip_services._require_not_refunded
    won = []

    def appeal_won_right_after(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        finally:
            if not won:
                won.append(own)
                with market.capture(execute=True):
                    gateway.close_dispute(own, won=True)

    monkeypatch.setattr(tip_services, "_require_not_refunded", appeal_won_right_after)

    response = retry_tip_transfer(market, payment, tip)

    assert response.status_code == 409, response.content
    assert won
    assert market.payment(payment.pk).status == "released"
    assert not tip.transfers.exists()
    # The won appeal's own attempt read the charge: the refund is recorded.
    assert Tip().objects.get(pk=tip.pk).status == "refunded"


@pytest.mark.parametrize("refunded", [True, False])
def test_a_won_appeal_sends_the_held_tips_unless_refunded_meanwhile(market, refunded):
    """While the dispute was lost the platform refunded the tip in the Stripe
    Dashboard (its events record the tip refunded): the appeal won later
    does not send it, escrow_reconcile no longer lists it, staff's retry is
    refused; not refunded, it goes by itself."""
    payment, tip, own = a_tip_held_by_the_payments_lost_dispute(market)
    gateway = SimulatedGateway()
    with market.capture(execute=True):
        if refunded:
            refund_tip(tip)
        gateway.appeal_dispute(own, submitted=True)
    with market.capture(execute=True):
        gateway.close_dispute(own, won=True)
    assert market.payment(payment.pk).status == "released"

    tip.refresh_from_db()
    if not refunded:
        assert tip.status == "transferred"
        return
    assert (tip.status, tip.amount_refunded) == ("refunded", 700)
    assert not tip.transfers.exists()
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert str(tip.pk) not in out.getvalue()
    response = retry_tip_transfer(market, payment, tip)
    assert response.status_code == 409, response.content
    assert not tip.transfers.exists()


def a_tips_dispute_and_the_payments_own(market):
    """A released payment with a paid tip; both charges disputed: (payment, tip, tip's, own)."""
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 500).json()["id"])
    with market.capture(execute=True):
        of_tip = SimulatedGateway().open_dispute(tip.stripe_charge_id, reason="duplicate")
        own = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    return payment, tip, of_tip.id, own.id


def test_the_payment_detail_marks_a_tips_dispute_with_the_tip(market):
    payment, tip, of_tip, own = a_tips_dispute_and_the_payments_own(market)

    response = market.get(market.customer, "payment-detail", payment_id=payment.pk)

    assert response.status_code == 200, response.content
    disputes = {d["stripe_dispute_id"]: d for d in response.json()["disputes"]}
    # The tip as the tips endpoint names it; null for the payment's own charge.
    (listed,) = market.client(market.customer).get(tips_url(payment)).json()["results"]
    assert disputes[of_tip]["tip"] == listed["id"] == str(tip.pk)
    assert (disputes[of_tip]["amount"], disputes[of_tip]["reason"]) == (500, "duplicate")
    assert disputes[own]["tip"] is None


def test_the_tips_list_shows_each_tips_disputes_to_whoever_may_see_the_tips(market):
    payment = market.released_payment()
    undisputed = pay_tip(market, add_tip(market, payment, 300).json()["id"])
    tip = pay_tip(market, add_tip(market, payment, 500).json()["id"])
    with market.capture(execute=True):
        of_tip = SimulatedGateway().open_dispute(tip.stripe_charge_id, reason="duplicate").id
        SimulatedGateway().open_dispute(payment.stripe_charge_id)
    detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
    shown_on_payment = {d["stripe_dispute_id"]: d for d in detail["disputes"]}

    for user in (market.customer, market.doer, market.staff):
        response = market.get(user, "payment-tips", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        tips = {t["id"]: t for t in response.json()["results"]}
        # The tip's own dispute, as the payment shows it; never the payment's own.
        assert tips[str(tip.pk)]["disputes"] == [shown_on_payment[of_tip]]
        assert tips[str(undisputed.pk)]["disputes"] == []
    (shown,) = tips[str(tip.pk)]["disputes"]
    assert (shown["tip"], shown["status"], shown["amount"], shown["currency"]) == (
        str(tip.pk),
        "needs_response",
        500,
        "usd",
    )
    assert shown["reason"] == "duplicate"
    assert shown["evidence_due_by"] is not None
    assert shown["closed_at"] is None
    assert market.get(market.other, "payment-tips", payment_id=payment.pk).status_code == 404

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(of_tip, won=False)
    response = market.get(market.customer, "payment-tips", payment_id=payment.pk)
    (closed,) = {t["id"]: t for t in response.json()["results"]}[str(tip.pk)]["disputes"]
    assert closed["status"] == "lost"
    assert closed["closed_at"] is not None


def test_a_tips_dispute_recorded_without_its_tip_is_named_on_its_next_event(market):
    # A dispute recorded before dispute.tip existed (a swapped host that
    # skipped the upgrade's query) is shown as the payment's own until the
    # next event of that dispute names its tip.
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 600).json()["id"])
    with market.capture(execute=True):
        opened = SimulatedGateway().open_dispute(tip.stripe_charge_id)
    swappable.load("Dispute").objects.filter(stripe_dispute_id=opened.id).update(tip=None)
    before = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
    assert [d["tip"] for d in before["disputes"]] == [None]

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(opened.id, won=True)

    after = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
    assert [(d["tip"], d["status"]) for d in after["disputes"]] == [(str(tip.pk), "won")]
    (listed,) = market.get(market.customer, "payment-tips", payment_id=payment.pk).json()["results"]
    assert [d["stripe_dispute_id"] for d in listed["disputes"]] == [opened.id]
    payment.refresh_from_db()
    assert payment.status == "released"


def test_a_tip_request_sent_again_answers_the_tips_disputes(market):
    payment = market.released_payment()
    first = add_tip(market, payment, 700, key="7b0c6a1e-2f3d-4c5b-8a9e-0d1f2a3b4c5d")
    tip = pay_tip(market, first.json()["id"])
    assert first.json()["disputes"] == []
    with market.capture(execute=True):
        opened = SimulatedGateway().open_dispute(tip.stripe_charge_id)

    again = add_tip(market, payment, 700, key="7b0c6a1e-2f3d-4c5b-8a9e-0d1f2a3b4c5d")

    assert again.status_code == 201, again.content
    assert again.json()["id"] == str(tip.pk)
    assert [(d["stripe_dispute_id"], d["status"]) for d in again.json()["disputes"]] == [
        (opened.id, "needs_response")
    ]


def test_the_report_names_the_tip_of_an_open_dispute(market):
    from django.core.management import call_command

    payment, tip, of_tip, own = a_tips_dispute_and_the_payments_own(market)

    out = io.StringIO()
    call_command("escrow_report", "--format", "json", stdout=out)
    items = {d["dispute"]: d for d in json.loads(out.getvalue())["open_disputes"]["items"]}
    assert (items[of_tip]["payment"], items[of_tip]["tip"]) == (str(payment.pk), str(tip.pk))
    assert items[own]["tip"] is None
    out = io.StringIO()
    call_command("escrow_report", stdout=out)
    assert f"{of_tip} payment {payment.pk} tip {tip.pk} needs_response" in out.getvalue()
    assert f"{own} payment {payment.pk} needs_response" in out.getvalue()


def test_the_dispute_admin_shows_and_filters_a_tips_dispute(market, client):
    # Dispute is the library's in both test settings (only EscrowPayment is
    # swapped), so the package registers its admin.
    Dispute = swappable.load("Dispute")
    _payment, tip, of_tip, own = a_tips_dispute_and_the_payments_own(market)
    market.staff.is_superuser = True
    market.staff.save()
    client.force_login(market.staff)
    changelist = reverse("admin:escrow_connect_dispute_changelist")

    tips_only = client.get(changelist, {"tip__isempty": "0"}).content.decode()
    own_only = client.get(changelist, {"tip__isempty": "1"}).content.decode()

    assert of_tip in tips_only
    assert own not in tips_only
    assert str(tip) in tips_only  # the tip column
    assert own in own_only
    assert of_tip not in own_only
    dispute = Dispute.objects.get(stripe_dispute_id=of_tip)
    page = client.get(reverse("admin:escrow_connect_dispute_change", args=[dispute.pk]))
    assert page.status_code == 200
    # The change page links the tip.
    tip_page = reverse(f"admin:{tip._meta.app_label}_{tip._meta.model_name}_change", args=[tip.pk])
    assert tip_page in page.content.decode()


def test_a_tips_dispute_is_emailed_to_the_customer_and_the_doer(market, settings):
    from django.core import mail

    configure(
        settings,
        TIP_MAX_AMOUNT={"usd": TIP_LIMIT},
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
    )
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 800).json()["id"])
    mail.outbox.clear()

    with market.capture(execute=True):
        opened = SimulatedGateway().open_dispute(tip.stripe_charge_id)
    with market.capture(execute=True):
        SimulatedGateway().close_dispute(opened.id, won=False)

    task = str(payment.task)
    assert [m.subject for m in mail.outbox] == [
        f'The tip for "{task}" is disputed',
        f'Tip dispute lost: "{task}"',
    ]
    opened_mail, closed_mail = mail.outbox
    for message in mail.outbox:
        assert sorted(message.to) == sorted([market.customer.email, market.doer.email])
        assert f"Tip reference: {tip.pk}" in message.body
        assert f"Payment reference: {payment.pk}" in message.body
    assert "disputed the tip of 8.00 USD" in opened_mail.body
    assert "The payment itself is not disputed" in opened_mail.body
    assert "The disputed 8.00 USD went back to the customer." in closed_mail.body


def early_fraud_warning(warning_id, charged):
    """An actionable early fraud warning of ``charged``'s charge (a payment or a tip)."""
    return {
        "id": warning_id,
        "object": "radar.early_fraud_warning",
        "actionable": True,
        "charge": charged.stripe_charge_id,
        "created": 1_800_000_000,
        "fraud_type": "made_with_stolen_card",
        "livemode": False,
        "payment_intent": charged.stripe_payment_intent_id,
    }


def radar_review(review_id, charged):
    """An open Radar review of ``charged``'s charge (a payment or a tip)."""
    return {
        "id": review_id,
        "object": "review",
        "billing_zip": None,
        "charge": charged.stripe_charge_id,
        "closed_reason": None,
        "created": 1_800_000_000,
        "ip_address": None,
        "ip_address_location": None,
        "livemode": False,
        "open": True,
        "opened_reason": "rule",
        "payment_intent": charged.stripe_payment_intent_id,
        "reason": "rule",
        "session": None,
    }


def closed_review(review, reason):
    return {**review, "open": False, "closed_reason": reason, "reason": reason}


def event(event_id, type_, obj):
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "api_version": "2026-10-28.endive",
        "created": 1_800_000_000,
        "livemode": False,
        "data": {"object": obj},
    }


def test_an_early_fraud_warning_on_a_tips_charge_is_an_incident(
    market, escrow_deliver, tip_signals
):
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 600).json()["id"])
    warning = early_fraud_warning("issfr_tip_1", tip)

    response = escrow_deliver(event("evt_tip_efw", "radar.early_fraud_warning.created", warning))
    assert response.status_code == 200
    assert webhook_statuses("radar.early_fraud_warning.created") == {
        "radar.early_fraud_warning.created": "processed"
    }
    incident = payment.incidents.get()
    assert incident.kind == "early_fraud_warning"
    assert incident.stripe_object_id == "issfr_tip_1"
    assert incident.stripe_payment_intent_id == tip.stripe_payment_intent_id
    assert incident.code == "made_with_stolen_card"
    assert str(tip.pk) in incident.message
    assert incident.resolved_at is None
    assert [s for s, _ in tip_signals] == [signals.radar_hold_opened]
    assert tip_signals[0][1]["tip"].pk == tip.pk
    assert tip_signals[0][1]["incident"].pk == incident.pk

    escrow_deliver(
        event(
            "evt_tip_efw_2", "radar.early_fraud_warning.updated", {**warning, "actionable": False}
        )
    )
    incident.refresh_from_db()
    assert incident.resolved_at is not None
    assert [s for s, _ in tip_signals] == [signals.radar_hold_opened, signals.radar_hold_closed]
    payment.refresh_from_db()
    assert payment.status == "released"


def test_a_tip_waits_while_an_early_fraud_warning_holds_its_payment(market, escrow_deliver):
    """The card issuer warns of fraud on the payment's charge: its release is
    frozen, and a tip paid meanwhile waits too (the same card, the same
    work), paid: not sent by its ``succeeded``, staff's retry (409, the
    release's code) or escrow_reconcile, which lists it as held. The warning
    no longer actionable, the tip goes to the doer on that event's commit."""
    payment = market.released_payment()
    warning = early_fraud_warning("issfr_payment_1", payment)
    with market.capture(execute=True):
        escrow_deliver(event("evt_efw", "radar.early_fraud_warning.created", warning))
    transfers_before = escrow_calls("create_transfer")

    tip = pay_tip(market, add_tip(market, payment, 700).json()["id"])
    assert tip.status == "paid"
    response = retry_tip_transfer(market, payment, tip)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "early_fraud_warning_open"
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert (
        f"tip {tip.pk} held: Stripe Radar's early_fraud_warning issfr_payment_1 is open"
        in out.getvalue()
    )
    assert escrow_calls("create_transfer") == transfers_before
    assert Tip().objects.get(pk=tip.pk).status == "paid"

    with market.capture(execute=True):
        escrow_deliver(
            event(
                "evt_efw_2",
                "radar.early_fraud_warning.updated",
                {**warning, "actionable": False},
            )
        )
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert [(t.status, t.amount) for t in tip.transfers.all()] == [("created", 700)]


def _radar_hold(kind, reason, payment):
    """A Radar hold of ``payment`` (its opening event) and the event that
    closes it ``reason`` (a warning: no longer actionable)."""
    if kind == "warning":
        warning = early_fraud_warning("issfr_payment_3", payment)
        return (
            ("evt_efw_5", "radar.early_fraud_warning.created", warning),
            ("evt_efw_6", "radar.early_fraud_warning.updated", {**warning, "actionable": False}),
        )
    review = radar_review("prv_payment_1", payment)
    return (
        ("evt_review_1", "review.opened", review),
        ("evt_review_2", "review.closed", closed_review(review, reason)),
    )


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("warning", ""), ("review", "refunded"), ("review", "refunded_as_fraud")],
)
def test_a_tip_refunded_while_radar_held_it_is_not_sent_when_the_hold_closes(
    market, escrow_deliver, kind, reason
):
    """Stripe closes a Radar hold because of a refund (a warning is not
    actionable once its charge is refunded; a review closes ``refunded`` or
    ``refunded_as_fraud``), and the tip's own refund events may come after:
    the tip's charge is read before it is sent, its refund recorded, nothing
    sent."""
    payment = market.released_payment()
    opened, closed = _radar_hold(kind, reason, payment)
    with market.capture(execute=True):
        escrow_deliver(event(*opened))
    tip = pay_tip(market, add_tip(market, payment, 700).json()["id"])
    assert tip.status == "paid"
    with losing_refund_events(), market.capture(execute=True):
        refund_tip(tip)
    assert Tip().objects.get(pk=tip.pk).status == "paid"  # not known yet
    transfers_before = escrow_calls("create_transfer")

    with market.capture(execute=True):
        escrow_deliver(event(*closed))

    assert payment.incidents.get(stripe_object_id=opened[2]["id"]).resolved_at is not None
    assert escrow_calls("create_transfer") == transfers_before
    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 700)
    assert not tip.transfers.exists()


def test_a_radar_hold_after_a_lost_dispute_is_what_reconcile_says_the_tip_waits_for(
    market, escrow_deliver
):
    """The payment's dispute was lost and a Radar review of the tip's charge
    is open: reconcile said "staff decide", but staff's retry-transfer
    answers 409 until Stripe closes the review. It says the review is open
    and the tip waits for it; once closed, staff decide (and may send it)."""
    payment, tip, _ = a_tip_held_by_the_payments_lost_dispute(market)
    review = radar_review("prv_tip_1", tip)
    with market.capture(execute=True):
        escrow_deliver(event("evt_review_3", "review.opened", review))

    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert out.getvalue() == (
        f"{payment.pk}: tip {tip.pk} held: the payment's dispute was lost and Stripe Radar's "
        "radar_review prv_tip_1 is open (it waits for Stripe to close it: retry-transfer answers "
        "409 until then, staff decide after; refunding its charge needs no wait)\n"
    )
    response = retry_tip_transfer(market, payment, tip)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "radar_review_open"
    assert not tip.transfers.exists()

    with market.capture(execute=True):
        escrow_deliver(event("evt_review_4", "review.closed", closed_review(review, "approved")))
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert "staff decide: retry-transfer sends it" in out.getvalue()
    assert retry_tip_transfer(market, payment, tip).status_code == 200
    assert Tip().objects.get(pk=tip.pk).status == "transferred"


def test_a_warning_closed_by_a_dispute_leaves_the_tips_to_the_dispute(
    market, escrow_deliver, caplog
):
    """Stripe makes a warning not actionable once its charge is disputed: the
    tips it held stay held, by the dispute now (no transfer is even tried),
    and go when it is won."""
    payment = market.released_payment()
    warning = early_fraud_warning("issfr_payment_2", payment)
    with market.capture(execute=True):
        escrow_deliver(event("evt_efw_3", "radar.early_fraud_warning.created", warning))
    tip = pay_tip(market, add_tip(market, payment, 700).json()["id"])
    with market.capture(execute=True):
        own = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="django_escrow_connect"),
        market.capture(execute=True),
    ):
        escrow_deliver(
            event(
                "evt_efw_4",
                "radar.early_fraud_warning.updated",
                {**warning, "actionable": False},
            )
        )
    assert Tip().objects.get(pk=tip.pk).status == "paid"
    assert not tip.transfers.exists()
    # Not tried and refused: a refused try logs about the tip.
    assert [r.getMessage() for r in caplog.records if getattr(r, "tip_id", None)] == []

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(own.id, won=True)
    assert Tip().objects.get(pk=tip.pk).status == "transferred"


def two_milestones(task):
    """``PAYMENT_TERMS`` for the freeze test: the task's terms, paid in two milestones."""
    from django_escrow_connect.terms import MilestoneTerms, terms_from_task

    return dataclasses.replace(
        terms_from_task(task),
        milestones=[MilestoneTerms("Design", 4_000), MilestoneTerms("Build", 6_000)],
    )


def test_a_tips_open_dispute_freezes_the_rest_of_the_payment(market, settings):
    from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS

    configure(
        settings,
        ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
        PAYMENT_TERMS="tests.payments.test_tips.two_milestones",
    )
    payment = market.held_payment()
    design, build = payment.milestones.order_by("position")
    release = {"payment_id": payment.pk}
    response = market.post(
        market.customer, "payment-release", {"milestone_id": design.pk}, **release
    )
    assert response.json()["status"] == "partially_released", response.content
    tip = pay_tip(market, add_tip(market, payment, 500).json()["id"])
    with market.capture(execute=True):
        opened = SimulatedGateway().open_dispute(tip.stripe_charge_id)

    response = market.post(
        market.customer, "payment-release", {"milestone_id": build.pk}, **release
    )
    assert response.status_code == 409, response.content
    assert market.payment(payment.pk).status == "partially_released"

    with market.capture(execute=True):
        SimulatedGateway().close_dispute(opened.id, won=True)
    response = market.post(
        market.customer, "payment-release", {"milestone_id": build.pk}, **release
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "released"


# --------------------------------------------------------------------------
# Idempotency-Key: the same tip request again never adds a second tip
# --------------------------------------------------------------------------


def tip_journal(payment):
    return (
        Tip().objects.filter(payment=payment).count(),
        swappable.load("MoneyOperation").objects.filter(payment=payment).count(),
    )


def test_a_keyed_tip_sent_again_after_it_succeeded_is_answered_not_added(market):
    payment = market.released_payment()
    first = add_tip(market, payment, 300, key="tip-click-1")
    assert first.status_code == 201, first.content
    written = tip_journal(payment)
    intents = len(escrow_calls("create_payment_intent"))

    again = add_tip(market, payment, 300, key="tip-click-1")

    assert again.status_code == 201, again.content
    assert again.json()["id"] == first.json()["id"]
    # The customer still confirms that same PaymentIntent.
    assert again.json()["client_secret"] == first.json()["client_secret"]
    assert again.json()["confirmation"] == "customer"
    assert tip_journal(payment) == written
    assert len(escrow_calls("create_payment_intent")) == intents

    # Paid, then asked again: still that tip, nothing more charged.
    assert pay_tip(market, first.json()["id"]).status == "transferred"
    late = add_tip(market, payment, 300, key="tip-click-1")
    assert late.status_code == 201, late.content
    assert (late.json()["id"], late.json()["status"]) == (first.json()["id"], "transferred")
    assert tip_journal(payment)[0] == 1
    # A new user action, a new key: a tip of its own.
    assert add_tip(market, payment, 300, key="tip-click-2").json()["id"] != first.json()["id"]
    assert tip_journal(payment)[0] == 2


def test_a_tip_key_reused_for_another_amount_is_refused_and_writes_nothing(market):
    payment = market.released_payment()
    assert add_tip(market, payment, 300, key="tip-k").status_code == 201
    written = tip_journal(payment)
    intents = len(escrow_calls("create_payment_intent"))

    response = add_tip(market, payment, 301, key="tip-k")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert tip_journal(payment) == written
    assert len(escrow_calls("create_payment_intent")) == intents


def test_another_users_key_is_another_request(market):
    payment = market.released_payment()
    refunded = market.post(
        market.doer,
        "payment-refund",
        {"amount": 1_000},
        payment_id=payment.pk,
        headers={"Idempotency-Key": "shared"},
    )
    assert refunded.status_code == 200, refunded.content
    # The doer's key is the doer's: the customer's request is their own (not
    # 400 idempotency_key_reused for a key the doer used for a refund).
    assert add_tip(market, payment, 300, key="shared").status_code == 201
    assert add_tip(market, payment, 300, key="shared").status_code == 201
    assert tip_journal(payment)[0] == 1


@pytest.mark.parametrize("key", ["", "k" * 256, "\u00e9t\u00e9"], ids=["empty", "long", "latin1"])
def test_an_invalid_tip_key_is_refused_before_anything_is_written(market, key):
    payment = market.released_payment()
    written = tip_journal(payment)
    response = add_tip(market, payment, 300, key=key)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert tip_journal(payment) == written


# --------------------------------------------------------------------------
# A tip finishes another request's operation, and Stripe refuses that one
# --------------------------------------------------------------------------


def refused_for_the_doer(payment, kind):
    """What the doer's refund left once Stripe refused its ``kind``: the
    refund's rows, and the incident and notification of the refusal (a
    refund refused ``charge_disputed`` holds the payment too)."""
    if kind == "refund":
        assert [r.status for r in payment.refunds.all()] == ["failed"]
        assert sorted(payment.incidents.values_list("kind", flat=True)) == [
            "charge_disputed",
            "refund_failed",
        ]
    else:
        assert not payment.refunds.exists()
        assert payment.transfer_incidents.get().kind == "reversal_failed"
    assert market_payment(payment).amount_refunded == 0


def market_payment(payment):
    return swappable.load("EscrowPayment").objects.get(pk=payment.pk)


@pytest.mark.parametrize("kind", ["reversal", "refund"])
def test_a_tip_added_after_a_refund_whose_answer_was_lost_is_added(market, escrow_stripe, kind):
    """The doer's refund (or its reversal) is finished first, with its own
    key; Stripe's refusal of it is the refund's answer, not the tip's. The
    refund was refused because the charge is disputed: that holds the
    payment, so the tip, added, waits ``paid`` (docs/recovery.md)."""
    payment = lost_then_refused(market, escrow_stripe.store, kind, market.released_payment())

    response = add_tip(market, payment, 700)

    assert response.status_code == 201, response.content
    refused_for_the_doer(payment, kind)
    expected = "paid" if kind == "refund" else "transferred"
    assert pay_tip(market, response.json()["id"]).status == expected


def test_a_paid_tips_transfer_stops_when_the_refund_is_refused_as_disputed(market, escrow_stripe):
    """The tip's payment_intent.succeeded webhook would transfer it: the
    refund left unresolved meanwhile is finished first, and Stripe refuses it
    because the payment's charge is disputed (no dispute webhook yet). The
    payment's dispute holds its tips: the tip stays paid, nothing sent."""
    payment = market.released_payment()
    tip_id = add_tip(market, payment, 700).json()["id"]
    lost_then_refused(market, escrow_stripe.store, "refund", payment)
    escrow_stripe.store.calls.clear()

    tip = pay_tip(market, tip_id)

    assert tip.status == "paid"
    assert not tip.transfers.exists()
    assert calls(escrow_stripe.store, "create_transfer") == []
    refused_for_the_doer(payment, "refund")


def test_a_tips_transfer_finishes_another_tips_refused_transfer_then_goes_out(
    market, escrow_stripe, received
):
    """The first tip's transfer timed out before Stripe acted; the second
    tip's webhook sends it again first, Stripe refuses it: the first tip is
    ``transfer_failed`` (incident, signal; staff retry it), the second goes out."""
    payment = market.released_payment()
    first = add_tip(market, payment, 600).json()["id"]
    second = add_tip(market, payment, 700).json()["id"]
    store = escrow_stripe.store
    store.fail_next("create_transfer", TemporarilyUnavailable("timeout", http_status=None))
    assert pay_tip(market, first).status == "paid"
    store.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )

    assert pay_tip(market, second).status == "transferred"

    first = Tip().objects.get(pk=first)
    assert (first.status, first.failure_code) == ("transfer_failed", "balance_insufficient")
    assert [s for s, kw in received if s == signals.tip_transfer_failed] == [
        signals.tip_transfer_failed
    ]
    assert str(first.pk) in payment.transfer_incidents.get().message


# --------------------------------------------------------------------------
# Refunds of a tip's charge (made in the Stripe Dashboard)
# --------------------------------------------------------------------------

_REFUND_EVENTS = ("charge.refunded", "refund.created", "refund.updated", "refund.failed")


def refund_tip(tip, amount=None, key="dashboard-refund"):
    """The platform refunds the tip's charge in the Stripe Dashboard (no metadata)."""
    return SimulatedGateway().create_refund(
        idempotency_key=key, payment_intent=tip.stripe_payment_intent_id, amount=amount, metadata={}
    )


@contextlib.contextmanager
def losing_refund_events(*types):
    """Stripe's refund events (``types``, default all) never reach the app."""
    from django_escrow_connect import simulation
    from django_escrow_connect.webhooks.receiver import receive

    lost = types or _REFUND_EVENTS

    def sink(endpoint, payload, signature):
        if json.loads(payload)["type"] in lost:
            return None
        return receive(endpoint, payload, signature)

    previous = simulation.set_event_sink(sink)
    try:
        yield
    finally:
        simulation.set_event_sink(previous)


def tip_refunded_incidents(payment):
    return list(payment.incidents.filter(kind="tip_refunded").order_by("created_at"))


@pytest.mark.parametrize(
    "lost",
    [(), ("refund.created",), ("charge.refunded",)],
    ids=["both", "charge-refunded-only", "refund-created-only"],
)
def test_a_tip_refunded_in_full_before_its_transfer_is_recorded_and_never_sent(
    market, escrow_stripe, received, lost
):
    """Either of Stripe's events records the charge's total on the tip (the
    refund's own event reads the charge): the tip is refunded, for good."""
    payment, tip_id, tip = a_tip_whose_transfer_stripe_refused(market, escrow_stripe)
    losing = losing_refund_events(*lost) if lost else contextlib.nullcontext()
    with losing, market.capture(execute=True):
        refund_tip(tip)

    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 600)
    assert tip.refunded_at is not None
    assert [s for s, _ in received][-1] == signals.tip_refunded
    assert received[-1][1]["tip"].pk == tip.pk
    # Nothing was sent: nothing for staff to decide.
    assert tip_refunded_incidents(payment) == []
    response = retry_tip_transfer(market, payment, tip)
    assert response.status_code == 409, response.content
    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert str(tip.pk) not in out.getvalue()
    assert [t.status for t in tip.transfers.all()] == ["failed"]
    body = market.client(market.customer).get(tips_url(payment)).json()
    (listed,) = [t for t in body["results"] if t["id"] == tip_id]
    assert (listed["status"], listed["amount_refunded"]) == ("refunded", 600)


def test_a_tip_refunded_in_part_before_its_transfer_is_left_to_staff(
    market, escrow_stripe, received
):
    """The rest is not sent (who bears the refund is the platform's call); one
    open incident says how much stays on the platform, kept up to date."""
    payment, _, tip = a_tip_whose_transfer_stripe_refused(market, escrow_stripe)
    with market.capture(execute=True):
        refund_tip(tip, 200, key="first")

    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 200)
    (incident,) = tip_refunded_incidents(payment)
    assert str(tip.pk) in incident.message
    assert "before its transfer" in incident.message
    assert "the rest (400)" in incident.message
    assert incident.stripe_payment_intent_id == tip.stripe_payment_intent_id
    assert retry_tip_transfer(market, payment, tip).status_code == 409

    # Staff refund the rest: the same incident, brought up to date.
    with market.capture(execute=True):
        refund_tip(tip, 400, key="second")
    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 600)
    (incident,) = tip_refunded_incidents(payment)
    assert "600 of 600" in incident.message
    assert [s for s, _ in received].count(signals.tip_refunded) == 2
    assert [t.status for t in tip.transfers.all()] == ["failed"]


def test_a_tip_refunded_after_its_transfer_is_an_incident_for_staff(
    market, escrow_stripe, escrow_deliver, received
):
    """The platform refunded money it had sent: recorded, an incident, the
    signal; nothing is reversed. Stripe's events again, or late, newest
    first, change nothing (the running total is set, never added to)."""
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 700).json()["id"])
    assert tip.status == "transferred"
    with market.capture(execute=True):
        refund_tip(tip, 200, key="first")
    with market.capture(execute=True):
        refund_tip(tip, 300, key="second")

    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("transferred", 500)
    (incident,) = tip_refunded_incidents(payment)
    assert "500 of 700 usd refunded at Stripe after its transfer" in incident.message
    assert incident.resolved_at is None
    assert [s for s, _ in received].count(signals.tip_refunded) == 2
    assert escrow_calls("create_transfer_reversal") == []

    events = [
        e
        for e in escrow_stripe.store.events.values()
        if e["type"] in _REFUND_EVENTS
        and tip.stripe_payment_intent_id
        in (e["data"]["object"].get("payment_intent"), e["data"]["object"].get("id"))
    ]
    assert {e["type"] for e in events} == {"charge.refunded", "refund.created"}
    for event in reversed(events):
        again = {**event, "id": event["id"] + "_again"}
        with market.capture(execute=True):
            assert escrow_deliver(again).status_code == 200
    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("transferred", 500)
    assert len(tip_refunded_incidents(payment)) == 1
    assert [s for s, _ in received].count(signals.tip_refunded) == 2
    payment.refresh_from_db()
    assert payment.amount_refunded == 0


def test_reconcile_records_a_held_tip_refunded_whose_events_were_lost(market):
    """The tip its payment's lost dispute held was refunded in the Dashboard
    and none of the refund's events arrived: escrow_reconcile reads the
    charge, records the tip refunded, and lists it no more."""
    payment, tip, _ = a_tip_held_by_the_payments_lost_dispute(market)
    with losing_refund_events(), market.capture(execute=True):
        refund_tip(tip)
    assert Tip().objects.get(pk=tip.pk).status == "paid"

    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert f"tip {tip.pk}: paid -> refunded" in out.getvalue()
    assert "held" not in out.getvalue()
    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 700)

    out = io.StringIO()
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=out)
    assert str(tip.pk) not in out.getvalue()


def test_staff_retry_reads_the_charge_and_records_a_refund_whose_events_were_lost(
    market, escrow_stripe
):
    payment, _, tip = a_tip_whose_transfer_stripe_refused(market, escrow_stripe)
    with losing_refund_events(), market.capture(execute=True):
        refund_tip(tip, 100)

    response = retry_tip_transfer(market, payment, tip)

    assert response.status_code == 409, response.content
    assert "refunded" in response.json()["error"]["message"]
    tip.refresh_from_db()
    assert (tip.status, tip.amount_refunded) == ("refunded", 100)
    assert [t.status for t in tip.transfers.all()] == ["failed"]
    assert len(tip_refunded_incidents(payment)) == 1


def test_a_failed_refund_of_a_tip_is_an_incident_and_not_taken_back(market):
    payment = market.released_payment()
    tip = pay_tip(market, add_tip(market, payment, 700).json()["id"], card="refund_fails")
    with market.capture(execute=True):
        refund = refund_tip(tip, 300)
    with market.capture(execute=True):
        SimulatedGateway().settle_refund(refund.id)

    tip.refresh_from_db()
    assert tip.amount_refunded == 300
    (failed,) = payment.incidents.filter(kind="refund_failed")
    assert refund.id in failed.message
    assert str(tip.pk) in failed.message
    payment.refresh_from_db()
    assert payment.amount_refunded == 0
