"""The operation journal: intent, call, outcome; every path settles from Stripe's facts.

These tests drive the public API (and ``escrow_reconcile``) against the
simulated Stripe, whose events reach the real webhook receiver. A crash is
staged as the process would leave it: the journal entry committed (phase 1),
Stripe's effect made or not, the outcome never committed. The real-process
crash matrix (tests/crash/) kills a server for the same states.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from django_escrow_connect import simulation as simulated
from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import TemporarilyUnavailable, UnreadableAnswer
from django_escrow_connect.services import operations
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.testing import assert_books_balanced
from tests.checked_gateway import MoneyCallInTransaction, TransactionCheckingGateway
from tests.payments.conftest import money_calls

from .conftest import assert_money_invariants, configure, stripe_books

pytestmark = pytest.mark.django_db

Operation = swappable.load("MoneyOperation")


def journal(payment: Any) -> list[tuple[str, str]]:
    """The payment's money operations after its creation, oldest first."""
    return list(
        payment.operations.exclude(kind="payment_intent")
        .order_by("created_at")
        .values_list("kind", "status")
    )


def stage_crashed_release(market: Any, sim_stripe: Any, *, stripe_acted: bool) -> Any:
    """A confirm whose process died during ``POST /v1/transfers``.

    Phase 1 committed (journal entry, transfer row, payment releasing); the
    call reached Stripe (``stripe_acted``) or not; nothing after it ran. The
    transfer's webhook is held back (Stripe delivers it later, or never).
    """
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer",
        TemporarilyUnavailable("worker killed", should_retry=True),
        after_effect=stripe_acted,
    )
    held_back: list[Any] = []
    from django_escrow_connect import simulation as simulated

    previous = simulated.set_event_sink(lambda *args: held_back.append(args))
    try:
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    finally:
        simulated.set_event_sink(previous)
    assert response.status_code == 503, response.content
    # What a SIGKILL leaves: the outcome ("unknown") was never written.
    Operation.objects.filter(payment=payment.pk, kind="transfer").update(
        status="pending", error_code="", error_message="", http_status=None
    )
    payment = market.payment(payment.pk)
    assert payment.status == "releasing"
    assert journal(payment) == [("transfer", "pending")]
    return payment, held_back


def open_dispute(market: Any, payment: Any, *, inquiry: bool = False) -> Any:
    """Stripe opens a dispute (or an inquiry) on the payment's charge; its events run."""
    with market.capture(execute=True):
        return SimulatedGateway().open_dispute(payment.stripe_payment_intent_id, inquiry=inquiry)


def close_dispute(market: Any, dispute: Any, *, won: bool) -> None:
    """Stripe closes ``dispute``, won or lost; its events run."""
    with market.capture(execute=True):
        SimulatedGateway().close_dispute(dispute.id, won)


def expire_lease(payment: Any) -> None:
    Operation.objects.filter(payment=payment.pk, status="pending").update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.fixture
def separate_charges(settings: Any, sim_stripe: Any) -> None:
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)


class TestTheScenarioOfIssue11:
    """Transfer made, worker killed, refund requested: the platform loses nothing."""

    def test_a_refund_finishes_the_release_then_reverses_it(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        expire_lease(payment)
        response = market.post(market.doer, "payment-refund", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        books = assert_money_invariants(sim_stripe, payment)
        assert len(books["transfers"]) == 1
        # The doer returned all 9,000 before the customer got 10,000 back.
        assert books["reversed"] == books["transferred"] == 9_000
        assert books["refunded"] == 10_000
        assert journal(payment) == [
            ("transfer", "succeeded"),
            ("reversal", "succeeded"),
            ("refund", "succeeded"),
        ]
        assert_books_balanced(payment_id=payment.pk)

    def test_the_webhook_finishes_a_release_that_stayed_held_or_releasing(
        self, market, sim_stripe, separate_charges
    ):
        payment, held_back = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        from django_escrow_connect.simulation import get_event_sink

        for args in held_back:
            get_event_sink()(*args)
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        assert journal(payment) == [("transfer", "succeeded")]
        (row,) = payment.transfers.all()
        assert row.status == "created"
        # Confirming again is an ordinary retry: 200, no second transfer.
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1
        assert_books_balanced(payment_id=payment.pk)

    def test_confirming_again_after_the_crash_sends_the_same_key(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1
        (operation,) = payment.operations.filter(kind="transfer")
        assert operation.sent_count == 2
        assert operation.idempotency_key.endswith(":transfer:0")

    def test_reconcile_finds_the_transfer_and_finishes(self, market, sim_stripe, separate_charges):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        sim_stripe.calls.clear()
        with market.capture(execute=True):
            call_command("escrow_reconcile", "--older-than", "0", stdout=StringIO())
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        # Looked up by transfer_group; nothing sent again.
        assert [name for name, _ in sim_stripe.calls] == ["list_transfers"]
        assert_books_balanced(payment_id=payment.pk)

    def test_an_unreadable_lookup_is_reported_and_the_run_goes_on(
        self, market, sim_stripe, separate_charges
    ):
        # What the gateway makes of a page of transfers it cannot read (see
        # test_stripe_errors): an UnreadableAnswer, not a bare AttributeError.
        crashed = [stage_crashed_release(market, sim_stripe, stripe_acted=True)[0] for _ in "ab"]
        sim_stripe.fail_next(
            "list_transfers",
            UnreadableAnswer("Stripe's answer could not be read", code="unreadable_answer"),
        )
        err = StringIO()
        with market.capture(execute=True), pytest.raises(CommandError):
            call_command("escrow_reconcile", "--older-than", "0", stdout=StringIO(), stderr=err)

        statuses = sorted(market.payment(p.pk).status for p in crashed)
        assert statuses == ["released", "releasing"]
        (unread,) = [p for p in crashed if market.payment(p.pk).status == "releasing"]
        assert f"{unread.pk}: " in err.getvalue()
        assert journal(market.payment(unread.pk)) == [("transfer", "pending")]


class TestACompetingOperation:
    """A refund (or cancel) while a release is unresolved decides from Stripe's facts."""

    def test_while_the_release_may_still_be_running_it_is_refused_409(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=False)
        response = market.post(market.doer, "payment-refund", payment_id=payment.pk)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "operation_pending"
        assert market.payment(payment.pk).amount_refunded == 0
        assert stripe_books(sim_stripe, payment)["refunded"] == 0

    def test_a_release_stripe_never_saw_is_settled_as_not_made(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=False)
        expire_lease(payment)
        response = market.post(market.doer, "payment-refund", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        books = assert_money_invariants(sim_stripe, payment)
        assert books["transfers"] == []
        assert journal(payment) == [("transfer", "failed"), ("refund", "succeeded")]
        assert payment.operations.get(kind="transfer").error_code == "not_made"
        assert_books_balanced(payment_id=payment.pk)

    def test_stripe_unreachable_refuses_409_and_changes_nothing(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        expire_lease(payment)
        sim_stripe.fail_next("list_transfers", TemporarilyUnavailable("down", http_status=503))
        response = market.post(market.doer, "payment-refund", payment_id=payment.pk)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "operation_pending"
        assert journal(market.payment(payment.pk)) == [("transfer", "pending")]


class TestLostAnswers:
    def test_a_stored_500_is_looked_up_then_retried_with_the_next_key(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_transfer", TemporarilyUnavailable("Internal error", http_status=500)
        )
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503
        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert [name for name, _ in sim_stripe.calls][:2] == ["list_transfers", "create_transfer"]
        assert journal(payment) == [("transfer", "failed"), ("transfer", "succeeded")]
        attempts = payment.operations.filter(kind="transfer").order_by("created_at")
        assert list(attempts.values_list("attempt", flat=True)) == [0, 1]
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1

    def test_stripe_should_retry_false_is_looked_up_then_sent_under_the_next_key(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_transfer",
            TemporarilyUnavailable("Conflict", http_status=409, should_retry=False),
        )
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503
        assert payment.operations.get(kind="transfer").should_retry is False
        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert [name for name, _ in sim_stripe.calls][:2] == ["list_transfers", "create_transfer"]
        payment = market.payment(payment.pk)
        assert journal(payment) == [("transfer", "failed"), ("transfer", "succeeded")]

    def test_an_operation_older_than_the_key_window_is_looked_up_first(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        Operation.objects.filter(payment=payment.pk, kind="transfer").update(
            created_at=timezone.now() - operations.KEY_WINDOW - timedelta(minutes=1)
        )
        sim_stripe.advance_time(int(operations.KEY_WINDOW.total_seconds()) + 3600 * 2)
        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        # Found by transfer_group: no new transfer under a forgotten key.
        assert [name for name, _ in sim_stripe.calls] == ["list_transfers"]
        assert len(stripe_books(sim_stripe, market.payment(payment.pk))["transfers"]) == 1


class TestTheJournalItself:
    def test_two_unresolved_operations_on_one_payment_are_impossible(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        Operation.objects.create(payment=payment, kind="transfer", idempotency_key="k1")
        with pytest.raises(IntegrityError), transaction.atomic():
            Operation.objects.create(payment=payment, kind="refund", idempotency_key="k2")

    def test_every_money_call_is_journaled_with_its_key_and_result(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.released_payment()
        (create, transfer) = payment.operations.order_by("created_at")
        assert (create.kind, create.status) == ("payment_intent", "succeeded")
        assert create.stripe_object_id == payment.stripe_payment_intent_id
        assert (transfer.kind, transfer.status, transfer.amount) == ("transfer", "succeeded", 9_000)
        assert transfer.stripe_object_id == payment.transfers.get().stripe_transfer_id
        (sent,) = stripe_books(sim_stripe, payment)["transfers"]
        assert sent["metadata"]["escrow_operation"] == transfer.idempotency_key

    def test_a_money_call_inside_a_transaction_is_refused(
        self, market, sim_stripe, separate_charges
    ):
        from django_escrow_connect.services.payments import release_payment

        payment = market.held_payment()
        with (
            pytest.raises(RuntimeError, match="inside a database transaction"),
            transaction.atomic(),
        ):
            release_payment(payment.pk, market.customer)

    def test_the_checking_gateway_refuses_a_money_call_inside_a_transaction(self, db):
        with pytest.raises(MoneyCallInTransaction), transaction.atomic():
            TransactionCheckingGateway().create_refund(
                idempotency_key="k", payment_intent="pi_x", amount=1, metadata={}
            )


class TestManualCapture:
    def test_a_crashed_capture_is_finished_by_the_payment_intent_webhook(
        self, settings, market, sim_stripe
    ):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.held_payment()
        sim_stripe.fail_next(
            "capture_payment_intent",
            TemporarilyUnavailable("worker killed", should_retry=True),
            after_effect=True,
        )
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code in (200, 503), response.content
        payment = market.payment(payment.pk)
        # payment_intent.succeeded (delivered by the simulated Stripe) settled it.
        assert payment.status == "released"
        assert journal(payment)[-1] == ("capture", "succeeded")
        assert_books_balanced(payment_id=payment.pk)

    def test_a_refund_counts_the_reversal_stripe_makes_without_its_webhook(
        self, settings, market, sim_stripe
    ):
        """A destination charge's refund reverses the transfer at Stripe; the
        refund's answer is enough to count it (transfer.reversed may never come)."""
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.released_payment()
        from django_escrow_connect import simulation as simulated

        previous = simulated.set_event_sink(lambda *args: None)  # every webhook lost
        try:
            response = market.post(
                market.staff, "payment-refund", {"amount": 5_000}, payment_id=payment.pk
            )
        finally:
            simulated.set_event_sink(previous)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        # Stripe reversed 5,000 of the 10,000 transfer and returned 500 of the
        # fee: the doer gave back 4,500.
        assert (payment.amount_refunded, payment.amount_reversed) == (5_000, 4_500)
        assert_books_balanced(payment_id=payment.pk)


@contextmanager
def webhooks_lost() -> Iterator[None]:
    """Stripe's events of what happens inside are never delivered."""
    previous = simulated.set_event_sink(lambda *args: None)
    try:
        yield
    finally:
        simulated.set_event_sink(previous)


def run_reconcile(market: Any) -> str:
    """``escrow_reconcile``'s report; it exits non-zero when something failed."""
    out = StringIO()
    with market.capture(execute=True):
        try:
            call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=out)
        except CommandError as exc:
            out.write(f"[{exc}]")
    return out.getvalue()


def webhook_events(kind: str) -> list[str]:
    return list(
        swappable.load("WebhookEvent").objects.filter(type=kind).values_list("status", flat=True)
    )


class TestADisputeOpenedMeanwhile:
    """A dispute opens while Stripe's answer to a release or refund is unknown:
    what Stripe did is booked, and the dispute's close returns the payment to
    where those facts lead."""

    @pytest.mark.parametrize("won", [True, False], ids=["won", "lost"])
    def test_a_transfer_confirmed_during_the_dispute_is_booked_as_released(
        self, market, sim_stripe, separate_charges, won
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        dispute = open_dispute(market, payment)
        assert market.payment(payment.pk).status == "disputed"

        assert "transfer settled" in run_reconcile(market)
        payment = market.payment(payment.pk)
        # The doer has the 9,000: booked, while the payment stays frozen.
        assert (payment.status, payment.amount_transferred, payment.amount_released) == (
            "disputed",
            9_000,
            10_000,
        )
        assert payment.released_at is not None
        assert journal(payment) == [("transfer", "succeeded")]

        close_dispute(market, dispute, won=won)
        payment = market.payment(payment.pk)
        if not won:
            assert (payment.status, payment.amount_transferred) == ("dispute_lost", 9_000)
            return
        assert payment.status == "released"
        assert payment.task.payment_status == "payment_released"
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert "Nothing to reconcile." in run_reconcile(market)
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1
        assert_books_balanced(payment_id=payment.pk)

    def test_a_partial_release_confirmed_after_the_dispute_was_lost_releases_no_more(
        self, market, sim_stripe, separate_charges
    ):
        """What the lost dispute took (the 6,000 still held) is not released
        when the transfer of the 4,000 sent before it is confirmed."""
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_transfer", TemporarilyUnavailable("timed out"), after_effect=True
        )
        with webhooks_lost():
            response = market.post(
                market.customer, "payment-release", {"amount": 4_000}, payment_id=payment.pk
            )
        assert response.status_code == 503, response.content
        dispute = open_dispute(market, payment)
        close_dispute(market, dispute, won=False)
        assert market.payment(payment.pk).status == "dispute_lost"

        assert "transfer settled" in run_reconcile(market)
        shown = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert (
            shown["status"],
            shown["amount_transferred"],
            shown["amount_released"],
            shown["amount_held"],
            shown["amount_lost"],
        ) == ("dispute_lost", 3_600, 4_000, 0, 6_000)
        assert stripe_books(sim_stripe, payment)["transferred"] == 3_600
        assert_books_balanced(payment_id=payment.pk)

    def test_a_capture_confirmed_during_the_dispute_is_booked_as_released(
        self, settings, market, sim_stripe
    ):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.held_payment()
        sim_stripe.fail_next(
            "capture_payment_intent", TemporarilyUnavailable("timed out"), after_effect=True
        )
        with webhooks_lost():
            response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503, response.content
        dispute = open_dispute(market, payment)
        assert market.payment(payment.pk).status == "disputed"

        run_reconcile(market)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_transferred) == ("disputed", 9_000)
        assert journal(payment) == [("capture", "succeeded")]
        close_dispute(market, dispute, won=True)
        assert market.payment(payment.pk).status == "released"

    def test_a_release_never_made_is_not_sent_during_the_dispute(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=False)
        dispute = open_dispute(market, payment)
        sim_stripe.calls.clear()
        # Stripe is asked what it did, but the transfer is not sent again
        # while the dispute is open (the same key would make it now).
        run_reconcile(market)
        assert journal(market.payment(payment.pk))[0][1] != "succeeded"
        expire_lease(payment)
        run_reconcile(market)
        assert "create_transfer" not in money_calls(sim_stripe)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_transferred) == ("disputed", 0)
        assert journal(payment) == [("transfer", "failed")]
        assert stripe_books(sim_stripe, payment)["transfers"] == []

        close_dispute(market, dispute, won=True)
        assert market.payment(payment.pk).status == "held"
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_transferred) == ("released", 9_000)
        assert len(stripe_books(sim_stripe, payment)["transfers"]) == 1

    def test_a_refund_confirmed_during_an_inquiry_is_counted(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_refund", TemporarilyUnavailable("timed out"), after_effect=True
        )
        with webhooks_lost():
            response = market.post(
                market.doer, "payment-refund", {"amount": 3_000}, payment_id=payment.pk
            )
        assert response.status_code == 503, response.content
        inquiry = open_dispute(market, payment, inquiry=True)
        assert market.payment(payment.pk).status == "disputed"

        run_reconcile(market)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("disputed", 3_000)
        assert journal(payment) == [("refund", "succeeded")]

        close_dispute(market, inquiry, won=True)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded, payment.amount_held) == (
            "held",
            3_000,
            7_000,
        )
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert stripe_books(sim_stripe, payment)["transferred"] == 6_300
        assert_books_balanced(payment_id=payment.pk)

    def test_a_dashboard_refund_during_an_inquiry_refunds_the_payment(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        open_dispute(market, payment, inquiry=True)
        # The API refuses a refund while a dispute is open...
        response = market.post(market.doer, "payment-refund", payment_id=payment.pk)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "transition_not_allowed"

        # ...but a refund made at Stripe counts; it also closes the inquiry.
        with market.capture(execute=True):
            SimulatedGateway().create_refund(
                payment_intent=payment.stripe_payment_intent_id,
                amount=10_000,
                idempotency_key="dashboard-refund",
                metadata={},
            )
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded, payment.amount_held) == (
            "refunded",
            10_000,
            0,
        )
        assert payment.task.payment_status == "refunded"
        assert_books_balanced(payment_id=payment.pk)

    def test_a_dashboard_refund_waits_for_an_unconfirmed_release(
        self, market, sim_stripe, separate_charges
    ):
        payment, _ = stage_crashed_release(market, sim_stripe, stripe_acted=True)
        with market.capture(execute=True):
            SimulatedGateway().create_refund(
                payment_intent=payment.stripe_payment_intent_id,
                amount=1_000,
                idempotency_key="dashboard-refund",
                metadata={},
            )
        # Whether it takes held or released money depends on the transfer.
        assert webhook_events("refund.created") == ["deferred"]
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("releasing", 0)

        run_reconcile(market)
        assert webhook_events("refund.created") == ["processed"]
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded, payment.amount_transferred) == (
            "partially_refunded",
            1_000,
            9_000,
        )
        assert payment.amount_released + payment.amount_refunded == payment.amount


class TestTwoInstallations:
    def test_payment_ids_differ_per_installation(self, settings, market, sim_stripe):
        from django_escrow_connect.services.payments import payment_id_for

        task = market.task()
        default = payment_id_for(task, 0)
        configure(settings, IDEMPOTENCY_KEY_PREFIX="staging")
        assert payment_id_for(task, 0) != default

    def test_an_event_about_another_installations_refund_is_ignored(
        self, settings, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        from django_escrow_connect.gateway.types import RefundSnapshot
        from django_escrow_connect.services.stripe_objects import apply_refund

        foreign = RefundSnapshot(
            id="re_foreign",
            amount=2_000,
            currency="usd",
            status="succeeded",
            payment_intent="pi_foreign",
            metadata={"escrow_payment_id": str(payment.pk), "escrow_namespace": "staging"},
        )
        with transaction.atomic():
            assert apply_refund(foreign) is None
        assert market.payment(payment.pk).amount_refunded == 0
