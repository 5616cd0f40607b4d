"""Staff act from the admin: confirmed with the amounts, run through the same
services and permissions as the API, reported, and recorded in the audit trail."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse

from django_escrow_connect import signals, swappable
from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    InvalidRequest,
    TemporarilyUnavailable,
)
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import receiver
from tests import factories
from tests.payments.conftest import calls, configure, money_calls
from tests.reliability.test_charge_disputed_hold import refusal, refused_refund_holds, tip_paid
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import CONNECT_SECRET

pytestmark = pytest.mark.django_db

Payment = swappable.load("EscrowPayment")
StaffAction = swappable.load("StaffAction")

if not admin.site.is_registered(Payment):
    # A host that swaps the payment model registers its own admin.
    pytest.skip("the payment model is swapped", allow_module_level=True)


def url(model: Any, name: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{name}", args=args)


@pytest.fixture
def staff(market):
    """Platform staff with every Django permission (a superuser)."""
    market.staff.is_superuser = True
    market.staff.save()
    return market.staff


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def list_action(client, market, model, action, objects, **confirm):
    """POST the changelist action; with ``confirm`` fields, confirm it too."""
    data: dict[str, Any] = {"action": action, "_selected_action": [str(o.pk) for o in objects]}
    if confirm:
        data |= {"confirm": "yes", **confirm}
    with market.capture(execute=True):
        return client.post(url(model, "changelist"), data, follow=bool(confirm))


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_release_is_confirmed_with_its_amounts_then_done_and_recorded(admin_client, market, staff):
    payment = market.held_payment(amount=10_000)

    page = list_action(admin_client, market, Payment, "release", [payment])
    assert page.status_code == 200
    text = page.content.decode()
    assert "amount 100.00 USD" in text
    assert f"to {payment.destination_account_id}" in text
    assert "platform fee" in text
    assert market.payment(payment.pk).status == "held"  # nothing happens before confirming

    done = list_action(
        admin_client, market, Payment, "release", [payment], note="customer unreachable"
    )
    assert done.status_code == 200
    payment = market.payment(payment.pk)
    assert payment.status == "released"
    assert any("now released" in m for m in messages_of(done))
    (entry,) = StaffAction.objects.all()
    assert (entry.staff, entry.action, entry.outcome) == (staff, "release", "ok")
    assert entry.payment == payment
    assert (entry.amount, entry.currency) == (10_000 - payment.platform_fee, "usd")
    assert entry.note == "customer unreachable"


def test_a_refused_release_is_reported_and_recorded_not_a_500(admin_client, market, sim_stripe):
    response = market.create(market.task())
    payment = market.payment(response.json()["payment_id"])  # awaiting payment

    done = list_action(admin_client, market, Payment, "release", [payment], note="")
    assert done.status_code == 200
    assert any("transition_not_allowed" in m for m in messages_of(done))
    assert market.payment(payment.pk).status == "awaiting_payment"
    (entry,) = StaffAction.objects.all()
    assert (entry.outcome, entry.code) == ("refused", "transition_not_allowed")
    assert "cannot be released" in entry.message
    assert money_calls(sim_stripe) == ["create_payment_intent"]


def test_a_partial_refund_from_the_payment_page(admin_client, market, staff):
    payment = market.released_payment(amount=10_000)
    change = admin_client.get(url(Payment, "change", payment.pk))
    action_url = url(Payment, "staff_action", payment.pk, "refund")
    assert action_url in change.content.decode()

    page = admin_client.get(action_url)
    assert page.status_code == 200
    assert "refundable 100.00 USD" in page.content.decode()

    with market.capture(execute=True):
        done = admin_client.post(
            action_url, {"confirm": "yes", "amount": "2500", "reason": "requested_by_customer"}
        )
    assert done.status_code == 302
    assert done["Location"] == url(Payment, "change", payment.pk)
    payment = market.payment(payment.pk)
    assert (payment.amount_refunded, payment.status) == (2500, "partially_refunded")
    (entry,) = StaffAction.objects.all()
    assert (entry.action, entry.outcome, entry.amount, entry.staff) == ("refund", "ok", 2500, staff)


def test_a_refund_of_a_lost_dispute_offers_nothing_and_is_refused(admin_client, market, staff):
    """Stripe refuses to refund a charged-back charge: the page says nothing is
    refundable, and a refund of "everything refundable" is refused, recorded
    with that amount (it was the whole charge)."""
    from django_escrow_connect import simulation

    payment = market.released_payment(amount=10_000)
    gateway = simulation.SimulatedGateway()
    previous = simulation.set_event_sink(None)  # its events reach the webhook receiver
    try:
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id)
            gateway.close_dispute(dispute.id, won=False)
    finally:
        simulation.set_event_sink(previous)
    assert market.payment(payment.pk).status == "dispute_lost"
    action_url = url(Payment, "staff_action", payment.pk, "refund")

    page = admin_client.get(action_url)
    assert page.status_code == 200
    assert "refundable 0.00 USD" in page.content.decode()
    with market.capture(execute=True):
        done = admin_client.post(action_url, {"confirm": "yes", "amount": "", "reason": ""})
    assert done.status_code == 302
    (entry,) = StaffAction.objects.all()
    assert (entry.action, entry.outcome, entry.code) == (
        "refund",
        "refused",
        "transition_not_allowed",
    )
    assert (entry.amount, entry.staff) == (0, staff)
    assert market.payment(payment.pk).status == "dispute_lost"


def test_a_refund_beyond_the_audit_column_is_refused_by_the_form(
    admin_client, market, sim_stripe, staff
):
    """2**63 fits no amount column: the form says so (it was a 500, and the
    attempt went unrecorded). The largest amount that fits is the service's
    to refuse, and that refusal is recorded."""
    payment = market.released_payment(amount=10_000)
    action_url = url(Payment, "staff_action", payment.pk, "refund")
    sim_stripe.calls.clear()
    with market.capture(execute=True):
        page = admin_client.post(action_url, {"confirm": "yes", "amount": str(2**63), "reason": ""})
    assert page.status_code == 200
    assert "less than or equal to 9223372036854775807" in page.content.decode()
    assert not StaffAction.objects.exists()

    with market.capture(execute=True):
        done = admin_client.post(
            action_url, {"confirm": "yes", "amount": str(2**63 - 1), "reason": ""}
        )
    assert done.status_code == 302
    (entry,) = StaffAction.objects.all()
    assert (entry.action, entry.outcome, entry.code) == ("refund", "refused", "invalid_amount")
    assert (entry.amount, entry.staff) == (2**63 - 1, staff)
    assert market.payment(payment.pk).amount_refunded == 0
    assert sim_stripe.calls == []


def test_one_refund_amount_is_for_one_payment(admin_client, market):
    first, second = market.held_payment(), market.held_payment()
    page = list_action(admin_client, market, Payment, "refund", [first, second], amount="100")
    assert "Choose one payment" in page.content.decode()
    assert {market.payment(p.pk).status for p in (first, second)} == {"held"}
    assert not StaffAction.objects.exists()


@pytest.mark.parametrize(
    ("model_name", "action", "selected"),
    [
        ("EscrowPayment", "release", "junk"),
        ("EscrowPayment", "refund", "1"),  # another model's integer id for a UUID
        ("ConnectedAccount", "refresh_account", str(2**70)),  # past any integer column
        ("ConnectedAccount", "refresh_account", "1\x00"),
    ],
)
def test_a_selection_of_ids_that_cannot_exist_is_refused_not_a_500(
    admin_client, market, sim_stripe, model_name, action, selected
):
    """Django filters the list by the posted ids before the action runs: an
    id that is none of this model's (text, an integer for a UUID, 2**70, NUL)
    was a ValidationError or an OverflowError there, a 500."""
    market.held_payment()
    model = swappable.load(model_name)
    sim_stripe.calls.clear()
    done = list_action(admin_client, market, model, action, [], _selected_action=selected, note="n")
    assert done.status_code == 200
    assert any("Nothing was done" in m for m in messages_of(done))
    assert not StaffAction.objects.exists()
    assert sim_stripe.calls == []


def test_cancel_an_unpaid_payment(admin_client, market):
    payment = market.payment(market.create(market.task()).json()["payment_id"])
    list_action(admin_client, market, Payment, "cancel", [payment], note="")
    assert market.payment(payment.pk).status == "canceled"
    assert StaffAction.objects.get().outcome == "ok"


def test_retry_a_failed_transfer(admin_client, market, sim_stripe):
    payment = market.held_payment()
    refused = list_action(admin_client, market, Payment, "retry_transfer", [payment], note="")
    assert any("no_failed_transfer" in m for m in messages_of(refused))
    assert market.payment(payment.pk).status == "held"

    sim_stripe.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 409
    list_action(admin_client, market, Payment, "retry_transfer", [payment], note="funds settled")
    payment = market.payment(payment.pk)
    assert payment.status == "released"
    assert sorted(t.status for t in payment.transfers.all()) == ["created", "failed"]
    outcomes = list(StaffAction.objects.order_by("created_at").values_list("code", "outcome"))
    assert outcomes == [("no_failed_transfer", "refused"), ("", "ok")]


def test_a_charge_disputed_hold_sends_nothing_until_staff_lift_it(
    admin_client, market, sim_stripe, staff
):
    """Stripe refused a refund saying the charge is disputed: the admin's
    Release offers nothing to send and, like retry-transfer, is refused with
    ``charge_disputed``. Staff who checked the charge resolve the hold (a
    staff action, the note kept on the hold too); then the release goes."""
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_refund",
        InvalidRequest(
            "The charge has been charged back.", code="charge_disputed", http_status=400
        ),
    )
    refused = market.post(market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)
    assert refused.status_code == 409, refused.content
    sim_stripe.calls.clear()

    page = list_action(admin_client, market, Payment, "release", [payment])
    text = page.content.decode()
    assert "nothing to send: Stripe refused an operation of this payment" in text
    assert f"to {payment.destination_account_id}" not in text
    for action in ("release", "retry_transfer"):
        done = list_action(admin_client, market, Payment, action, [payment], note="")
        assert any("charge_disputed" in m for m in messages_of(done)), messages_of(done)
    assert money_calls(sim_stripe) == []
    assert market.payment(payment.pk).status == "held"

    hold = payment.incidents.get(kind="charge_disputed")
    list_action(admin_client, market, type(hold), "resolve_incident", [hold], note="not disputed")
    hold.refresh_from_db()
    assert hold.resolved_at is not None
    assert "Lifted: resolved by staff (not disputed)" in hold.message
    list_action(admin_client, market, Payment, "release", [payment], note="")
    assert market.payment(payment.pk).status == "released"
    assert [(e.action, e.outcome) for e in StaffAction.objects.order_by("created_at")] == [
        ("release", "refused"),
        ("retry_transfer", "refused"),
        ("resolve_incident", "ok"),
        ("release", "ok"),
    ]


def tips_held_by_two_holds(settings, market, sim_stripe):
    """A released payment held twice: Stripe refused the first tip's transfer
    (a hold on that tip's charge; the tip ``transfer_failed``) and then a
    refund (a hold on the payment's charge). A second tip, paid meanwhile,
    waits ``paid``. Returns ``(payment, refused tip, waiting tip)``."""
    configure(
        settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, TIP_MAX_AMOUNT={"usd": 5_000}
    )
    payment = market.released_payment()
    sim_stripe.fail_next("create_transfer", refusal())
    refused = tip_paid(market, payment)
    assert refused.status == "transfer_failed"
    waiting = tip_paid(market, payment, amount=700)
    assert waiting.status == "paid"
    sim_stripe.fail_next("create_refund", refusal())
    refused_refund_holds(market, payment)
    kinds = payment.incidents.filter(kind="charge_disputed", resolved_at__isnull=True)
    assert sorted(kinds.values_list("stripe_object_id", flat=True)) == sorted(
        [payment.stripe_charge_id, refused.stripe_charge_id]
    )
    return payment, refused, waiting


#: The Resolve's answer when the last hold held one tip (queued, not sent yet).
QUEUED_ONE_TIP = (
    "resolved; 1 tip it held is sent now unless Stripe's charge refuses it (see the tip)"
)


def test_resolving_the_last_charge_disputed_hold_sends_the_tips_it_held(
    settings, admin_client, market, sim_stripe, staff
):
    """Staff resolve one hold: another is open, nothing is sent. They resolve
    the last one: the tip that waited ``paid`` is transferred at once (its
    charge read first), not at the next escrow_reconcile; the one Stripe
    refused stays for staff's retry-transfer."""
    payment, refused, waiting = tips_held_by_two_holds(settings, market, sim_stripe)
    holds = payment.incidents.filter(kind="charge_disputed")
    first = holds.get(stripe_object_id=payment.stripe_charge_id)
    last = holds.get(stripe_object_id=refused.stripe_charge_id)
    sim_stripe.calls.clear()

    done = list_action(admin_client, market, type(first), "resolve_incident", [first], note="ok")
    assert messages_of(done) == [f"Incident {first.pk}: resolved"], messages_of(done)
    assert money_calls(sim_stripe) == []
    waiting.refresh_from_db()
    assert waiting.status == "paid"

    done = list_action(admin_client, market, type(last), "resolve_incident", [last], note="ok")
    assert messages_of(done) == [f"Incident {last.pk}: {QUEUED_ONE_TIP}"], messages_of(done)
    waiting.refresh_from_db()
    refused.refresh_from_db()
    assert (waiting.status, refused.status) == ("transferred", "transfer_failed")
    assert "retrieve_charge" in calls(sim_stripe)  # the tip's charge, read first
    assert [c for c in money_calls(sim_stripe) if c == "create_transfer"] == ["create_transfer"]
    assert [(e.action, e.outcome, e.message) for e in StaffAction.objects.order_by("created_at")][
        -1
    ] == ("resolve_incident", "ok", QUEUED_ONE_TIP)


def test_resolving_the_last_charge_disputed_hold_of_a_disputed_payment_sends_no_tip(
    settings, admin_client, market, sim_stripe, staff
):
    """The payment's own dispute is recorded (it lifts the hold of the
    payment's charge, not the tip's): staff resolving the last hold leave
    the waiting tip to that dispute's close."""
    payment, refused, waiting = tips_held_by_two_holds(settings, market, sim_stripe)
    from django_escrow_connect import simulation

    previous = simulation.set_event_sink(None)  # its events reach the webhook receiver
    try:
        with market.capture(execute=True):
            SimulatedGateway().open_dispute(payment.stripe_payment_intent_id)
    finally:
        simulation.set_event_sink(previous)
    assert market.payment(payment.pk).status == "disputed"
    (last,) = payment.incidents.filter(kind="charge_disputed", resolved_at__isnull=True)
    assert last.stripe_object_id == refused.stripe_charge_id
    sim_stripe.calls.clear()

    done = list_action(admin_client, market, type(last), "resolve_incident", [last], note="ok")

    assert messages_of(done) == [f"Incident {last.pk}: resolved"], messages_of(done)
    assert money_calls(sim_stripe) == []
    waiting.refresh_from_db()
    assert waiting.status == "paid"


def test_a_tips_dispute_lifting_the_last_hold_sends_the_tips_it_held(
    settings, admin_client, market, sim_stripe, staff
):
    """Staff resolve the hold of the payment's charge (the other hold stays:
    nothing is sent). The refused tip's own dispute is then recorded: it
    lifts the last hold, that of its charge, and the tip that waited
    ``paid`` is transferred on commit, as staff's resolve of the last hold
    would have (it waited for the next escrow_reconcile); the disputed tip
    itself is not sent."""
    from django_escrow_connect import simulation

    payment, refused, waiting = tips_held_by_two_holds(settings, market, sim_stripe)
    first = payment.incidents.get(kind="charge_disputed", stripe_object_id=payment.stripe_charge_id)
    list_action(admin_client, market, type(first), "resolve_incident", [first], note="ok")
    waiting.refresh_from_db()
    assert waiting.status == "paid"
    sim_stripe.calls.clear()

    previous = simulation.set_event_sink(None)  # its events reach the webhook receiver
    try:
        with market.capture(execute=True):
            SimulatedGateway().open_dispute(refused.stripe_charge_id)
    finally:
        simulation.set_event_sink(previous)

    assert not payment.incidents.filter(kind="charge_disputed", resolved_at__isnull=True).exists()
    waiting.refresh_from_db()
    refused.refresh_from_db()
    assert (waiting.status, refused.status) == ("transferred", "transfer_failed")
    assert [c for c in money_calls(sim_stripe) if c == "create_transfer"] == ["create_transfer"]


def lost_in_part(market, amount=10_000, lost=3_000):
    """A payment of ``amount`` held, ``lost`` of it disputed and lost through
    the webhook receiver: ``(payment, dispute)``; the rest stays held."""
    from django_escrow_connect import simulation

    payment = market.held_payment(amount=amount)
    gateway = simulation.SimulatedGateway()
    previous = simulation.set_event_sink(None)  # its events reach the webhook receiver
    try:
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=lost)
            gateway.close_dispute(dispute.id, won=False)
    finally:
        simulation.set_event_sink(previous)
    return payment, dispute


def rest_sent_once(market, sim_stripe, payment):
    """The 7,000 a lost 3,000 left was released by one transfer of 6,300."""
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_released, payment.amount_lost) == (
        "dispute_lost",
        7_000,
        3_000,
    )
    assert [t["amount"] for t in sim_stripe.transfers.values()] == [6_300]
    return payment


def test_the_rest_a_partial_dispute_lost_left_is_released_for_what_is_sent(
    admin_client, market, sim_stripe
):
    """10,000 held, 3,000 disputed and lost: the page shows, Stripe gets and
    the audit trail records the transfer of the 7,000 left less the fee on it
    (63.00, fee 7.00), not of the whole payment; its refused transfer is
    retried as a held payment's is (the release API retries it too)."""
    from django_escrow_connect import simulation

    payment, dispute = lost_in_part(market)
    gateway = simulation.SimulatedGateway()
    assert market.payment(payment.pk).amount_held == 7_000

    page = list_action(admin_client, market, Payment, "release", [payment])
    text = page.content.decode()
    assert "transfer 63.00 USD" in text
    assert "platform fee 7.00 USD" in text

    sim_stripe.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )
    list_action(admin_client, market, Payment, "release", [payment], note="")
    assert market.payment(payment.pk).status == "dispute_lost"
    list_action(admin_client, market, Payment, "retry_transfer", [payment], note="funds settled")
    payment = rest_sent_once(market, sim_stripe, payment)
    # Sent: its failed transfer no longer makes it retryable.
    list_action(admin_client, market, Payment, "retry_transfer", [payment], note="again")

    # An appeal won gives the 3,000 back (the payment is released, 3,000
    # held): no release sends it, so the page shows nothing to send and the
    # audit trail records no amount (recovery.md).
    previous = simulation.set_event_sink(None)
    try:
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id, submitted=True)
            gateway.close_dispute(dispute.id, won=True)
    finally:
        simulation.set_event_sink(previous)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_held) == ("released", 3_000)
    text = list_action(admin_client, market, Payment, "release", [payment]).content.decode()
    assert "nothing to send: the payment is released" in text
    assert "transfer 27.00 USD" not in text
    list_action(admin_client, market, Payment, "release", [payment], note="")
    assert [t["amount"] for t in sim_stripe.transfers.values()] == [6_300]
    entries = StaffAction.objects.order_by("created_at")
    assert [(e.action, e.outcome, e.amount, e.code) for e in entries] == [
        ("release", "refused", 6_300, "release_failed"),
        ("retry_transfer", "ok", 6_300, ""),
        ("retry_transfer", "refused", None, "no_failed_transfer"),
        ("release", "ok", None, ""),
    ]


def released_in_parts_then_lost(market: Any) -> Any:
    """A payment of 10,000: 4,000 released by amount, then 3,000 disputed and lost."""
    from django_escrow_connect import simulation

    payment = market.held_payment(amount=10_000)
    first = market.post(
        market.customer, "payment-release", {"amount": 4_000}, payment_id=payment.pk
    )
    assert first.status_code == 200, first.content
    gateway = simulation.SimulatedGateway()
    previous = simulation.set_event_sink(None)  # its events reach the webhook receiver
    try:
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=3_000)
            gateway.close_dispute(dispute.id, won=False)
    finally:
        simulation.set_event_sink(previous)
    return payment


def test_the_rest_a_lost_dispute_left_after_a_release_in_parts_is_released_by_staff(
    admin_client, market, sim_stripe
):
    """4,000 of 10,000 released by amount, then 3,000 disputed and lost: the
    admin's Release sends the 3,000 left as the payment's last release (27.00
    after the fee on 7,000 released in all, less the 4.00 the first took);
    the payment stays dispute_lost."""
    payment = released_in_parts_then_lost(market)
    assert market.payment(payment.pk).amount_held == 3_000

    text = list_action(admin_client, market, Payment, "release", [payment]).content.decode()
    assert "release 30.00 USD still held, less the platform fee" in text
    list_action(admin_client, market, Payment, "release", [payment], note="the rest")
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_released, payment.amount_held) == (
        "dispute_lost",
        7_000,
        0,
    )
    assert [t["amount"] for t in sim_stripe.transfers.values()] == [3_600, 2_700]
    entries = StaffAction.objects.order_by("created_at")
    assert [(e.action, e.outcome) for e in entries] == [("release", "ok")]


def test_the_rest_a_lost_dispute_left_in_flight_is_finished_by_release(
    admin_client, market, sim_stripe
):
    """The rest's transfer timed out before Stripe acted: the admin's Release
    finishes it with its key and is recorded done (not refused because
    nothing is left to release once it is sent); one transfer in all."""
    payment, _ = lost_in_part(market)
    sim_stripe.fail_next(
        "create_transfer", TemporarilyUnavailable("Request timed out", http_status=None)
    )
    market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert market.payment(payment.pk).status_before_dispute == "releasing"

    list_action(admin_client, market, Payment, "release", [payment], note="")
    payment = rest_sent_once(market, sim_stripe, payment)
    entries = StaffAction.objects.order_by("created_at")
    assert [(e.action, e.outcome, e.amount) for e in entries] == [("release", "ok", 6_300)]


def test_a_release_in_flight_is_shown_and_recorded_for_what_it_sends(
    admin_client, market, sim_stripe
):
    """Its transfer timed out before Stripe acted (``releasing``): the admin's
    Release finishes it with its key, so the page shows that transfer and
    the audit trail records it, not "nothing to send"."""
    payment = market.held_payment(amount=10_000)
    sim_stripe.fail_next(
        "create_transfer", TemporarilyUnavailable("Request timed out", http_status=None)
    )
    market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert market.payment(payment.pk).status == "releasing"

    text = list_action(admin_client, market, Payment, "release", [payment]).content.decode()
    assert "transfer 90.00 USD" in text
    assert "nothing to send" not in text
    list_action(admin_client, market, Payment, "release", [payment], note="")
    assert market.payment(payment.pk).status == "released"
    assert [t["amount"] for t in sim_stripe.transfers.values()] == [9_000]
    entries = StaffAction.objects.order_by("created_at")
    assert [(e.action, e.outcome, e.amount) for e in entries] == [("release", "ok", 9_000)]


def test_reconcile_one_payment_finishes_a_release_whose_answer_was_lost(
    admin_client, market, sim_stripe
):
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer",
        TemporarilyUnavailable("Request timed out", http_status=None),
        after_effect=True,
    )
    market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert market.payment(payment.pk).status == "releasing"

    done = list_action(admin_client, market, Payment, "reconcile", [payment], note="")
    assert market.payment(payment.pk).status == "released"
    assert money_calls(sim_stripe).count("create_transfer") == 1
    assert StaffAction.objects.get().outcome == "ok"
    assert any("Payment" in m for m in messages_of(done))


def test_money_actions_run_outside_a_request_wide_transaction(admin_client, market, monkeypatch):
    """With ATOMIC_REQUESTS the admin's views still call Stripe with no
    transaction open (the checking gateway would raise otherwise)."""
    payment = market.held_payment()
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    done = list_action(admin_client, market, Payment, "release", [payment], note="")
    assert market.payment(payment.pk).status == "released", messages_of(done)


def test_the_change_list_offers_the_staff_actions_without_a_deprecation(admin_client, market):
    # Django 6.1 deprecated overriding get_actions() without action_location
    # (and offers no action on the change form to such an override).
    market.held_payment()
    with warnings.catch_warnings():
        # Django's deprecations are DeprecationWarning or, two releases
        # ahead, PendingDeprecationWarning.
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", PendingDeprecationWarning)
        page = admin_client.get(url(Payment, "changelist"))
    assert page.status_code == 200
    assert 'value="release"' in page.content.decode()


def test_staff_without_the_change_permission_get_no_action(client, market):
    viewer = factories.make_user("viewer", staff=True)
    codename = f"view_{Payment._meta.model_name}"
    viewer.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(viewer)
    payment = market.held_payment()

    page = client.get(url(Payment, "changelist"))
    assert page.status_code == 200
    assert 'value="release"' not in page.content.decode()
    assert client.get(url(Payment, "staff_action", payment.pk, "release")).status_code == 403
    with market.capture(execute=True):
        posted = client.post(url(Payment, "staff_action", payment.pk, "release"), {"confirm": "1"})
    assert posted.status_code == 403
    assert market.payment(payment.pk).status == "held"
    assert not StaffAction.objects.exists()


def test_the_service_acts_for_the_staff_member_and_asks_its_own_permission(market):
    """The action passes the staff member to the service: the journal names
    them, and the service's ``may_release`` refuses whoever is not staff."""
    from django_escrow_connect.admin.actions import PAYMENT_ACTIONS, attempt

    payment = market.held_payment()
    refused = attempt(
        lambda: PAYMENT_ACTIONS["release"].run(payment, market.other, {}), moves_money=True
    )
    assert (refused.outcome, refused.code) == ("refused", "forbidden")
    with market.capture(execute=True):
        done = attempt(
            lambda: PAYMENT_ACTIONS["release"].run(payment, market.staff, {}), moves_money=True
        )
    assert done.outcome == "ok"
    operation = payment.operations.get(kind="transfer")
    assert operation.requested_by == market.staff


@pytest.mark.parametrize(
    ("model_name", "query"),
    [
        # The date hierarchy's last day, month and year: the next one is past 9999.
        (
            "EscrowPayment",
            {"created_at__year": "9999", "created_at__month": "12", "created_at__day": "31"},
        ),
        ("StaffAction", {"created_at__year": "9999", "created_at__month": "12"}),
        ("WebhookEvent", {"received_at__year": "9999"}),
        # A year no datetime holds, on a list without a date hierarchy.
        ("ConnectedAccount", {"created_at__year": "99999"}),
        # PostgreSQL refuses NUL in any text it is sent (a DataError).
        ("EscrowPayment", {"status__exact": "held\x00"}),
        # A regular expression the database refuses: PostgreSQL raises a
        # DataError itself (inside the test's transaction: only the savepoint
        # around the list is aborted); SQLite's REGEXP compiles it in Python,
        # and re.error came out as an OperationalError on the first row read.
        ("MoneyOperation", {"stripe_request_id__regex": "("}),
        ("MoneyOperation", {"stripe_request_id__iregex": "[z-a]"}),
    ],
)
def test_a_changelist_lookup_no_query_can_answer_is_a_bad_lookup_not_a_500(
    admin_client, market, model_name, query
):
    """Django refuses a malformed lookup in the query string with a redirect
    to ``?e=1``, but a date past 9999 raised OverflowError or ValueError,
    a NUL byte on PostgreSQL a DataError, and a regular expression no engine
    compiles a DataError or an OperationalError: the package's lists treat
    them alike."""
    market.held_payment()  # rows to read: SQLite compiles the pattern on the first
    if connection.vendor != "postgresql" and any("\x00" in value for value in query.values()):
        page = admin_client.get(url(swappable.load(model_name), "changelist"), query)
        assert page.status_code == 200  # SQLite stores NUL: a lookup that matches nothing
        return
    page = admin_client.get(url(swappable.load(model_name), "changelist"), query)
    assert page.status_code == 302
    assert page.url.endswith("?e=1")
    # The request's transaction is still usable.
    assert admin_client.get(url(swappable.load(model_name), "changelist")).status_code == 200


def test_a_regular_expression_that_compiles_filters_the_list(admin_client, market):
    """Only a pattern no engine compiles is a bad lookup (SQLite's is checked
    before the query): a valid one filters as before."""
    market.held_payment()
    MoneyOperation = swappable.load("MoneyOperation")
    for query in ({"stripe_request_id__iregex": "^REQ_"}, {"stripe_request_id__regex": "^$"}):
        page = admin_client.get(url(MoneyOperation, "changelist"), query)
        assert page.status_code == 200
        assert page.context["cl"].result_count == MoneyOperation.objects.filter(**query).count()


def test_the_audit_trail_is_read_only(admin_client, market):
    payment = market.held_payment()
    list_action(admin_client, market, Payment, "cancel", [payment], note="")
    entry = StaffAction.objects.get()
    assert admin_client.get(url(StaffAction, "changelist")).status_code == 200
    assert admin_client.get(url(StaffAction, "add")).status_code == 403
    page = admin_client.get(url(StaffAction, "change", entry.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert (
        admin_client.post(url(StaffAction, "delete", entry.pk), {"post": "yes"}).status_code == 403
    )
    assert StaffAction.objects.filter(pk=entry.pk).exists()


# --------------------------------------------------------------------------
# Incidents and accounts
# --------------------------------------------------------------------------


@pytest.fixture
def incident(market, sim_stripe):
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )
    market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    return market.payment(payment.pk).transfer_incidents.get()


def test_resolve_an_incident_needs_a_note_and_is_recorded(admin_client, market, incident, staff):
    Incident = type(incident)
    page = list_action(admin_client, market, Incident, "resolve_incident", [incident], note="")
    assert "This field is required" in page.content.decode()
    incident.refresh_from_db()
    assert incident.resolved_at is None

    list_action(
        admin_client, market, Incident, "resolve_incident", [incident], note="doer re-onboarded"
    )
    incident.refresh_from_db()
    assert incident.resolved_at is not None
    again = list_action(admin_client, market, Incident, "resolve_incident", [incident], note="x")
    assert any("already_resolved" in m for m in messages_of(again))

    entries = StaffAction.objects.order_by("created_at")
    assert [(e.action, e.outcome) for e in entries] == [
        ("resolve_incident", "ok"),
        ("resolve_incident", "refused"),
    ]
    assert entries[0].incident_id == str(incident.pk)
    assert entries[0].incident_model == Incident._meta.label_lower
    assert (entries[0].staff, entries[0].payment_id) == (staff, incident.payment_id)


def test_annotate_keeps_the_incident_open_and_shows_the_note(admin_client, market, incident):
    Incident = type(incident)
    action_url = url(Incident, "staff_action", incident.pk, "annotate_incident")
    done = admin_client.post(action_url, {"confirm": "yes", "note": "asked the doer's bank"})
    assert done.status_code == 302
    incident.refresh_from_db()
    assert incident.resolved_at is None
    page = admin_client.get(url(Incident, "change", incident.pk))
    assert "asked the doer&#x27;s bank" in page.content.decode()
    assert StaffAction.objects.get().action == "annotate_incident"


@pytest.mark.parametrize("action", ["resolve_incident", "annotate_incident"])
def test_a_note_longer_than_the_form_takes_is_refused_by_the_form(
    admin_client, market, incident, action
):
    """The audit trail's note is a TextField: 200,000 characters were stored
    whole. The form refuses a note past 2,000 and nothing is done."""
    action_url = url(type(incident), "staff_action", incident.pk, action)
    page = admin_client.post(action_url, {"confirm": "yes", "note": "x" * 200_000})
    assert page.status_code == 200
    assert "at most 2000 characters (it has 200000)" in page.content.decode()
    incident.refresh_from_db()
    assert incident.resolved_at is None
    assert not StaffAction.objects.exists()

    # A browser sends a textarea's line breaks as CRLF but counts them as one
    # character: 1,000 lines of one character fill the 2,000 it lets through.
    browser_note = "\r\n".join(["x"] * 1_000) + "x" * 1
    done = admin_client.post(action_url, {"confirm": "yes", "note": browser_note})
    assert done.status_code == 302
    assert StaffAction.objects.get().note == browser_note.replace("\r\n", "\n")
    assert len(StaffAction.objects.get().note) == 2_000


def test_an_optional_note_is_bounded_too(admin_client, market):
    payment = market.held_payment()
    page = list_action(admin_client, market, Payment, "release", [payment], note="x" * 2_001)
    assert "at most 2000 characters (it has 2001)" in page.content.decode()
    assert market.payment(payment.pk).status == "held"
    assert not StaffAction.objects.exists()


def test_refresh_an_account_from_stripe(admin_client, market, sim_stripe):
    account = market.doer_account
    Account = type(account)
    sim_stripe.calls.clear()
    done = list_action(admin_client, market, Account, "refresh_account", [account], note="")
    assert "retrieve_account" in [name for name, _ in sim_stripe.calls]
    assert any("now" in m for m in messages_of(done))
    entry = StaffAction.objects.get()
    assert (entry.action, entry.outcome, entry.account_id) == (
        "refresh_account",
        "ok",
        account.stripe_account_id,
    )


@pytest.fixture
def received():
    """The account signals sent, as ``(signal, kwargs)``."""
    seen = []

    def receiver(sender, signal, **kwargs):
        seen.append((signal, kwargs))

    account_signals = (
        signals.account_deauthorized,
        signals.account_updated,
        signals.account_requirements_due,
        signals.capability_restricted,
    )
    for signal in account_signals:
        signal.connect(receiver, weak=False)
    yield seen
    for signal in account_signals:
        signal.disconnect(receiver)


def disconnected_unheard(market):
    """The doer disconnects the platform; the deauthorization event is lost."""
    account = market.doer_account
    SimulatedGateway().deauthorize(account.stripe_account_id)
    account.refresh_from_db()
    assert account.status == "verified"
    return account


def refresh(admin_client, market, account, **boxes):
    return list_action(
        admin_client, market, type(account), "refresh_account", [account], note="", **boxes
    )


def test_staff_mark_an_account_stripe_refuses_access_to_deauthorized(
    admin_client, market, received
):
    account = disconnected_unheard(market)
    done = refresh(admin_client, market, account, deauthorize_if_refused="on")
    assert any("now deauthorized" in m for m in messages_of(done))
    account.refresh_from_db()
    assert account.status == "deauthorized"
    assert account.deauthorized_at is not None
    assert [s for s, _ in received] == [signals.account_deauthorized]
    entry = StaffAction.objects.get()
    assert (entry.action, entry.outcome) == ("refresh_account", "ok")
    assert entry.message == "now deauthorized (deauthorize_if_refused)"  # the decision, audited


def test_the_boxes_are_for_one_account_at_a_time(admin_client, market, received):
    # With a wrong key every account is refused alike: ticking the box on a
    # selection would disconnect them all.
    account = disconnected_unheard(market)
    Account = type(account)
    selection = [account, market.org_account]
    for box in ("deauthorize_if_refused", "reauthorize_if_read"):
        page = list_action(
            admin_client, market, Account, "refresh_account", selection, note="", **{box: "on"}
        )
        assert "Choose one account" in page.content.decode()
    assert set(Account.objects.values_list("status", flat=True)) == {"verified"}
    assert received == []
    assert not StaffAction.objects.exists()


def test_a_box_on_an_error_other_than_a_refused_access_changes_nothing(
    admin_client, market, sim_stripe, received
):
    account = market.doer_account
    sim_stripe.fail_next("retrieve_account", TemporarilyUnavailable("timeout"))
    done = refresh(admin_client, market, account, deauthorize_if_refused="on")
    assert any("provider_unavailable" in m for m in messages_of(done))
    account.refresh_from_db()
    assert account.status == "verified"
    assert received == []


def test_without_the_box_a_refused_refresh_changes_nothing(admin_client, market, received):
    # Stripe refuses a key of another platform or mode with the same code:
    # never deauthorized without a person's decision.
    account = disconnected_unheard(market)
    done = refresh(admin_client, market, account)
    assert any("account_invalid" in m for m in messages_of(done))
    account.refresh_from_db()
    assert account.status == "verified"
    assert received == []
    entry = StaffAction.objects.get()
    assert (entry.outcome, entry.code) == ("refused", "account_invalid")


def test_the_box_on_an_account_stripe_reads_is_a_plain_refresh(admin_client, market, received):
    account = market.doer_account
    done = refresh(admin_client, market, account, deauthorize_if_refused="on")
    assert any("now verified" in m for m in messages_of(done))
    account.refresh_from_db()
    assert account.status == "verified"
    assert signals.account_deauthorized not in [s for s, _ in received]


def test_staff_undo_a_deauthorization_when_stripe_reads_the_account(
    admin_client, market, sim_stripe, received, caplog
):
    # Deauthorized here by mistake: Stripe still gives the platform access.
    account = market.doer_account
    account.deauthorize()
    account.save()
    sim_stripe.calls.clear()
    refresh(admin_client, market, account)  # without the box: as stored, no Stripe call
    assert sim_stripe.calls == []
    account.refresh_from_db()
    assert account.status == "deauthorized"

    with caplog.at_level("INFO", logger=ACCOUNTS_LOGGER):
        done = refresh(admin_client, market, account, reauthorize_if_read="on")

    assert any("now verified" in m for m in messages_of(done))
    assert caplog.text.count(STAFF_RECONNECTED) == 1
    account.refresh_from_db()
    assert (account.status, account.deauthorized_at) == ("verified", None)
    # The read (its data changed) and the reconnection are one change.
    assert updates(received) == [("deauthorized", "verified")]


ACCOUNTS_LOGGER = "django_escrow_connect.accounts"
STAFF_RECONNECTED = "reauthorized by staff"


def updates(received):
    """``(previous_status, status)`` of each ``account_updated`` sent."""
    return [
        (kwargs["previous_status"], kwargs["account"].status)
        for s, kwargs in received
        if s is signals.account_updated
    ]


def test_a_reconnection_by_staff_is_announced_once_and_a_later_change_again(
    admin_client, market, received
):
    account = market.doer_account
    account.deauthorize()
    account.save()
    # What the read finds differs from the row: Stripe restricted the account.
    SimulatedGateway().require_information(account.stripe_account_id)

    refresh(admin_client, market, account, reauthorize_if_read="on")

    account.refresh_from_db()
    assert account.status == "restricted"
    assert updates(received) == [("deauthorized", "restricted")]
    sent = [s for s, _ in received]
    assert sent.count(signals.account_requirements_due) == 1
    assert signals.account_deauthorized not in sent

    received.clear()
    SimulatedGateway().complete_onboarding(account.stripe_account_id)
    refresh(admin_client, market, account)
    assert updates(received) == [("restricted", "verified")]


def test_undoing_a_deauthorization_stripe_confirms_is_refused(admin_client, market, received):
    account = disconnected_unheard(market)
    account.deauthorize()
    account.save()
    done = refresh(admin_client, market, account, reauthorize_if_read="on")
    assert any("account_invalid" in m for m in messages_of(done))
    account.refresh_from_db()
    assert account.status == "deauthorized"
    assert received == []


def test_an_account_stripe_does_not_know_is_refused_not_a_500(admin_client, market):
    account = factories.make_account(owner_user=factories.make_user())  # not at Stripe
    done = list_action(admin_client, market, type(account), "refresh_account", [account], note="")
    assert done.status_code == 200
    assert any("resource_missing" in m for m in messages_of(done))
    entry = StaffAction.objects.get()
    assert (entry.outcome, entry.code) == ("refused", "resource_missing")


def test_the_confirmation_and_the_outcome_speak_the_staff_member_s_language(
    admin_client, market, settings
):
    """The admin's language (here the site's, German) is the actions' language too."""
    payment = market.held_payment(amount=10_000)
    settings.LANGUAGE_CODE = "de"

    page = list_action(admin_client, market, Payment, "release", [payment])
    text = page.content.decode()
    assert "Freigeben: sind Sie sicher?" in text
    assert "Plattformgebühr" in text

    done = list_action(admin_client, market, Payment, "release", [payment], note="ok")
    assert any(m.startswith(f"Zahlung {payment.pk}: jetzt ") for m in messages_of(done))


@pytest.mark.parametrize("hold", ["review", "fraud_warning"])
def test_an_open_radar_hold_is_not_resolved_from_the_admin(admin_client, market, hold):
    """Resolving a Radar incident by hand lifted the release freeze while
    Stripe's review (or the actionable warning) was still open; a later
    ``review.closed`` or update cannot reopen a resolved incident. Stripe
    closes a Radar hold: the admin refuses, and the release stays frozen."""
    import dataclasses

    from django.db import transaction

    from django_escrow_connect.services.radar import apply_early_fraud_warning, apply_review
    from tests.webhooks.test_radar_events import fraud_warning, review

    payment = market.held_payment()
    scene = dataclasses.make_dataclass("Scene", ["payment"])(payment)
    with market.capture(execute=True), transaction.atomic():
        if hold == "review":
            incident = apply_review(review(scene))
        else:
            incident = apply_early_fraud_warning(fraud_warning(scene))
    Incident = type(incident)

    done = list_action(
        admin_client, market, Incident, "resolve_incident", [incident], note="looks fine to me"
    )
    assert any("radar_hold_open" in m for m in messages_of(done))
    incident.refresh_from_db()
    assert incident.resolved_at is None
    entry = StaffAction.objects.get()
    assert (entry.action, entry.outcome, entry.code) == (
        "resolve_incident",
        "refused",
        "radar_hold_open",
    )
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 409, response.content
    assert market.payment(payment.pk).status == "held"

    # Annotating it is still possible: the note goes to the audit trail.
    list_action(
        admin_client, market, Incident, "annotate_incident", [incident], note="asked Stripe"
    )
    assert StaffAction.objects.filter(action="annotate_incident", outcome="ok").exists()


def test_saving_a_read_only_page_writes_nothing(admin_client, market):
    """Every field is read-only, yet the page offered *Save*, and saving wrote
    the whole row back as read, without a lock: a refund, a transfer or a
    charge id committed by a webhook or a service between that read and the
    write was undone (and ``updated_at``, reconcile's clock, moved). Saving is
    refused; the staff actions stay available."""
    import re

    from django.db.models.signals import pre_save

    payment = market.held_payment()
    account = market.doer_account
    for obj in (payment, account):
        model = type(obj)
        change_url = url(model, "change", obj.pk)
        page = admin_client.get(change_url)
        assert page.status_code == 200
        html = page.content.decode()
        assert 'name="_save"' not in html
        assert 'name="_continue"' not in html
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
        before = model.objects.get(pk=obj.pk).updated_at
        saved: list[Any] = []

        def spy(sender: Any, instance: Any, **kwargs: Any) -> None:
            saved.append(instance)  # noqa: B023 - each loop's own list

        pre_save.connect(spy, sender=model, weak=False)
        try:
            response = admin_client.post(change_url, {**hidden, "_save": "Save"})
        finally:
            pre_save.disconnect(spy, sender=model)
        assert response.status_code == 403, model
        assert saved == []
        assert model.objects.get(pk=obj.pk).updated_at == before

    assert url(Payment, "staff_action", payment.pk, "release") in (
        admin_client.get(url(Payment, "change", payment.pk)).content.decode()
    )


def authorization_event(account, kind, seconds_from_now):
    """``account.application.<kind>``, created ``seconds_from_now`` (negative: before now)."""
    return so.event(
        f"account.application.{kind}",
        so.application(),
        account=account.stripe_account_id,
        created=so.now() + seconds_from_now,
    )


def test_an_older_authorization_delivered_late_does_not_undo_staff_s_deauthorization(
    admin_client, market, deliver
):
    # The owner reconnected, then disconnected: both events lost, the older
    # one delivered after staff applied the deauthorization.
    account = disconnected_unheard(market)
    reconnected_before = authorization_event(account, "authorized", -60)
    refresh(admin_client, market, account, deauthorize_if_refused="on")

    assert deliver.connect(reconnected_before).json()["status"] == "processed"
    account.refresh_from_db()
    assert account.status == "deauthorized"

    # An authorization newer than the staff action reconnects it, as usual.
    deliver.connect(authorization_event(account, "authorized", +5))
    account.refresh_from_db()
    assert account.status == "verified"


def test_an_older_deauthorization_delivered_late_does_not_undo_staff_s_reconnection(
    admin_client, market, deliver
):
    account = market.doer_account
    account.deauthorize()
    account.save()
    disconnected_before = authorization_event(account, "deauthorized", -60)
    refresh(admin_client, market, account, reauthorize_if_read="on")

    assert deliver.connect(disconnected_before).json()["status"] == "processed"
    account.refresh_from_db()
    assert account.status == "verified"

    deliver.connect(authorization_event(account, "deauthorized", +5))
    account.refresh_from_db()
    assert account.status == "deauthorized"


def test_a_deauthorization_of_the_second_of_staff_s_reconnection_wins(
    admin_client, market, deliver
):
    # Which is newer cannot be told across the two clocks: as everywhere, the
    # deauthorization wins (paying a disconnected account is the worse mistake).
    account = market.doer_account
    account.deauthorize()
    account.save()
    refresh(admin_client, market, account, reauthorize_if_read="on")
    account.refresh_from_db()
    assert account.status == "verified"

    deliver.connect(authorization_event(account, "deauthorized", 0))
    account.refresh_from_db()
    assert account.status == "deauthorized"


def received_while_staff_read(monkeypatch, evt):
    """Stripe answers staff's read of the account, then ``evt`` is received and
    processed before the answer is applied (the race, made deterministic)."""
    retrieve_account = SimulatedGateway.retrieve_account

    def event_meanwhile(self, account_id):
        answer = retrieve_account(self, account_id)
        payload = so.encode(evt)
        header = sign_webhook_payload(payload, CONNECT_SECRET)
        assert receiver.receive(WebhookEndpoint.CONNECT, payload, header).status == "processed"
        return answer

    monkeypatch.setattr(SimulatedGateway, "retrieve_account", event_meanwhile)


def test_a_deauthorization_received_during_staff_s_read_is_not_overridden(
    admin_client, market, monkeypatch, received, caplog
):
    # The owner disconnects (again) right after Stripe answered staff's read:
    # the decision was made on a state that no longer holds.
    account = market.doer_account
    account.deauthorize()
    account.save()
    disconnected = authorization_event(account, "deauthorized", +5)
    received_while_staff_read(monkeypatch, disconnected)

    with caplog.at_level("INFO", logger=ACCOUNTS_LOGGER):
        done = refresh(admin_client, market, account, reauthorize_if_read="on")

    assert any("disconnected again while Stripe was being read" in m for m in messages_of(done))
    account.refresh_from_db()
    assert account.status == "deauthorized"
    assert account.deauthorized_at == datetime.fromtimestamp(disconnected["created"], tz=UTC)
    assert received == []
    entry = StaffAction.objects.get()
    assert (entry.outcome, entry.code) == ("refused", "account_deauthorized")
    assert STAFF_RECONNECTED not in caplog.text


def test_a_reconnection_received_during_staff_s_read_is_not_logged_as_staff_s(
    admin_client, market, monkeypatch, received, caplog
):
    account = market.doer_account
    account.deauthorize()
    account.save()
    received_while_staff_read(monkeypatch, authorization_event(account, "authorized", +5))

    with caplog.at_level("INFO", logger=ACCOUNTS_LOGGER):
        done = refresh(admin_client, market, account, reauthorize_if_read="on")

    assert any("now verified" in m for m in messages_of(done))
    # The event connected it: staff's read is a plain one, and says nothing more.
    assert updates(received) == [("deauthorized", "verified")]
    assert STAFF_RECONNECTED not in caplog.text
