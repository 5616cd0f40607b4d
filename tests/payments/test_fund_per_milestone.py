"""Funding per milestone (docs/milestones.md, "Funding per milestone"): one
payment, and one PaymentIntent, per milestone, through the API, the simulated
Stripe's webhooks and the signals."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from django_escrow_connect import signals
from django_escrow_connect.conf import MANUAL_CAPTURE
from django_escrow_connect.states import TaskPaymentStatus as T
from django_escrow_connect.terms import (
    FUND_PER_MILESTONE,
    EscrowTerms,
    PayeeShare,
)

from .conftest import configure, money_calls
from .test_milestones import (  # noqa: F401  (fixtures)
    EXTRA,
    Received,
    partner,
    release,
    split,
    three_milestones,
    transfers_in_stripe,
)

pytestmark = pytest.mark.usefixtures("split")


def per_milestone_task(market: Any, **extra: Any) -> Any:
    task = market.task(amount=10_000)
    EXTRA[task.pk] = {"milestones": three_milestones(), "funding": FUND_PER_MILESTONE, **extra}
    return task


def fund(market: Any, task: Any, milestone: int, **body: Any) -> Any:
    """Create milestone ``milestone``'s payment and pay it (card, webhook): held."""
    response = market.create(task, milestone=milestone, **body)
    assert response.status_code == 201, response.content
    payment = market.pay(response.json()["payment_id"])
    assert payment.status == "held"
    return payment


def task_status(task: Any) -> str:
    task.refresh_from_db()
    return str(task.payment_status)


@pytest.fixture
def funding_due() -> Any:
    received = Received(signals.milestone_funding_due)
    yield received
    received.close()


# --------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------


class TestTerms:
    def test_per_milestone_needs_milestones(self, market):
        with pytest.raises(ValueError, match="needs milestones"):
            EscrowTerms(
                payer=market.customer,
                amount=100,
                currency="usd",
                payee_user=market.doer,
                funding=FUND_PER_MILESTONE,
            )

    def test_per_milestone_needs_basis_point_shares(self, market, partner):  # noqa: F811
        with pytest.raises(ValueError, match="basis_points"):
            EscrowTerms(
                payer=market.customer,
                amount=10_000,
                currency="usd",
                milestones=three_milestones(),
                payees=[
                    PayeeShare(user=market.doer, amount=4_500),
                    PayeeShare(user=partner, amount=4_500),
                ],
                funding=FUND_PER_MILESTONE,
            )

    def test_an_unknown_mode_is_refused(self, market):
        with pytest.raises(ValueError, match="funding"):
            EscrowTerms(
                payer=market.customer,
                amount=100,
                currency="usd",
                payee_user=market.doer,
                funding="later",
            )

    def test_a_milestone_alone_is_an_ordinary_one_milestone_terms(self, market):
        terms = EscrowTerms(
            payer=market.customer,
            amount=10_000,
            currency="usd",
            payee_user=market.doer,
            description="Website",
            milestones=three_milestones(),
            funding=FUND_PER_MILESTONE,
        )
        part = terms.for_milestone(2)
        assert (part.amount, part.description, part.funding) == (
            5_000,
            "Website: Build",
            "up_front",
        )
        assert [m.name for m in part.milestones] == ["Build"]


# --------------------------------------------------------------------------
# Creating a milestone's payment
# --------------------------------------------------------------------------


class TestCreate:
    def test_each_milestone_is_its_own_payment_and_payment_intent(self, market, sim_stripe):
        task = per_milestone_task(market)
        first = fund(market, task, 1)
        assert (first.amount, first.funded_milestone, first.milestone_count) == (2_000, 1, 3)
        assert [(m.name, m.amount) for m in first.milestones.all()] == [("Design", 2_000)]
        second = fund(market, task, 2)
        assert second.amount == 5_000
        assert second.stripe_payment_intent_id != first.stripe_payment_intent_id
        assert second.intent_idempotency_key != first.intent_idempotency_key
        assert second.transfer_group != first.transfer_group
        intent = sim_stripe.payment_intents[second.stripe_payment_intent_id]
        assert intent["amount"] == 5_000
        # 10 % of the milestone: each part pays its own fee.
        assert (first.platform_fee, second.platform_fee) == (200, 500)

    def test_detail_shows_the_funded_milestone(self, market):
        task = per_milestone_task(market)
        payment = fund(market, task, 1)
        body = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert body["funded_milestone"] == 1
        assert body["amount"] == 2_000
        assert [m["name"] for m in body["milestones"]] == ["Design"]

    def test_a_payment_of_the_whole_task_shows_no_funded_milestone(self, market):
        payment = market.held_payment()
        body = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert body["funded_milestone"] is None

    def test_a_repeated_create_of_a_milestone_returns_its_payment(self, market, sim_stripe):
        task = per_milestone_task(market)
        first = market.create(task, milestone=1)
        assert first.status_code == 201, first.content
        again = market.create(task, milestone=1)
        assert again.status_code == 200, again.content
        assert again.json()["payment_id"] == first.json()["payment_id"]
        assert money_calls(sim_stripe).count("create_payment_intent") == 1

    def test_a_retry_after_the_milestones_price_changed_is_refused(self, market, sim_stripe):
        """A declined milestone is paid again on its PaymentIntent only at its price."""
        task = per_milestone_task(market)
        created = market.create(task, milestone=1)
        assert created.status_code == 201, created.content
        payment = market.pay(created.json()["payment_id"], card="declined")
        assert payment.status == "failed"
        # Same total, another division: the first milestone costs more now.
        EXTRA[task.pk]["milestones"] = [
            dataclasses.replace(m, amount=a)
            for m, a in zip(three_milestones(), (3_000, 4_000, 3_000), strict=True)
        ]
        sim_stripe.calls.clear()
        response = market.post(market.customer, "payment-retry", payment_id=payment.pk)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "terms_changed"
        assert "20.00 USD, now 30.00 USD" in response.json()["error"]["message"]
        assert sim_stripe.calls == []
        # A milestone whose price stayed is retried as before.
        EXTRA[task.pk]["milestones"] = three_milestones()
        response = market.post(market.customer, "payment-retry", payment_id=payment.pk)
        assert response.status_code == 200, response.content

    def test_a_retry_after_the_task_is_funded_up_front_is_refused(self, market, sim_stripe):
        task = per_milestone_task(market)
        created = market.create(task, milestone=1)
        payment = market.pay(created.json()["payment_id"], card="declined")
        EXTRA[task.pk]["funding"] = "up_front"
        response = market.post(market.customer, "payment-retry", payment_id=payment.pk)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "terms_changed"
        assert market.payment(payment.pk).status == "failed"

    def test_a_create_of_a_paid_milestone_is_409(self, market):
        task = per_milestone_task(market)
        fund(market, task, 1)
        response = market.create(task, milestone=1)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "already_paid"

    def test_the_milestone_is_required(self, market):
        response = market.create(per_milestone_task(market))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "milestone_required"

    @pytest.mark.parametrize("milestone", [0, 4, -1])
    def test_a_milestone_out_of_range_is_400(self, market, milestone):
        response = market.create(per_milestone_task(market), milestone=milestone)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "milestone_out_of_range"

    def test_a_milestone_on_terms_paid_up_front_is_400(self, market):
        task = market.task()
        EXTRA[task.pk] = {"milestones": three_milestones()}
        response = market.create(task, milestone=1)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "not_funded_per_milestone"

    def test_the_expected_amount_is_the_milestones(self, market):
        task = per_milestone_task(market)
        # The whole task's amount is not the milestone's.
        refused = market.create(task, milestone=1, amount=10_000)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "amount_mismatch"
        assert market.create(task, milestone=1, amount=2_000).status_code == 201

    def test_manual_capture_is_refused(self, market, settings):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        response = market.create(per_milestone_task(market), milestone=1)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "split_unsupported"

    def test_modes_do_not_mix_on_one_task(self, market):
        task = per_milestone_task(market)
        fund(market, task, 1)
        # The terms change to up front: the task already has a part.
        EXTRA[task.pk] = {"milestones": three_milestones()}
        response = market.create(task)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "funding_mode_mismatch"

    def test_a_task_paid_up_front_cannot_be_funded_per_milestone(self, market):
        task = market.task()
        EXTRA[task.pk] = {"milestones": three_milestones()}
        assert market.create(task).status_code == 201
        EXTRA[task.pk]["funding"] = FUND_PER_MILESTONE
        response = market.create(task, milestone=1)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "funding_mode_mismatch"

    def test_a_canceled_part_can_be_created_again_with_a_new_id(self, market):
        task = per_milestone_task(market)
        created = market.create(task, milestone=1).json()["payment_id"]
        canceled = market.post(market.customer, "payment-cancel", payment_id=created)
        assert canceled.status_code == 200, canceled.content
        again = market.create(task, milestone=1)
        assert again.status_code == 201, again.content
        assert again.json()["payment_id"] != created


# --------------------------------------------------------------------------
# The order rule (FUND_NEXT_MILESTONE)
# --------------------------------------------------------------------------


class TestOrder:
    def test_by_default_the_previous_milestone_must_be_held(self, market):
        task = per_milestone_task(market)
        refused = market.create(task, milestone=2)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "previous_milestone_unpaid"
        # Created but not paid yet: still refused.
        first = market.create(task, milestone=1).json()["payment_id"]
        assert market.create(task, milestone=2).status_code == 409
        market.pay(first)
        assert market.create(task, milestone=2).status_code == 201

    def test_on_release_waits_for_the_previous_release(self, market, settings):
        configure(settings, FUND_NEXT_MILESTONE="on_release")
        task = per_milestone_task(market)
        first = fund(market, task, 1)
        refused = market.create(task, milestone=2)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "previous_milestone_unpaid"
        assert release(market, first).status_code == 200
        assert market.create(task, milestone=2).status_code == 201

    def test_any_time_lets_the_customer_fund_ahead(self, market, settings):
        configure(settings, FUND_NEXT_MILESTONE="any_time")
        task = per_milestone_task(market)
        third = fund(market, task, 3)
        assert third.amount == 3_000
        assert task_status(task) == T.PAYMENT_IN_ESCROW


# --------------------------------------------------------------------------
# Release, task status, signals, refunds
# --------------------------------------------------------------------------


class TestSequence:
    def test_milestone_by_milestone_to_the_end(self, market, sim_stripe, funding_due):
        task = per_milestone_task(market)
        assert task_status(task) == T.PENDING_PAYMENT

        first = fund(market, task, 1)
        assert task_status(task) == T.PAYMENT_IN_ESCROW
        response = release(market, first)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "released"
        # Not the last milestone: the task is not released, the next part awaits payment.
        assert task_status(task) == T.PENDING_PAYMENT
        (due,) = funding_due.calls
        assert due["milestone_index"] == 2
        assert due["amount"] == 5_000
        assert due["task"].pk == task.pk
        assert due["payment"].pk == first.pk
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, first)] == [1_800]

        second = fund(market, task, 2)
        assert task_status(task) == T.PAYMENT_IN_ESCROW
        release(market, second)
        assert task_status(task) == T.PENDING_PAYMENT
        assert [c["milestone_index"] for c in funding_due.calls] == [2, 3]

        third = fund(market, task, 3)
        assert task_status(task) == T.PAYMENT_IN_ESCROW
        release(market, third)
        # Every milestone paid out: now the task is released.
        assert task_status(task) == T.PAYMENT_RELEASED
        assert len(funding_due.calls) == 2  # nothing after the last milestone
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, third)] == [2_700]

    @pytest.mark.parametrize(
        ("next_milestones", "why"),
        [
            (
                [("Build", "0"), ("Launch", "8000")],
                "Milestone 'Build': amount must be positive, got 0.",
            ),
            ([(" ", "5000"), ("Launch", "3000")], "Milestone 2 has no name."),
            (
                [("Build", "5000", "-1"), ("Launch", "3000")],
                "Milestone 'Build': the delay before its automatic release must be positive",
            ),
        ],
    )
    def test_a_next_milestone_a_user_typed_that_cannot_be_paid_is_told_when_it_is_funded(
        self, market, sim_stripe, funding_due, caplog, next_milestones, why
    ):
        """The host's milestones change while the first is held, a user typing
        a value that cannot be paid into the next: the release goes through
        (the next milestone is not announced), and funding that milestone is
        409 for the customer (404 for anyone else), nothing written."""
        task = market.task(amount=10_000)
        EXTRA[task.pk] = {
            "typed_milestones": [("Design", "2000"), ("Build", "5000"), ("Launch", "3000")],
            "funding": FUND_PER_MILESTONE,
        }
        first = fund(market, task, 1)
        EXTRA[task.pk]["typed_milestones"] = [("Design", "2000"), *next_milestones]
        with caplog.at_level("ERROR"):
            response = release(market, first)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "released"
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, first)] == [1_800]
        # The receiver that announces the next milestone did not fail on it:
        # it logged why and announced nothing.
        assert not [r for r in caplog.records if "receiver failed" in r.getMessage()]
        assert any(why in r.getMessage() for r in caplog.records)
        assert funding_due.calls == []
        sim_stripe.calls.clear()
        response = market.create(task, milestone=2)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "no_payment_terms"
        assert why in response.json()["error"]["message"]
        assert market.create(task, user=market.other, milestone=2).status_code == 404
        listed = market.get(market.customer, "payment-list", task_id=str(task.pk)).json()
        assert [p["funded_milestone"] for p in listed["results"]] == [1]
        assert money_calls(sim_stripe) == []

    def test_a_part_held_keeps_the_task_in_escrow_while_another_is_released(
        self, market, settings, funding_due
    ):
        configure(settings, FUND_NEXT_MILESTONE="any_time")
        task = per_milestone_task(market)
        first = fund(market, task, 1)
        fund(market, task, 2)
        release(market, first)
        assert task_status(task) == T.PAYMENT_IN_ESCROW
        # Milestone 2 is paid for already: nothing is due.
        assert funding_due.calls == []

    def test_the_next_part_created_while_one_is_held_leaves_the_task_in_escrow(self, market):
        task = per_milestone_task(market)
        fund(market, task, 1)
        assert market.create(task, milestone=2).status_code == 201
        assert task_status(task) == T.PAYMENT_IN_ESCROW

    def test_milestone_released_signal_names_the_parts_milestone(self, market):
        received = Received(signals.milestone_released)
        try:
            task = per_milestone_task(market)
            first = fund(market, task, 1)
            release(market, first)
        finally:
            received.close()
        (call,) = received.calls
        assert call["milestone"].name == "Design"
        assert call["payment"].pk == first.pk

    def test_refund_of_part_two_does_not_touch_part_one(self, market, sim_stripe):
        task = per_milestone_task(market)
        first = fund(market, task, 1)
        release(market, first)
        second = fund(market, task, 2)
        response = market.post(market.staff, "payment-refund", {}, payment_id=second.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "refunded"
        first = market.payment(first.pk)
        assert first.status == "released"
        assert (first.amount_refunded, first.amount_reversed) == (0, 0)
        assert [t["amount_reversed"] for t in transfers_in_stripe(sim_stripe, first)] == [0]
        refunds = [r for r in sim_stripe.refunds.values()]
        assert [r["amount"] for r in refunds] == [5_000]
        # Nothing held, part 2 refunded: the task follows the part that changed.
        assert task_status(task) == T.REFUNDED

    def test_a_split_applies_to_each_part(self, market, sim_stripe, partner):  # noqa: F811
        task = per_milestone_task(
            market,
            payees=[
                PayeeShare(user=market.doer, basis_points=6_000),
                PayeeShare(user=partner, basis_points=4_000),
            ],
        )
        first = fund(market, task, 1)
        release(market, first)
        # 2,000 less 10 %: 1,800 split 60/40.
        assert sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, first)) == [720, 1_080]

    def test_the_customers_list_has_every_part(self, market):
        task = per_milestone_task(market)
        fund(market, task, 1)
        fund(market, task, 2)
        other = market.held_payment()
        body = market.get(market.customer, "payment-list", task_id=str(task.pk)).json()
        assert sorted(p["funded_milestone"] for p in body["results"]) == [1, 2]
        # Without the filter the other task's payment is listed too.
        everything = market.get(market.customer, "payment-list").json()["results"]
        assert str(other.pk) in {p["payment_id"] for p in everything}

    def test_a_malformed_task_id_is_400(self, market):
        response = market.get(market.customer, "payment-list", task_id="not-a-number")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_task_id"

    @pytest.mark.parametrize("task_id", [str(2**63), "9" * 30])
    def test_a_task_id_beyond_the_column_is_400(self, market, task_id):
        # SQLite cannot bind an integer past 64 bits: it was a 500.
        market.held_payment()
        response = market.get(market.customer, "payment-list", task_id=task_id)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "invalid_task_id"
