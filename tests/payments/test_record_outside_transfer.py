"""A payee's share staff paid by hand in the Stripe Dashboard, recorded through
the service (``releases.record_outside_transfer``): what the admin's action
runs, here under both the default and the swapped models (the admin's own
tests, tests/admin/test_record_outside_transfer.py, need the default admin)."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import BalanceInsufficient
from django_escrow_connect.services import errors
from django_escrow_connect.services.releases import record_outside_transfer
from django_escrow_connect.simulation import SimulatedGateway

from .conftest import money_calls

pytestmark = pytest.mark.django_db

Transfer = swappable.load("Transfer")


def dashboard_transfer(sim_stripe: Any, destination: str, amount: int) -> str:
    """A transfer made in the Dashboard: from the platform's balance, no group."""
    sim_stripe.platform_available["usd"] = sim_stripe.platform_available.get("usd", 0) + amount
    return str(
        SimulatedGateway()
        .create_transfer(
            idempotency_key=f"dashboard-{len(sim_stripe.transfers)}",
            amount=amount,
            currency="usd",
            destination=destination,
            source_transaction=None,
            transfer_group=None,
            metadata={},
        )
        .id
    )


def test_a_refused_release_paid_by_hand_is_booked_once(market, sim_stripe):
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 409
    account = payment.destination_account_id
    wrong = dashboard_transfer(sim_stripe, account, 8_000)
    with pytest.raises(errors.Conflict) as refused:
        record_outside_transfer(payment.pk, wrong, market.staff)
    assert refused.value.code == "transfer_mismatch"
    assert "90.00" in refused.value.message  # the share owed
    assert market.payment(payment.pk).status == "held"
    with pytest.raises(errors.Forbidden):
        record_outside_transfer(payment.pk, wrong, market.customer)

    transfer_id = dashboard_transfer(sim_stripe, account, 9_000)
    with market.capture(execute=True):
        made = record_outside_transfer(payment.pk, transfer_id, market.staff)
    assert (made.stripe_transfer_id, made.status, made.amount) == (transfer_id, "created", 9_000)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_transferred) == ("released", 9_000)
    assert payment.transfer_incidents.get().resolved_at is not None

    sim_stripe.calls.clear()
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 200
    assert money_calls(sim_stripe) == []
    with pytest.raises(errors.Conflict) as again:
        record_outside_transfer(payment.pk, transfer_id, market.staff)
    assert again.value.code == "transfer_already_recorded"
    assert Transfer.objects.filter(stripe_transfer_id=transfer_id).count() == 1
