"""``charge.dispute.*`` events freeze the payment until the dispute closes."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.services import errors
from django_escrow_connect.services.payments import release_payment
from tests.webhooks import stripe_objects as so

pytestmark = pytest.mark.django_db


def dispute_of(scene: Any, **overrides: Any) -> dict[str, Any]:
    payment = scene.payment
    values = {
        "charge": payment.stripe_charge_id,
        "payment_intent": payment.stripe_payment_intent_id,
        "amount": payment.amount,
        "currency": payment.currency,
    }
    values.update(overrides)
    return so.dispute(**values)


def the_dispute(scene: Any) -> Any:
    return swappable.load("Dispute").objects.get(payment=scene.payment.pk)


def test_dispute_opened_freezes_release(
    deliver: Any, make_payment: Any, stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    dispute = dispute_of(scene)
    evt = so.event("charge.dispute.created", dispute)
    assert deliver.platform(evt).json()["status"] == "processed"
    row = the_dispute(scene)
    assert (row.stripe_dispute_id, row.status, row.amount) == (
        dispute["id"],
        "needs_response",
        10_000,
    )
    assert row.evidence_due_by is not None
    payment = scene.refresh()
    assert (payment.status, payment.amount_disputed) == ("disputed", 10_000)
    assert [n["dispute"].pk for n in sent.of("dispute_opened")] == [row.pk]

    with pytest.raises(errors.TransitionNotAllowed):
        release_payment(payment.pk, scene.customer)
    assert stripe.calls == []


def test_won_dispute_returns_the_payment_to_escrow(
    deliver: Any, make_payment: Any, stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    deliver.platform(so.event("charge.dispute.updated", dict(dispute, status="under_review")))
    assert the_dispute(scene).status == "under_review"
    closed = dict(dispute, status="won")
    deliver.platform(so.event("charge.dispute.closed", closed))
    row = the_dispute(scene)
    assert row.status == "won"
    assert row.closed_at is not None
    payment = scene.refresh()
    assert (payment.status, payment.amount_disputed) == ("held", 0)
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == ["won"]

    # An update older than the close, delivered late, changes nothing.
    deliver.platform(so.event("charge.dispute.updated", dict(dispute, status="under_review")))
    assert the_dispute(scene).status == "won"
    assert len(sent.of("dispute_closed")) == 1


def test_lost_dispute(deliver: Any, make_payment: Any, stripe: Any) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    assert scene.refresh().status == "disputed"
    deliver.platform(so.event("charge.dispute.closed", dict(dispute, status="lost")))
    assert scene.refresh().status == "dispute_lost"


def test_funds_withdrawn_and_reinstated(deliver: Any, make_payment: Any, stripe: Any) -> None:
    scene = make_payment("held")
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    withdrawn = dict(dispute, balance_transactions=[so.balance_transaction(-10_000)])
    deliver.platform(so.event("charge.dispute.funds_withdrawn", withdrawn))
    assert the_dispute(scene).funds_withdrawn == 10_000
    reinstated = dict(
        withdrawn,
        status="won",
        balance_transactions=[so.balance_transaction(-10_000), so.balance_transaction(10_000)],
    )
    deliver.platform(so.event("charge.dispute.funds_reinstated", reinstated))
    row = the_dispute(scene)
    assert (row.funds_withdrawn, row.funds_reinstated, row.status) == (10_000, 10_000, "won")
    assert scene.refresh().status == "held"


def test_inquiry_freezes_too(deliver: Any, make_payment: Any, stripe: Any) -> None:
    scene = make_payment("held")
    inquiry = dispute_of(scene, status="warning_needs_response")
    deliver.platform(so.event("charge.dispute.created", inquiry))
    assert scene.refresh().status == "disputed"
    deliver.platform(so.event("charge.dispute.closed", dict(inquiry, status="warning_closed")))
    assert scene.refresh().status == "held"


def test_dispute_on_an_unknown_charge_is_deferred(deliver: Any, stripe: Any) -> None:
    evt = so.event("charge.dispute.created", so.dispute(charge="ch_1Unknown"))
    assert deliver.platform(evt).json()["status"] == "deferred"
