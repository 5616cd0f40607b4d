"""A payee's share staff paid by hand in the Stripe Dashboard, recorded through
the service (``releases.record_outside_transfer``): what the admin's action
runs, here under both the default and the swapped models (the admin's own
tests, tests/admin/test_record_outside_transfer.py, need the default admin)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import BalanceInsufficient
from django_escrow_connect.services import errors, releases
from django_escrow_connect.services.releases import record_outside_transfer
from django_escrow_connect.simulation import SimulatedGateway
from tests import factories
from tests.reliability.conftest import run_concurrently

from .conftest import configure, money_calls
from .test_concurrency import held_through_the_api

pytestmark = pytest.mark.django_db

Transfer = swappable.load("Transfer")


def made_in_stripe(
    sim_stripe: Any,
    destination: str,
    amount: int,
    *,
    currency: str = "usd",
    group: str | None = None,
    metadata: dict[str, str] | None = None,
    charge: str | None = None,
) -> str:
    """A transfer made at Stripe with these fields (by the Dashboard, or by an app)."""
    # Staff top the balance up first (when a lost dispute left it below zero too).
    available = max(0, sim_stripe.platform_available.get(currency, 0))
    sim_stripe.platform_available[currency] = available + amount
    made = SimulatedGateway().create_transfer(
        idempotency_key=f"made-{len(sim_stripe.transfers)}",
        amount=amount,
        currency=currency,
        destination=destination,
        source_transaction=charge,
        transfer_group=group,
        metadata=metadata or {},
    )
    return str(made.id)


def dashboard_transfer(
    sim_stripe: Any, destination: str, amount: int, currency: str = "usd"
) -> str:
    """A transfer staff make in the Stripe Dashboard: from the platform's
    balance, with no transfer group, charge or metadata of the app's."""
    return made_in_stripe(sim_stripe, destination, amount, currency=currency)


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


def refused() -> BalanceInsufficient:
    return BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_transfer_recorded_on_two_payments_at_once_is_booked_on_one(
    settings, sim_stripe, monkeypatch
):
    """Two staff record the same Dashboard transfer on two payments of the doer
    at the same moment. Each request locks only its own payment, so both pass
    the "recorded already?" check; the transfer's unique Stripe id lets one
    insert win, and the other is refused (409 transfer_already_recorded) with
    nothing written, not a database error."""
    configure(settings)
    Payment = swappable.load("EscrowPayment")
    customer, doer, client, first = held_through_the_api()
    task = factories.make_task(customer, payee_user=doer)
    second = client.post("/escrow/payments/create/", {"task_id": str(task.pk)}, format="json")
    second_id = second.json()["payment_id"]
    intent = Payment.objects.get(pk=second_id).stripe_payment_intent_id
    SimulatedGateway().confirm_payment_intent(intent, "success")
    for payment_id in (first, second_id):
        sim_stripe.fail_next("create_transfer", refused())
        confirm = client.post(f"/escrow/payments/confirm/{payment_id}/", {}, format="json")
        assert confirm.status_code == 409, confirm.content
    account = Payment.objects.get(pk=first).destination_account_id
    transfer_id = dashboard_transfer(sim_stripe, account, 9_000)
    staff = factories.make_user("staff", staff=True)

    # Both requests hold their payment's lock and have passed the check
    # before either books the transfer: the race, every run.
    both_checked = threading.Barrier(2)
    amounts = releases.release_transfer_and_fee

    def after_the_check(payment: Any) -> tuple[int, int]:
        both_checked.wait(timeout=30)
        return amounts(payment)

    monkeypatch.setattr(releases, "release_transfer_and_fee", after_the_check)
    results = run_concurrently(
        lambda: record_outside_transfer(first, transfer_id, staff),
        lambda: record_outside_transfer(second_id, transfer_id, staff),
    )

    refusals = [r for r in results if isinstance(r, BaseException)]
    assert len(refusals) == 1, results
    assert isinstance(refusals[0], errors.Conflict), refusals
    assert refusals[0].code == "transfer_already_recorded"
    (booked,) = Transfer.objects.filter(stripe_transfer_id=transfer_id)
    statuses = sorted(Payment.objects.get(pk=p).status for p in (first, second_id))
    assert statuses == ["held", "released"]
    assert Payment.objects.get(pk=booked.payment_id).status == "released"
