"""``refund.*`` events: dashboard refunds, lost responses, failures."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL, events, intent_for

pytestmark = pytest.mark.django_db


def refunds(scene: Any) -> list[Any]:
    return list(swappable.load("Refund").objects.filter(payment=scene.payment.pk))


def refund_of(scene: Any, **overrides: Any) -> dict[str, Any]:
    payment = scene.payment
    return so.refund(
        payment_intent=payment.stripe_payment_intent_id,
        charge=payment.stripe_charge_id,
        currency=payment.currency,
        **overrides,
    )


def test_dashboard_refund_becomes_a_refund_row(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    refund = refund_of(scene, amount=3_000, status="pending", reason="requested_by_customer")
    assert deliver.platform(so.event("refund.created", refund)).json()["status"] == "processed"
    [row] = refunds(scene)
    assert (row.stripe_refund_id, row.amount, row.status) == (refund["id"], 3_000, "pending")
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded) == ("held", 3_000)
    assert len(sent.of("payment_refunded")) == 1

    succeeded = dict(refund, status="succeeded")
    deliver.platform(so.event("refund.updated", succeeded))
    [row] = refunds(scene)
    assert row.status == "succeeded"
    assert scene.refresh().amount_refunded == 3_000
    assert len(sent.of("payment_refunded")) == 1
    assert sim_stripe.calls == []


def test_full_dashboard_refund_refunds_the_payment(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    deliver.platform(so.event("refund.created", refund_of(scene, status="succeeded")))
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)


def test_after_a_capture_for_less_a_dashboard_refund_counts_within_what_was_captured(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    # Captured for 4,000 of 10,000 in the dashboard (booked as released).
    scene = make_payment(
        "released",
        strategy=MANUAL,
        amount_captured=4_000,
        amount_released=4_000,
        amount_transferred=3_000,
    )
    # A Refund of the uncaptured 6,000 (what Stripe made before API
    # 2025-03-31) gives back nothing that was charged: recorded, not counted.
    rest = refund_of(scene, amount=6_000, status="succeeded", reason="expired_uncaptured_charge")
    deliver.platform(so.event("refund.created", rest))
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded, payment.refundable_amount) == (
        "released",
        0,
        4_000,
    )
    # A refund of what was captured refunds the payment.
    deliver.platform(so.event("refund.created", refund_of(scene, amount=4_000, status="succeeded")))
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded, payment.amount_released) == (
        "refunded",
        4_000,
        0,
    )


def test_a_refund_of_an_uncaptured_rest_smaller_than_the_capture_is_not_counted(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    # Captured for 6,000 of 10,000: the uncaptured 4,000 would fit in what
    # was charged, yet it was never charged.
    scene = make_payment(
        "released",
        strategy=MANUAL,
        amount_captured=6_000,
        amount_released=6_000,
        amount_transferred=5_000,
    )
    rest = refund_of(scene, amount=4_000, status="pending", reason="expired_uncaptured_charge")
    deliver.platform(so.event("refund.created", rest))
    deliver.platform(so.event("refund.updated", dict(rest, status="succeeded")))
    [row] = refunds(scene)
    assert (row.stripe_refund_id, row.status) == (rest["id"], "succeeded")
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded, payment.refundable_amount) == (
        "released",
        0,
        6_000,
    )
    assert sent.of("payment_refunded") == []


def test_a_refund_of_the_uncaptured_rest_before_the_capture_is_booked_is_not_counted(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    # Its event arrives while the payment still shows the hold.
    scene = make_payment("held", strategy=MANUAL)
    rest = refund_of(scene, amount=4_000, status="succeeded", reason="expired_uncaptured_charge")
    deliver.platform(so.event("refund.created", rest))
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded, payment.amount_held) == ("held", 0, 10_000)


def test_refund_that_fails_later_gives_the_amount_back(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    refund = refund_of(scene, amount=4_000, status="succeeded")
    deliver.platform(so.event("refund.created", refund))
    assert scene.refresh().amount_refunded == 4_000

    failed = dict(refund, status="failed", failure_reason="expired_or_canceled_card")
    assert deliver.platform(so.event("refund.failed", failed)).json()["status"] == "processed"
    [row] = refunds(scene)
    assert (row.status, row.failure_reason) == ("failed", "expired_or_canceled_card")
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded) == ("held", 0)
    [incident] = swappable.load("PaymentIncident").objects.filter(payment=payment.pk)
    assert (incident.kind, incident.code) == ("refund_failed", "expired_or_canceled_card")
    [notice] = sent.of("refund_failed")
    assert notice["refund"].pk == row.pk

    # The older "succeeded" event, delivered late, does not undo the failure.
    deliver.platform(so.event("refund.updated", refund))
    assert refunds(scene)[0].status == "failed"
    assert scene.refresh().amount_refunded == 0


def test_refund_before_the_payment_is_held_waits_for_it(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment(with_charge=True)
    refund = so.event("refund.created", refund_of(scene, amount=1_000, status="succeeded"))
    assert deliver.platform(refund).json()["status"] == "deferred"
    assert refunds(scene) == []

    deliver.platform(so.event("payment_intent.succeeded", intent_for(scene, "succeeded")))
    deliver.retry_deferred()
    assert events().get(stripe_event_id=refund["id"]).status == "processed"
    payment = scene.refresh()
    assert (payment.status, payment.amount_refunded) == ("held", 1_000)


def test_refund_of_an_unknown_charge_is_ignored(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("refund.updated", so.refund(charge="ch_1Other", payment_intent="pi_1Other"))
    assert deliver.platform(evt).json()["status"] == "ignored"


def test_refund_with_our_metadata_but_no_payment_is_deferred(deliver: Any, sim_stripe: Any) -> None:
    refund = so.refund(metadata={"escrow_payment_id": "8a0c2f2e-6f7e-4c4f-9d53-0c64c5f6d9b1"})
    assert deliver.platform(so.event("refund.created", refund)).json()["status"] == "deferred"
