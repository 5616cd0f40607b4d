"""``transfer.*`` events: Stripe's own transfers, lost answers, outside reversals."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL

pytestmark = pytest.mark.django_db


def transfers(scene: Any) -> list[Any]:
    return list(swappable.load("Transfer").objects.filter(payment=scene.payment.pk))


def transfer_of(scene: Any, **overrides: Any) -> dict[str, Any]:
    payment = scene.payment
    values = {
        "amount": payment.amount - payment.platform_fee,
        "currency": payment.currency,
        "destination": payment.destination_account_id,
        "source_transaction": payment.stripe_charge_id,
        "transfer_group": payment.transfer_group,
    }
    values.update(overrides)
    return so.transfer(**values)


def app_transfer(scene: Any, *, status: str = "created", stripe_id: str = "") -> Any:
    payment = scene.payment
    return swappable.load("Transfer").objects.create(
        payment=payment,
        stripe_transfer_id=stripe_id,
        idempotency_key=f"test:transfer:{payment.pk}",
        amount=payment.amount - payment.platform_fee,
        currency=payment.currency,
        destination_account_id=payment.destination_account_id,
        source_transaction=payment.stripe_charge_id,
        status=status,
    )


def test_transfer_the_app_made_changes_nothing(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    mine = app_transfer(scene, stripe_id=so.new_id("tr"))
    evt = so.event("transfer.created", transfer_of(scene, id=mine.stripe_transfer_id))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert transfers(scene) == [mine]
    assert sim_stripe.calls == []


def test_destination_charge_transfer_is_recorded_by_transfer_group(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("released", strategy=MANUAL, amount_transferred=9_000)
    stripe_transfer = transfer_of(scene, source_transaction=None)
    deliver.platform(so.event("transfer.created", stripe_transfer))
    [row] = transfers(scene)
    assert (row.stripe_transfer_id, row.status, row.amount) == (
        stripe_transfer["id"],
        "created",
        9_000,
    )
    # The same event again records nothing more.
    deliver.platform(so.event("transfer.created", stripe_transfer))
    assert len(transfers(scene)) == 1


def test_transfer_whose_answer_was_lost_completes_the_release(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("releasing")
    pending = app_transfer(scene, status="pending")
    stripe_transfer = transfer_of(scene)
    deliver.platform(so.event("transfer.created", stripe_transfer))
    pending.refresh_from_db()
    assert (pending.status, pending.stripe_transfer_id) == ("created", stripe_transfer["id"])
    payment = scene.refresh()
    assert (payment.status, payment.amount_transferred) == ("released", 9_000)
    assert len(sent.of("payment_released")) == 1


def test_reversal_outside_the_app_is_an_incident(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    mine = app_transfer(scene, stripe_id=so.new_id("tr"))
    reversal = so.transfer_reversal(mine.stripe_transfer_id, 4_000)
    stripe_transfer = transfer_of(scene, id=mine.stripe_transfer_id, reversals=[reversal])
    deliver.platform(so.event("transfer.reversed", stripe_transfer))
    mine.refresh_from_db()
    assert (mine.status, mine.amount_reversed) == ("partially_reversed", 4_000)
    assert scene.refresh().amount_reversed == 4_000
    [incident] = swappable.load("TransferIncident").objects.filter(payment=scene.payment.pk)
    assert (incident.kind, incident.amount, incident.stripe_transfer_id) == (
        "transfer_reversed",
        4_000,
        mine.stripe_transfer_id,
    )
    # transfer.updated with the same totals: nothing more.
    deliver.platform(so.event("transfer.updated", stripe_transfer))
    assert swappable.load("TransferIncident").objects.count() == 1


def test_reversal_the_app_made_is_no_incident(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("partially_refunded", amount_transferred=9_000, amount_refunded=5_000)
    mine = app_transfer(scene, stripe_id=so.new_id("tr"))
    mine.apply_reversed_total(4_500)
    mine.save()
    reversal = so.transfer_reversal(mine.stripe_transfer_id, 4_500)
    stripe_transfer = transfer_of(scene, id=mine.stripe_transfer_id, reversals=[reversal])
    deliver.platform(so.event("transfer.reversed", stripe_transfer))
    assert not swappable.load("TransferIncident").objects.exists()


def test_transfer_of_another_product_is_ignored(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("transfer.created", so.transfer(transfer_group="order_42"))
    assert deliver.platform(evt).json()["status"] == "ignored"


def test_our_transfer_group_before_its_payment_is_deferred(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("transfer.created", so.transfer(transfer_group="escrow_0123456789abcdef"))
    assert deliver.platform(evt).json()["status"] == "deferred"
