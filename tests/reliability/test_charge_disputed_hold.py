"""Stripe refusing an operation because the charge is disputed holds the payment.

A chargeback can reach Stripe before its ``charge.dispute.created`` webhook
reaches the app: Stripe then refuses a refund (or a transfer) of the charge
with ``charge_disputed``. That refusal is committed with a ``charge_disputed``
incident, a hold on the payment: every later release and tip transfer
answers ``409 charge_disputed`` and sends nothing, until the dispute is
recorded, ``escrow_reconcile`` finds the charge not disputed, or staff
resolve it (docs/recovery.md). The simulated Stripe's events reach the real
webhook receiver; "unheard" events are held back and delivered later.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_escrow_connect import simulation as simulated
from django_escrow_connect import swappable
from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable
from django_escrow_connect.services.common import gateway
from django_escrow_connect.simulation import SimulatedGateway
from tests.payments.conftest import age, auto_release_run, calls, money_calls

from .conftest import configure, stripe_books
from .test_journal import (
    close_dispute,
    open_dispute,
    run_reconcile,
    webhooks_lost,
)

pytestmark = pytest.mark.django_db


def refusal() -> InvalidRequest:
    """Stripe's answer to a refund (or transfer) of a charge that was charged back."""
    return InvalidRequest(
        "The charge you're attempting to refund has been charged back.",
        code="charge_disputed",
        http_status=400,
    )


@pytest.fixture
def separate_charges(settings: Any, sim_stripe: Any) -> None:
    configure(
        settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, TIP_MAX_AMOUNT={"usd": 5_000}
    )


@contextmanager
def events_held_back() -> Iterator[list[Any]]:
    """Stripe's events of what happens inside are kept, not delivered (yet)."""
    held: list[Any] = []
    previous = simulated.set_event_sink(lambda *args: held.append(args))
    try:
        yield held
    finally:
        simulated.set_event_sink(previous)


def deliver(market: Any, held: list[Any]) -> None:
    """Stripe delivers the events held back, late."""
    with market.capture(execute=True):
        for args in held:
            simulated.get_event_sink()(*args)


def disputed_unheard(market: Any, payment: Any) -> tuple[Any, list[Any]]:
    """The customer's bank disputes the charge; its events have not arrived."""
    with events_held_back() as held:
        dispute = open_dispute(market, payment)
    assert market.payment(payment.pk).status == payment.status
    return dispute, held


def holds(payment: Any) -> Any:
    return swappable.load("PaymentIncident").objects.filter(
        payment=payment.pk, kind="charge_disputed"
    )


def open_hold(payment: Any) -> Any:
    (hold,) = holds(payment).filter(resolved_at__isnull=True)
    return hold


def staff_refund(market: Any, payment: Any) -> Any:
    return market.post(market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)


def assert_charge_disputed(response: Any) -> None:
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "charge_disputed"


def refused_refund_holds(market: Any, payment: Any) -> Any:
    """A staff refund Stripe refuses with charge_disputed: the payment is held
    (the hold is read after what the test checks first, when it is given)."""
    assert_charge_disputed(staff_refund(market, payment))


def the_hold(payment: Any) -> Any:
    """The payment's open charge_disputed hold, on the payment's charge."""
    hold = open_hold(payment)
    assert hold.stripe_object_id == payment.stripe_charge_id
    return hold


def assert_release_refused(market: Any, sim_stripe: Any, payment: Any) -> None:
    """Confirm and a release in part answer charge_disputed; nothing is sent."""
    sim_stripe.calls.clear()
    for action, body in (("payment-confirm", {}), ("payment-release", {"amount": 3_000})):
        assert_charge_disputed(market.post(market.customer, action, body, payment_id=payment.pk))
    assert money_calls(sim_stripe) == []
    assert market.payment(payment.pk).amount_released == 0


def confirm(market: Any, payment: Any) -> Any:
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 200, response.content
    return market.payment(payment.pk)


class TestARefusalHoldsThePayment:
    def test_a_refused_refund_holds_release_until_the_dispute_is_recorded(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        dispute, held = disputed_unheard(market, payment)
        refused_refund_holds(market, payment)

        assert_release_refused(market, sim_stripe, payment)
        hold = the_hold(payment)

        # The dispute's webhook lifts the hold: the dispute now freezes release.
        deliver(market, held)
        hold.refresh_from_db()
        assert hold.resolved_at is not None
        assert f"dispute {dispute.id} recorded" in hold.message
        assert market.payment(payment.pk).status == "disputed"
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 409, response.content

        # Won: the dispute's rules say release; the hold no longer stops it.
        close_dispute(market, dispute, won=True)
        assert confirm(market, payment).status == "released"
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1

    def test_a_refused_release_holds_the_next_one(self, market, sim_stripe, separate_charges):
        payment = market.held_payment()
        sim_stripe.fail_next("create_transfer", refusal())
        first = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert first.status_code == 409, first.content

        assert_release_refused(market, sim_stripe, payment)
        assert stripe_books(sim_stripe, payment)["transfers"] == []
        the_hold(payment)

    def test_one_hold_per_charge(self, market, sim_stripe, separate_charges):
        payment = market.held_payment()
        disputed_unheard(market, payment)
        refused_refund_holds(market, payment)
        assert_charge_disputed(staff_refund(market, payment))
        the_hold(payment)
        assert holds(payment).count() == 1

    def test_the_automatic_release_skips_it_and_says_why(
        self, settings, market, sim_stripe, separate_charges
    ):
        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        payment = market.held_payment()
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        age(payment, held_at=timezone.now() - timedelta(days=30))
        sim_stripe.calls.clear()

        output = auto_release_run(market)  # no CommandError: the job does not fail

        assert f"{payment.pk}: not released (charge_disputed)" in output
        assert money_calls(sim_stripe) == []
        assert market.payment(payment.pk).status == "held"

    def test_a_tip_waits_paid_and_goes_once_reconcile_lifts_the_hold(
        self, market, sim_stripe, separate_charges
    ):
        """Stripe refused a refund saying the charge is disputed, but it is not
        (any more): the tip paid meanwhile is not sent, staff's retry is
        refused; reconcile reads the charge, lifts the hold and sends it."""
        payment = market.released_payment()
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        tip = tip_paid(market, payment)
        assert tip.status == "paid"
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1  # the release's only
        retry = reverse(
            "escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), str(tip.pk)]
        )
        with market.capture(execute=True):
            response = market.client(market.staff).post(retry, {}, format="json")
        assert_charge_disputed(response)

        output = run_reconcile(market)

        assert f"charge_disputed hold {open_hold_pk(payment)} lifted" in output
        assert "not disputed" in output
        tip.refresh_from_db()
        assert tip.status == "transferred"

    def test_a_refused_tip_transfer_holds_the_payment(self, market, sim_stripe, separate_charges):
        """The tip's own charge: its transfer is refused charge_disputed; the
        hold names that charge, and the payment's tips and release wait."""
        payment = market.released_payment()
        sim_stripe.fail_next("create_transfer", refusal())
        tip = tip_paid(market, payment)
        assert tip.status == "transfer_failed"
        retry = reverse(
            "escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), str(tip.pk)]
        )
        sim_stripe.calls.clear()
        with market.capture(execute=True):
            response = market.client(market.staff).post(retry, {}, format="json")
        assert_charge_disputed(response)
        assert money_calls(sim_stripe) == []
        assert open_hold(payment).stripe_object_id == tip.stripe_charge_id


def tip_paid(market: Any, payment: Any, amount: int = 500) -> Any:
    """The customer tips ``amount`` and pays it; its webhook runs (the transfer is tried)."""
    response = market.post(
        market.customer, "payment-tips", {"amount": amount}, payment_id=payment.pk
    )
    assert response.status_code == 201, response.content
    Tip = swappable.load("EscrowTip")
    tip = Tip.objects.get(pk=response.json()["id"])
    with market.capture(execute=True):
        SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
    return Tip.objects.get(pk=tip.pk)


def open_hold_pk(payment: Any) -> Any:
    return holds(payment).order_by("created_at").values_list("pk", flat=True).first()


class TestReconcile:
    def test_a_charge_not_disputed_lifts_the_hold_and_the_release_goes(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        assert_release_refused(market, sim_stripe, payment)
        hold = the_hold(payment)

        output = run_reconcile(market)

        assert (
            f"{payment.pk}: charge_disputed hold {hold.pk} lifted (escrow_reconcile: Stripe says "
            f"charge {payment.stripe_charge_id} is not disputed)"
        ) in output
        assert "retrieve_charge" in calls(sim_stripe)
        hold.refresh_from_db()
        assert hold.resolved_at is not None
        assert confirm(market, payment).status == "released"

    def test_a_disputed_charge_with_no_dispute_recorded_keeps_it_and_says_so(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        disputed_unheard(market, payment)
        refused_refund_holds(market, payment)
        hold = the_hold(payment)

        output = run_reconcile(market)

        assert (
            f"{payment.pk}: charge_disputed hold {hold.pk} kept: Stripe says charge "
            f"{payment.stripe_charge_id} is disputed and no open or lost dispute of it is "
            "recorded (the dispute's events were missed: run escrow_fetch_missed_events)"
        ) in output
        assert output.rstrip().endswith("]")  # the run failed: staff must act
        assert open_hold(payment).pk == hold.pk
        assert_release_refused(market, sim_stripe, payment)

        # As told: the missed events are fetched; the dispute lifts the hold.
        with market.capture(execute=True):
            call_command("escrow_fetch_missed_events", stdout=StringIO())
        assert not holds(payment).filter(resolved_at__isnull=True).exists()
        assert market.payment(payment.pk).status == "disputed"

    @pytest.mark.parametrize("meanwhile", ["refused_again", "resolved_then_refused"])
    def test_a_refusal_committed_while_the_charge_is_read_is_not_lifted_by_that_read(
        self, market, sim_stripe, separate_charges, monkeypatch, meanwhile
    ):
        """escrow_reconcile reads the charge (not disputed) with no lock held;
        meanwhile a chargeback reaches Stripe and a refund is refused saying
        so: the hold it said again (or, staff having resolved the first, the
        new hold it opened) is newer than the read and stays, and nothing is
        released. The next run reads the charge again."""
        payment = market.held_payment()
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        first = the_hold(payment)
        configured = type(gateway())
        retrieve_charge = configured.retrieve_charge
        done: list[bool] = []

        def refused_during_the_read(self: Any, charge_id: str) -> Any:
            snapshot = retrieve_charge(self, charge_id)
            if not done:
                done.append(True)
                if meanwhile == "resolved_then_refused":
                    resolve_in_the_admin(market, first)
                sim_stripe.fail_next("create_refund", refusal())
                refused_refund_holds(market, payment)
            return snapshot

        monkeypatch.setattr(configured, "retrieve_charge", refused_during_the_read)

        output = run_reconcile(market)

        hold = the_hold(payment)
        if meanwhile == "refused_again":
            assert hold.pk == first.pk
            assert (
                f"{payment.pk}: charge_disputed hold {hold.pk} kept: Stripe refused an operation "
                f"of charge {payment.stripe_charge_id} again while it was read (the next "
                "escrow_reconcile reads it again)"
            ) in output
            assert "\nRefused again: the refund " in hold.message
        else:
            assert hold.pk != first.pk
            assert f"charge_disputed hold {first.pk} lifted meanwhile" in output
        assert "lifted (" not in output
        assert_release_refused(market, sim_stripe, payment)

        # The next run's read is newer than the refusal: not disputed, lifted.
        monkeypatch.undo()
        assert f"charge_disputed hold {hold.pk} lifted (" in run_reconcile(market)
        assert confirm(market, payment).status == "released"

    def test_the_lift_sends_the_tips_it_held_in_that_run_once(
        self, market, sim_stripe, separate_charges
    ):
        """The hold is older than ``--older-than``; the tips paid while it was
        open are not, so the run's tips step does not look at them. The
        run's lift of the payment's last hold sends them on its commit, in
        that same run and once (the next run sends nothing more), as staff's
        Resolve would; a tip whose own charge is disputed (its dispute
        recorded) is not sent."""
        payment = market.released_payment()
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        hold = the_hold(payment)
        disputed = tip_paid(market, payment)
        waiting = tip_paid(market, payment, amount=700)
        assert (disputed.status, waiting.status) == ("paid", "paid")
        with market.capture(execute=True):
            SimulatedGateway().open_dispute(disputed.stripe_charge_id)
        assert disputed.disputes.get().status == "needs_response"
        assert open_hold(payment).pk == hold.pk  # a tip's dispute leaves the payment's hold
        type(hold).objects.filter(pk=hold.pk).update(created_at=timezone.now() - timedelta(hours=1))

        output = reconcile_run(market)  # the default --older-than

        assert f"{payment.pk}: charge_disputed hold {hold.pk} lifted (" in output
        assert tip_transfers(sim_stripe, waiting) == [700]
        assert tip_transfers(sim_stripe, disputed) == []
        waiting.refresh_from_db()
        disputed.refresh_from_db()
        assert (waiting.status, disputed.status) == ("transferred", "paid")
        # Each tip's outcome is a line of the run: the disputed one is held.
        assert f"{payment.pk}: tip {waiting.pk}: paid -> transferred" in output
        assert f"{payment.pk}: tip {disputed.pk} held (" in output

        run_reconcile(market)  # every row old enough now: nothing sent again
        assert tip_transfers(sim_stripe, waiting) == [700]
        assert tip_transfers(sim_stripe, disputed) == []

    @pytest.mark.parametrize(
        ("failure", "status"),
        [
            (TemporarilyUnavailable("Request timed out", http_status=None), "paid"),
            (
                InvalidRequest("cannot receive", code="account_invalid", http_status=400),
                "transfer_failed",
            ),
        ],
        ids=["answer-lost", "refused"],
    )
    def test_a_tip_the_lift_could_not_send_fails_that_run(
        self, market, sim_stripe, separate_charges, failure, status
    ):
        """The lift's tips are sent by the run itself, not on commit: a
        transfer Stripe refused or left unanswered is that run's failure
        (exit 1, the tip named), not a line saying it was sent."""
        payment = market.released_payment()
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        hold = the_hold(payment)
        tip = tip_paid(market, payment, amount=700)
        type(hold).objects.filter(pk=hold.pk).update(created_at=timezone.now() - timedelta(hours=1))
        sim_stripe.fail_next("create_transfer", failure)

        with pytest.raises(CommandError):
            reconcile_run(market)

        tip.refresh_from_db()
        assert tip.status == status
        assert f"charge_disputed hold {hold.pk} lifted (" in market.last_output
        assert f"{payment.pk}: transfer tip {tip.pk} failed (" in market.last_output


def reconcile_run(market: Any) -> str:
    """``escrow_reconcile`` as scheduled (the default ``--older-than``).

    Its output is kept as ``market.last_output`` when it exits 1.
    """
    out = StringIO()
    try:
        with market.capture(execute=True):
            call_command("escrow_reconcile", stdout=out, stderr=out)
    finally:
        market.last_output = out.getvalue()
    return out.getvalue()


def tip_transfers(sim_stripe: Any, tip: Any) -> list[int]:
    """The amounts Stripe transferred from ``tip``'s charge."""
    with sim_stripe.lock:
        return [
            t["amount"]
            for t in sim_stripe.transfers.values()
            if t["source_transaction"] == tip.stripe_charge_id
        ]


def resolve_in_the_admin(market: Any, hold: Any) -> None:
    """Staff resolve ``hold`` with the admin's Resolve action."""
    market.staff.is_superuser = True
    market.staff.save()
    client = Client()
    client.force_login(market.staff)
    meta = type(hold)._meta
    response = client.post(
        reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"),
        {
            "action": "resolve_incident",
            "_selected_action": [str(hold.pk)],
            "confirm": "yes",
            "note": "checked the charge",
        },
    )
    assert response.status_code == 302, response.content
    hold.refresh_from_db()
    assert hold.resolved_at is not None


class TestTheDisputeRecordedFirst:
    def test_a_closed_inquiry_does_not_stand_for_a_new_dispute(
        self, market, sim_stripe, separate_charges
    ):
        """An inquiry recorded and closed leaves the payment held. Stripe then
        refuses a refund saying the charge is disputed (a chargeback whose
        events have not arrived): the payment is held all the same, and
        reconcile, with only the closed inquiry recorded, keeps the hold."""
        payment = market.held_payment()
        inquiry = open_dispute(market, payment, inquiry=True)
        close_dispute(market, inquiry, won=True)
        assert market.payment(payment.pk).status == "held"

        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        hold = the_hold(payment)
        assert_release_refused(market, sim_stripe, payment)

        sim_stripe.charges[payment.stripe_charge_id]["disputed"] = True
        output = run_reconcile(market)
        assert (
            f"charge_disputed hold {hold.pk} kept: Stripe says charge {payment.stripe_charge_id} "
            "is disputed and only a dispute decided for the platform is recorded (check the "
            "Stripe Dashboard for another dispute of the charge; if there is none, resolve the "
            "hold in the admin)"
        ) in output
        assert open_hold(payment).pk == hold.pk
        assert_release_refused(market, sim_stripe, payment)

    def test_the_dispute_it_was_about_closed_won_before_its_opening_lifts_it(
        self, market, sim_stripe, separate_charges
    ):
        """The refusal came while the dispute's events were on their way, and
        its close (won) is delivered before its opening: the dispute, first
        recorded after the hold, is what the refusal was about. The hold is
        lifted and the release goes once."""
        payment = market.held_payment()
        with events_held_back() as held, market.capture(execute=True):
            dispute = SimulatedGateway().open_dispute(payment.stripe_payment_intent_id)
        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        hold = the_hold(payment)
        with events_held_back() as closing, market.capture(execute=True):
            SimulatedGateway().close_dispute(dispute.id, True)

        deliver(market, closing + held)  # the close first, the opening late
        hold.refresh_from_db()
        assert hold.resolved_at is not None
        assert market.payment(payment.pk).status == "held"
        assert confirm(market, payment).status == "released"
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1

    def test_a_late_event_of_a_won_dispute_does_not_lift_it(
        self, market, sim_stripe, separate_charges
    ):
        """A dispute won before the refusal: its late event (Stripe delivers
        in any order) records nothing new, and the hold, which may be about a
        chargeback not heard yet, stays: release still sends nothing."""
        payment = market.held_payment()
        dispute = open_dispute(market, payment)
        with events_held_back() as held, market.capture(execute=True):
            SimulatedGateway().close_dispute(dispute.id, True)
        assert [json.loads(args[1])["type"] for args in held][:1] == ["charge.dispute.closed"]
        deliver(market, held[:1])
        assert market.payment(payment.pk).status == "held"

        sim_stripe.fail_next("create_refund", refusal())
        refused_refund_holds(market, payment)
        hold = the_hold(payment)

        deliver(market, held[1:])  # charge.dispute.funds_reinstated, late
        assert open_hold(payment).pk == hold.pk
        assert_release_refused(market, sim_stripe, payment)

    def test_no_hold_when_the_dispute_commits_before_the_refusal(
        self, market, sim_stripe, separate_charges, monkeypatch
    ):
        """The dispute's webhook is applied while the refund is at Stripe (no
        transaction open); the refusal's outcome commits after it: the
        dispute governs, no hold is opened, and once the dispute is won the
        release goes."""
        payment = market.held_payment()
        dispute, held = disputed_unheard(market, payment)
        configured = type(gateway())
        create_refund = configured.create_refund

        def webhook_first(self: Any, **kwargs: Any) -> Any:
            deliver(market, held)
            return create_refund(self, **kwargs)

        monkeypatch.setattr(configured, "create_refund", webhook_first)

        assert_charge_disputed(staff_refund(market, payment))

        assert market.payment(payment.pk).status == "disputed"
        assert not holds(payment).exists()
        close_dispute(market, dispute, won=True)
        assert confirm(market, payment).status == "released"


class TestTheUntestedPaths:
    def test_a_refused_reversal_holds_the_payment_and_its_tips(
        self, market, sim_stripe, separate_charges
    ):
        """A refund of a released payment first reverses the doer's transfer;
        Stripe refuses the reversal saying the charge is disputed. The refund
        answers as a refused reversal does (nothing refunded), the hold names
        the payment's charge, and a tip paid next is not sent."""
        payment = market.released_payment()
        sim_stripe.fail_next("create_transfer_reversal", refusal())

        response = staff_refund(market, payment)

        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "reversal_failed"
        assert "charge_disputed" in response.json()["error"]["message"]
        assert market.payment(payment.pk).amount_refunded == 0
        assert "create_refund" not in calls(sim_stripe)
        the_hold(payment)
        sim_stripe.calls.clear()
        tip = tip_paid(market, payment)
        assert tip.status == "paid"
        retry = reverse(
            "escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), str(tip.pk)]
        )
        with market.capture(execute=True):
            response = market.client(market.staff).post(retry, {}, format="json")
        assert_charge_disputed(response)
        assert not [name for name in money_calls(sim_stripe) if name != "create_payment_intent"]
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1  # the release's only

    @pytest.mark.parametrize("stripe_acted", [True, False], ids=["made", "never_made"])
    def test_a_release_in_flight_when_a_hold_opens_is_only_looked_up(
        self, market, sim_stripe, separate_charges, stripe_acted
    ):
        """The release's transfer timed out (made at Stripe or not, its events
        lost); a charge_disputed hold is then open on the payment (staged as a
        refusal committed meanwhile leaves it). Confirm and escrow_reconcile
        only look the transfer up: never sent again, exactly what Stripe
        made is booked."""
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_transfer", TemporarilyUnavailable("timed out"), after_effect=stripe_acted
        )
        with webhooks_lost():
            response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503, response.content
        swappable.load("PaymentIncident").objects.create(
            payment_id=payment.pk,
            kind="charge_disputed",
            code="charge_disputed",
            message="Stripe refused the refund (charge_disputed)",
            stripe_payment_intent_id=payment.stripe_payment_intent_id,
            stripe_object_id=payment.stripe_charge_id,
        )
        # Stripe still says so: escrow_reconcile keeps the hold.
        sim_stripe.charges[payment.stripe_charge_id]["disputed"] = True
        sim_stripe.calls.clear()

        if stripe_acted:
            response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
            assert response.status_code == 200, response.content
            assert market.payment(payment.pk).status == "released"
        else:
            # Its lease passed: no process can still be sending it.
            swappable.load("MoneyOperation").objects.filter(
                payment=payment.pk, kind="transfer"
            ).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
            output = run_reconcile(market)
            assert f"{payment.pk}: releasing -> held" in output, output
            assert market.payment(payment.pk).status == "held"

        assert "list_transfers" in calls(sim_stripe)
        assert "create_transfer" not in calls(sim_stripe)
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == int(stripe_acted)
        the_hold(payment)

    @pytest.mark.parametrize("refused", ["tip", "payment"])
    def test_only_a_dispute_of_the_held_charge_lifts_it(
        self, market, sim_stripe, separate_charges, refused
    ):
        """A hold names the charge Stripe refused: the tip's (its transfer
        refused) or the payment's (a refund refused). A dispute of the other
        charge leaves it open; the dispute of that charge lifts it."""
        payment = market.released_payment()
        if refused == "tip":
            sim_stripe.fail_next("create_transfer", refusal())
            tip = tip_paid(market, payment)
        else:
            tip = tip_paid(market, payment)
            sim_stripe.fail_next("create_refund", refusal())
            refused_refund_holds(market, payment)
        held_charge, other_charge = (
            (tip.stripe_charge_id, payment.stripe_payment_intent_id)
            if refused == "tip"
            else (payment.stripe_charge_id, tip.stripe_charge_id)
        )
        hold = open_hold(payment)
        assert hold.stripe_object_id == held_charge

        with market.capture(execute=True):
            SimulatedGateway().open_dispute(other_charge)
        hold.refresh_from_db()
        assert hold.resolved_at is None

        with market.capture(execute=True):
            dispute = SimulatedGateway().open_dispute(
                tip.stripe_charge_id if refused == "tip" else payment.stripe_payment_intent_id
            )
        hold.refresh_from_db()
        assert hold.resolved_at is not None
        assert f"dispute {dispute.id} recorded" in hold.message
