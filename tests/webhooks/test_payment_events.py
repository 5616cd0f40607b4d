"""``payment_intent.*`` and ``charge.*`` events move the escrow payment."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import TemporarilyUnavailable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.gateway.types import RefundSnapshot
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import receiver
from tests.checked_gateway import ReadInTransaction, outside_transactions
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import (
    MANUAL,
    PLATFORM_SECRET,
    events,
    intent_for,
    status_history,
    task_backends,
)

pytestmark = pytest.mark.django_db


def incidents(scene: Any) -> list[Any]:
    return list(swappable.load("PaymentIncident").objects.filter(payment=scene.payment.pk))


def test_processing(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    scene = make_payment()
    evt = so.event("payment_intent.processing", intent_for(scene, "processing"))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("processing", "pending_payment")


def test_succeeded_holds_the_money_without_calling_stripe(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment()
    intent = intent_for(scene, "succeeded")
    evt = so.event("payment_intent.succeeded", intent)
    assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert scene.payment.stripe_charge_id == intent["latest_charge"]
    assert [kwargs["payment"].pk for kwargs in sent.of("payment_held")] == [scene.payment.pk]
    assert sim_stripe.calls == []


def test_amount_mismatch_moves_nothing(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    scene = make_payment()
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded", amount=1))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("awaiting_payment", "pending_payment")
    [incident] = incidents(scene)
    assert incident.kind == "amount_mismatch"
    assert incident.stripe_event_id == evt["id"]


def test_the_same_mismatch_seen_again_is_one_incident(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment()
    intent = intent_for(scene, "succeeded", amount=1)
    deliver.platform(so.event("payment_intent.succeeded", intent))
    deliver.platform(so.event("payment_intent.succeeded", intent))
    from django_escrow_connect.gateway.types import PaymentIntentSnapshot
    from django_escrow_connect.services.payment_intents import apply_payment_intent

    # What escrow_reconcile does on each run: apply the intent, no event id.
    apply_payment_intent(PaymentIntentSnapshot.from_dict(intent))
    apply_payment_intent(PaymentIntentSnapshot.from_dict(intent))
    [incident] = incidents(scene)
    assert incident.kind == "amount_mismatch"


def test_currency_mismatch_moves_nothing(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    scene = make_payment()
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded", currency="eur"))
    deliver.platform(evt)
    assert scene.refresh().status == "awaiting_payment"
    assert [i.kind for i in incidents(scene)] == ["amount_mismatch"]


def test_payment_failed_records_stripes_reason(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment()
    intent = intent_for(scene, "requires_payment_method", last_payment_error=so.card_error())
    assert deliver.platform(so.event("payment_intent.payment_failed", intent)).status_code == 200
    assert status_history(scene) == ("failed", "payment_failed")
    [incident] = incidents(scene)
    assert (incident.kind, incident.code, incident.decline_code) == (
        "payment_failed",
        "card_declined",
        "insufficient_funds",
    )
    assert incident.message == "Your card has insufficient funds."
    assert len(sent.of("payment_failed")) == 1


def test_canceled(deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any) -> None:
    scene = make_payment()
    intent = intent_for(scene, "canceled", cancellation_reason="abandoned")
    assert deliver.platform(so.event("payment_intent.canceled", intent)).status_code == 200
    assert scene.refresh().status == "canceled"
    assert len(sent.of("payment_canceled")) == 1


def authorised_event(scene: Any, *, created: int) -> dict[str, Any]:
    intent = intent_for(scene, "requires_capture", created=created)
    return so.event("payment_intent.amount_capturable_updated", intent)


def uncaptured_charge_event(scene: Any, *, capture_before: int) -> dict[str, Any]:
    charge = so.charge(
        payment_intent=scene.payment.stripe_payment_intent_id, captured=False, amount_captured=0
    )
    charge["payment_method_details"]["card"]["capture_before"] = capture_before
    return so.event("charge.succeeded", charge)


def test_manual_capture_authorisation_is_a_hold_with_a_deadline(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment(strategy=MANUAL)
    created = so.now() - 3600
    assert deliver.platform(authorised_event(scene, created=created)).json()["status"] == (
        "processed"
    )
    assert status_history(scene) == ("held", "payment_in_escrow")
    # The charge is named by id only: no Stripe call, a conservative estimate
    # (7 days from the PaymentIntent's creation, which precedes the
    # authorisation) until the charge's own event brings Stripe's deadline.
    assert int(scene.payment.capture_before.timestamp()) == created + 7 * 86400
    assert sim_stripe.calls == []


@pytest.mark.parametrize("charge_first", [True, False], ids=["charge-first", "intent-first"])
def test_the_charge_event_s_deadline_wins_in_either_order(
    deliver: Any, make_payment: Any, sim_stripe: Any, charge_first: bool
) -> None:
    scene = make_payment(strategy=MANUAL, with_charge=False)
    created = so.now() - 3600
    deadline = created + 6 * 86400 + 1234
    events_in_order = [
        uncaptured_charge_event(scene, capture_before=deadline),
        authorised_event(scene, created=created),
    ]
    if not charge_first:
        events_in_order.reverse()
    for evt in events_in_order:
        assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert int(scene.payment.capture_before.timestamp()) == deadline
    assert sim_stripe.calls == []


def test_manual_capture_succeeded_is_the_release(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held", strategy=MANUAL)
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    assert deliver.platform(evt).status_code == 200
    payment = scene.refresh()
    assert payment.status == "released"
    assert payment.amount_transferred == payment.amount - payment.platform_fee
    assert len(sent.of("payment_released")) == 1


@pytest.mark.parametrize(
    ("captured", "fee"),
    [(4_000, 1_000), (500, 500)],
    ids=["fee-within", "fee-capped-at-the-capture"],
)
def test_manual_capture_captured_in_part_releases_what_was_captured(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any, captured: int, fee: int
) -> None:
    # Captured for less than 10,000 in the Stripe dashboard: Stripe gave the
    # rest back to the customer (no refund), transferred what it captured to
    # the doer and capped the application fee (1,000) at it.
    scene = make_payment("held", strategy=MANUAL)
    intent = intent_for(scene, "succeeded", amount_received=captured)
    assert deliver.platform(so.event("payment_intent.succeeded", intent)).status_code == 200
    payment = scene.refresh()
    assert (payment.status, payment.amount_captured, payment.amount_uncaptured) == (
        "released",
        captured,
        10_000 - captured,
    )
    assert (payment.amount_released, payment.amount_held, payment.refundable_amount) == (
        captured,
        0,
        captured,
    )
    assert (payment.platform_fee, payment.amount_transferred) == (fee, captured - fee)
    assert payment.stripe_charge_id == intent["latest_charge"]
    (incident,) = incidents(scene)
    assert incident.kind == "amount_mismatch"
    assert f"captured for {captured} usd outside the app" in incident.message
    assert [kwargs["payment"].pk for kwargs in sent.of("payment_released")] == [payment.pk]
    assert sim_stripe.calls == []
    # Another event about it (charge.captured's PaymentIntent, a replay):
    # booked once, one incident, one notification.
    deliver.platform(so.event("payment_intent.succeeded", intent))
    assert len(incidents(scene)) == 1
    assert len(sent.of("payment_released")) == 1
    assert scene.refresh().amount_released == captured


def test_manual_capture_captured_for_more_than_the_payment_is_an_incident_not_a_release(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    # An overcapture the books cannot hold: nothing is booked, staff settle it.
    scene = make_payment("held", strategy=MANUAL)
    intent = intent_for(scene, "succeeded", amount_received=12_000)
    assert deliver.platform(so.event("payment_intent.succeeded", intent)).status_code == 200
    payment = scene.refresh()
    assert (payment.status, payment.amount_released, payment.amount_captured) == ("held", 0, None)
    (incident,) = incidents(scene)
    assert "captured for 12000 usd outside the app, more than" in incident.message
    assert not sent.of("payment_released")


def test_charge_event_remembers_the_charge_and_capture_deadline(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment(strategy=MANUAL, with_charge=False)
    deadline = so.now() + 6 * 86400
    charge = so.charge(
        payment_intent=scene.payment.stripe_payment_intent_id, captured=False, amount_captured=0
    )
    charge["payment_method_details"]["card"]["capture_before"] = deadline
    assert deliver.platform(so.event("charge.succeeded", charge)).json()["status"] == "processed"
    payment = scene.refresh()
    assert payment.stripe_charge_id == charge["id"]
    assert int(payment.capture_before.timestamp()) == deadline
    assert sim_stripe.calls == []


def test_charge_of_another_product_is_ignored(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("charge.updated", so.charge(payment_intent="pi_1NotAnEscrowPayment"))
    assert deliver.platform(evt).json()["status"] == "ignored"


def test_payment_intent_of_another_product_is_ignored(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("payment_intent.succeeded", so.payment_intent(status="succeeded"))
    assert deliver.platform(evt).json()["status"] == "ignored"


def test_payment_intent_of_another_installation_is_ignored_not_deferred(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    # Staging and production on one Stripe account: the other one's
    # PaymentIntent names a payment of its own database, never of this one.
    scene = make_payment()
    intent = intent_for(scene, "succeeded", id=so.new_id("pi"))
    intent["metadata"]["escrow_namespace"] = "staging"
    evt = so.event("payment_intent.succeeded", intent)
    assert deliver.platform(evt).json()["status"] == "ignored"
    assert scene.refresh().status == scene.payment.status


def test_our_payment_intent_before_its_row_is_deferred(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment()
    intent = intent_for(scene, "succeeded", id=so.new_id("pi"))
    evt = so.event("payment_intent.succeeded", intent)
    assert deliver.platform(evt).json()["status"] == "deferred"
    # The row learns its PaymentIntent id (the create call's answer commits).
    swappable.load("EscrowPayment").objects.filter(pk=scene.payment.pk).update(
        stripe_payment_intent_id=intent["id"]
    )
    deliver.retry_deferred()
    assert events().get(stripe_event_id=evt["id"]).status == "processed"
    assert scene.refresh().status == "held"


def test_charge_refunded_catches_up_with_missing_refund_events(
    deliver: Any, make_payment: Any, sim_stripe: Any, monkeypatch: Any, sent: Any
) -> None:
    scene = make_payment("held")
    payment = scene.payment
    refund = RefundSnapshot(
        id=so.new_id("re"),
        amount=2_500,
        currency="usd",
        status="succeeded",
        payment_intent=payment.stripe_payment_intent_id,
        charge=payment.stripe_charge_id,
    )
    listed: list[str] = []

    def list_refunds(self: Any, *, payment_intent: str) -> list[RefundSnapshot]:
        listed.append(payment_intent)
        return [refund]

    monkeypatch.setattr(type(stripe_gateway()), "list_refunds", list_refunds)
    charge = so.charge(
        id=payment.stripe_charge_id,
        payment_intent=payment.stripe_payment_intent_id,
        amount_refunded=2_500,
    )
    assert deliver.platform(so.event("charge.refunded", charge)).status_code == 200
    assert listed == [payment.stripe_payment_intent_id]
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded) == ("held", 2_500)
    assert len(sent.of("payment_refunded")) == 1

    # Replayed: the totals agree now, so Stripe is not asked again.
    deliver.platform(so.event("charge.refunded", charge))
    assert listed == [payment.stripe_payment_intent_id]
    assert scene.refresh().amount_refunded == 2_500


@pytest.mark.parametrize("processing", ["sync", "task"])
def test_charge_refunded_lists_the_refunds_with_no_transaction_open(
    deliver: Any,
    make_payment: Any,
    sim_stripe: Any,
    monkeypatch: Any,
    sent: Any,
    settings: Any,
    processing: str,
) -> None:
    """The refunds are not listed under the payment's lock: a slow Stripe
    blocks nobody, a failed list leaves the event to retry with nothing
    written, and what changed while Stripe answered counts once."""
    if processing == "task":
        settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}
        settings.TASKS = {"default": {"BACKEND": f"{task_backends()}.immediate.ImmediateBackend"}}
    scene = make_payment("held")
    payment = scene.payment
    refund = so.refund(
        amount=2_500,
        status="succeeded",
        payment_intent=payment.stripe_payment_intent_id,
        charge=payment.stripe_charge_id,
    )
    answers: list[Any] = [TemporarilyUnavailable("Stripe did not answer in time.")]

    def list_refunds(self: Any, *, payment_intent: str) -> list[RefundSnapshot]:
        if answers:
            raise answers.pop(0)
        # The refund's own event arrives while Stripe answers: the payment's
        # row is not locked, so it is applied now.
        payload = so.encode(so.event("refund.created", refund))
        header = sign_webhook_payload(payload, PLATFORM_SECRET)
        assert receiver.receive(WebhookEndpoint.PLATFORM, payload, header).ok
        return [RefundSnapshot.from_dict(refund)]

    checked = outside_transactions(list_refunds, ReadInTransaction)
    monkeypatch.setattr(SimulatedGateway, "list_refunds", checked)
    charge = so.charge(
        id=payment.stripe_charge_id,
        payment_intent=payment.stripe_payment_intent_id,
        amount_refunded=2_500,
    )
    evt = so.event("charge.refunded", charge)

    deliver.platform(evt)
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.last_error) == (
        "failed",
        "TemporarilyUnavailable: Stripe did not answer in time.",
    )
    assert scene.refresh().amount_refunded == 0
    assert not swappable.load("Refund").objects.exists()

    deliver.platform(evt)  # Stripe delivers it again
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.last_error) == ("processed", "")
    assert answers == []
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded) == ("held", 2_500)
    [recorded] = swappable.load("Refund").objects.all()
    assert (recorded.stripe_refund_id, recorded.amount) == (refund["id"], 2_500)
    assert len(sent.of("payment_refunded")) == 1


def stripe_gateway() -> Any:
    from django_escrow_connect.gateway import get_gateway

    return get_gateway()
