"""``escrow_audit`` / ``audit_books``: the app's books against the simulated Stripe's.

Clean books after every normal money flow (both strategies); a divergence,
with the payment id and both amounts, for each way the simulated Stripe and
the app can be made to disagree; money in flight reported as unsettled, not
as a divergence, unless Stripe shows something that can never be right.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect import simulation as simulated
from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import TemporarilyUnavailable
from django_escrow_connect.services.audit import AuditResult, audit_books
from django_escrow_connect.simulation import EventCollector, SimulatedGateway
from django_escrow_connect.testing import assert_books_balanced
from tests.payments.test_refunds import released_in_part_by_an_older_version

from .conftest import configure

pytestmark = pytest.mark.django_db

SCT, MANUAL = SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def run_audit(*args: str) -> tuple[int, str, str]:
    """``manage.py escrow_audit *args``: (exit status, stdout, error message)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("escrow_audit", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), ""


def checks(result: AuditResult, payment: Any = None) -> set[str]:
    found = result.divergences if payment is None else result.for_payment(payment.pk)
    return {d.check for d in found}


def divergence(result: AuditResult, payment: Any, check: str) -> Any:
    [found] = [d for d in result.for_payment(payment.pk) if d.check == check]
    return found


def refund(market: Any, payment: Any, amount: int | None = None) -> Any:
    body = {} if amount is None else {"amount": amount}
    response = market.post(market.staff, "payment-refund", body, payment_id=payment.pk)
    assert response.status_code == 200, response.content
    return market.payment(payment.pk)


@contextmanager
def webhooks_lost(market: Any) -> Iterator[None]:
    """Stripe acts, and none of its events reaches the app."""
    previous = simulated.set_event_sink(EventCollector())
    try:
        with market.capture(execute=True):
            yield
    finally:
        simulated.set_event_sink(previous)


def charge_id(sim_stripe: Any, payment: Any) -> str:
    return str(sim_stripe.payment_intents[payment.stripe_payment_intent_id]["latest_charge"])


def outside_transfer(market: Any, sim_stripe: Any, payment: Any, amount: int, key: str) -> str:
    """A transfer made at Stripe (dashboard, another process) in the payment's group."""
    with webhooks_lost(market):
        transfer = SimulatedGateway().create_transfer(
            idempotency_key=key,
            amount=amount,
            currency=payment.currency,
            destination=market.doer_account.stripe_account_id,
            source_transaction=charge_id(sim_stripe, payment),
            transfer_group=payment.transfer_group,
            metadata={},
        )
    return transfer.id


def the_transfer(payment: Any) -> Any:
    return payment.transfers.get(status__in=["created", "partially_reversed", "reversed"])


# --------------------------------------------------------------------------
# Clean books after every normal flow
# --------------------------------------------------------------------------


def held(market: Any) -> Any:
    return market.held_payment()


def released(market: Any) -> Any:
    return market.released_payment()


def refunded_before_release(market: Any) -> Any:
    return refund(market, market.held_payment())


def partial_refund_then_release(market: Any) -> Any:
    payment = refund(market, market.held_payment(), 3_000)
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 200, response.content
    return market.payment(payment.pk)


def refunded_after_release(market: Any) -> Any:
    payment = refund(market, market.released_payment(), 4_000)
    assert payment.status == "partially_refunded"
    return refund(market, payment)


def released_to_an_organization(market: Any) -> Any:
    return market.released_payment(to_org=True)


FLOWS: dict[str, Callable[[Any], Any]] = {
    "held": held,
    "released": released,
    "refunded_before_release": refunded_before_release,
    "partial_refund_then_release": partial_refund_then_release,
    "refunded_after_release": refunded_after_release,
    "released_to_an_organization": released_to_an_organization,
}


@pytest.mark.parametrize("flow", FLOWS)
def test_books_are_clean_after_a_normal_flow(strategy, market, sim_stripe, flow):
    if strategy == MANUAL and flow == "partial_refund_then_release":
        pytest.skip("a manual-capture hold can only be voided in full")
    payment = FLOWS[flow](market)

    status, out, error = run_audit()

    assert (status, error) == (0, ""), out
    assert "Audited 1 payment(s)" in out
    assert "The books agree with Stripe." in out
    result = assert_books_balanced()
    assert result.audited == 1
    assert result.unsettled == []
    # Stripe was really asked.
    assert sim_stripe.call_count("retrieve_payment_intent") >= 1
    assert sim_stripe.call_count("list_transfers") >= 1
    assert sim_stripe.call_count("list_refunds") >= 1
    assert payment.stripe_payment_intent_id


def test_manual_capture_release_is_checked_against_the_charge_and_its_fee(
    settings, market, sim_stripe
):
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = refund(market, market.released_payment(), 4_000)
    charge = sim_stripe.charges[charge_id(sim_stripe, payment)]
    assert (charge["amount_captured"], charge["application_fee_amount"]) == (10_000, 1_000)
    assert (payment.amount_transferred, payment.amount_reversed) == (9_000, 3_600)

    assert audit_books().clean

    # The fee the app recorded is not the one Stripe took.
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(platform_fee=900)
    result = audit_books()
    found = divergence(result, payment, "application_fee")
    assert (found.app_amount, found.stripe_amount, found.currency) == (900, 1_000, "usd")
    assert found.stripe_object == charge["id"]


def test_a_destination_charge_transfer_of_the_full_amount_is_read_as_stripe_makes_it(
    settings, market, sim_stripe
):
    """Stripe transfers a destination charge in full and takes the fee back."""
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = market.released_payment()
    transfer = sim_stripe.transfers[the_transfer(payment).stripe_transfer_id]
    assert transfer["amount"] == the_transfer(payment).amount == 10_000
    assert payment.amount_transferred == 9_000  # the doer's share

    assert audit_books().clean

    # A transfer of the amount less the fee (what the simulated Stripe made
    # before) is all the doer's, and reads the same.
    transfer["amount"] = 9_000
    the_transfer(payment).__class__.objects.filter(pk=the_transfer(payment).pk).update(amount=9_000)

    assert audit_books().clean


def test_a_capture_for_less_made_in_the_dashboard_is_audited_against_what_was_captured(
    settings, market, sim_stripe
):
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = market.held_payment()
    payment = market.capture_in_dashboard(payment, 4_000)
    assert (payment.status, payment.amount_captured) == ("released", 4_000)
    status, out, _ = run_audit("--payment-id", str(payment.pk))
    assert (status, out.splitlines()[-1]) == (0, "The books agree with Stripe.")

    payment = refund(market, payment, 1_000)
    assert audit_books().clean

    # Books that count the whole amount as captured disagree with Stripe's charge.
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(amount_captured=None)
    found = divergence(audit_books(), payment, "amount_captured")
    assert (found.app_amount, found.stripe_amount) == (10_000, 4_000)
    assert found.stripe_object == charge_id(sim_stripe, payment)


def test_a_refund_of_the_uncaptured_rest_is_left_out_of_stripe_s_refunds(
    settings, market, sim_stripe
):
    """Before API 2025-03-31 Stripe refunded the uncaptured rest of a capture for less."""
    from tests.webhooks import stripe_objects as so

    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = market.held_payment()
    payment = market.capture_in_dashboard(payment, 4_000)
    with market.capture(execute=True):
        # The Refund of the 6,000 never charged, counted in the charge's
        # amount_refunded, with the reason Stripe gives its own refunds.
        charge = sim_stripe.charges[charge_id(sim_stripe, payment)]
        rest = so.refund(
            amount=6_000,
            status="succeeded",
            reason="expired_uncaptured_charge",
            charge=charge["id"],
            payment_intent=payment.stripe_payment_intent_id,
        )

        def refund_the_rest() -> Any:
            sim_stripe.refunds[rest["id"]] = rest
            charge["amount_refunded"] += 6_000
            sim_stripe.emit("refund.created", rest, automatic=True)
            return rest

        sim_stripe.execute(
            "refund_uncaptured_rest", {}, refund_the_rest, logged=False, stripe_initiated=True
        )
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded, payment.refundable_amount) == (
        "released",
        0,
        4_000,
    )
    assert payment.refunds.get().stripe_refund_id == rest["id"]  # recorded
    status, out, _ = run_audit("--payment-id", str(payment.pk))
    assert (status, out.splitlines()[-1]) == (0, "The books agree with Stripe."), out

    # Its webhook lost: still no divergence (it moved no charged money).
    payment.refunds.all().delete()
    assert audit_books().clean


def test_transfers_over_a_capture_for_less_name_what_the_app_charged(settings, market, sim_stripe):
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = market.held_payment()
    payment = market.capture_in_dashboard(payment, 4_000)
    sim_stripe.transfers[the_transfer(payment).stripe_transfer_id]["amount"] = 5_000
    found = divergence(audit_books(), payment, "transfers_exceed_capture")
    assert (found.app_amount, found.stripe_amount) == (4_000, 5_000)


# --------------------------------------------------------------------------
# Divergences
# --------------------------------------------------------------------------


def test_a_transfer_the_app_does_not_know_about(market, sim_stripe):
    payment = market.held_payment()
    transfer_id = outside_transfer(market, sim_stripe, payment, 2_500, "outside-transfer-1")

    status, out, error = run_audit()

    assert status == 1
    assert "The books disagree with Stripe" in error
    assert f"{payment.pk}: transfer_unknown_to_app: app -, Stripe 2500 usd ({transfer_id})" in out
    assert f"{payment.pk}: amount_transferred: app 0, Stripe 2500 usd" in out
    with pytest.raises(AssertionError, match=str(payment.pk)):
        assert_books_balanced()


def test_a_second_transfer_in_the_same_transfer_group(market, sim_stripe):
    payment = market.released_payment()
    assert payment.amount_transferred == 9_000
    second = outside_transfer(market, sim_stripe, payment, 500, "outside-transfer-2")

    result = audit_books()

    assert checks(result) == {
        "multiple_live_transfers",
        "transfer_unknown_to_app",
        "amount_transferred",
    }
    live = divergence(result, payment, "multiple_live_transfers")
    assert (live.app_amount, live.stripe_amount) == (9_000, 9_500)
    assert second in live.detail
    total = divergence(result, payment, "amount_transferred")
    assert (total.app_amount, total.stripe_amount) == (9_000, 9_500)


def test_a_second_transfer_whose_webhook_arrives_is_left_to_the_audit(market, sim_stripe):
    """Its ``transfer.created`` is processed (it used to fail with a 500 on the
    one-live-transfer constraint, for every redelivery); the transfer is not
    booked as the payment's, which a refund still reverses alone."""
    payment = market.released_payment()
    with market.capture(execute=True):
        second = SimulatedGateway().create_transfer(
            idempotency_key="outside-transfer-3",
            amount=500,
            currency=payment.currency,
            destination=market.doer_account.stripe_account_id,
            source_transaction=charge_id(sim_stripe, payment),
            transfer_group=payment.transfer_group,
            metadata={},
        )

    event = swappable.load("WebhookEvent").objects.get(
        type="transfer.created", payload__data__object__id=second.id
    )
    assert event.status == "processed", event.last_error
    assert [t.amount for t in payment.transfers.all()] == [9_000]
    assert checks(audit_books(), payment) == {
        "multiple_live_transfers",
        "transfer_unknown_to_app",
        "amount_transferred",
    }
    assert refund(market, payment).status == "refunded"


def test_a_refund_made_outside_the_app_and_never_recorded(market, sim_stripe):
    payment = market.held_payment()
    with webhooks_lost(market):
        outside = SimulatedGateway().create_refund(
            idempotency_key="outside-refund-1",
            payment_intent=payment.stripe_payment_intent_id,
            amount=2_500,
            metadata={},
        )

    status, out, _ = run_audit("--json")

    assert status == 1
    report = json.loads(out)
    assert report["clean"] is False
    mine = [d for d in report["divergences"] if d["payment_id"] == str(payment.pk)]
    assert {(d["check"], d["app_amount"], d["stripe_amount"]) for d in mine} == {
        ("refund_unknown_to_app", None, 2_500),
        ("amount_refunded", 0, 2_500),
    }
    [unknown] = [d for d in mine if d["check"] == "refund_unknown_to_app"]
    assert unknown["stripe_object"] == outside.id
    assert unknown["currency"] == "usd"


def test_amount_refunded_off_by_one(market, sim_stripe):
    payment = refund(market, market.released_payment(), 3_000)
    assert audit_books().clean
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(amount_refunded=3_001)

    status, out, _ = run_audit()

    assert status == 1
    assert f"{payment.pk}: amount_refunded: app 3001, Stripe 3000 usd" in out


def test_a_reversal_the_app_recorded_is_missing_at_stripe(market, sim_stripe):
    payment = refund(market, market.released_payment(), 5_000)
    transfer = the_transfer(payment)
    assert (payment.amount_reversed, transfer.amount_reversed) == (4_500, 4_500)
    assert audit_books().clean
    # Stripe has no reversal of this transfer (say, the answer came from a
    # replayed response of another key).
    with sim_stripe.lock:
        sim_stripe.transfers[transfer.stripe_transfer_id].update(amount_reversed=0, reversed=False)

    result = audit_books()

    assert {
        "transfer_amount_reversed",
        "reversal_missing_at_stripe",
        "amount_reversed",
        "doer_keeps_refunded_money",
    } == checks(result)
    missing = divergence(result, payment, "reversal_missing_at_stripe")
    assert (missing.app_amount, missing.stripe_amount) == (4_500, 0)
    assert missing.stripe_object == transfer.stripe_transfer_id
    kept = divergence(result, payment, "doer_keeps_refunded_money")
    assert (kept.app_amount, kept.stripe_amount) == (4_500, 9_000)


def test_a_reversal_made_at_stripe_that_the_app_never_heard_of(market, sim_stripe):
    payment = market.released_payment()
    transfer = the_transfer(payment)
    with webhooks_lost(market):
        SimulatedGateway().create_transfer_reversal(
            transfer_id=transfer.stripe_transfer_id,
            idempotency_key="outside-reversal-1",
            amount=1_000,
            metadata={},
        )

    result = audit_books()

    assert checks(result) == {"transfer_amount_reversed", "amount_reversed"}
    row = divergence(result, payment, "transfer_amount_reversed")
    assert (row.app_amount, row.stripe_amount) == (0, 1_000)


def test_a_payment_whose_success_webhook_was_lost(market, sim_stripe):
    response = market.create(market.task())
    payment = market.payment(response.json()["payment_id"])
    with webhooks_lost(market):
        SimulatedGateway().confirm_payment_intent(payment.stripe_payment_intent_id, "success")
    assert market.payment(payment.pk).status == "awaiting_payment"

    result = audit_books()

    captured = divergence(result, payment, "amount_captured")
    assert (captured.app_amount, captured.stripe_amount) == (0, 10_000)
    # escrow_reconcile applies the PaymentIntent: the books agree again.
    with market.capture(execute=True):
        call_command("escrow_reconcile", older_than=0, stdout=StringIO())
    assert_books_balanced()


def test_a_manual_capture_hold_that_lapsed_at_stripe(settings, market, sim_stripe):
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = market.held_payment()
    with webhooks_lost(market):
        sim_stripe.advance_time(8 * 24 * 3600)
        SimulatedGateway().retrieve_payment_intent(payment.stripe_payment_intent_id)

    result = audit_books()

    hold = divergence(result, payment, "authorisation")
    assert (hold.app_amount, hold.stripe_amount) == (10_000, 0)
    assert "canceled" in hold.detail


def test_a_manual_capture_payment_released_in_part_by_an_older_version(
    settings, market, sim_stripe
):
    """Nothing of it was captured or transferred (docs/recovery.md): the books
    agree with Stripe's before and after the refund that voids its hold."""
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = released_in_part_by_an_older_version(market, market.held_payment())
    before = audit_books(payment_id=payment.pk)
    assert (before.clean, before.unsettled) == (True, [])
    assert refund(market, payment).status == "canceled"
    after = audit_books(payment_id=payment.pk)
    assert (after.clean, after.unsettled) == (True, [])


def test_the_lapsed_hold_of_a_payment_released_in_part_by_an_older_version(
    settings, market, sim_stripe
):
    """Its authorisation is all there is of it: gone at Stripe while the app
    still has the payment partially released, the audit says so."""
    configure(settings, ESCROW_STRATEGY=MANUAL)
    payment = released_in_part_by_an_older_version(market, market.held_payment())
    with webhooks_lost(market):
        sim_stripe.advance_time(8 * 24 * 3600)
        SimulatedGateway().retrieve_payment_intent(payment.stripe_payment_intent_id)

    hold = divergence(audit_books(), payment, "authorisation")
    assert (hold.app_amount, hold.stripe_amount) == (10_000, 0)
    assert "canceled" in hold.detail


def _refund_failed_at_stripe(sim_stripe: Any, payment: Any) -> None:
    refund_id = payment.refunds.get().stripe_refund_id
    sim_stripe.refunds[refund_id].update(status="failed", failure_reason="expired_or_canceled_card")


def _refund_grew_at_stripe(sim_stripe: Any, payment: Any) -> None:
    sim_stripe.refunds[payment.refunds.get().stripe_refund_id]["amount"] = 12_000


def _transfer_gone_at_stripe(sim_stripe: Any, payment: Any) -> None:
    del sim_stripe.transfers[the_transfer(payment).stripe_transfer_id]


def _transfer_elsewhere(sim_stripe: Any, payment: Any) -> None:
    sim_stripe.transfers[the_transfer(payment).stripe_transfer_id]["destination"] = "acct_elsewhere"


def _intent_changed(sim_stripe: Any, payment: Any) -> None:
    sim_stripe.payment_intents[payment.stripe_payment_intent_id].update(
        amount=12_000, currency="eur"
    )


#: (what Stripe's books say afterwards, the checks that must report it, with amounts)
STRIPE_CHANGES: dict[str, tuple[Callable[[Any, Any], None], dict[str, tuple[Any, Any]]]] = {
    "refund failed at Stripe": (
        _refund_failed_at_stripe,
        {"refund_status": (3_000, 0), "amount_refunded": (3_000, 0)},
    ),
    "refund over the capture": (
        _refund_grew_at_stripe,
        {
            "refunds_exceed_capture": (3_000, 12_000),
            "refund_amount": (3_000, 12_000),
            "amount_refunded": (3_000, 12_000),
            "doer_keeps_refunded_money": (6_300, 6_300),
        },
    ),
    "transfer missing at Stripe": (
        _transfer_gone_at_stripe,
        {
            "transfer_missing_at_stripe": (9_000, None),
            "amount_transferred": (9_000, 0),
            # The 2,700 reversed for the refund went with it.
            "reversal_missing_at_stripe": (2_700, 0),
            "amount_reversed": (2_700, 0),
        },
    ),
    "transfer to another account": (
        _transfer_elsewhere,
        {"transfer_destination": (9_000, 9_000)},
    ),
    "PaymentIntent amount and currency": (
        _intent_changed,
        {"currency": (10_000, 12_000), "payment_intent_amount": (10_000, 12_000)},
    ),
}


@pytest.mark.parametrize("change", STRIPE_CHANGES)
def test_each_check_reports_its_divergence(market, sim_stripe, change):
    payment = refund(market, market.released_payment(), 3_000)
    assert audit_books().clean
    alter, expected = STRIPE_CHANGES[change]
    with sim_stripe.lock:
        alter(sim_stripe, payment)

    result = audit_books()

    assert checks(result, payment) == set(expected)
    for check, amounts in expected.items():
        found = divergence(result, payment, check)
        assert (found.app_amount, found.stripe_amount) == amounts, found
    status, out, _ = run_audit()
    assert status == 1
    assert all(f"{payment.pk}: {check}:" in out for check in expected)


# --------------------------------------------------------------------------
# Unsettled: money in flight
# --------------------------------------------------------------------------


def test_a_release_in_flight_is_unsettled_not_divergent(market, sim_stripe):
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer", TemporarilyUnavailable("Read timed out."), after_effect=True
    )
    with webhooks_lost(market):  # the transfer.created webhook would finish it
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 503
    payment = market.payment(payment.pk)
    assert payment.status == "releasing"

    status, out, error = run_audit()

    assert (status, error) == (0, "")
    assert "Unsettled (money in flight, not compared): 1" in out
    assert f"{payment.pk}: releasing: transfer to the doer (" in out
    result = assert_books_balanced(allow_unsettled=True)
    assert [u.payment_id for u in result.unsettled] == [str(payment.pk)]
    with pytest.raises(AssertionError, match="unsettled"):
        assert_books_balanced()

    # Once reconciled, the books are settled and agree.
    with market.capture(execute=True):
        call_command("escrow_reconcile", older_than=0, stdout=StringIO())
    assert market.payment(payment.pk).status == "released"
    assert assert_books_balanced().unsettled == []


def test_a_refund_in_flight_is_unsettled(market, sim_stripe):
    payment = market.held_payment()
    sim_stripe.fail_next("create_refund", TemporarilyUnavailable("Read timed out."))
    response = market.post(market.doer, "payment-refund", {}, payment_id=payment.pk)
    assert response.status_code == 503

    result = audit_books()

    assert result.clean
    [unsettled] = result.unsettled
    assert unsettled.payment_id == str(payment.pk)
    assert "refund" in unsettled.reason


def test_the_audit_as_an_oracle_after_a_lost_refund_answer(strategy, market, sim_stripe):
    """Stripe refunded after release, the answer and the webhook were lost:
    unsettled, then clean once reconciled."""
    payment = market.released_payment()
    sim_stripe.fail_next(
        "create_refund", TemporarilyUnavailable("Read timed out."), after_effect=True
    )
    with webhooks_lost(market):  # refund.created would settle it at once
        response = market.post(
            market.staff, "payment-refund", {"amount": 4_000}, payment_id=payment.pk
        )
    assert response.status_code == 503

    result = assert_books_balanced(allow_unsettled=True)
    assert [u.payment_id for u in result.unsettled] == [str(payment.pk)]

    with market.capture(execute=True):
        call_command("escrow_reconcile", older_than=0, stdout=StringIO())
        # The lost webhooks (a destination charge's transfer.reversed among
        # them) are fetched as after any webhook outage.
        call_command("escrow_fetch_missed_events", stdout=StringIO())
    payment = market.payment(payment.pk)
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 4_000)
    assert assert_books_balanced().audited == 1


def test_an_impossible_state_is_a_divergence_even_while_unsettled(market, sim_stripe):
    payment = market.held_payment()
    sim_stripe.fail_next(
        "create_transfer", TemporarilyUnavailable("Read timed out."), after_effect=True
    )
    with webhooks_lost(market):
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    payment = market.payment(payment.pk)
    assert payment.status == "releasing"
    outside_transfer(market, sim_stripe, payment, 500, "outside-transfer-3")

    status, out, _ = run_audit()

    assert status == 1
    assert f"{payment.pk}: multiple_live_transfers: app 0, Stripe 9500 usd" in out
    result = audit_books()
    assert [u.payment_id for u in result.unsettled] == [str(payment.pk)]
    # Only what can never be right: the app's missing row is not reported.
    assert checks(result) == {"multiple_live_transfers"}


# --------------------------------------------------------------------------
# Options, output, exit status, cost
# --------------------------------------------------------------------------


def test_payment_id_limits_the_audit_to_one_payment(market, sim_stripe):
    clean = market.released_payment()
    broken = market.released_payment(to_org=True)
    swappable.load("EscrowPayment").objects.filter(pk=broken.pk).update(amount_refunded=1)

    assert run_audit("--payment-id", str(clean.pk))[0] == 0
    status, out, _ = run_audit("--payment-id", str(broken.pk))
    assert status == 1
    assert "Audited 1 payment(s)" in out
    assert str(clean.pk) not in out
    assert run_audit("--payment-id", "nope")[0] == 1  # CommandError: not a payment id


def test_a_period_beyond_any_date_is_refused(market):
    """``--since 99999999d`` was an ``OverflowError``'s traceback."""
    status, _out, message = run_audit("--since", "99999999d")
    assert (status, "out of range" in message.lower()) == (1, True)


def test_since_and_limit_select_the_payments(market, sim_stripe):
    market.released_payment()
    market.released_payment(to_org=True)

    assert audit_books().audited == 2
    assert json.loads(run_audit("--json", "--since", "1d")[1])["audited"] == 2
    assert json.loads(run_audit("--json", "--since", "2999-01-01")[1])["audited"] == 0
    assert json.loads(run_audit("--json", "--limit", "1")[1])["audited"] == 1


def test_payments_that_never_reached_stripe_are_skipped(market, sim_stripe):
    payment = market.held_payment()
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(
        stripe_payment_intent_id=""
    )
    calls = sim_stripe.call_count()

    result = audit_books()

    assert (result.audited, result.skipped, result.clean) == (0, 1, True)
    assert sim_stripe.call_count() == calls


def test_json_output_shape(market, sim_stripe):
    payment = market.released_payment()
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(amount_refunded=7)

    status, out, _ = run_audit("--json")

    assert status == 1
    report = json.loads(out)
    assert set(report) == {"clean", "audited", "skipped", "divergences", "unsettled", "errors"}
    assert (report["clean"], report["audited"], report["skipped"]) == (False, 1, 0)
    assert report["divergences"] == [
        {
            "payment_id": str(payment.pk),
            "check": "amount_refunded",
            "app_amount": 7,
            "stripe_amount": 0,
            "currency": "usd",
            "stripe_object": payment.stripe_charge_id,
            "detail": "",
        }
    ]
    assert report["unsettled"] == report["errors"] == []


def test_stripe_unreachable_exits_2_and_names_the_payment(market, sim_stripe):
    payment = market.held_payment()
    sim_stripe.fail_next("list_transfers", TemporarilyUnavailable("Service unavailable."))

    status, out, error = run_audit()

    assert status == 2
    assert "could not be audited" in error
    assert f"{payment.pk}: Service unavailable." in out


def test_queries_do_not_grow_with_the_number_of_payments(market, sim_stripe):
    refund(market, market.released_payment(), 1_000)
    with CaptureQueriesContext(connection) as one:
        assert audit_books().audited == 1
    for to_org in (False, True, False):
        refund(market, market.released_payment(to_org=to_org), 2_000)
    with CaptureQueriesContext(connection) as four:
        assert audit_books().audited == 4
    assert len(four) == len(one)
    # Batches of two: one query for the skipped count, then five per batch
    # (the payments, their transfers, reversals, refunds and operations).
    with CaptureQueriesContext(connection) as batched:
        assert audit_books(batch_size=2).audited == 4
    assert len(batched) <= 1 + 2 * 5


def test_the_task_returns_the_result_as_json_data(market, sim_stripe):
    from django_escrow_connect.services.audit_tasks import audit_books_task

    payment = market.released_payment()
    assert audit_books_task.call(payment_id=str(payment.pk)) == {
        "clean": True,
        "audited": 1,
        "skipped": 0,
        "divergences": [],
        "unsettled": [],
        "errors": [],
    }
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(amount_refunded=5)
    report = audit_books_task.call(since="1d")
    assert report["clean"] is False
    assert json.loads(json.dumps(report)) == report
