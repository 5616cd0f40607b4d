"""Refunds before and after release, in full and in part, for both strategies."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from django_escrow_connect import signals, swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    InvalidRequest,
    TemporarilyUnavailable,
)
from django_escrow_connect.services import errors, outcomes, tip_outcomes
from django_escrow_connect.services.releases import release_in_parts

from .conftest import configure, money_calls
from .test_milestones import Received


@pytest.fixture
def separate_charges(settings, sim_stripe):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)


@pytest.fixture
def manual(settings, sim_stripe):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)


def refund(market, payment, user=None, **body):
    return market.post(user or market.doer, "payment-refund", body, payment_id=payment.pk)


def charge_of(sim_stripe, payment):
    return sim_stripe.charges[payment.stripe_charge_id]


class TestBeforeRelease:
    def test_full_refund_of_a_held_payment_refunds_the_charge(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        response = refund(market, payment)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "refunded"
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
        assert charge_of(sim_stripe, payment)["amount_refunded"] == 10_000
        assert payment.task.payment_status == "refunded"
        assert not payment.transfers.exists()

    def test_partial_refund_keeps_the_rest_held_and_release_sends_the_net(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        response = refund(market, payment, amount=3_000, reason="requested_by_customer")
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("held", 3_000)
        (row,) = payment.refunds.all()
        assert (row.amount, row.status, row.reason) == (3_000, "succeeded", "requested_by_customer")

        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        # 7,000 left; the 10 % fee is taken on what is left.
        assert (payment.amount_transferred, payment.platform_fee) == (6_300, 700)
        (transfer,) = payment.transfers.all()
        assert sim_stripe.transfers[transfer.stripe_transfer_id]["amount"] == 6_300

    def test_manual_capture_hold_is_voided_not_refunded(self, market, sim_stripe, manual):
        payment = market.held_payment()
        response = refund(market, payment)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "canceled"
        assert sim_stripe.payment_intents[payment.stripe_payment_intent_id]["status"] == "canceled"
        assert "create_refund" not in money_calls(sim_stripe)

    def test_manual_capture_hold_cannot_be_partly_refunded(self, market, sim_stripe, manual):
        payment = market.held_payment()
        response = refund(market, payment, amount=1_000)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "partial_refund_unsupported"
        assert market.payment(payment.pk).status == "held"


def released_in_part_by_an_older_version(market, payment):
    """What ``release_in_parts`` did to a held manual-capture payment before it
    refused manual capture (docs/recovery.md): the guard it lacked is lifted
    for the call. Stripe refuses the part's transfer (the charge is only
    authorised), and the part stays booked as released."""
    Payment = swappable.load("EscrowPayment")
    with pytest.MonkeyPatch.context() as older:
        older.setattr(Payment, "is_manual_capture", property(lambda self: False))
        with pytest.raises(errors.Conflict):
            release_in_parts(payment.pk, market.customer, amount=3_000)
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_released) == ("partially_released", 3_000)
    assert list(payment.releases.values_list("status", flat=True)) == ["pending"]
    assert list(payment.transfers.values_list("status", flat=True)) == ["failed"]
    return payment


class TestManualCaptureReleasedInPartByAnOlderVersion:
    def test_a_full_refund_voids_the_hold_and_cancels_the_payment(self, market, sim_stripe, manual):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        canceled = Received(signals.payment_canceled)
        try:
            response = refund(market, payment)
        finally:
            canceled.close()
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["status"], body["amount_released"], body["amount_refunded"]) == (
            "canceled",
            0,
            0,
        )
        assert sim_stripe.payment_intents[payment.stripe_payment_intent_id]["status"] == "canceled"
        assert "create_refund" not in money_calls(sim_stripe)
        assert [call["payment"].pk for call in canceled.calls] == [payment.pk]
        payment = market.payment(payment.pk)
        assert payment.canceled_at is not None
        # As after any void: the task can be paid again.
        assert payment.task.payment_status == "pending_payment"
        # Done: a refund again is refused for its state, nothing sent.
        sim_stripe.calls.clear()
        again = refund(market, payment)
        assert again.status_code == 409, again.content
        assert sim_stripe.calls == []

    def test_a_lapsed_hold_cancels_the_payment_with_an_incident(self, market, sim_stripe, manual):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        with market.capture(execute=True):
            sim_stripe.advance_time(8 * 24 * 3600)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_released) == ("canceled", 0)
        assert list(payment.incidents.values_list("kind", flat=True)) == ["capture_expired"]

    @pytest.mark.parametrize("made", ["created", "partially_reversed"])
    def test_a_lapsed_hold_does_not_cancel_a_payment_whose_part_was_transferred(
        self, market, sim_stripe, manual, caplog, made
    ):
        # Only a refused part may be undone by the void: a transfer Stripe made
        # paid the doer, and a void cannot end such a payment.
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        payment.transfers.update(status=made)
        with caplog.at_level(logging.ERROR), market.capture(execute=True):
            sim_stripe.advance_time(8 * 24 * 3600)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_released) == ("partially_released", 3_000)
        assert payment.canceled_at is None
        assert "cannot be canceled" in caplog.text

    @pytest.mark.parametrize("void", ["refund", "lapse"])
    def test_the_void_settles_the_release_and_resolves_the_incident(
        self, market, sim_stripe, manual, void
    ):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        (incident,) = payment.transfer_incidents.all()
        assert (incident.kind, incident.resolved_at) == ("transfer_failed", None)
        if void == "refund":
            assert refund(market, payment).status_code == 200
        else:
            with market.capture(execute=True):
                sim_stripe.advance_time(8 * 24 * 3600)
        payment = market.payment(payment.pk)
        assert payment.status == "canceled"
        # Its transfer was never made, and no longer can be.
        assert list(payment.releases.values_list("status", flat=True)) == ["canceled"]
        assert list(payment.transfers.values_list("status", flat=True)) == ["failed"]
        incident.refresh_from_db()
        # Stripe's void is the last word: nobody has to act on it any more,
        # and the incident says why it closed.
        assert incident.resolved_at is not None
        assert incident.message.endswith(outcomes.REFUSED_PART_VOIDED)

    @pytest.mark.parametrize("endpoint", ["payment-confirm", "payment-release"])
    def test_a_release_is_refused_for_its_state_and_names_the_way_out(
        self, market, sim_stripe, manual, endpoint
    ):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        sim_stripe.calls.clear()
        stuck = market.post(market.customer, endpoint, payment_id=payment.pk)
        assert stuck.status_code == 409, stuck.content
        assert stuck.json()["error"]["code"] == "transition_not_allowed"
        assert "Refund it in full" in stuck.json()["error"]["message"]
        assert sim_stripe.calls == []
        assert refund(market, payment).status_code == 200
        sim_stripe.calls.clear()
        canceled = market.post(market.customer, endpoint, payment_id=payment.pk)
        assert canceled.status_code == 409, canceled.content
        assert canceled.json()["error"]["code"] == "transition_not_allowed"
        assert sim_stripe.calls == []
        assert market.payment(payment.pk).status == "canceled"

    @pytest.mark.parametrize("same_amount", [True, False], ids=["same-amount", "other-amount"])
    def test_the_void_leaves_a_tips_refused_transfer_to_staff(
        self, market, sim_stripe, manual, same_amount
    ):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        (part,) = payment.transfers.all()
        # As tip_transfer_refused records it: the tip's money is on the
        # platform's balance, and staff can still send it.
        tip_incident = payment.transfer_incidents.create(
            kind="transfer_failed",
            code="insufficient_capabilities_for_transfer",
            message=f"{tip_outcomes.TIP_INCIDENT_PREFIX}1: refused",
            destination_account_id=part.destination_account_id,
            amount=part.amount if same_amount else 450,
            currency=payment.currency,
        )
        assert refund(market, payment).status_code == 200
        tip_incident.refresh_from_db()
        assert tip_incident.resolved_at is None
        assert not tip_incident.message.endswith(outcomes.REFUSED_PART_VOIDED)
        (part_incident,) = payment.transfer_incidents.exclude(pk=tip_incident.pk)
        assert part_incident.resolved_at is not None

    def test_a_confirm_after_a_dashboard_capture_is_answered_as_released(
        self, market, sim_stripe, manual
    ):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        payment = market.capture_in_dashboard(payment, payment.amount)
        assert payment.status == "released"
        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "released"
        assert sim_stripe.calls == []
        # Then refunded in part: still answered as the payment stands, its
        # older pending release being no share owed (the capture paid all).
        assert refund(market, payment, amount=1_000).status_code == 200
        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "partially_refunded"
        assert sim_stripe.calls == []

    def test_a_release_of_a_part_is_still_refused_as_a_part(self, market, sim_stripe, manual):
        payment = released_in_part_by_an_older_version(market, market.held_payment())
        response = market.post(
            market.customer, "payment-release", {"amount": 1_000}, payment_id=payment.pk
        )
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "split_unsupported"


class TestAfterRelease:
    def test_transfer_is_reversed_before_the_charge_is_refunded(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.released_payment()
        sim_stripe.calls.clear()
        response = refund(market, payment, amount=5_000)
        assert response.status_code == 200, response.content
        assert money_calls(sim_stripe) == ["create_transfer_reversal", "create_refund"]
        payment = market.payment(payment.pk)
        assert payment.status == "partially_refunded"
        # Proportional: half the charge refunded, half the transfer (9,000) reversed.
        assert (payment.amount_refunded, payment.amount_reversed) == (5_000, 4_500)
        (transfer,) = payment.transfers.all()
        assert (transfer.status, transfer.amount_reversed) == ("partially_reversed", 4_500)
        (reversal,) = payment.transfer_reversals.all()
        assert (reversal.amount, reversal.status) == (4_500, "succeeded")
        assert sim_stripe.transfers[transfer.stripe_transfer_id]["amount_reversed"] == 4_500
        assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 4_500

        response = refund(market, payment)  # the rest
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        assert (payment.amount_refunded, payment.amount_reversed) == (10_000, 9_000)
        assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 0
        assert charge_of(sim_stripe, payment)["amount_refunded"] == 10_000
        assert payment.task.payment_status == "refunded"

    @pytest.mark.parametrize(
        ("after", "reversed_"),
        [
            # Half of the 7,000 released: half of its 6,300 transfer.
            (3_500, 3_150),
            (100, 90),
            # All that is left: the whole transfer.
            (7_000, 6_300),
        ],
    )
    def test_a_refund_made_before_the_release_is_not_taken_back_from_the_doer(
        self, market, sim_stripe, separate_charges, after, reversed_
    ):
        payment = market.held_payment()
        assert refund(market, payment, amount=3_000).status_code == 200
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        payment = market.payment(payment.pk)
        # 7,000 released, less the 10 % fee on it.
        assert (payment.status, payment.amount_transferred) == ("released", 6_300)

        response = refund(market, payment, amount=after)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert (payment.amount_refunded, payment.amount_reversed) == (3_000 + after, reversed_)
        account = market.doer_account.stripe_account_id
        assert sim_stripe.balances[account]["usd"] == 6_300 - reversed_
        assert charge_of(sim_stripe, payment)["amount_refunded"] == 3_000 + after

    @pytest.mark.parametrize(
        ("currency", "amount", "first", "rest"),
        [
            # A third of the 9,000 fils transfer is 2,997: KWD amounts end in 0 at Stripe.
            ("kwd", 3_330, 2_990, 6_010),
            # 33 % of the 90 kr transfer is 29.70 kr: ISK amounts are whole krónur at Stripe.
            ("isk", 3_300, 2_900, 6_100),
        ],
    )
    def test_a_prorated_reversal_is_rounded_down_to_an_amount_stripe_accepts(
        self, market, sim_stripe, separate_charges, currency, amount, first, rest
    ):
        response = market.create(market.task(currency=currency))
        payment = market.pay(response.json()["payment_id"])
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        response = refund(market, payment, amount=amount)
        assert response.status_code == 200, response.content
        reversals = [c[1]["amount"] for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert reversals == [first]
        payment = market.payment(payment.pk)
        assert (payment.amount_refunded, payment.amount_reversed) == (amount, first)

        assert refund(market, payment).status_code == 200  # the rest: the whole transfer
        reversals = [c[1]["amount"] for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert reversals == [first, rest]
        assert market.payment(payment.pk).amount_reversed == 9_000

    def test_destination_charge_refund_reverses_the_transfer_at_stripe(
        self, market, sim_stripe, manual
    ):
        payment = market.released_payment()
        sim_stripe.calls.clear()
        response = refund(market, payment, amount=4_000)
        assert response.status_code == 200, response.content
        assert money_calls(sim_stripe) == ["create_refund"]
        (_, params) = next(c for c in sim_stripe.calls if c[0] == "create_refund")
        assert params["reverse_transfer"] is True
        assert params["refund_application_fee"] is True
        assert market.payment(payment.pk).status == "partially_refunded"
        (transfer,) = [
            t
            for t in sim_stripe.transfers.values()
            if t["transfer_group"] == payment.transfer_group
        ]
        # Stripe transfers the whole charge: 4,000 of 10,000 of the 10,000
        # transfer is reversed, and 400 of the 1,000 application fee returned.
        assert transfer["amount_reversed"] == 4_000
        (fee,) = [
            f
            for f in sim_stripe.application_fees.values()
            if f["charge"] == transfer["source_transaction"]
        ]
        assert fee["amount_refunded"] == 400
        assert sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] == 5_400

    def test_a_refund_larger_than_what_is_left_is_refused(self, market, sim_stripe, strategy):
        payment = market.released_payment()
        assert refund(market, payment, amount=6_000).status_code == 200
        sim_stripe.calls.clear()
        response = refund(market, payment, amount=4_001)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_amount"
        assert money_calls(sim_stripe) == []
        assert market.payment(payment.pk).amount_refunded == 6_000

    def test_a_failed_reversal_makes_no_refund(self, market, sim_stripe, separate_charges):
        payment = market.released_payment()
        # The doer already paid the money out: nothing left to reverse.
        sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] = 0
        response = refund(market, payment, amount=5_000)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "reversal_failed"
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("released", 0)
        assert "create_refund" not in money_calls(sim_stripe)
        (incident,) = payment.transfer_incidents.all()
        assert incident.kind == "reversal_failed"

    def test_a_refund_stripe_refuses_after_the_reversal_keeps_the_reversal(
        self, market, sim_stripe, separate_charges
    ):
        """The reversal moved money at Stripe: it must stay recorded."""
        payment = market.released_payment()
        sim_stripe.fail_next(
            "create_refund",
            InvalidRequest("Charge is disputed.", code="charge_disputed", http_status=400),
        )
        response = refund(market, payment, amount=5_000)
        assert response.status_code == 409
        payment = market.payment(payment.pk)
        assert payment.amount_reversed == 4_500
        assert payment.amount_refunded == 0
        assert [r.status for r in payment.refunds.all()] == ["failed"]
        assert [r.status for r in payment.transfer_reversals.all()] == ["succeeded"]
        assert payment.incidents.filter(kind="refund_failed").count() == 1

        # Trying again refunds with a new key and reverses nothing more.
        sim_stripe.calls.clear()
        response = refund(market, payment, amount=5_000)
        assert response.status_code == 200, response.content
        assert money_calls(sim_stripe) == ["create_refund"]
        payment = market.payment(payment.pk)
        assert (payment.amount_refunded, payment.amount_reversed) == (5_000, 4_500)


def test_a_refund_whose_answer_was_lost_is_finished_with_the_same_key(
    market, sim_stripe, separate_charges
):
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_refund", TemporarilyUnavailable("timeout", http_status=None), after_effect=True
    )
    response = refund(market, payment, amount=2_000)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "operation_pending"
    (row,) = swappable.load("Refund").objects.filter(payment=payment)
    assert (row.status, row.stripe_refund_id) == ("pending", "")

    response = refund(market, payment, amount=2_000)
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert row.status == "succeeded"
    assert row.stripe_refund_id in sim_stripe.refunds
    assert len(sim_stripe.refunds) == 1
    assert market.payment(payment.pk).amount_refunded == 2_000


# --------------------------------------------------------------------------
# Idempotency-Key: a partial refund retried after its answer was lost
# --------------------------------------------------------------------------


def keyed_refund(market, payment, key, user=None, **body):
    return market.post(
        user or market.doer,
        "payment-refund",
        body,
        payment_id=payment.pk,
        headers={"Idempotency-Key": key},
    )


def journal(payment):
    """What a request wrote: the operations and refund rows of the payment."""
    return (
        swappable.load("MoneyOperation").objects.filter(payment=payment).count(),
        swappable.load("Refund").objects.filter(payment=payment).count(),
    )


class TestIdempotencyKey:
    @pytest.mark.parametrize(
        ("strategy", "released"),
        [
            (SEPARATE_CHARGES_AND_TRANSFERS, False),
            (SEPARATE_CHARGES_AND_TRANSFERS, True),
            # A held manual-capture payment is only voided in full.
            (MANUAL_CAPTURE, True),
        ],
    )
    def test_the_same_keyed_refund_after_it_succeeded_refunds_once(
        self, market, sim_stripe, settings, strategy, released
    ):
        configure(settings, ESCROW_STRATEGY=strategy)
        payment = market.released_payment() if released else market.held_payment()
        first = keyed_refund(market, payment, "order-42-refund-1", amount=3_000, reason="x")
        assert first.status_code == 200, first.content
        made = money_calls(sim_stripe)
        written = journal(payment)

        # The answer was lost (a proxy timeout); the client sends it again.
        again = keyed_refund(market, payment, "order-42-refund-1", amount=3_000, reason="x")

        assert again.status_code == 200, again.content
        assert again.json()["amount_refunded"] == first.json()["amount_refunded"] == 3_000
        assert money_calls(sim_stripe) == made  # nothing more sent to Stripe
        assert journal(payment) == written
        payment = market.payment(payment.pk)
        assert payment.amount_refunded == 3_000
        assert len(sim_stripe.refunds) == 1
        if released and strategy == SEPARATE_CHARGES_AND_TRANSFERS:
            # The doer was reversed once, not twice.
            assert payment.amount_reversed == 2_700

    def test_a_full_refund_sent_again_with_its_key_answers_the_refunded_payment(
        self, market, sim_stripe, strategy
    ):
        payment = market.released_payment()
        assert keyed_refund(market, payment, "k-full").status_code == 200
        again = keyed_refund(market, payment, "k-full")
        # Not 409 transition_not_allowed: the request was carried out.
        assert again.status_code == 200, again.content
        assert again.json()["status"] == "refunded"

    def test_a_keyed_refund_whose_answer_was_lost_is_finished_with_the_same_stripe_key(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.released_payment()
        sim_stripe.fail_next(
            "create_refund", TemporarilyUnavailable("timeout", http_status=None), after_effect=True
        )
        response = keyed_refund(market, payment, "k-lost", amount=2_000)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "operation_pending"

        again = keyed_refund(market, payment, "k-lost", amount=2_000)
        assert again.status_code == 200, again.content
        refund_calls = [p for name, p in sim_stripe.calls if name == "create_refund"]
        assert len(refund_calls) == 2
        keys = {p["metadata"]["escrow_operation"] for p in refund_calls}
        assert len(keys) == 1  # the same Stripe key: Stripe answered from its store
        assert len(sim_stripe.refunds) == 1
        assert money_calls(sim_stripe).count("create_transfer_reversal") == 1
        payment = market.payment(payment.pk)
        assert (payment.amount_refunded, payment.amount_reversed) == (2_000, 1_800)

        # And once more: answered, nothing sent.
        sim_stripe.calls.clear()
        assert keyed_refund(market, payment, "k-lost", amount=2_000).status_code == 200
        assert money_calls(sim_stripe) == []

    @pytest.mark.parametrize(
        "body", [{"amount": 2_001}, {"amount": 2_000, "reason": "other"}], ids=["amount", "reason"]
    )
    def test_a_key_reused_for_another_refund_is_refused_and_writes_nothing(
        self, market, sim_stripe, separate_charges, body
    ):
        payment = market.released_payment()
        assert keyed_refund(market, payment, "k-used", amount=2_000).status_code == 200
        written = journal(payment)
        sim_stripe.calls.clear()

        response = keyed_refund(market, payment, "k-used", **body)

        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert money_calls(sim_stripe) == []
        assert journal(payment) == written
        assert market.payment(payment.pk).amount_refunded == 2_000

    def test_a_refund_key_used_for_a_refund_of_a_held_void_is_compared_by_amount(
        self, market, sim_stripe, manual
    ):
        payment = market.held_payment()
        assert keyed_refund(market, payment, "k-void").status_code == 200
        assert market.payment(payment.pk).status == "canceled"
        again = keyed_refund(market, payment, "k-void", amount=10_000)
        assert again.status_code == 200, again.content
        other = keyed_refund(market, payment, "k-void", amount=5_000)
        assert other.json()["error"]["code"] == "idempotency_key_reused"

    @pytest.mark.parametrize("lease", ["running", "passed"])
    def test_a_keyed_void_never_sent_is_sent_again_by_its_retry_with_its_key(
        self, market, sim_stripe, manual, lease
    ):
        """A keyed full refund of a held manual-capture payment is a void; its
        call timed out before reaching Stripe. The retry with the same
        Idempotency-Key sends that void again with its own Stripe key, as a
        refund's retry does: not only looked up (409 while its lease runs,
        then given up and answered as a refusal Stripe never made)."""
        payment = market.held_payment()
        sim_stripe.fail_next(
            "cancel_payment_intent", TemporarilyUnavailable("timeout", http_status=None)
        )
        first = keyed_refund(market, payment, "k-void-lost")
        assert first.status_code == 503, first.content
        assert market.payment(payment.pk).status == "held"
        (void,) = payment.operations.filter(kind="cancel")
        if lease == "passed":
            payment.operations.filter(pk=void.pk).update(
                lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
        sim_stripe.calls.clear()

        again = keyed_refund(market, payment, "k-void-lost")

        assert again.status_code == 200, again.content
        assert again.json()["status"] == "canceled"
        sends = [p for name, p in sim_stripe.calls if name == "cancel_payment_intent"]
        assert [p["idempotency_key"] for p in sends] == [void.idempotency_key]
        assert list(payment.operations.filter(kind="cancel").values_list("status", flat=True)) == [
            "succeeded"
        ]
        assert sim_stripe.payment_intents[payment.stripe_payment_intent_id]["status"] == "canceled"
        # And once more: answered, nothing sent.
        sim_stripe.calls.clear()
        assert keyed_refund(market, payment, "k-void-lost").status_code == 200
        assert money_calls(sim_stripe) == []

    @pytest.mark.parametrize(
        "key", ["", "x" * 256, "caf\u00e9", "tab\there"], ids=["empty", "long", "latin1", "control"]
    )
    def test_an_invalid_key_is_refused_before_anything_is_written(
        self, market, sim_stripe, separate_charges, key
    ):
        payment = market.released_payment()
        written = journal(payment)
        sim_stripe.calls.clear()
        response = keyed_refund(market, payment, key, amount=1_000)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "invalid_idempotency_key"
        assert money_calls(sim_stripe) == []
        assert journal(payment) == written

    def test_the_longest_key_is_accepted(self, market, sim_stripe, separate_charges):
        payment = market.held_payment()
        key = "k" * 255
        assert keyed_refund(market, payment, key, amount=1_000).status_code == 200
        assert keyed_refund(market, payment, key, amount=1_000).status_code == 200
        assert market.payment(payment.pk).amount_refunded == 1_000

    def test_another_users_key_and_another_payments_key_are_other_requests(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        other_payment = market.held_payment()
        assert keyed_refund(market, payment, "same", amount=1_000).status_code == 200
        # Staff send the same key: their own request, a refund of its own.
        assert keyed_refund(market, payment, "same", market.staff, amount=1_000).status_code == 200
        assert keyed_refund(market, other_payment, "same", amount=1_000).status_code == 200
        # Each of the three sent again: answered, nothing refunded twice.
        assert keyed_refund(market, payment, "same", amount=1_000).status_code == 200
        assert keyed_refund(market, payment, "same", market.staff, amount=1_000).status_code == 200
        assert keyed_refund(market, other_payment, "same", amount=1_000).status_code == 200
        assert market.payment(payment.pk).amount_refunded == 2_000
        assert market.payment(other_payment.pk).amount_refunded == 1_000

    def test_a_refused_keyed_refund_is_answered_again_with_its_refusal(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.released_payment()
        # The doer already paid the money out: nothing left to reverse.
        sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] = 0
        first = keyed_refund(market, payment, "k-refused", amount=5_000)
        assert first.status_code == 409
        assert first.json()["error"]["code"] == "reversal_failed"
        sim_stripe.balances[market.doer_account.stripe_account_id]["usd"] = 9_000
        sim_stripe.calls.clear()

        again = keyed_refund(market, payment, "k-refused", amount=5_000)

        # Stripe's model: the same key answers the same refusal; trying again
        # is a new request, with a new key.
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "reversal_failed"
        assert money_calls(sim_stripe) == []
        assert keyed_refund(market, payment, "k-new", amount=5_000).status_code == 200
        assert market.payment(payment.pk).amount_refunded == 5_000

    def test_with_a_key_another_requests_unresolved_refund_is_not_taken_for_this_one(
        self, market, sim_stripe, separate_charges
    ):
        payment = market.held_payment()
        sim_stripe.fail_next(
            "create_refund", TemporarilyUnavailable("timeout", http_status=None), after_effect=True
        )
        assert keyed_refund(market, payment, "first", amount=1_000).status_code == 503
        # A new user action (a new key) for the same amount: the first refund
        # is finished with its own Stripe key, then this one is made.
        response = keyed_refund(market, payment, "second", amount=1_000)
        assert response.status_code == 200, response.content
        assert market.payment(payment.pk).amount_refunded == 2_000
        assert len(sim_stripe.refunds) == 2
        # Each key answers its own request from now on.
        sim_stripe.calls.clear()
        assert keyed_refund(market, payment, "first", amount=1_000).status_code == 200
        assert keyed_refund(market, payment, "second", amount=1_000).status_code == 200
        assert money_calls(sim_stripe) == []

    def test_the_key_is_not_sent_to_stripe(self, market, sim_stripe, separate_charges):
        payment = market.released_payment()
        sim_stripe.calls.clear()
        assert keyed_refund(market, payment, "secret-ish-key", amount=1_000).status_code == 200
        assert "secret-ish-key" not in repr(sim_stripe.calls)
        operations = swappable.load("MoneyOperation").objects.filter(request_key="secret-ish-key")
        assert {op.kind for op in operations} == {"reversal", "refund"}
        assert all("secret-ish-key" not in op.idempotency_key for op in operations)


def doers_refund_lost(market, sim_stripe, payment, amount=2_000):
    """The doer's keyed refund of ``amount`` timed out before Stripe acted:
    its refund is unresolved."""
    sim_stripe.fail_next("create_refund", TemporarilyUnavailable("timeout", http_status=None))
    lost = keyed_refund(market, payment, "doer-refund", amount=amount)
    assert lost.status_code == 503, lost.content


def test_without_a_key_a_full_refund_does_not_take_a_pending_partial_for_its_own(
    market, sim_stripe, separate_charges
):
    """Staff's full refund (no amount, no key) asks for the rest, 10,000: the
    doer's unresolved refund of 2,000 is not its own (409 refund_pending),
    and nothing is sent or written."""
    payment = market.held_payment()
    doers_refund_lost(market, sim_stripe, payment)
    sim_stripe.calls.clear()
    before = journal(payment)

    response = refund(market, payment, market.staff)

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "refund_pending"
    assert money_calls(sim_stripe) == []
    assert journal(payment) == before
    assert market.payment(payment.pk).amount_refunded == 0


def test_without_a_key_a_full_refund_sent_again_finishes_its_own(
    market, sim_stripe, separate_charges
):
    """The same full refund (no amount, no key) sent again after its answer
    was lost: the unresolved refund of the rest is its own, finished once."""
    payment = market.held_payment()
    sim_stripe.fail_next("create_refund", TemporarilyUnavailable("timeout", http_status=None))
    assert refund(market, payment, market.staff).status_code == 503

    response = refund(market, payment, market.staff)

    assert response.status_code == 200, response.content
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
    assert len(sim_stripe.refunds) == 1


# --------------------------------------------------------------------------
# Another request finishes a refund whose answer was lost: Stripe refuses it
# --------------------------------------------------------------------------

#: Stripe refusing the refund, or the reversal before it, when it is sent again.
REFUSALS = {
    "refund": (
        "create_refund",
        InvalidRequest("Charge is disputed.", code="charge_disputed", http_status=400),
    ),
    "reversal": (
        "create_transfer_reversal",
        BalanceInsufficient(
            "Insufficient funds in the connected account.",
            code="balance_insufficient",
            http_status=400,
        ),
    ),
}


def lost_then_refused(market, stripe, kind, payment=None):
    """The doer's keyed refund of 2,000 whose ``kind`` call timed out before
    Stripe acted (503: unresolved), and Stripe's refusal of it, waiting for
    whichever request sends it again. A reversal precedes the refund of a
    released payment; a held one is refunded directly. ``stripe``: the
    simulated Stripe's store."""
    if payment is None:
        payment = market.released_payment() if kind == "reversal" else market.held_payment()
    method, refusal = REFUSALS[kind]
    stripe.fail_next(method, TemporarilyUnavailable("timeout", http_status=None))
    lost = keyed_refund(market, payment, "doer-refund", amount=2_000)
    assert lost.status_code == 503, lost.content
    stripe.fail_next(method, refusal)
    return payment


class TestAnotherRequestFinishesARefusedRefund:
    """A refund (or its reversal) whose answer was lost is finished, with its
    own key, by the next request on the payment. Stripe refusing it then is
    committed with it (incident, notification) and is the answer of the
    refund's own request, sent again with its Idempotency-Key; the request
    that finished it goes on with its own work and gets its own answer."""

    @pytest.mark.parametrize("kind", ["refund", "reversal"])
    def test_a_staff_refund_under_its_own_key_is_made(
        self, market, sim_stripe, separate_charges, kind
    ):
        payment = lost_then_refused(market, sim_stripe, kind)

        response = keyed_refund(market, payment, "staff-refund", market.staff, amount=1_000)

        assert response.status_code == 200, response.content
        assert response.json()["amount_refunded"] == 1_000
        payment = market.payment(payment.pk)
        assert payment.amount_refunded == 1_000
        if kind == "refund":
            assert [r.status for r in payment.refunds.order_by("created_at")] == [
                "failed",
                "succeeded",
            ]
            assert payment.incidents.filter(kind="refund_failed").count() == 1
        else:
            # The doer's reversal was refused, so no refund of 2,000 was made.
            assert [r.amount for r in payment.refunds.all()] == [1_000]
            assert payment.transfer_incidents.get().kind == "reversal_failed"
        assert self.doers_refund_again(market, sim_stripe, payment).status_code == 409

    @pytest.mark.parametrize(
        ("action", "body"),
        [("payment-confirm", {}), ("payment-release", {"amount": 3_000})],
        ids=["confirm", "release-in-part"],
    )
    def test_a_release_stops_when_the_charge_is_disputed(
        self, market, sim_stripe, separate_charges, action, body
    ):
        """Stripe refuses the doer's refund because the charge is disputed (no
        dispute webhook yet): the customer's release, in full or in part,
        releases nothing."""
        payment = lost_then_refused(market, sim_stripe, "refund")

        response = market.post(market.customer, action, body, payment_id=payment.pk)

        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "charge_disputed"
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("held", 0)
        assert not payment.transfers.exists()
        assert [r.status for r in payment.refunds.all()] == ["failed"]
        assert payment.incidents.filter(kind="refund_failed").count() == 1
        assert self.doers_refund_again(market, sim_stripe, payment).json()["error"]["code"] == (
            "charge_disputed"
        )

    def test_a_cancel_is_refused_for_its_own_reason(self, market, sim_stripe, separate_charges):
        """Money held on a separate charge is refunded, not canceled: the
        cancel's own 409, not the refund's refusal (charge_disputed)."""
        payment = lost_then_refused(market, sim_stripe, "refund")

        response = market.post(market.staff, "payment-cancel", payment_id=payment.pk)

        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "transition_not_allowed"
        assert [r.status for r in market.payment(payment.pk).refunds.all()] == ["failed"]

    def test_without_a_key_a_refund_of_another_amount_is_another_request(
        self, market, sim_stripe, separate_charges
    ):
        """The doer's refused reversal (for 2,000) does not answer staff's
        refund of 1,000 sent without a key: it is made."""
        payment = lost_then_refused(market, sim_stripe, "reversal")
        response = refund(market, payment, market.staff, amount=1_000)
        assert response.status_code == 200, response.content
        assert market.payment(payment.pk).amount_refunded == 1_000

    @staticmethod
    def doers_refund_again(market, sim_stripe, payment):
        """The refund's own request sent again: Stripe's refusal, nothing sent."""
        sim_stripe.calls.clear()
        response = keyed_refund(market, payment, "doer-refund", amount=2_000)
        assert money_calls(sim_stripe) == []
        return response
