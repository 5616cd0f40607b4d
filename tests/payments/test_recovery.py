"""When Stripe's answer is lost or negative: nothing moves twice, nothing is
forgotten, and the release can be finished by a retry or by reconcile."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_escrow_connect import simulation
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    InvalidRequest,
    TemporarilyUnavailable,
)

from .conftest import (
    MONEY_CALLS,
    age,
    calls,
    configure,
    money_calls,
    second_lost_outcome_raises,
)
from .test_milestones import held, partner, split, team, three_milestones  # noqa: F401  (fixtures)


def timeout():
    return TemporarilyUnavailable("Request timed out", http_status=None)


def transfers_in_stripe(sim_stripe, payment):
    return [
        t for t in sim_stripe.transfers.values() if t["transfer_group"] == payment.transfer_group
    ]


@pytest.fixture
def separate_charges(settings, sim_stripe):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)


def reconcile(*args):
    out, err = StringIO(), StringIO()
    call_command("escrow_reconcile", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


class TestTransferAnswerLost:
    """Stripe made the transfer, then the connection dropped."""

    def crash(self, market, sim_stripe):
        payment = market.held_payment()
        sim_stripe.fail_next("create_transfer", timeout(), after_effect=True)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "operation_pending"
        payment = market.payment(payment.pk)
        assert payment.status == "releasing"
        (row,) = payment.transfers.all()
        assert (row.status, row.stripe_transfer_id) == ("pending", "")
        assert len(transfers_in_stripe(sim_stripe, payment)) == 1
        return payment

    def test_a_retry_finishes_the_release_with_exactly_one_transfer(
        self, market, sim_stripe, separate_charges
    ):
        payment = self.crash(market, sim_stripe)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        (sent,) = transfers_in_stripe(sim_stripe, payment)
        (row,) = payment.transfers.all()
        assert (row.status, row.stripe_transfer_id) == ("created", sent["id"])
        assert payment.task.payment_status == "payment_released"
        assert sim_stripe.balances[market.doer_account.stripe_account_id] == {"usd": 9_000}

    def test_reconcile_finds_the_transfer_without_sending_another(
        self, market, sim_stripe, separate_charges
    ):
        payment = self.crash(market, sim_stripe)
        sim_stripe.calls.clear()
        dry = reconcile("--dry-run", "--older-than", "0")
        assert f"{payment.pk}: would settle transfer " in dry
        assert market.payment(payment.pk).status == "releasing"

        with market.capture(execute=True):
            output = reconcile("--older-than", "0")
        assert f"{payment.pk}: releasing -> released" in output
        assert money_calls(sim_stripe) == []
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        assert payment.amount_transferred == 9_000
        (row,) = payment.transfers.all()
        assert row.status == "created"
        assert len(transfers_in_stripe(sim_stripe, payment)) == 1
        assert "Nothing to reconcile." in reconcile("--older-than", "0")

    def test_reconcile_leaves_recent_payments_alone(self, market, sim_stripe, separate_charges):
        payment = self.crash(market, sim_stripe)
        assert "Nothing to reconcile." in reconcile()  # default: 30 minutes
        assert market.payment(payment.pk).status == "releasing"
        # --payment reaches one payment whatever its age.
        with market.capture(execute=True):
            assert "releasing -> released" in reconcile("--payment", str(payment.pk))


class TestTransferNeverSent:
    """The request never reached Stripe (a timeout before it was sent)."""

    def test_reconcile_sends_it_with_the_same_key(self, market, sim_stripe, separate_charges):
        payment = market.held_payment()
        sim_stripe.fail_next("create_transfer", timeout())
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503
        assert transfers_in_stripe(sim_stripe, payment) == []
        (row,) = market.payment(payment.pk).transfers.all()
        sim_stripe.calls.clear()
        with market.capture(execute=True):
            output = reconcile("--older-than", "0")
        assert "releasing -> released" in output
        assert money_calls(sim_stripe) == ["create_transfer"]
        (_, params) = next(c for c in sim_stripe.calls if c[0] == "create_transfer")
        assert params["idempotency_key"] == row.idempotency_key
        assert len(transfers_in_stripe(sim_stripe, payment)) == 1


class TestTransferRefused:
    def test_insufficient_balance_records_an_incident_and_keeps_the_money_held(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_transfer",
            BalanceInsufficient(
                "Insufficient funds.", code="balance_insufficient", http_status=400
            ),
        )
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "release_failed"
        payment = market.payment(payment.pk)
        assert payment.status == "held"
        assert payment.release_attempts == 1
        (incident,) = payment.transfer_incidents.all()
        assert (incident.kind, incident.code) == ("transfer_failed", "balance_insufficient")
        (failed,) = payment.transfers.all()
        assert failed.status == "failed"
        assert transfers_in_stripe(sim_stripe, payment) == []

        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        (_, params) = next(c for c in sim_stripe.calls if c[0] == "create_transfer")
        assert params["idempotency_key"] != failed.idempotency_key
        assert params["idempotency_key"].endswith(":1")
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        assert [t.status for t in payment.transfers.order_by("created_at")] == [
            "failed",
            "created",
        ]
        assert len(transfers_in_stripe(sim_stripe, payment)) == 1


class TestReversalAnsweredWithA500:
    """A refund after release whose reversal Stripe answered with a 500 (stored
    under its key): ``escrow_reconcile`` sends it again under a new key."""

    def test_reconcile_makes_the_reversal_and_then_the_refund(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.released_payment()
        error = TemporarilyUnavailable("Internal error", http_status=500)
        sim_stripe.fail_next("create_transfer_reversal", error, stored=True)
        response = market.post(
            market.doer, "payment-refund", {"amount": 5_000}, payment_id=payment.pk
        )
        assert response.status_code == 503, response.content
        with market.capture(execute=True):
            reconcile("--older-than", "0")
        payment = market.payment(payment.pk)
        assert (payment.amount_reversed, payment.amount_refunded) == (4_500, 5_000)
        assert payment.status == "partially_refunded"
        assert sim_stripe.charges[payment.stripe_charge_id]["amount_refunded"] == 5_000

    def test_reconcile_reports_the_refund_stripe_refused_after_the_reversal(
        self, market, sim_stripe, separate_charges
    ):
        """The reversal's answer was lost after Stripe made it: reconcile finds
        it, then sends the refund it made room for, which Stripe refuses. The
        report names that refund and Stripe's reason, not the reversal (which
        succeeded) as the failure."""
        payment = market.released_payment()
        sim_stripe.fail_next("create_transfer_reversal", timeout(), after_effect=True)
        response = market.post(
            market.doer, "payment-refund", {"amount": 5_000}, payment_id=payment.pk
        )
        assert response.status_code == 503, response.content
        refusal = InvalidRequest("Charge is disputed.", code="charge_disputed", http_status=400)
        sim_stripe.fail_next("create_refund", refusal)

        out = StringIO()
        with market.capture(execute=True), pytest.raises(CommandError):
            call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=out)

        (refund,) = market.payment(payment.pk).refunds.all()
        assert refund.status == "failed"
        assert (
            f"{payment.pk}: refund {refund.idempotency_key}: failed (released -> released: "
            "Stripe refused to refund the payment: Charge is disputed.)"
        ) in out.getvalue().splitlines()


class TestTransferAnsweredWithA500:
    """A release whose transfer Stripe answered with a 500 stored under its
    key: ``escrow_reconcile`` finds nothing at Stripe and sends the transfer
    again under the next key. Its report names that new attempt, the key to
    look for at Stripe and in the journal, not the first one (``failed``,
    ``not_made``)."""

    @pytest.mark.parametrize("again", ["made", "lost"])
    def test_reconcile_names_the_attempt_under_the_new_key(
        self, market, sim_stripe, separate_charges, again
    ):
        payment = market.held_payment()
        error = TemporarilyUnavailable("Internal error", http_status=500)
        sim_stripe.fail_next("create_transfer", error, stored=True)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503, response.content
        (first,) = payment.operations.filter(kind="transfer")
        if again == "lost":
            sim_stripe.fail_next("create_transfer", timeout())

        out = StringIO()
        with market.capture(execute=True):
            if again == "made":
                call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=out)
            else:
                with pytest.raises(CommandError):
                    call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=out)

        old, new = payment.operations.filter(kind="transfer").order_by("created_at")
        assert (old.pk, old.status, old.error_code) == (first.pk, "failed", "not_made")
        assert new.idempotency_key.endswith(":transfer:1")
        lines = out.getvalue().splitlines()
        assert not [line for line in lines if old.idempotency_key in line]
        if again == "made":
            assert new.status == "succeeded"
            assert (
                f"{payment.pk}: releasing -> released (transfer {new.idempotency_key}: succeeded)"
            ) in lines
        else:
            # Still unresolved under its new key: not a definite failure.
            assert (new.status, market.payment(payment.pk).status) == ("unknown", "releasing")
            assert (
                f"{payment.pk}: settle transfer {new.idempotency_key} failed "
                "(The request was sent but Stripe did not confirm it; retrying is safe.)"
            ) in lines


class TestCaptureAnswerLost:
    def test_reconcile_reads_the_intent_and_releases(self, market, sim_stripe, settings):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.held_payment()
        sim_stripe.fail_next("capture_payment_intent", timeout(), after_effect=True)
        with market.capture(execute=False):
            # The capture's own webhook is lost too: only reconcile can tell.
            response = market.client(market.customer).post(
                f"/escrow/payments/confirm/{payment.pk}/", {}, format="json"
            )
        assert response.status_code == 503
        assert market.payment(payment.pk).status == "releasing"
        sim_stripe.calls.clear()
        with market.capture(execute=True):
            output = reconcile("--older-than", "0")
        assert "releasing -> released" in output
        assert money_calls(sim_stripe) == []
        assert market.payment(payment.pk).status == "released"


class TestCapturedInTheDashboard:
    """A capture made outside the app for less than the authorisation."""

    def assert_released_for_what_was_captured(self, market, payment):
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        assert (payment.amount_captured, payment.amount_released, payment.amount_held) == (
            4_000,
            4_000,
            0,
        )
        # Stripe transferred the 4,000 and took the 1,000 fee back from it.
        assert (payment.amount_transferred, payment.platform_fee) == (3_000, 1_000)
        (incident,) = payment.incidents.all()
        assert incident.kind == "amount_mismatch"
        assert "captured for 4000 usd outside the app" in incident.message
        assert "released the other 6000 to the customer" in incident.message
        return payment

    def test_a_partial_capture_is_booked_as_the_release_of_what_was_captured(
        self, market, sim_stripe, settings
    ):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.held_payment(amount=10_000)
        market.capture_in_dashboard(payment, 4_000)
        self.assert_released_for_what_was_captured(market, payment)
        # Seen again (reconcile reads the PaymentIntent): booked once, one incident.
        with market.capture(execute=True):
            reconcile("--older-than", "0", "--payment", str(payment.pk))
        self.assert_released_for_what_was_captured(market, payment)

    def test_the_apps_capture_whose_answer_was_lost_is_settled_by_the_partial_one(
        self, market, sim_stripe, settings
    ):
        # No process is still sending the capture once it answered.
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, MONEY_OPERATION_LEASE_SECONDS=0)
        payment = market.held_payment(amount=10_000)
        # The app's capture failed at Stripe with a 500 (no effect); the
        # dashboard's succeeded (its webhook lost too), so reconcile looks the
        # capture up and finds the PaymentIntent succeeded.
        error = TemporarilyUnavailable("Internal error", http_status=500)
        sim_stripe.fail_next("capture_payment_intent", error, stored=True)
        with market.capture(execute=False):
            response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503
        market.capture_in_dashboard(payment, 4_000, webhook=False)
        sim_stripe.calls.clear()
        with market.capture(execute=True):
            output = reconcile("--older-than", "0")
        assert "releasing -> released" in output
        # Looked up, not sent again.
        assert money_calls(sim_stripe) == []
        payment = self.assert_released_for_what_was_captured(market, payment)
        # The app's own call made nothing; Stripe's capture is what was booked.
        capture = payment.operations.get(kind="capture")
        assert (capture.status, capture.error_code) == ("failed", "captured_outside_app")

    def test_a_hold_whose_capture_was_never_heard_of_is_booked_by_capture_expiry(
        self, market, sim_stripe, settings
    ):
        # A payment still held although Stripe captured part of it (its events
        # were lost, or an earlier version left it held with an incident):
        # once its deadline passes, escrow_capture_expiry reads the
        # PaymentIntent and books what Stripe did.
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.held_payment(amount=10_000)
        market.capture_in_dashboard(payment, 4_000, webhook=False)
        assert market.payment(payment.pk).status == "held"
        type(payment).objects.filter(pk=payment.pk).update(
            capture_before=timezone.now() - timedelta(hours=1)
        )
        out = StringIO()
        with market.capture(execute=True):
            call_command("escrow_capture_expiry", stdout=out)
        assert f"{payment.pk}: held -> released" in out.getvalue()
        self.assert_released_for_what_was_captured(market, payment)


class TestPaymentOutcomeLost:
    def test_reconcile_applies_a_payment_whose_webhook_never_came(self, market, sim_stripe):
        from django_escrow_connect.simulation import SimulatedGateway

        body = market.create(market.task()).json()
        payment = market.payment(body["payment_id"])
        with market.capture(execute=False):  # the webhook is lost
            SimulatedGateway().confirm_payment_intent(payment.stripe_payment_intent_id, "success")
        assert market.payment(payment.pk).status == "awaiting_payment"
        assert f"{payment.pk}: would apply PaymentIntent (succeeded)" in reconcile(
            "--dry-run", "--older-than", "0"
        )
        with market.capture(execute=True):
            output = reconcile("--older-than", "0")
        assert f"{payment.pk}: awaiting_payment -> held" in output
        assert market.payment(payment.pk).status == "held"

    def test_an_unpaid_payment_is_not_reported(self, market, sim_stripe):
        market.create(market.task())
        assert "Nothing to reconcile." in reconcile("--dry-run", "--older-than", "0")


def test_a_stripe_outage_during_reconcile_is_reported_and_exits_non_zero(
    market, sim_stripe, separate_charges
):
    from django.core.management.base import CommandError

    payment = market.held_payment()
    sim_stripe.fail_next("create_transfer", timeout(), after_effect=True)
    market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    sim_stripe.fail_next("list_transfers", timeout())
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("escrow_reconcile", "--older-than", "0", stdout=StringIO(), stderr=err)
    assert f"{payment.pk}: settle transfer " in err.getvalue()
    assert "Stripe cannot be asked" in err.getvalue()
    assert market.payment(payment.pk).status == "releasing"


def test_reconcile_stopped_by_an_error_prints_what_it_did_before(market, sim_stripe, monkeypatch):
    """The first payment was moved to held and committed, but the lines were
    printed once the run was over: the cron log showed only the traceback."""
    first, second = second_lost_outcome_raises(market, monkeypatch)
    out, err = StringIO(), StringIO()
    with market.capture(execute=True), pytest.raises(ValueError, match="a bug in the look-up"):
        call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=err)
    assert out.getvalue() == f"{first.pk}: awaiting_payment -> held (PaymentIntent succeeded)\n"
    assert "Stopped by the error below after 1 changed; the lines above are done." in (
        err.getvalue()
    )
    assert market.payment(first.pk).status == "held"
    assert market.payment(second.pk).status == "awaiting_payment"


def test_reconcile_refuses_a_malformed_payment_id(market):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a payment id"):
        reconcile("--payment", "nope")


def test_reconcile_refuses_a_period_beyond_any_date(market):
    """``--older-than`` past what a date holds was an ``OverflowError``'s traceback."""
    from django.core.management.base import CommandError

    for args in (["--older-than", "9999999999999"], ["--older-than", "9999999999999", "--dry-run"]):
        with pytest.raises(CommandError, match="out of range"):
            reconcile(*args)


def test_abandoned_checkouts_are_not_looked_up_forever(market, sim_stripe):
    from datetime import timedelta

    from django.utils import timezone

    from django_escrow_connect import swappable

    body = market.create(market.task()).json()
    swappable.load("EscrowPayment").objects.filter(pk=body["payment_id"]).update(
        updated_at=timezone.now() - timedelta(days=31)
    )
    sim_stripe.calls.clear()
    assert "Nothing to reconcile." in reconcile("--older-than", "0")
    assert sim_stripe.calls == []


@pytest.mark.parametrize("strategy", [SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE])
def test_every_key_carries_the_installation_s_prefix(market, sim_stripe, settings, strategy):
    """Two installations sharing a Stripe account never send each other's keys."""
    configure(settings, ESCROW_STRATEGY=strategy, IDEMPOTENCY_KEY_PREFIX="staging")
    payment = market.held_payment()
    confirm = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert confirm.status_code == 200, confirm.content
    refund = market.post(market.doer, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)
    assert refund.status_code in (200, 201), refund.content

    keys = [params["idempotency_key"] for name, params in sim_stripe.calls if name in MONEY_CALLS]
    assert len(keys) >= 3  # create, release, refund (and the reversal)
    assert all(key.startswith(f"staging:payment:{payment.pk}:") for key in keys), keys


# --------------------------------------------------------------------------
# Operator drills: each failure recovered exactly as docs/recovery.md says,
# with Stripe's events delivered through the package's real webhook receiver.
# --------------------------------------------------------------------------


@pytest.fixture
def real_webhooks(separate_charges, sim_stripe):
    """Every event of the simulated Stripe reaches the webhook receiver, as in production."""
    from django_escrow_connect import simulation

    previous = simulation.set_event_sink(None)
    yield sim_stripe
    simulation.set_event_sink(previous)


def stripe_books(sim_stripe, payment):
    transfers = transfers_in_stripe(sim_stripe, payment)
    return {
        "transferred": sum(t["amount"] for t in transfers),
        "reversed": sum(t["amount_reversed"] for t in transfers),
        "refunded": sim_stripe.charges[payment.stripe_charge_id]["amount_refunded"],
    }


def books_of(shown):
    """A payment's books as the API shows them; they add up to what was charged."""
    books = (
        shown["status"],
        shown["amount_released"],
        shown["amount_refunded"],
        shown["amount_held"],
        shown["amount_lost"],
    )
    assert sum(books[1:]) == shown["amount"], books
    return books


def held_gauge():
    """The ``escrow_connect.payments.held`` gauges: (count, amount) per currency."""
    from django_escrow_connect.observability import metrics_snapshot

    return [(row["count"], row["amount"]) for row in metrics_snapshot()["payments_held"]]


def audit():
    out = StringIO()
    call_command("escrow_audit", stdout=out, stderr=StringIO())
    return out.getvalue()


class TestOperatorDrills:
    def test_events_missed_while_the_endpoint_was_down_for_three_days(self, market, real_webhooks):
        """recovery.md, *When the webhook endpoint was down*: fetch what was
        missed, then reconcile and audit."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        released = market.released_payment()
        unpaid = market.create(market.task(amount=5_000)).json()["payment_id"]
        missed = []
        simulation.set_event_sink(lambda *delivery: missed.append(delivery))
        try:
            # While the endpoint answers nothing: a customer pays, another
            # disputes a released payment, the doer's account is restricted.
            market.pay(unpaid)
            with market.capture(execute=True):
                gateway.open_dispute(released.stripe_charge_id)
                gateway.require_information(market.doer_account.stripe_account_id)
        finally:
            simulation.set_event_sink(None)
        assert missed
        assert market.payment(unpaid).status == "awaiting_payment"
        assert market.payment(released.pk).status == "released"

        out = StringIO()
        with market.capture(execute=True):
            call_command(
                "escrow_fetch_missed_events", "--since", "3d", "--all-accounts", stdout=out
            )
        assert market.payment(unpaid).status == "held"
        assert market.payment(released.pk).status == "disputed"
        market.doer_account.refresh_from_db()
        assert market.doer_account.status == "restricted"
        assert "Nothing to reconcile." in reconcile("--older-than", "0")
        assert "The books agree with Stripe." in audit()

    def test_a_transfer_refused_for_a_lost_transfers_capability(
        self, market, real_webhooks, client
    ):
        """recovery.md, *When a transfer fails*: the account's webhook was
        missed, Stripe refuses; refresh the account, the doer onboards, confirm."""
        from django.urls import reverse

        from django_escrow_connect import simulation, swappable

        gateway = simulation.SimulatedGateway()
        account = market.doer_account
        payment = market.held_payment()
        with market.capture(execute=False):  # its events never arrive
            gateway.require_information(account.stripe_account_id)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "release_failed"
        payment = market.payment(payment.pk)
        assert payment.status == "held"
        (incident,) = payment.transfer_incidents.all()
        assert incident.code == "insufficient_capabilities_for_transfer"
        account.refresh_from_db()
        assert account.status == "verified"  # the app could not know

        # Staff: Connected accounts -> Refresh from Stripe.
        market.staff.is_superuser = True
        market.staff.save()
        client.force_login(market.staff)
        Account = swappable.load("ConnectedAccount")
        changelist = reverse(
            f"admin:{Account._meta.app_label}_{Account._meta.model_name}_changelist"
        )
        data = {"action": "refresh_account", "_selected_action": [str(account.pk)]}
        with market.capture(execute=True):
            client.post(changelist, {**data, "confirm": "yes", "note": "release refused"})
        account.refresh_from_db()
        assert (account.status, account.can_transfer) == ("restricted", False)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.json()["error"]["code"] == "account_not_ready"

        # The doer finishes onboarding (its webhooks arrive); confirm again.
        with market.capture(execute=True):
            gateway.complete_onboarding(account.stripe_account_id)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        assert stripe_books(real_webhooks, payment)["transferred"] == 9_000
        assert sorted(t.status for t in payment.transfers.all()) == ["created", "failed"]

    def test_payouts_disabled_does_not_hold_a_release(self, market, real_webhooks):
        """A `restricted` account whose transfers capability is active still
        receives the transfer; the money waits in its Stripe balance."""
        from django_escrow_connect.services.accounts import refresh_account

        account = market.doer_account
        payment = market.held_payment()
        real_webhooks.accounts[account.stripe_account_id]["payouts_enabled"] = False
        with market.capture(execute=True):
            refresh_account(account)
        account.refresh_from_db()
        assert (account.status, account.can_transfer) == ("restricted", True)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert real_webhooks.balances[account.stripe_account_id] == {"usd": 9_000}

    def test_a_lost_dispute_after_release(self, market, real_webhooks):
        """recovery.md, *When a dispute is lost*: the platform bears it; a
        reversal made in the Stripe dashboard is booked from its webhook."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.released_payment()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id)
            gateway.close_dispute(dispute.id, won=False)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_transferred, payment.amount_reversed) == (
            "dispute_lost",
            9_000,
            0,
        )
        response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "transition_not_allowed"
        assert "The books agree with Stripe." in audit()

        (transfer,) = payment.transfers.all()
        with market.capture(execute=True):
            gateway.create_transfer_reversal(
                transfer_id=transfer.stripe_transfer_id,
                amount=9_000,
                idempotency_key="dashboard-reversal",
                metadata={},
            )
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_reversed) == ("dispute_lost", 9_000)
        (incident,) = payment.transfer_incidents.all()
        assert incident.kind == "transfer_reversed"
        assert stripe_books(real_webhooks, payment)["reversed"] == 9_000
        assert "The books agree with Stripe." in audit()

    def test_a_dispute_lost_while_held_leaves_nothing_in_escrow(self, market, real_webhooks):
        """recovery.md, *When a dispute is lost*, before the release: Stripe
        took the held money, so the payment holds nothing (amount_lost)
        wherever it is read; a won appeal gives it back to escrow."""
        import json

        from django_escrow_connect import simulation
        from django_escrow_connect.observability import metrics_snapshot

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id)
            gateway.close_dispute(dispute.id, won=False)

        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 0, 0, 0, 10_000)
        (row,) = market.get(market.doer, "payment-list").json()["results"]
        assert books_of(row) == books_of(detail)
        customer = market.get(market.customer, "dashboard-customer").json()
        assert [books_of(p) for p in customer["payments"]] == [books_of(detail)]
        assert (customer["in_escrow"], customer["spent"]) == ([], [])
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [books_of(p) for p in doer["payments"]] == [books_of(detail)]
        assert (doer["in_escrow"], doer["earnings"]) == ([], [])
        assert metrics_snapshot()["payments_held"] == []
        out = StringIO()
        call_command("escrow_report", "--format", "json", stdout=out)
        report = json.loads(out.getvalue())
        assert report["payments"]["by_status"] == {"dispute_lost": 1}
        assert report["open_disputes"]["count"] == 0
        assert "The books agree with Stripe." in audit()

        # Appealed: the money is still with the customer until the appeal is won.
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id, submitted=True)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 0, 0, 0, 10_000)
        with market.capture(execute=True):
            gateway.close_dispute(dispute.id, won=True)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("held", 0, 0, 10_000, 0)
        assert "The books agree with Stripe." in audit()

    def test_the_rest_a_partial_dispute_lost_left_is_released_to_the_doer(
        self, market, real_webhooks
    ):
        """recovery.md, *When a dispute is lost*, a partial dispute: 3,000 of
        10,000 held disputed and lost. The 7,000 left on the platform's
        balance goes to the doer by the ordinary release (less the fee on
        it); the payment stays dispute_lost, so the loss stays counted."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=3_000)
            gateway.close_dispute(dispute.id, won=False)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 0, 0, 7_000, 3_000)
        # Still held, and counted so: the doer's in_escrow is what the
        # release will send, the gauges count the payment and its 7,000.
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [(e["amount"], e["currency"]) for e in doer["in_escrow"]] == [(6_300, "usd")]
        assert held_gauge() == [(1, 7_000)]

        with market.capture(execute=True):
            response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert books_of(response.json()) == ("dispute_lost", 7_000, 0, 0, 3_000)
        payment = market.payment(payment.pk)
        assert (payment.amount_transferred, payment.platform_fee) == (6_300, 700)
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [6_300]
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [e["amount"] for e in doer["earnings"]] == [6_300]
        # Released: nothing held any more.
        assert (doer["in_escrow"], held_gauge()) == ([], [])
        assert "The books agree with Stripe." in audit()

        # Released once: asked again, nothing more moves.
        again = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert again.status_code == 409, again.content
        assert len(transfers_in_stripe(real_webhooks, payment)) == 1

        # An appeal won gives the 3,000 back to escrow (the issuer ruled for
        # the platform). No release sends it: the platform settles it with
        # the doer outside the app (recovery.md).
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id, submitted=True)
            gateway.close_dispute(dispute.id, won=True)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("released", 7_000, 0, 3_000, 0)
        with market.capture(execute=True):
            after_appeal = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert after_appeal.status_code == 200, after_appeal.content
        assert books_of(after_appeal.json()) == ("released", 7_000, 0, 3_000, 0)
        assert len(transfers_in_stripe(real_webhooks, payment)) == 1
        assert "The books agree with Stripe." in audit()

    def test_the_rest_a_lost_dispute_left_stays_held_while_stripe_refuses_or_answers_nothing(
        self, market, real_webhooks
    ):
        """The rest is counted held (the doer's in_escrow, the held gauges)
        after Stripe refused its transfer and while its transfer is in
        flight; once escrow_reconcile finishes the transfer it is in neither."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=3_000)
            gateway.close_dispute(dispute.id, won=False)

        def in_escrow():
            doer = market.get(market.doer, "dashboard-task-doer").json()
            return [e["amount"] for e in doer["in_escrow"]]

        real_webhooks.fail_next(
            "create_transfer",
            BalanceInsufficient(
                "Insufficient funds.", code="balance_insufficient", http_status=400
            ),
        )
        refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert refused.status_code == 409, refused.content
        assert (in_escrow(), held_gauge()) == ([6_300], [(1, 7_000)])

        real_webhooks.fail_next("create_transfer", timeout())
        pending = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert pending.status_code == 503, pending.content
        assert market.payment(payment.pk).status_before_dispute == "releasing"
        assert (in_escrow(), held_gauge()) == ([6_300], [(1, 7_000)])

        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 7_000, 0, 0, 3_000)
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [6_300]
        assert (in_escrow(), held_gauge()) == ([], [])

    @pytest.mark.parametrize("stored_500", [False, True], ids=["timeout", "stored-500"])
    def test_the_retried_confirm_of_the_rest_a_lost_dispute_left_answers_its_release(
        self, market, real_webhooks, stored_500
    ):
        """The rest's transfer timed out (503): confirming again finishes it
        with the same key and is answered 200 with the payment released, as
        any release already done; a confirm after it, which finishes nothing,
        is refused (409) as before. One transfer in all. After a 500 Stripe
        stored under its key, the retry finds nothing at Stripe and sends it
        under the next key: answered 200 the same (not refused because the
        first attempt is marked not made)."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=3_000)
            gateway.close_dispute(dispute.id, won=False)
        rest_sent_once_by_its_retry(market, real_webhooks, payment, stored_500, [6_300])

    @pytest.mark.parametrize("made", [True, False], ids=["transfer-made", "transfer-not-made"])
    @pytest.mark.parametrize("disputed", [3_000, 10_000], ids=["partial", "all"])
    def test_a_release_in_flight_when_a_dispute_is_lost_counts_what_it_sends(
        self, market, real_webhooks, made, disputed
    ):
        """recovery.md, *When a dispute is lost*: a release whose transfer
        timed out, then a dispute opened and lost. Until Stripe's answer is
        recorded the doer's in_escrow and the held gauges count the payment
        as the releasing payment it was: what its transfer sends (9,000) and
        what it takes out of escrow (10,000), not the rest a release after
        the loss would send (6,300 of the 7,000 a partial dispute left), nor
        nothing when the dispute took all of it. Reconciled, a transfer made
        is in earnings and nothing is held; one never made leaves the rest
        held, counted as the rest (if any)."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        real_webhooks.fail_next("create_transfer", timeout(), after_effect=made)
        # The transfer's events are late: its outcome stays unknown here.
        late = []
        previous = simulation.set_event_sink(lambda *delivery: late.append(delivery))
        try:
            pending = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        finally:
            simulation.set_event_sink(previous)
        assert pending.status_code == 503, pending.content
        assert bool(late) == made
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=disputed)
            gateway.close_dispute(dispute.id, won=False)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.status_before_dispute) == ("dispute_lost", "releasing")
        assert payment.operations.get(status="unknown").kind == "transfer"

        def in_escrow():
            doer = market.get(market.doer, "dashboard-task-doer").json()
            return [e["amount"] for e in doer["in_escrow"]]

        def prometheus():
            out = StringIO()
            call_command("escrow_metrics", "--format", "prometheus", stdout=out)
            return out.getvalue()

        assert (in_escrow(), held_gauge()) == ([9_000], [(1, 10_000)])
        assert 'escrow_connect_payments_held_amount{currency="usd"} 10000\n' in prometheus()

        if not made:
            # Not found at Stripe once no process can still be sending it:
            # never made, the rest is held again (the lookup only: nothing
            # is sent for a payment a dispute froze).
            Operation = payment.operations.model
            Operation.objects.filter(payment=payment.pk, status="unknown").update(
                lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        doer = market.get(market.doer, "dashboard-task-doer").json()
        if made:
            assert books_of(detail) == ("dispute_lost", 10_000, 0, 0, 0)
            assert [e["amount"] for e in doer["earnings"]] == [9_000]
            assert (in_escrow(), held_gauge()) == ([], [])
            assert "escrow_connect_payments_held_amount{" not in prometheus()
        elif disputed == 3_000:
            assert books_of(detail) == ("dispute_lost", 0, 0, 7_000, 3_000)
            assert doer["earnings"] == []
            assert (in_escrow(), held_gauge()) == ([6_300], [(1, 7_000)])
        else:
            assert books_of(detail) == ("dispute_lost", 0, 0, 0, 10_000)
            assert (doer["earnings"], in_escrow(), held_gauge()) == ([], [], [])
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == (
            [9_000] if made else []
        )
        assert "The books agree with Stripe." in audit()

    def test_the_rest_a_lost_dispute_left_waits_for_any_open_dispute(self, market, real_webhooks):
        """The rest is not released while a dispute of the payment is open:
        another one, or the lost one appealed (409, nothing sent)."""
        from django_escrow_connect import factories as kit
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=3_000)
            gateway.close_dispute(dispute.id, won=False)
        other = kit.make_dispute(market.payment(payment.pk), amount=1_000)

        def refused() -> None:
            answer = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
            assert answer.status_code == 409, answer.content
            assert answer.json()["error"]["code"] == "transition_not_allowed"

        refused()
        type(other).objects.filter(pk=other.pk).update(status="won")
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id)
        refused()
        assert transfers_in_stripe(real_webhooks, payment) == []
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 0, 0, 7_000, 3_000)

    def test_a_dispute_lost_after_a_partial_release_takes_what_was_held(
        self, market, real_webhooks
    ):
        """recovery.md, *When a dispute is lost*, after a partial release:
        escrow loses what it still held; the released part stays released
        (Stripe took the rest of the disputed amount from the platform)."""
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        payment = market.held_payment()
        response = market.post(
            market.customer, "payment-release", {"amount": 4_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id)
            gateway.close_dispute(dispute.id, won=False)
        assert dispute.amount == 10_000

        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 4_000, 0, 0, 6_000)
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [books_of(p) for p in doer["payments"]] == [books_of(detail)]
        assert doer["in_escrow"] == []
        # The doer keeps the release's transfer; the customer got all of it back.
        assert [e["amount"] for e in doer["earnings"]] == [3_600]
        customer = market.get(market.customer, "dashboard-customer").json()
        assert (customer["spent"], customer["in_escrow"]) == ([], [])
        assert "The books agree with Stripe." in audit()
        # Nothing of it can be released any more: refused as the docs say
        # (409), not answered as if nothing were left (200) or the amount
        # were too large (400).
        for body in ({}, {"amount": 1_000}):
            refused = market.post(market.customer, "payment-release", body, payment_id=payment.pk)
            assert refused.status_code == 409, (body, refused.content)
            assert refused.json()["error"]["code"] == "transition_not_allowed"
        after = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(after) == books_of(detail)

    def test_a_host_transition_receiver_raising_during_a_release(self, market, real_webhooks):
        """recovery.md, *When a host's receiver raises*: the transfer is made,
        its outcome rolled back; fix the receiver, then reconcile and replay."""
        from django_fsm.signals import post_transition

        from django_escrow_connect import swappable

        Payment = swappable.load("EscrowPayment")
        broken = [True]

        def receiver(sender, instance, name, source, target, **kwargs):
            if broken[0] and target == "released":
                raise RuntimeError("host bug")

        post_transition.connect(receiver, sender=Payment, weak=False)
        try:
            payment = market.held_payment()
            with pytest.raises(RuntimeError, match="host bug"):
                market.post(market.customer, "payment-confirm", payment_id=payment.pk)
            payment = market.payment(payment.pk)
            assert payment.status == "releasing"
            assert len(transfers_in_stripe(real_webhooks, payment)) == 1
            events = swappable.load("WebhookEvent").objects
            assert events.get(type="transfer.created").status == "failed"

            broken[0] = False
            real_webhooks.calls.clear()
            with market.capture(execute=True):
                assert "releasing -> released" in reconcile("--older-than", "0")
                call_command("escrow_replay_events", stdout=StringIO())
            # Stripe's own redelivery of the 500 it was answered.
            real_webhooks.deliver_undelivered()
        finally:
            post_transition.disconnect(receiver, sender=Payment)
        assert money_calls(real_webhooks) == []
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_transferred) == ("released", 9_000)
        assert events.get(type="transfer.created").status == "processed"
        assert len(transfers_in_stripe(real_webhooks, payment)) == 1

    def test_a_payment_intent_creation_whose_answer_was_lost(self, market, real_webhooks):
        """recovery.md, *The operation journal*: Stripe made the PaymentIntent,
        the answer was lost; its ``payment_intent.created`` event is ignored,
        and ``escrow_reconcile`` sends the creation again with the same key."""
        from django_escrow_connect import swappable

        task = market.task()
        real_webhooks.fail_next("create_payment_intent", timeout(), after_effect=True)
        response = market.create(task)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "operation_pending"
        events = swappable.load("WebhookEvent").objects
        assert events.get(type="payment_intent.created").status == "ignored"
        (payment,) = swappable.load("EscrowPayment").objects.filter(task_id=task.pk)
        assert payment.stripe_payment_intent_id == ""
        assert list(payment.operations.values_list("status", flat=True)) == ["unknown"]

        with market.capture(execute=True):
            out = reconcile("--payment", str(payment.pk))
        assert ":intent:0: succeeded" in out, out
        payment = market.payment(payment.pk)
        assert list(real_webhooks.payment_intents) == [payment.stripe_payment_intent_id]
        assert market.pay(payment.pk).status == "held"


def rest_sent_once_by_its_retry(market, real_webhooks, payment, stored_500, sent):
    """The transfer of the rest a lost dispute left (3,000 of 10,000 lost)
    times out, or Stripe stores a 500 under its key: the confirm is 503.
    Confirming again finishes it (the same key; after the stored 500 the
    next, the first attempt marked not made) and is answered 200 with the
    payment as it stands; a confirm after it, which finishes nothing, is
    refused (409). Stripe holds ``sent`` for the payment: the rest once."""
    if stored_500:
        error = TemporarilyUnavailable("Internal error", http_status=500)
        real_webhooks.fail_next("create_transfer", error, stored=True)
    else:
        real_webhooks.fail_next("create_transfer", timeout())
    pending = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert pending.status_code == 503, pending.content

    with market.capture(execute=True):
        retried = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert retried.status_code == 200, retried.content
    assert books_of(retried.json()) == ("dispute_lost", 7_000, 0, 0, 3_000)
    assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == sent

    again = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert again.status_code == 409, again.content
    assert again.json()["error"]["code"] == "transition_not_allowed"
    assert len(transfers_in_stripe(real_webhooks, payment)) == len(sent)
    assert "The books agree with Stripe." in audit()


class TestTheRestOfAPaymentReleasedInParts:
    """recovery.md, *When a dispute is lost*, lost after a partial release: a
    partial dispute lost after a release by amount leaves the rest held (the
    platform's money, the doer's due); it goes to the doer as the last
    release of the payment, which stays dispute_lost."""

    def lose_part(self, market, payment, amount=3_000):
        from django_escrow_connect import simulation

        gateway = simulation.SimulatedGateway()
        with market.capture(execute=True):
            dispute = gateway.open_dispute(payment.stripe_charge_id, amount=amount)
            gateway.close_dispute(dispute.id, won=False)
        return gateway, dispute

    def released_in_part_then_lost(self, market):
        """10,000 held, 4,000 released by amount (3,600 sent at a 10 % fee),
        then 3,000 disputed and lost: 3,000 left held."""
        payment = market.held_payment()
        response = market.post(
            market.customer, "payment-release", {"amount": 4_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        gateway, dispute = self.lose_part(market, payment)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 4_000, 0, 3_000, 3_000)
        return payment, gateway, dispute

    def in_escrow(self, market):
        doer = market.get(market.doer, "dashboard-task-doer").json()
        return [(e["amount"], e["currency"]) for e in doer["in_escrow"]]

    def test_the_rest_is_released_to_the_doer_once(self, market, real_webhooks, settings):
        payment, gateway, dispute = self.released_in_part_then_lost(market)
        # Only a release asked for sends it: not the automatic release.
        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        age(payment, held_at=timezone.now() - timedelta(days=30))
        with market.capture(execute=True):
            call_command("escrow_auto_release", stdout=StringIO(), stderr=StringIO())
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [3_600]
        # Counted held as the rest of a payment released at once is: the
        # gauges its 3,000, the doer's in_escrow what its release sends (the
        # fee on 7,000 released in all, 700, less the 400 the first took).
        assert self.in_escrow(market) == [(2_700, "usd")]
        assert held_gauge() == [(1, 3_000)]
        # The rest is all of it: a release by amount is refused (nothing sent).
        by_amount = market.post(
            market.customer, "payment-release", {"amount": 1_000}, payment_id=payment.pk
        )
        assert by_amount.status_code == 409, by_amount.content
        assert by_amount.json()["error"]["code"] == "transition_not_allowed"

        with market.capture(execute=True):
            response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert books_of(response.json()) == ("dispute_lost", 7_000, 0, 0, 3_000)
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [3_600, 2_700]
        payment = market.payment(payment.pk)
        assert (payment.amount_transferred, payment.platform_fee) == (6_300, 700)
        assert [(r.amount, r.platform_fee, r.status) for r in payment.releases.all()] == [
            (4_000, 400, "released"),
            (3_000, 300, "released"),
        ]
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [e["amount"] for e in doer["earnings"]] == [6_300]
        assert (doer["in_escrow"], held_gauge()) == ([], [])
        assert "The books agree with Stripe." in audit()

        # Released: asked again, refused (nothing left), nothing more moves.
        for body in ({}, {"amount": 1_000}):
            again = market.post(market.customer, "payment-release", body, payment_id=payment.pk)
            assert again.status_code == 409, (body, again.content)
            assert again.json()["error"]["code"] == "transition_not_allowed"
        assert len(transfers_in_stripe(real_webhooks, payment)) == 2

        # An appeal won gives the 3,000 back to escrow: the payment is
        # partially released again, and its release sends the last part.
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id, submitted=True)
            gateway.close_dispute(dispute.id, won=True)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("partially_released", 7_000, 0, 3_000, 0)
        # What the last release sends (its fee 1,000 on all 10,000 less the
        # 700 taken): the rest's release had left the fee at what was taken.
        assert self.in_escrow(market) == [(2_700, "usd")]
        with market.capture(execute=True):
            last = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert last.status_code == 200, last.content
        assert books_of(last.json()) == ("released", 10_000, 0, 0, 0)
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [
            3_600,
            2_700,
            2_700,
        ]
        assert "The books agree with Stripe." in audit()

    @pytest.mark.parametrize("stored_500", [False, True], ids=["timeout", "stored-500"])
    def test_the_retried_confirm_sends_the_rest_once(self, market, real_webhooks, stored_500):
        """The rest's transfer timed out (503): confirming again finishes it
        (the same key, or the next after a 500 Stripe stored) and is answered
        200; a confirm after it is refused (409). One transfer of the rest."""
        payment, _gateway, _dispute = self.released_in_part_then_lost(market)
        rest_sent_once_by_its_retry(market, real_webhooks, payment, stored_500, [3_600, 2_700])
        rest = market.payment(payment.pk).releases.get(position=1)
        assert (rest.status, [t.status for t in rest.transfers.all()]) == ("released", ["created"])

    def test_a_refused_transfer_of_the_rest_is_sent_again_and_counted_until_made(
        self, market, real_webhooks
    ):
        """Stripe refused the rest's transfer, then the next confirm timed out:
        escrow_reconcile sends it (its key); the doer's in_escrow counts it
        until it is made."""
        payment, _gateway, _dispute = self.released_in_part_then_lost(market)
        real_webhooks.fail_next(
            "create_transfer",
            BalanceInsufficient(
                "Insufficient funds.", code="balance_insufficient", http_status=400
            ),
        )
        refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert refused.status_code == 409, refused.content
        assert refused.json()["error"]["code"] == "release_failed"
        # Released (it left escrow, as any release in parts), not transferred:
        # the doer's in_escrow counts it as a share not sent yet; the gauges
        # count what is held (nothing).
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 7_000, 0, 0, 3_000)
        assert (self.in_escrow(market), held_gauge()) == ([(2_700, "usd")], [])

        real_webhooks.fail_next("create_transfer", timeout())
        pending = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert pending.status_code == 503, pending.content
        assert (self.in_escrow(market), held_gauge()) == ([(2_700, "usd")], [])

        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [3_600, 2_700]
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert (doer["in_escrow"], [e["amount"] for e in doer["earnings"]]) == ([], [6_300])
        assert "The books agree with Stripe." in audit()
        again = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert again.status_code == 409, again.content
        assert len(transfers_in_stripe(real_webhooks, payment)) == 2

    def test_an_appeal_won_while_the_rest_is_in_flight_releases_everything(
        self, market, real_webhooks
    ):
        """The rest's transfer timed out, then an appeal won gave the 3,000
        back: the retried confirm finishes the rest's transfer and, asked to
        release everything, releases what the appeal gave back too (it was
        answered 200 with 3,000 still held)."""
        payment, gateway, dispute = self.released_in_part_then_lost(market)
        real_webhooks.fail_next("create_transfer", timeout())
        pending = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert pending.status_code == 503, pending.content
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id, submitted=True)
            gateway.close_dispute(dispute.id, won=True)

        with market.capture(execute=True):
            retried = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert retried.status_code == 200, retried.content
        assert books_of(retried.json()) == ("released", 10_000, 0, 0, 0)
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [
            3_600,
            2_700,
            2_700,
        ]
        assert "The books agree with Stripe." in audit()

    def test_an_earlier_release_never_transferred_keeps_the_rest(self, market, real_webhooks):
        """Stripe refused the first release's transfer; then a partial dispute
        was lost. That release is never sent (settled by hand), and so the
        rest is not either: refused saying why (it said the payment could not
        be released), and neither the doer's in_escrow nor the gauges count
        it (they counted the rest for ever)."""
        payment = market.held_payment()
        real_webhooks.fail_next(
            "create_transfer",
            BalanceInsufficient(
                "Insufficient funds.", code="balance_insufficient", http_status=400
            ),
        )
        first = market.post(
            market.customer, "payment-release", {"amount": 4_000}, payment_id=payment.pk
        )
        assert first.status_code == 409, first.content
        self.lose_part(market, payment)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 4_000, 0, 3_000, 3_000)

        refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert refused.status_code == 409, refused.content
        assert refused.json()["error"]["code"] == "transition_not_allowed"
        assert "earlier release" in refused.json()["error"]["message"]
        assert transfers_in_stripe(real_webhooks, payment) == []
        assert (self.in_escrow(market), held_gauge()) == ([], [])

    @pytest.mark.parametrize("made", [True, False], ids=["transfer-made", "transfer-not-made"])
    def test_an_earlier_release_in_flight_counts_until_known_unsent(
        self, market, real_webhooks, made
    ):
        """The first release's transfer timed out, then a partial dispute was
        lost: until Stripe's answer is recorded that release may have been
        made, so the doer's in_escrow counts its share (3,600) and the rest
        (2,700), the gauges the rest held (3,000), as for a release in
        flight of a payment released at once. Reconciled: made, it is in
        earnings and the rest is counted (and released); never made, it is
        known unsent and neither counts any more."""
        from django_escrow_connect import simulation

        payment = market.held_payment()
        real_webhooks.fail_next("create_transfer", timeout(), after_effect=made)
        late = []
        previous = simulation.set_event_sink(lambda *delivery: late.append(delivery))
        try:
            first = market.post(
                market.customer, "payment-release", {"amount": 4_000}, payment_id=payment.pk
            )
        finally:
            simulation.set_event_sink(previous)
        assert first.status_code == 503, first.content
        self.lose_part(market, payment)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("dispute_lost", 4_000, 0, 3_000, 3_000)
        assert market.payment(payment.pk).operations.get(status="unknown").kind == "transfer"

        assert (self.in_escrow(market), held_gauge()) == ([(6_300, "usd")], [(1, 3_000)])

        if not made:
            Operation = market.payment(payment.pk).operations.model
            Operation.objects.filter(payment=payment.pk, status="unknown").update(
                lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        doer = market.get(market.doer, "dashboard-task-doer").json()
        if made:
            assert [e["amount"] for e in doer["earnings"]] == [3_600]
            assert (self.in_escrow(market), held_gauge()) == ([(2_700, "usd")], [(1, 3_000)])
            with market.capture(execute=True):
                rest = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
            assert rest.status_code == 200, rest.content
            assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [
                3_600,
                2_700,
            ]
        else:
            assert doer["earnings"] == []
            assert (self.in_escrow(market), held_gauge()) == ([], [])
            refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
            assert refused.status_code == 409, refused.content
            assert "earlier release" in refused.json()["error"]["message"]
            assert transfers_in_stripe(real_webhooks, payment) == []
        assert "The books agree with Stripe." in audit()

    def test_the_rest_waits_for_any_open_dispute(self, market, real_webhooks):
        payment, gateway, dispute = self.released_in_part_then_lost(market)
        with market.capture(execute=True):
            gateway.appeal_dispute(dispute.id)
        refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert refused.status_code == 409, refused.content
        assert refused.json()["error"]["code"] == "transition_not_allowed"
        assert [t["amount"] for t in transfers_in_stripe(real_webhooks, payment)] == [3_600]
        assert (self.in_escrow(market), held_gauge()) == ([], [])

    @pytest.mark.usefixtures("split")
    @pytest.mark.parametrize("terms", ["two-payees", "milestones"])
    def test_a_split_payment_or_milestones_stay_refused(
        self, market, real_webhooks, request, terms
    ):
        """Which payee's share or which milestone a loss took is not known:
        the rest of such a payment is not released (409, nothing sent)."""
        if terms == "two-payees":
            payment = held(market, payees=team(market, request.getfixturevalue("partner")))
            first = {"amount": 4_000}
        else:
            payment = held(market, milestones=three_milestones())
            first = {"milestone_id": payment.milestones.get(position=0).pk}
        response = market.post(market.customer, "payment-release", first, payment_id=payment.pk)
        assert response.status_code == 200, response.content
        sent = len(transfers_in_stripe(real_webhooks, payment))
        self.lose_part(market, payment)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert detail["status"] == "dispute_lost"
        assert detail["amount_held"] > 0
        refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert refused.status_code == 409, refused.content
        assert refused.json()["error"]["code"] == "transition_not_allowed"
        assert len(transfers_in_stripe(real_webhooks, payment)) == sent
        assert (self.in_escrow(market), held_gauge()) == ([], [])


@pytest.mark.parametrize("released", [False, True], ids=["held", "released"])
def test_a_full_refund_retried_after_a_dashboard_refund_takes_its_own_refund(
    market, real_webhooks, released
):
    """recovery.md, *How an unresolved operation is settled*: staff's full
    refund (no amount, no key) timed out before Stripe acted; then 2,000
    were refunded in the Stripe Dashboard (its webhook recorded), so the rest
    is 8,000, not the 10,000 in flight. Sent again, the full refund still
    asks for the rest and takes its own refund for its own (not 409
    refund_pending, which nothing but escrow_reconcile could settle): sent
    again with its key, Stripe refuses it (more than is left) and that is
    its answer; the next one refunds the 8,000 left. A partial refund
    without a key is still refused meanwhile, and nothing is refunded
    twice. After the release the reversal before the refund is the one in
    flight: the same."""
    from django_escrow_connect import simulation

    payment = market.released_payment() if released else market.held_payment()
    call = "create_transfer_reversal" if released else "create_refund"
    real_webhooks.fail_next(call, timeout())
    lost = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
    assert lost.status_code == 503, lost.content
    with market.capture(execute=True):
        simulation.SimulatedGateway().create_refund(
            idempotency_key="dashboard-refund",
            payment_intent=payment.stripe_payment_intent_id,
            amount=2_000,
            metadata={},
        )
    assert market.payment(payment.pk).amount_refunded == 2_000

    partial = market.post(market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)
    assert partial.status_code == 409, partial.content
    assert partial.json()["error"]["code"] == "refund_pending"

    with market.capture(execute=True):
        retried = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
    # Its own refund of 10,000, refused by Stripe: 2,000 were refunded since.
    assert retried.status_code == 409, retried.content
    assert retried.json()["error"]["code"] == "amount_too_large"
    charge = real_webhooks.charges[payment.stripe_charge_id]
    assert charge["amount_refunded"] == 2_000

    with market.capture(execute=True):
        again = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
    assert again.status_code == 200, again.content
    assert (again.json()["status"], again.json()["amount_refunded"]) == ("refunded", 10_000)
    assert charge["amount_refunded"] == 10_000
    refunds = [r for r in real_webhooks.refunds.values() if r["charge"] == charge["id"]]
    assert sorted(r["amount"] for r in refunds if r["status"] == "succeeded") == [2_000, 8_000]
    assert "The books agree with Stripe." in audit()


def test_a_full_refund_whose_rest_grew_does_not_take_a_smaller_refund_for_its_own(
    market, real_webhooks
):
    """3,000 refunded, then a full refund (7,000, no key) timed out; then the
    3,000 failed (``refund.failed``), giving the rest back: 10,000. A full
    refund asked again (no key) must not take the 7,000 in flight for its
    own: answered 200 with 3,000 still held, a release could pay the doer
    money the customer asked back. It is ``409 refund_pending``, as compared
    by amount; nothing more is refunded."""
    from django_escrow_connect import simulation

    payment = market.held_payment()
    first = market.post(market.staff, "payment-refund", {"amount": 3_000}, payment_id=payment.pk)
    assert first.status_code == 200, first.content
    (refund_id,) = [r["id"] for r in real_webhooks.refunds.values() if r["amount"] == 3_000]
    real_webhooks.fail_next("create_refund", timeout())
    lost = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
    assert lost.status_code == 503, lost.content
    with market.capture(execute=True):
        simulation.SimulatedGateway().settle_refund(refund_id, succeed=False)
    assert market.payment(payment.pk).amount_refunded == 0

    with market.capture(execute=True):
        retried = market.post(market.doer, "payment-refund", {}, payment_id=payment.pk)
    assert retried.status_code == 409, retried.content
    assert retried.json()["error"]["code"] == "refund_pending"
    charge = real_webhooks.charges[payment.stripe_charge_id]
    assert charge["amount_refunded"] == 0


def left_by_0_1(payment, amount):
    """A refund 0.1 sent with no journal whose answer was lost: ``pending``,
    no Stripe id, its key in no MoneyOperation (recovery.md, *What reconcile
    settles*)."""
    from django_escrow_connect.swappable import load

    return load("Refund").objects.create(
        payment=payment,
        idempotency_key="escrow-0.1-refund-lost",
        amount=amount,
        currency=payment.currency,
        status="pending",
    )


def made_by_0_1(market, payment, amount):
    """Make ``left_by_0_1``'s refund at Stripe, as 0.1 sent it (its key, the
    payment's ``metadata[escrow_payment_id]``, no ``escrow_operation``); its
    answer and its events lost: the app has recorded none of it."""
    with market.capture(execute=False):
        return simulation.SimulatedGateway().create_refund(
            idempotency_key="escrow-0.1-refund-lost",
            payment_intent=payment.stripe_payment_intent_id,
            amount=amount,
            metadata={
                "escrow_payment_id": str(payment.pk),
                "task_id": str(payment.task_id),
                "transfer_group": payment.transfer_group,
            },
        )


def refunds_at_stripe(store, payment):
    charge = store.charges[payment.stripe_charge_id]
    return sorted(r["amount"] for r in store.refunds.values() if r["charge"] == charge["id"])


def send_left_by_0_1(market, payment, amount, via):
    """What sends it: ``escrow_reconcile``, or a refund of that very amount
    without a key (the API). The API's answer, or None."""
    with market.capture(execute=True):
        if via == "reconcile":
            reconcile("--payment", str(payment.pk))
            return None
        return market.post(
            market.staff, "payment-refund", {"amount": amount}, payment_id=payment.pk
        )


def left_by_0_1_refused(market, payment, amount, via):
    """:func:`send_left_by_0_1` when Stripe refuses: ``escrow_reconcile``
    exits 1 (None), the API's answer is returned."""
    if via == "reconcile":
        with pytest.raises(CommandError):
            send_left_by_0_1(market, payment, amount, via)
        return None
    return send_left_by_0_1(market, payment, amount, via)


def assert_failed_for_the_doers_balance(row):
    """The 0.1 refund is ``failed``: the doer's balance could not return their
    share, so no refund was sent (and 0.1's was not found at Stripe)."""
    row.refresh_from_db()
    assert (row.status, row.failure_reason) == ("failed", "reversal_failed: balance_insufficient")


class TestARefundLeftBy0_1:
    """recovery.md, *What reconcile settles*: a refund 0.1 sent with no journal
    whose answer was lost is journaled with its own key and sent again, by
    escrow_reconcile or by a refund of that amount without a key; after a
    release the doer's share is reversed first, as for any refund."""

    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_a_partial_one_is_sent_once_and_its_row_settled(self, market, real_webhooks, via):
        """Reconcile asked the refund service for the rest, which is not the
        3,000 of this one: ``409 refund_pending`` on every run and the
        customer's 3,000 never sent back."""
        payment = market.held_payment()
        row = left_by_0_1(payment, 3_000)

        response = send_left_by_0_1(market, payment, 3_000, via)

        if response is not None:
            assert response.status_code == 200, response.content
        assert refunds_at_stripe(real_webhooks, payment) == [3_000]
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("held", 0, 3_000, 7_000, 0)
        row.refresh_from_db()
        assert (row.status, row.idempotency_key) == ("succeeded", "escrow-0.1-refund-lost")
        assert row.stripe_refund_id
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []
        assert "The books agree with Stripe." in audit()

    @pytest.mark.usefixtures("split")
    @pytest.mark.parametrize("payees", ["one-doer", "two-payees"])
    @pytest.mark.parametrize("amount", [10_000, 3_000], ids=["full", "partial"])
    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_one_of_a_released_payment_reverses_the_doers_share_first(
        self, market, real_webhooks, request, payees, amount, via
    ):
        """It was journaled and sent without the reversal every refund of a
        released payment makes first: the platform refunded the customer
        from its own balance and the doer kept the money. Now the reversal
        (each payee's, of a split payment), then the refund (with 0.1's
        key), each once; the payees and the fee end as after the same refund
        of a payment never touched by 0.1."""

        def released():
            if payees == "one-doer":
                return market.released_payment()
            payment = held(market, payees=team(market, request.getfixturevalue("partner")))
            confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
            assert confirmed.status_code == 200, confirmed.content
            return payment

        twin = released()
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            made = market.post(
                market.staff, "payment-refund", {"amount": amount}, payment_id=twin.pk
            )
        assert made.status_code == 200, made.content
        expected = money_calls(real_webhooks)
        assert expected[-1] == "create_refund"
        assert expected.count("create_transfer_reversal") == (1 if payees == "one-doer" else 2)
        payment = released()
        row = left_by_0_1(payment, amount)
        real_webhooks.calls.clear()

        response = send_left_by_0_1(market, payment, amount, via)

        if response is not None:
            assert response.status_code == 200, response.content
        assert money_calls(real_webhooks) == expected
        assert stripe_books(real_webhooks, payment) == stripe_books(real_webhooks, twin)
        assert refunds_at_stripe(real_webhooks, payment) == [amount]
        assert [t["amount_reversed"] for t in transfers_in_stripe(real_webhooks, payment)] == [
            t["amount_reversed"] for t in transfers_in_stripe(real_webhooks, twin)
        ]
        shown = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        twin_shown = market.get(market.customer, "payment-detail", payment_id=twin.pk).json()
        assert books_of(shown) == books_of(twin_shown)
        assert (shown["platform_fee"], shown["amount_reversed"]) == (
            twin_shown["platform_fee"],
            twin_shown["amount_reversed"],
        )
        row.refresh_from_db()
        assert (row.status, row.idempotency_key) == ("succeeded", "escrow-0.1-refund-lost")
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []
        assert "The books agree with Stripe." in audit()

    @pytest.mark.parametrize("strategy", ["separate", "manual"])
    def test_a_full_one_finished_by_a_refund_of_the_rest_reverses_too(
        self, market, real_webhooks, settings, strategy
    ):
        """A full refund 0.1 left, finished by a refund request without an
        amount (the rest, as a full refund is asked): the doer's share comes
        back with it as for a partial one, by a reversal first (separate
        charges and transfers) or with the refund (``reverse_transfer``, a
        destination charge); answered ``200 refunded``, no incident, the
        books agree, and reconcile has nothing left to do."""
        if strategy == "manual":
            configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.released_payment()
        row = left_by_0_1(payment, 10_000)
        real_webhooks.calls.clear()

        with market.capture(execute=True):
            response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)

        assert response.status_code == 200, response.content
        assert response.json()["status"] == "refunded"
        expected = {"separate": ["create_transfer_reversal", "create_refund"]}
        assert money_calls(real_webhooks) == expected.get(strategy, ["create_refund"])
        books = stripe_books(real_webhooks, payment)
        assert books["reversed"] == books["transferred"] > 0
        assert books["refunded"] == 10_000
        row.refresh_from_db()
        assert (row.status, row.idempotency_key) == ("succeeded", "escrow-0.1-refund-lost")
        payment = market.payment(payment.pk)
        assert not payment.transfer_incidents.exists()
        assert not payment.incidents.exists()
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []
        assert "The books agree with Stripe." in audit()

    def test_one_on_a_held_manual_capture_payment_fails_then_a_full_refund_voids(
        self, market, real_webhooks, settings
    ):
        """A refund 0.1 left on a manual-capture payment still held (an
        uncaptured authorisation): sent as a refund, which Stripe refuses
        (``payment_intent_unexpected_state``), so ``failed`` with a
        ``refund_failed`` incident and the hold untouched; a full refund
        staff send then voids the hold (docs/recovery.md)."""
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.held_payment()
        row = left_by_0_1(payment, 10_000)
        real_webhooks.calls.clear()

        with market.capture(execute=True), contextlib.suppress(CommandError):
            reconcile("--payment", str(payment.pk))

        row.refresh_from_db()
        assert row.status == "failed"
        assert "payment_intent_unexpected_state" in row.failure_reason
        assert money_calls(real_webhooks) == ["create_refund"]
        payment = market.payment(payment.pk)
        assert payment.status == "held"
        assert [i.kind for i in payment.incidents.all()] == ["refund_failed"]
        intents = real_webhooks.payment_intents
        assert intents[payment.stripe_payment_intent_id]["status"] == "requires_capture"

        real_webhooks.calls.clear()
        with market.capture(execute=True):
            response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "canceled"
        assert money_calls(real_webhooks) == ["cancel_payment_intent"]
        assert intents[payment.stripe_payment_intent_id]["status"] == "canceled"

    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_a_refused_reversal_makes_no_refund(self, market, real_webhooks, via):
        """As for any refund of a released payment: the doer's account cannot
        return the money, so nothing is refunded (``409 reversal_failed``,
        an incident); the refund is ``failed`` and not tried again."""
        payment = market.released_payment()
        row = left_by_0_1(payment, 3_000)
        # The doer already paid the money out: nothing left to reverse.
        real_webhooks.balances[market.doer_account.stripe_account_id]["usd"] = 0
        real_webhooks.calls.clear()

        response = left_by_0_1_refused(market, payment, 3_000, via)
        if response is not None:
            assert response.status_code == 409, response.content
            assert response.json()["error"]["code"] == "reversal_failed"

        assert money_calls(real_webhooks) == ["create_transfer_reversal"]
        # 0.1 may have made it: looked up after the refusal, not sent.
        assert calls(real_webhooks, "create_transfer_reversal", "list_refunds") == [
            "create_transfer_reversal",
            "list_refunds",
        ]
        assert refunds_at_stripe(real_webhooks, payment) == []
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("released", 0)
        (incident,) = payment.transfer_incidents.all()
        assert incident.kind == "reversal_failed"
        assert_failed_for_the_doers_balance(row)
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []
        assert payment.transfer_incidents.count() == 1

    def assert_made_by_0_1_recorded(self, market, store, payment, row, made):
        """0.1's refund found at Stripe after its reversal was refused: recorded
        as made (Stripe's id, the payment's refunded amount), never sent
        again; the ``reversal_failed`` incident stays open and says the doer
        kept the share the platform refunded."""
        assert refunds_at_stripe(store, payment) == [3_000]
        row.refresh_from_db()
        assert (row.status, row.stripe_refund_id) == ("succeeded", made.id)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("partially_refunded", 7_000, 3_000, 0, 0)
        (incident,) = market.payment(payment.pk).transfer_incidents.filter(kind="reversal_failed")
        assert incident.resolved_at is None
        assert made.id in incident.message
        assert "the doer kept the share" in incident.message
        store.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(store) == []
        assert market.payment(payment.pk).transfer_incidents.count() == 1
        # The books agree with Stripe; what escrow_audit still reports is the
        # fact the incident is about: the doer kept money refunded.
        out = StringIO()
        with pytest.raises(CommandError):
            call_command("escrow_audit", stdout=out, stderr=out)
        (divergence,) = [line for line in out.getvalue().splitlines() if line.startswith("  ")]
        kept = stripe_books(store, payment)
        kept = kept["transferred"] - kept["reversed"]
        assert f"doer_keeps_refunded_money: app {kept}, Stripe {kept} usd" in divergence

    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_a_refused_reversal_records_the_refund_0_1_made(self, market, real_webhooks, via):
        """0.1 made the refund (its answer lost); now its reversal is refused.
        Failed at once, the books said "failed" while Stripe had refunded
        the customer, and nothing converged them: it is looked up at Stripe
        after the refusal and recorded as made. The answer is still ``409
        reversal_failed``, saying the refund was made."""
        payment = market.released_payment()
        row = left_by_0_1(payment, 3_000)
        made = made_by_0_1(market, payment, 3_000)
        real_webhooks.balances[market.doer_account.stripe_account_id]["usd"] = 0
        real_webhooks.calls.clear()

        response = left_by_0_1_refused(market, payment, 3_000, via)
        if response is not None:
            assert response.status_code == 409, response.content
            error = response.json()["error"]
            assert error["code"] == "reversal_failed"
            assert "was made at Stripe" in error["message"]

        assert money_calls(real_webhooks) == ["create_transfer_reversal"]
        self.assert_made_by_0_1_recorded(market, real_webhooks, payment, row, made)
        assert market.payment(payment.pk).amount_reversed == 0

    @pytest.mark.parametrize("at_stripe", [True, False], ids=["made", "not-made"])
    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_a_lookup_cut_short_after_the_refusal_is_finished_by_the_next_run(
        self, market, real_webhooks, via, at_stripe
    ):
        """Stripe could not be asked after the refusal (as a crash between
        the refusal's commit and the lookup): the 0.1 refund is neither
        failed nor reversed for again; the next ``escrow_reconcile`` run
        looks it up and settles it from what Stripe says, nothing sent."""
        payment = market.released_payment()
        row = left_by_0_1(payment, 3_000)
        made = made_by_0_1(market, payment, 3_000) if at_stripe else None
        real_webhooks.balances[market.doer_account.stripe_account_id]["usd"] = 0
        real_webhooks.fail_next("list_refunds", timeout())
        real_webhooks.calls.clear()

        response = left_by_0_1_refused(market, payment, 3_000, via)
        if response is not None:
            assert response.status_code == 409, response.content
            assert response.json()["error"]["code"] == "reversal_failed"

        assert money_calls(real_webhooks) == ["create_transfer_reversal"]
        row.refresh_from_db()
        assert (row.status, row.stripe_refund_id) == ("pending", "")
        assert market.payment(payment.pk).amount_refunded == 0
        # A run while Stripe still cannot be asked: the lookup is left for
        # the next one (an error line), nothing reversed again.
        real_webhooks.fail_next("list_refunds", timeout())
        with market.capture(execute=True), pytest.raises(CommandError):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == ["create_transfer_reversal"]
        row.refresh_from_db()
        assert row.status == "pending"

        real_webhooks.calls.clear()
        with market.capture(execute=True), contextlib.suppress(CommandError):
            reconcile("--payment", str(payment.pk))

        assert money_calls(real_webhooks) == []
        assert "list_refunds" in calls(real_webhooks)
        if at_stripe:
            self.assert_made_by_0_1_recorded(market, real_webhooks, payment, row, made)
            return
        assert refunds_at_stripe(real_webhooks, payment) == []
        assert_failed_for_the_doers_balance(row)
        assert market.payment(payment.pk).amount_refunded == 0
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []
        assert market.payment(payment.pk).transfer_incidents.count() == 1

    def test_a_lookup_stripe_refuses_says_so_instead_of_try_again(
        self, market, real_webhooks, caplog
    ):
        """Stripe refuses the lookup itself (a 4xx: a restricted key without
        read access to refunds), not an outage: every later request answered
        ``409 operation_pending`` "try again shortly" for ever, hiding the
        cause. It still answers ``operation_pending`` (nothing is assumed
        about 0.1's refund, nothing sent), but with Stripe's reason, and
        an ERROR log line names it; once fixed, the next run settles it."""
        from django_escrow_connect.exceptions import GatewayPermissionDenied

        payment = market.released_payment()
        row = left_by_0_1(payment, 3_000)
        real_webhooks.balances[market.doer_account.stripe_account_id]["usd"] = 0
        refusal = GatewayPermissionDenied(
            "The provided key does not have the required permissions for this endpoint.",
            http_status=403,
            request_id="req_no_refund_read",
        )
        real_webhooks.fail_next("list_refunds", refusal)
        real_webhooks.fail_next("list_refunds", refusal)
        real_webhooks.calls.clear()
        first = send_left_by_0_1(market, payment, 3_000, "refund")
        assert first.status_code == 409, first.content
        assert first.json()["error"]["code"] == "reversal_failed"

        caplog.clear()
        with caplog.at_level("ERROR", logger="django_escrow_connect.payments"):
            again = send_left_by_0_1(market, payment, 3_000, "refund")

        assert again.status_code == 409, again.content
        error = again.json()["error"]
        assert error["code"] == "operation_pending"
        assert "Stripe refused to look it up" in error["message"]
        # Stripe's words (which may name the platform's key) only in the log.
        assert "permissions" not in error["message"]
        assert "try again shortly" not in error["message"]
        (logged,) = [r for r in caplog.records if r.levelname == "ERROR"]
        assert "req_no_refund_read" in logged.getMessage()
        assert refusal.message in logged.getMessage()
        assert money_calls(real_webhooks) == ["create_transfer_reversal"]
        row.refresh_from_db()
        assert (row.status, row.stripe_refund_id) == ("pending", "")

        with market.capture(execute=True), contextlib.suppress(CommandError):
            reconcile("--payment", str(payment.pk))
        assert_failed_for_the_doers_balance(row)
        assert money_calls(real_webhooks) == ["create_transfer_reversal"]

    def test_a_dashboard_refund_is_not_taken_for_one_waiting_to_be_looked_up(
        self, market, real_webhooks
    ):
        """A 0.1 refund whose lookup after the refused reversal was cut short
        waits for the next run. A refund of the same amount made meanwhile in
        the Stripe Dashboard (no ``escrow_payment_id``) was matched to it by
        its webhook: the 0.1 row took the Dashboard refund's id, its incident
        said 0.1's refund was made, and Stripe was never asked about 0.1's."""
        from django_escrow_connect import simulation

        payment = market.released_payment()
        row = left_by_0_1(payment, 3_000)
        real_webhooks.balances[market.doer_account.stripe_account_id]["usd"] = 0
        real_webhooks.fail_next("list_refunds", timeout())
        left_by_0_1_refused(market, payment, 3_000, "reconcile")
        row.refresh_from_db()
        assert row.status == "pending"

        with market.capture(execute=True):
            dashboard = simulation.SimulatedGateway().create_refund(
                idempotency_key="dashboard-refund",
                payment_intent=payment.stripe_payment_intent_id,
                amount=3_000,
                metadata={},
            )
        row.refresh_from_db()
        assert (row.status, row.stripe_refund_id) == ("pending", "")
        recorded = market.payment(payment.pk).refunds.get(stripe_refund_id=dashboard.id)
        assert recorded.pk != row.pk

        with market.capture(execute=True), contextlib.suppress(CommandError):
            reconcile("--payment", str(payment.pk))
        assert_failed_for_the_doers_balance(row)
        [incident] = market.payment(payment.pk).transfer_incidents.all()
        assert "was made at Stripe all the same" not in incident.message
        assert refunds_at_stripe(real_webhooks, payment) == [3_000]

    @pytest.mark.usefixtures("split")
    @pytest.mark.parametrize("at_stripe", [True, False], ids=["made", "not-made"])
    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_a_split_payment_s_refused_reversal_looks_the_refund_up(
        self, market, real_webhooks, request, via, at_stripe
    ):
        """Two payees: the first one's share is reversed, the second one's
        reversal refused. 0.1's refund is looked up, not sent: found, it is
        recorded as made (the first payee's share stays reversed, the second
        kept theirs); not found, it is failed and nothing is refunded."""
        from django_escrow_connect.swappable import load

        doers = team(market, request.getfixturevalue("partner"))
        payment = held(market, payees=doers)
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        row = left_by_0_1(payment, 3_000)
        made = made_by_0_1(market, payment, 3_000) if at_stripe else None
        # The partner, reversed after the doer, has paid everything out.
        last = load("ConnectedAccount").objects.get(owner_user=doers[1].user).stripe_account_id
        real_webhooks.balances[last]["usd"] = 0
        real_webhooks.calls.clear()

        response = left_by_0_1_refused(market, payment, 3_000, via)
        if response is not None:
            assert response.status_code == 409, response.content
            assert response.json()["error"]["code"] == "reversal_failed"

        assert money_calls(real_webhooks) == ["create_transfer_reversal"] * 2
        # Looked up after the refusal, not sent.
        assert (
            calls(real_webhooks, "create_transfer_reversal", "list_refunds")[-1] == "list_refunds"
        )
        reversed_ = {
            t["destination"]: t["amount_reversed"]
            for t in transfers_in_stripe(real_webhooks, payment)
        }
        assert reversed_[last] == 0
        assert reversed_[market.doer_account.stripe_account_id] > 0
        if at_stripe:
            self.assert_made_by_0_1_recorded(market, real_webhooks, payment, row, made)
            return
        assert refunds_at_stripe(real_webhooks, payment) == []
        row.refresh_from_db()
        assert row.status == "failed"
        assert market.payment(payment.pk).amount_refunded == 0
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []

    @pytest.mark.parametrize(
        ("since", "refusal"),
        [
            ("dispute-open", "charge_disputed"),
            ("dispute-lost", "charge_disputed"),
            ("refunded-10000", "charge_already_refunded"),
            ("refunded-8000", "amount_too_large"),
        ],
    )
    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_one_the_payment_can_no_longer_take_reverses_nothing(
        self, market, real_webhooks, since, refusal, via
    ):
        """Disputed or refunded in the Dashboard since (or more than is left
        to refund): the doer's share was reversed for it and then Stripe
        refused the refund, the doer's money taken for nobody. Now it is
        journaled alone, looked up and sent, and Stripe's refusal fails it:
        no reversal, the doer's transfer untouched, not tried again."""
        payment = market.released_payment()
        with market.capture(execute=True):
            if since.startswith("dispute"):
                dispute = simulation.SimulatedGateway().open_dispute(payment.stripe_charge_id)
                if since == "dispute-lost":
                    simulation.SimulatedGateway().close_dispute(dispute.id, won=False)
            else:
                simulation.SimulatedGateway().create_refund(
                    idempotency_key="made-in-the-dashboard",
                    payment_intent=payment.stripe_payment_intent_id,
                    amount=int(since.rsplit("-", 1)[1]),
                    metadata={},
                )
        row = left_by_0_1(payment, 3_000)
        transfer = payment.transfers.get()
        real_webhooks.calls.clear()

        response = left_by_0_1_refused(market, payment, 3_000, via)
        if response is not None:
            assert response.status_code in (400, 409), response.content

        assert "create_transfer_reversal" not in money_calls(real_webhooks)
        with real_webhooks.lock:
            assert real_webhooks.transfers[transfer.stripe_transfer_id]["amount_reversed"] == 0
        row.refresh_from_db()
        assert (row.status, row.failure_reason) == ("failed", refusal)
        real_webhooks.calls.clear()
        # The refusal is settled: the next run sends nothing again.
        with market.capture(execute=True), contextlib.suppress(CommandError):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []

    @pytest.mark.parametrize("strategy", ["separate", "manual"])
    @pytest.mark.parametrize("via", ["reconcile", "refund"])
    def test_one_under_an_inquiry_reverses_the_doers_share(
        self, market, real_webhooks, settings, strategy, via
    ):
        """An inquiry does not stop a refund at Stripe (the refund closes
        it): the payment is ``disputed`` but the refund is made, so the
        doer's share is reversed with it, by a reversal first (separate
        charges and transfers) or with the refund (``reverse_transfer``,
        a destination charge), not left to the platform's balance."""
        if strategy == "manual":
            configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = market.released_payment()
        with market.capture(execute=True):
            simulation.SimulatedGateway().open_dispute(payment.stripe_charge_id, inquiry=True)
        assert market.payment(payment.pk).status == "disputed"
        row = left_by_0_1(payment, 3_000)

        with contextlib.suppress(CommandError):
            send_left_by_0_1(market, payment, 3_000, via)

        assert refunds_at_stripe(real_webhooks, payment) == [3_000]
        (transfer,) = transfers_in_stripe(real_webhooks, payment)
        # A separate transfer was 9,000 (the fee kept back): 3,000 of 10,000
        # of it. A destination charge's transfer is all 10,000, its fee an
        # application fee refunded with it: Stripe reverses it in proportion.
        expected = {"separate": (9_000, 2_700), "manual": (10_000, 3_000)}[strategy]
        assert (transfer["amount"], transfer["amount_reversed"]) == expected
        row.refresh_from_db()
        assert row.status == "succeeded"

    @pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "webhook-late"])
    def test_a_dashboard_refund_of_the_same_amount_is_not_taken_for_it(
        self, market, real_webhooks, recorded
    ):
        """Its lookup at Stripe (before sending it again: 0.1 may have sent it
        days ago) took a refund of the same amount made in the Stripe
        Dashboard for it, and every run then crashed on two Refund rows
        claiming one Stripe id, the customer's 3,000 never sent. Recorded
        by its webhook, the Dashboard refund's id is another row's; not yet
        recorded, it carries no ``escrow_payment_id`` as 0.1's refunds do."""
        from django_escrow_connect import simulation

        payment = market.held_payment()
        row = left_by_0_1(payment, 3_000)
        with market.capture(execute=recorded) as late:
            dashboard = simulation.SimulatedGateway().create_refund(
                idempotency_key="dashboard-refund",
                payment_intent=payment.stripe_payment_intent_id,
                amount=3_000,
                metadata={},
            )
        real_webhooks.calls.clear()

        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        if not recorded:
            with market.capture(execute=True):
                for callback in late:
                    callback()

        assert money_calls(real_webhooks) == ["create_refund"]
        assert refunds_at_stripe(real_webhooks, payment) == [3_000, 3_000]
        row.refresh_from_db()
        assert row.status == "succeeded"
        assert row.stripe_refund_id not in ("", dashboard.id)
        detail = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert books_of(detail) == ("held", 0, 6_000, 4_000, 0)
        real_webhooks.calls.clear()
        with market.capture(execute=True):
            reconcile("--payment", str(payment.pk))
        assert money_calls(real_webhooks) == []
        assert "The books agree with Stripe." in audit()
