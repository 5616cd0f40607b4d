"""What *Record a transfer made in Stripe* refuses, with nothing written, and
the hand transfer made in the payment's transfer group that it adopts
(docs/recovery.md, "Paying a payee by hand"). The happy paths are in
tests/admin/test_record_outside_transfer.py, whose set-ups these reuse."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.utils import timezone

from django_escrow_connect import simulation, swappable
from django_escrow_connect.conf import MANUAL_CAPTURE
from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable
from django_escrow_connect.services.audit import audit_books
from django_escrow_connect.services.reconcile import reconcile
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.terms import PayeeShare
from tests.payments.conftest import configure, money_calls
from tests.payments.test_milestones import (  # noqa: F401
    EXTRA,
    held,
    partner,
    release,
    split,
    three_milestones,
)
from tests.payments.test_record_outside_transfer import made_in_stripe
from tests.payments.test_tips import add_tip, pay_tip

from .test_record_outside_transfer import (
    ACTION,
    Payment,
    StaffAction,
    Transfer,
    dashboard_transfer,
    events_of,
    record,
    refusal,
    refused,
    refused_release,  # noqa: F401
)
from .test_staff_actions import (  # noqa: F401
    admin_client,
    list_action,
    messages_of,
    released_in_parts_then_lost,
    staff,
    url,
)

pytestmark = pytest.mark.django_db

if not admin.site.is_registered(Payment):
    # A host that swaps the payment model registers its own admin.
    pytest.skip("the payment model is swapped", allow_module_level=True)


def split_refused(market: Any, sim_stripe: Any, partner: Any) -> Any:  # noqa: F811
    """A payment split 60/40 whose doer's transfer (5,400) Stripe refused."""
    payment = held(
        market,
        payees=[
            PayeeShare(user=market.doer, basis_points=6_000),
            PayeeShare(user=partner, basis_points=4_000),
        ],
    )
    sim_stripe.fail_next("create_transfer", refused())
    assert release(market, payment).status_code == 409
    payment = market.payment(payment.pk)
    assert payment.status == "partially_released"
    return payment


# --------------------------------------------------------------------------
# A transfer an app made is not a hand transfer
# --------------------------------------------------------------------------


def test_another_payments_transfer_in_flight_is_refused_and_that_payment_finishes(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
):
    """Payment B's confirm timed out after Stripe made its transfer (B's row
    has no Stripe id yet): recording B's transfer on A is refused, so B's
    retry and escrow_reconcile still book it on B."""
    payment = refused_release
    other = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer", TemporarilyUnavailable("timeout", http_status=None), after_effect=True
    )
    assert market.post(market.customer, "payment-confirm", payment_id=other.pk).status_code == 503
    (in_flight,) = [
        t["id"]
        for t in sim_stripe.transfers.values()
        if t["transfer_group"] == other.transfer_group
    ]

    assert refusal(admin_client, market, payment, in_flight) == "not_a_dashboard_transfer"
    assert "not by hand" in StaffAction.objects.order_by("-created_at").first().message

    with market.capture(execute=True):
        reconcile(now=timezone.now() + timezone.timedelta(hours=2))
        confirmed = market.post(market.customer, "payment-confirm", payment_id=other.pk)
    assert confirmed.status_code == 200, confirmed.content
    other = market.payment(other.pk)
    assert other.status == "released"
    assert other.transfers.get(status="created").stripe_transfer_id == in_flight


def test_a_transfer_of_a_tip_or_of_another_installation_is_refused(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
    settings,
):
    configure(settings, TIP_MAX_AMOUNT={"usd": 5_000})
    payment = refused_release
    account = payment.destination_account_id

    # A tip's transfer (booked on the tip): recorded already, by the tip.
    tipped = market.released_payment()
    tip = pay_tip(market, add_tip(market, tipped, 700).json()["id"])
    (tip_transfer,) = tip.transfers.all()
    assert tip_transfer.destination_account_id == account
    code = refusal(admin_client, market, payment, tip_transfer.stripe_transfer_id)
    assert code == "transfer_already_recorded"

    # Another installation sharing the Stripe account (its namespace), an
    # app's transfer funded from a charge, one in another transfer group.
    for made in (
        made_in_stripe(sim_stripe, account, 9_000, metadata={"escrow_namespace": "other-shop"}),
        made_in_stripe(sim_stripe, account, 9_000, metadata={"escrow_payment_id": "7"}),
        made_in_stripe(sim_stripe, account, 9_000, charge=market.held_payment().stripe_charge_id),
        made_in_stripe(sim_stripe, account, 9_000, group="group_of_another_payment"),
    ):
        assert refusal(admin_client, market, payment, made) == "not_a_dashboard_transfer"


# --------------------------------------------------------------------------
# A hand transfer in the payment's group whose webhook came first: adopted
# --------------------------------------------------------------------------


def test_a_hand_transfer_in_the_payments_group_booked_by_its_webhook_is_adopted(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
    deliver,
):
    payment = refused_release
    transfer_id = made_in_stripe(
        sim_stripe, payment.destination_account_id, 9_000, group=payment.transfer_group
    )
    (created,) = events_of(sim_stripe, "transfer.created", transfer_id)
    assert deliver.platform(created).json()["status"] == "processed"
    booked = Transfer.objects.get(stripe_transfer_id=transfer_id)
    assert booked.idempotency_key.startswith("stripe:")
    assert market.payment(payment.pk).status == "held"

    done = record(admin_client, market, payment, transfer_id)
    assert any("now released" in m for m in messages_of(done)), messages_of(done)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_transferred) == ("released", 9_000)
    made = Transfer.objects.get(stripe_transfer_id=transfer_id)
    assert (made.idempotency_key, made.status) == (f"recorded:{transfer_id}", "created")
    assert payment.transfer_incidents.get().resolved_at is not None

    sim_stripe.calls.clear()
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 200
    assert money_calls(sim_stripe) == []
    assert deliver.platform(created).json()["status"] in ("processed", "duplicate")
    assert Transfer.objects.filter(stripe_transfer_id=transfer_id).count() == 1
    assert audit_books(payment_id=payment.pk).for_payment(payment.pk) == []


@pytest.mark.parametrize("booked_since", ["reversed in part", "a share's"])
def test_a_webhook_booked_row_standing_for_something_is_not_adopted(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
    deliver,
    booked_since,
):
    """Only a row the webhook booked that stands for nothing is adopted: one
    whose reversal the books hold (Stripe's read, taken before the lock, may
    not show it yet), or one a share already points at, is refused as
    recorded, and nothing changes."""
    payment = refused_release
    transfer_id = made_in_stripe(
        sim_stripe, payment.destination_account_id, 9_000, group=payment.transfer_group
    )
    (created,) = events_of(sim_stripe, "transfer.created", transfer_id)
    assert deliver.platform(created).json()["status"] == "processed"
    rows = Transfer.objects.filter(stripe_transfer_id=transfer_id)
    if booked_since == "reversed in part":
        rows.update(amount_reversed=1_000, status="partially_reversed")
    else:
        # (A row the webhook never writes so: a share's row carries its own key.)
        payee = swappable.load("EscrowPayee").objects.create(
            payment=payment,
            position=0,
            user=market.doer,
            amount=9_000,
            destination_account_id=payment.destination_account_id,
        )
        rows.update(payee=payee)
    before = list(rows.values())

    assert refusal(admin_client, market, payment, transfer_id) == "transfer_already_recorded"
    assert list(rows.values()) == before
    assert market.payment(payment.pk).status == "held"


@pytest.mark.usefixtures("split")
def test_a_split_share_paid_in_the_payments_group_booked_by_its_webhook_is_adopted(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    partner,  # noqa: F811
    deliver,
):
    payment = split_refused(market, sim_stripe, partner)
    doer = payment.payees.get(position=0)
    transfer_id = made_in_stripe(
        sim_stripe, doer.destination_account_id, 5_400, group=payment.transfer_group
    )
    (created,) = events_of(sim_stripe, "transfer.created", transfer_id)
    assert deliver.platform(created).json()["status"] == "processed"

    done = record(admin_client, market, payment, transfer_id)
    assert any("now released" in m for m in messages_of(done)), messages_of(done)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_transferred) == ("released", 9_000)
    made = Transfer.objects.get(stripe_transfer_id=transfer_id)
    assert (made.release_id, made.payee_id, made.idempotency_key) == (
        payment.releases.get().pk,
        doer.pk,
        f"recorded:{transfer_id}",
    )
    sim_stripe.calls.clear()
    assert release(market, payment).status_code == 200
    assert money_calls(sim_stripe) == []  # the doer is not paid a second time
    assert audit_books(payment_id=payment.pk).for_payment(payment.pk) == []


# --------------------------------------------------------------------------
# Two shares of a split payment recorded: the audit finds nothing wrong
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("split")
def test_both_shares_of_a_split_payment_recorded_are_in_line_with_stripe(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    partner,  # noqa: F811
):
    payment = held(
        market,
        payees=[
            PayeeShare(user=market.doer, basis_points=6_000),
            PayeeShare(user=partner, basis_points=4_000),
        ],
    )
    sim_stripe.fail_next("create_transfer", refused())
    sim_stripe.fail_next("create_transfer", refused())
    assert release(market, payment).status_code == 409
    for position, amount in ((0, 5_400), (1, 3_600)):
        account = payment.payees.get(position=position).destination_account_id
        record(admin_client, market, payment, dashboard_transfer(sim_stripe, account, amount))
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_transferred) == ("released", 9_000)
    assert audit_books(payment_id=payment.pk).for_payment(payment.pk) == []


# --------------------------------------------------------------------------
# Each guard: refused, nothing written
# --------------------------------------------------------------------------


def test_a_charge_disputed_hold_freezes_the_recording(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
):
    """Stripe said the charge is disputed (a refund refused): a release is
    frozen until staff lift the hold, and so is a recording."""
    payment = refused_release
    sim_stripe.fail_next(
        "create_refund",
        InvalidRequest(
            "The charge has been charged back.", code="charge_disputed", http_status=400
        ),
    )
    answer = market.post(market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)
    assert answer.status_code == 409, answer.content
    assert market.payment(payment.pk).status == "held"
    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, 9_000)
    assert refusal(admin_client, market, payment, transfer_id) == "charge_disputed"


@pytest.mark.usefixtures("split")
def test_a_disputed_split_payment_records_no_share(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    partner,  # noqa: F811
):
    payment = split_refused(market, sim_stripe, partner)
    previous = simulation.set_event_sink(None)  # its events reach the webhook receiver
    try:
        with market.capture(execute=True):
            SimulatedGateway().open_dispute(payment.stripe_charge_id)
    finally:
        simulation.set_event_sink(previous)
    assert market.payment(payment.pk).disputes.get().status == "needs_response"
    doer = payment.payees.get(position=0)
    transfer_id = made_in_stripe(sim_stripe, doer.destination_account_id, 5_400)
    assert refusal(admin_client, market, payment, transfer_id) == "transition_not_allowed"


def test_a_manual_capture_payment_is_released_by_its_capture_not_a_transfer(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    settings,
):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
    payment = market.held_payment()
    assert payment.is_manual_capture
    sim_stripe.calls.clear()
    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, 9_000)
    assert refusal(admin_client, market, payment, transfer_id) == "split_unsupported"
    # The hold is neither captured nor booked as released.
    assert [c for c in money_calls(sim_stripe) if c != "create_transfer"] == []
    assert market.payment(payment.pk).status == "held"


def test_the_rest_a_lost_dispute_left_after_a_release_in_parts_is_not_recorded(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
):
    """4,000 released by amount, 3,000 disputed and lost; the release of the
    rest (2,700 after the fee) refused by Stripe: settled by hand, it is not
    recorded (docs/recovery.md)."""
    payment = released_in_parts_then_lost(market)
    sim_stripe.fail_next("create_transfer", refused())
    list_action(admin_client, market, Payment, "release", [payment], note="the rest")
    payment = market.payment(payment.pk)
    assert payment.status == "dispute_lost"
    assert payment.transfers.filter(status="failed", amount=2_700).exists()

    transfer_id = made_in_stripe(sim_stripe, payment.destination_account_id, 2_700)
    assert refusal(admin_client, market, payment, transfer_id) == "transition_not_allowed"


def test_a_refused_recording_keeps_no_amount_in_the_audit_trail(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
):
    """Submitted twice: the second is refused, and its audit entry shows no
    amount (nothing was booked by it)."""
    payment = refused_release
    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, 9_000)
    record(admin_client, market, payment, transfer_id)
    record(admin_client, market, payment, transfer_id)
    entries = StaffAction.objects.filter(action=ACTION).order_by("created_at")
    assert [(e.outcome, e.code, e.amount) for e in entries] == [
        ("ok", "", 9_000),
        ("refused", "transfer_already_recorded", None),
    ]
    page = admin_client.get(url(Payment, "staff_action", payment.pk, ACTION))
    assert "no share is owed to a payee now" in page.content.decode()


def test_a_refund_in_flight_refuses_the_recording(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
):
    """A refund whose answer was lost may still be made: the payment's money
    is in flight, so nothing is booked against it until it is settled."""
    payment = refused_release
    sim_stripe.fail_next("create_refund", TemporarilyUnavailable("timeout", http_status=None))
    answer = market.post(market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)
    assert answer.status_code == 503, answer.content
    assert not payment.transfers.filter(status="pending").exists()
    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, 9_000)
    assert refusal(admin_client, market, payment, transfer_id) == "operation_pending"


def test_a_transfer_row_still_pending_refuses_the_recording(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
):
    """A transfer row still pending whose journal entry is settled (or was
    never written): the row alone says Stripe may still make that transfer."""
    payment = refused_release
    Transfer.objects.create(
        payment=payment,
        idempotency_key="payment-transfer-written-before-its-journal",
        amount=9_000,
        currency="usd",
        destination_account_id=payment.destination_account_id,
    )
    assert not payment.operations.filter(status__in=["pending", "unknown"]).exists()
    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, 9_000)
    assert refusal(admin_client, market, payment, transfer_id) == "operation_pending"


@pytest.mark.usefixtures("split")
def test_a_share_for_a_release_not_made_yet_is_not_called_paid_twice(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
):
    """The first milestone was released and paid by the app; the next is not
    released: a hand transfer to the doer is refused as owing nothing now,
    not as a payee paid twice."""
    payment = held(market, milestones=three_milestones())
    first = payment.milestones.order_by("position").first()
    assert release(market, payment, milestone_id=str(first.pk)).status_code == 200
    payment = market.payment(payment.pk)
    assert payment.transfers.filter(status="created").count() == 1
    transfer_id = dashboard_transfer(sim_stripe, payment.destination_account_id, 4_500)
    assert refusal(admin_client, market, payment, transfer_id) == "transfer_mismatch"
    message = StaffAction.objects.order_by("-created_at").first().message
    assert "No release of this payment waits" in message
    assert "paid twice" not in message


def test_the_page_shows_the_account_the_app_would_send_to_now(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    refused_release,  # noqa: F811
):
    """The doer's connected account was replaced since the payment was made:
    the page names the new one (where the app would send the share), and a
    transfer made to it is recorded."""
    payment = refused_release
    fresh = SimulatedGateway().create_account(
        idempotency_key="the-doer-onboards-again",
        country="US",
        email=None,
        business_type="individual",
        metadata={},
    )
    SimulatedGateway().complete_onboarding(fresh.id)
    swappable.load("ConnectedAccount").objects.filter(pk=market.doer_account.pk).update(
        stripe_account_id=fresh.id
    )
    text = admin_client.get(url(Payment, "staff_action", payment.pk, ACTION)).content.decode()
    assert f"owed to {fresh.id}: 90.00 USD" in text
    assert payment.destination_account_id not in text

    record(admin_client, market, payment, dashboard_transfer(sim_stripe, fresh.id, 9_000))
    assert market.payment(payment.pk).status == "released"


@pytest.mark.usefixtures("split")
def test_a_payee_whose_share_a_refund_took_back_is_not_called_paid_twice(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
    partner,  # noqa: F811
):
    """The partner was paid, the doer's transfer refused, then the customer
    was refunded all that was refundable: the release still waits, owing the
    doer nothing. A hand transfer to the doer is refused saying a refund took
    the share, not that the doer was paid twice or is no payee."""
    payment = split_refused(market, sim_stripe, partner)
    refund = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
    assert refund.status_code == 200, refund.content
    payment = market.payment(payment.pk)
    doer = payment.payees.get(position=0)
    transfer_id = dashboard_transfer(sim_stripe, doer.destination_account_id, 5_400)
    assert refusal(admin_client, market, payment, transfer_id) == "transfer_mismatch"
    message = StaffAction.objects.order_by("-created_at").first().message
    assert "a refund took that payee's share back" in message
