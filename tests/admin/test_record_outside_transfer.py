"""Staff record a payee's share they paid by hand in the Stripe Dashboard
(docs/recovery.md, "Paying a payee by hand"): the admin's *Record a transfer
made in Stripe* books it as the app's own transfer of that share, so nothing
sends it again; anything that does not match Stripe's facts is refused with
nothing written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.utils import timezone

from django_escrow_connect import signals, swappable
from django_escrow_connect.exceptions import BalanceInsufficient, TemporarilyUnavailable
from django_escrow_connect.services.audit import audit_books
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.terms import PayeeShare
from tests.payments.conftest import age, auto_release_run, configure, money_calls
from tests.payments.test_milestones import EXTRA, Received, held, partner, release, split  # noqa: F401
from tests.payments.test_record_outside_transfer import dashboard_transfer

from .test_staff_actions import admin_client, messages_of, staff, url  # noqa: F401

pytestmark = pytest.mark.django_db

Payment = swappable.load("EscrowPayment")
Transfer = swappable.load("Transfer")
StaffAction = swappable.load("StaffAction")

if not admin.site.is_registered(Payment):
    # A host that swaps the payment model registers its own admin.
    pytest.skip("the payment model is swapped", allow_module_level=True)

ACTION = "record_outside_transfer"


def refused() -> BalanceInsufficient:
    return BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400)


def events_of(sim_stripe: Any, event_type: str, object_id: str) -> list[dict[str, Any]]:
    """The events Stripe sent of that type about that object."""
    return [
        event
        for event in sim_stripe.events.values()
        if event["type"] == event_type and event["data"]["object"]["id"] == object_id
    ]


def record(client: Any, market: Any, payment: Any, transfer_id: str, note: str = "paid by hand"):
    with market.capture(execute=True):
        return client.post(
            url(Payment, "staff_action", payment.pk, ACTION),
            {"confirm": "yes", "transfer_id": transfer_id, "note": note},
            follow=True,
        )


@pytest.fixture
def released_signals() -> Any:
    received = Received(signals.payment_released)
    yield received
    received.close()


@pytest.fixture
def refused_release(market, sim_stripe, settings):
    """A one-payee payment whose transfer Stripe refused: held, an open incident."""
    configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
    payment = market.held_payment()
    sim_stripe.fail_next("create_transfer", refused())
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 409
    payment = market.payment(payment.pk)
    assert payment.status == "held"
    assert payment.transfer_incidents.filter(resolved_at__isnull=True).count() == 1
    return payment


def nothing_written(payment: Any, before: Any) -> None:
    """The payment and its transfers as they were; the attempt is audited as refused."""
    assert snapshot_of(payment) == before


def snapshot_of(payment: Any) -> Any:
    payment = Payment.objects.get(pk=payment.pk)
    return (
        (payment.status, payment.amount_transferred, payment.platform_fee),
        sorted(Transfer.objects.filter(payment=payment).values_list("pk", "status")),
        payment.transfer_incidents.filter(resolved_at__isnull=True).count(),
    )


def test_a_refused_release_paid_in_the_dashboard_is_recorded_and_never_sent_again(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    staff,  # noqa: F811
    refused_release,
    released_signals,
    deliver,
):
    payment = refused_release
    owed = payment.amount - 1_000  # 10 % fee: what the app would have sent
    page = admin_client.get(url(Payment, "staff_action", payment.pk, ACTION))
    assert page.status_code == 200
    assert f"owed to {payment.destination_account_id}: 90.00 USD" in page.content.decode()

    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, owed)
    done = record(admin_client, market, payment, transfer_id, note="ticket 42")
    assert any(
        f"{transfer_id} of 90.00 USD" in m and "now released" in m for m in messages_of(done)
    )

    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_transferred, payment.platform_fee) == (
        "released",
        owed,
        1_000,
    )
    made = payment.transfers.get(status="created")
    assert (made.stripe_transfer_id, made.amount, made.release_id) == (transfer_id, owed, None)
    assert made.idempotency_key == f"recorded:{transfer_id}"
    incident = payment.transfer_incidents.get()
    assert incident.resolved_at is not None
    assert staff.get_username() in incident.message
    assert transfer_id in incident.message
    entry = StaffAction.objects.get()
    assert (entry.action, entry.outcome, entry.amount, entry.note) == (
        ACTION,
        "ok",
        owed,
        "ticket 42",
    )
    assert [call["payment"].pk for call in released_signals.calls] == [payment.pk]

    # Due for the automatic release: the job has nothing to send.
    age(payment, held_at=timezone.now() - timedelta(days=15))
    sim_stripe.calls.clear()
    auto_release_run(market)
    assert money_calls(sim_stripe) == []
    # And the customer's confirm answers the payment as released.
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 200
    assert money_calls(sim_stripe) == []

    # escrow_audit finds the books in line with Stripe's (the transfer has no
    # transfer group: it is read by its id).
    assert audit_books(payment_id=payment.pk).for_payment(payment.pk) == []

    # Its transfer.created arrives now: it is the recorded row, nothing else.
    (created,) = events_of(sim_stripe, "transfer.created", transfer_id)
    assert deliver.platform(created).json()["status"] == "processed"
    assert Transfer.objects.filter(stripe_transfer_id=transfer_id).count() == 1
    # Reversed in the Dashboard later: its webhook follows on the recorded row.
    with market.capture(execute=True):
        SimulatedGateway().create_transfer_reversal(
            transfer_id=transfer_id, idempotency_key="dashboard-reversal", amount=2_000, metadata={}
        )
    (reversed_event,) = events_of(sim_stripe, "transfer.reversed", transfer_id)
    assert deliver.platform(reversed_event).json()["status"] == "processed"
    made.refresh_from_db()
    assert (made.status, made.amount_reversed) == ("partially_reversed", 2_000)
    assert market.payment(payment.pk).amount_reversed == 2_000
    assert payment.transfer_incidents.filter(kind="transfer_reversed").count() == 1


@pytest.mark.usefixtures("split")
def test_a_split_release_stopped_part_way_is_finished_by_the_recorded_transfer(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    partner,  # noqa: F811
    released_signals,
    settings,
):
    configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
    payment = held(
        market,
        payees=[
            PayeeShare(user=market.doer, basis_points=6_000),
            PayeeShare(user=partner, basis_points=4_000),
        ],
    )
    sim_stripe.fail_next("create_transfer", refused())  # the doer's 5,400
    assert release(market, payment).status_code == 409
    payment = market.payment(payment.pk)
    assert payment.status == "partially_released"
    doer = payment.payees.get(position=0)

    # Another amount than the share, and the partner (paid) are refused first.
    wrong = dashboard_transfer(sim_stripe, doer.destination_account_id, 5_000)
    assert any(
        "transfer_mismatch" in m for m in messages_of(record(admin_client, market, payment, wrong))
    )
    partner_account = payment.payees.get(position=1).destination_account_id
    twice = dashboard_transfer(sim_stripe, partner_account, 3_600)
    answer = messages_of(record(admin_client, market, payment, twice))
    assert any("payee_paid_twice" in m and "paid twice" in m for m in answer)
    assert market.payment(payment.pk).status == "partially_released"

    transfer_id = dashboard_transfer(sim_stripe, doer.destination_account_id, 5_400)
    done = record(admin_client, market, payment, transfer_id)
    assert any("now released" in m for m in messages_of(done)), messages_of(done)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_transferred) == ("released", 9_000)
    assert payment.releases.get().status == "released"
    made = payment.transfers.get(stripe_transfer_id=transfer_id)
    assert (made.release_id, made.payee_id, made.amount, made.status) == (
        payment.releases.get().pk,
        doer.pk,
        5_400,
        "created",
    )
    assert payment.transfer_incidents.filter(resolved_at__isnull=True).count() == 0
    assert [call["payment"].pk for call in released_signals.calls] == [payment.pk]

    age(payment, held_at=timezone.now() - timedelta(days=15))
    sim_stripe.calls.clear()
    auto_release_run(market)
    assert release(market, payment).status_code == 200
    assert money_calls(sim_stripe) == []


def refusal(client, market, payment, transfer_id) -> str:
    """Record ``transfer_id``: refused, nothing written; the code it answered."""
    before = snapshot_of(payment)
    count = StaffAction.objects.count()
    answer = messages_of(record(client, market, payment, transfer_id))
    nothing_written(payment, before)
    entry = StaffAction.objects.order_by("-created_at").first()
    assert StaffAction.objects.count() == count + 1
    assert entry.outcome in ("refused", "error"), answer
    assert any(entry.code in m for m in answer)
    return str(entry.code)


def test_a_transfer_that_does_not_match_the_share_owed_is_refused(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,
):
    payment = refused_release
    account = payment.destination_account_id
    other = market.held_payment()  # another doer? the same doer: another payment
    stranger = swappable.load("ConnectedAccount").objects.exclude(stripe_account_id=account)
    stranger_id = stranger.exclude(stripe_account_id="").first().stripe_account_id

    assert refusal(admin_client, market, payment, "tr_unknown123") == "transfer_not_found"
    for transfer_id in (
        dashboard_transfer(sim_stripe, account, 9_001),
        dashboard_transfer(sim_stripe, account, 9_000, currency="eur"),
        dashboard_transfer(sim_stripe, stranger_id, 9_000),
    ):
        assert refusal(admin_client, market, payment, transfer_id) == "transfer_mismatch"

    reversed_id = dashboard_transfer(sim_stripe, account, 9_000)
    with market.capture(execute=True):
        SimulatedGateway().create_transfer_reversal(
            transfer_id=reversed_id, idempotency_key="r", amount=1_000, metadata={}
        )
    assert refusal(admin_client, market, payment, reversed_id) == "transfer_reversed"

    sim_stripe.fail_next("retrieve_transfer", TemporarilyUnavailable("timeout", http_status=None))
    good = dashboard_transfer(sim_stripe, account, 9_000)
    assert refusal(admin_client, market, payment, good) == "provider_unavailable"

    # Recorded on one payment, it is refused on any other.
    record(admin_client, market, payment, good)
    assert market.payment(payment.pk).status == "released"
    assert refusal(admin_client, market, other, good) == "transfer_already_recorded"
    # Recorded: a second transfer to the payee paid them twice.
    again = dashboard_transfer(sim_stripe, account, 9_000)
    assert refusal(admin_client, market, payment, again) == "payee_paid_twice"
    # The app's own transfer paid a payment released (then refunded in part):
    # one made by hand too paid the doer twice.
    released = market.released_payment()
    assert (
        market.post(
            market.staff, "payment-refund", {"amount": 1_000}, payment_id=released.pk
        ).status_code
        == 200
    )
    twice = dashboard_transfer(sim_stripe, account, 9_000)
    assert refusal(admin_client, market, released, twice) == "payee_paid_twice"


def test_a_payment_whose_release_would_be_refused_or_is_in_flight_records_nothing(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,
):
    payment = refused_release
    account = payment.destination_account_id
    transfer_id = dashboard_transfer(sim_stripe, account, 9_000)

    # The customer's confirm whose answer was lost: Stripe may still make it.
    sim_stripe.fail_next("create_transfer", TemporarilyUnavailable("timeout", http_status=None))
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 503
    assert refusal(admin_client, market, payment, transfer_id) == "operation_pending"

    refunded = market.held_payment()
    with market.capture(execute=True):
        assert (
            market.post(market.staff, "payment-refund", {}, payment_id=refunded.pk).status_code
            == 200
        )
    assert market.payment(refunded.pk).status == "refunded"
    refunded_id = dashboard_transfer(sim_stripe, refunded.destination_account_id, 9_000)
    assert refusal(admin_client, market, refunded, refunded_id) == "transition_not_allowed"


def test_a_transfer_id_of_another_shape_is_refused_by_the_form(
    admin_client,  # noqa: F811
    market,
    refused_release,
):
    page = record(admin_client, market, refused_release, "po_123")
    assert page.status_code == 200
    assert "starts with tr_" in page.content.decode()
    assert not StaffAction.objects.exists()
    assert market.payment(refused_release.pk).status == "held"
