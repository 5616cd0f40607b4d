"""Stripe does not order webhooks and delivers them at least once.

One payment's events are delivered in every order, with duplicates, then the
reconcile command retries what was deferred; the end state must equal the
state after in-order delivery.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from django_escrow_connect import swappable
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import Scene, intent_for

pytestmark = pytest.mark.django_db


def end_state(scene: Scene) -> dict[str, Any]:
    payment = scene.refresh()
    task = swappable.load("Task").objects.get(pk=scene.task.pk)
    refunds = swappable.load("Refund").objects.filter(payment=payment.pk)
    disputes = swappable.load("Dispute").objects.filter(payment=payment.pk)
    incidents = swappable.load("PaymentIncident").objects.filter(payment=payment.pk)
    return {
        "status": payment.status,
        "task": task.payment_status,
        "charge": bool(payment.stripe_charge_id),
        "amount_refunded": payment.amount_refunded,
        "amount_disputed": payment.amount_disputed,
        "refunds": sorted((r.amount, r.status) for r in refunds),
        "disputes": sorted(
            (d.status, d.funds_withdrawn, d.funds_reinstated, d.closed_at is not None)
            for d in disputes
        ),
        "incidents": sorted(i.kind for i in incidents),
    }


def payment_lifecycle(scene: Scene) -> list[dict[str, Any]]:
    """A card payment, then a partial refund made in the Stripe dashboard."""
    payment = scene.payment
    charge_id = so.new_id("ch")
    refund = so.refund(
        amount=2_500,
        status="pending",
        charge=charge_id,
        payment_intent=payment.stripe_payment_intent_id,
    )
    return [
        so.event("payment_intent.processing", intent_for(scene, "processing")),
        so.event(
            "charge.succeeded",
            so.charge(id=charge_id, payment_intent=payment.stripe_payment_intent_id),
        ),
        so.event(
            "payment_intent.succeeded", intent_for(scene, "succeeded", latest_charge=charge_id)
        ),
        so.event("refund.created", refund),
        so.event("refund.updated", dict(refund, status="succeeded")),
    ]


def dispute_lifecycle(scene: Scene) -> list[dict[str, Any]]:
    """A chargeback on a held payment that the platform wins."""
    payment = scene.payment
    dispute = so.dispute(
        charge=payment.stripe_charge_id, payment_intent=payment.stripe_payment_intent_id
    )
    out = [so.balance_transaction(-payment.amount)]
    back = [*out, so.balance_transaction(payment.amount)]
    return [
        so.event("charge.dispute.created", dispute),
        so.event("charge.dispute.updated", dict(dispute, status="under_review")),
        so.event("charge.dispute.funds_withdrawn", dict(dispute, balance_transactions=out)),
        so.event("charge.dispute.closed", dict(dispute, status="won", balance_transactions=out)),
        so.event(
            "charge.dispute.funds_reinstated",
            dict(dispute, status="won", balance_transactions=back),
        ),
    ]


def deliver_all(deliver: Any, evts: list[dict[str, Any]]) -> None:
    for evt in evts:
        response = deliver.platform(evt)
        assert response.status_code == 200, response.content
    deliver.retry_deferred()


def check_every_order(
    deliver: Any,
    make_scene: Callable[[], Scene],
    lifecycle: Callable[[Scene], list[dict[str, Any]]],
) -> None:
    scene = make_scene()
    deliver_all(deliver, lifecycle(scene))
    expected = end_state(scene)

    for order in itertools.permutations(range(5)):
        scene = make_scene()
        evts = lifecycle(scene)
        # Each order also redelivers its first and last event at the end.
        sequence = [evts[i] for i in order] + [evts[order[0]], evts[order[-1]]]
        deliver_all(deliver, sequence)
        assert end_state(scene) == expected, [evts[i]["type"] for i in order]


def test_payment_events_in_every_order(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    check_every_order(deliver, lambda: make_payment(with_charge=False), payment_lifecycle)
    assert sim_stripe.calls == []


def test_dispute_events_in_every_order(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    check_every_order(deliver, lambda: make_payment("held"), dispute_lifecycle)
