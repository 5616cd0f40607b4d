"""The ordering state machine (test_ordering.py) on a payment released in
parts: three milestones split between two payees.

Besides the API actions, held-back, reordered and duplicated webhooks of
:class:`~tests.reliability.test_ordering.PaymentMachine`, the customer
releases single milestones. Invariants after every step, by the simulated
Stripe's books and the payment's row:

- the money the payees kept (transfers less reversals) never exceeds what
  was charged less refunds, nor the amount less the platform fee;
- each (release, payee) was transferred at most once;
- released + refunded + held = charged, and ``amount_released`` is what the
  releases took out of escrow less what refunds took back.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.terms import MilestoneTerms, PayeeShare
from tests import factories
from tests.payments.test_milestones import EXTRA

from .conftest import configure, stripe_books
from .test_ordering import PHASES, STEPS, PaymentMachine, build_market

MAX_EXAMPLES = int(os.environ.get("ESCROW_EXAMPLES", "25"))


def assert_split_invariants(store: Any, payment: Any) -> dict[str, Any]:
    books = stripe_books(store, payment)
    pairs = [
        (t["metadata"].get("escrow_release_id"), t["metadata"].get("escrow_payee"))
        for t in books["transfers"]
    ]
    assert all(release and payee for release, payee in pairs), books["transfers"]
    assert len(pairs) == len(set(pairs)), f"a payee paid twice for a release: {pairs}"
    kept = books["transferred"] - books["reversed"]
    assert kept <= payment.amount - books["refunded"], books
    assert kept <= payment.amount - payment.platform_fee, books
    captured = books["charge"].get("amount_captured", 0) if books["charge"] else 0
    assert books["refunded"] <= captured, books
    held = payment.amount - payment.amount_released - payment.amount_refunded
    # A lost dispute took its part of what was held (amount_lost).
    assert held == payment.amount_held + payment.amount_lost, (
        payment.amount_released,
        payment.amount_refunded,
    )
    assert payment.amount_held >= 0
    assert payment.amount_lost >= 0
    gross = sum(r.amount for r in payment.releases.all())
    assert payment.amount_released == min(gross, payment.amount - payment.amount_refunded)
    return books


class SplitPaymentMachine(PaymentMachine):
    partner: Any = None
    #: Transfers seen across the run: the run must have released something.
    payee_transfers_seen: set[str] = set()

    def __init__(self) -> None:
        super().__init__()
        EXTRA[self.task.pk] = {
            "milestones": [
                MilestoneTerms("Design", 2_000),
                MilestoneTerms("Build", 5_000),
                MilestoneTerms("Launch", 3_000),
            ],
            "payees": [
                PayeeShare(user=self.market.doer, basis_points=6_000),
                PayeeShare(user=self.partner, basis_points=4_000),
            ],
        }

    @precondition(lambda self: self.payment_id is not None)
    @rule(position=st.integers(0, 2))
    def release_milestone(self, position: int) -> None:
        milestone = self.payment().milestones.filter(position=position).first()
        if milestone is None:
            return
        disputed = self.open_disputes_known()
        before = stripe_books(self.sim_stripe, self.payment())
        response = self.post(
            self.market.customer, "payment-release", {"milestone_id": milestone.pk}
        )
        assert response.status_code in (200, 409, 503), response.content
        if disputed:
            after = stripe_books(self.sim_stripe, self.payment())
            assert after["transfers"] == before["transfers"], "released while disputed"
        self.collect()

    @invariant()
    def money_moved_at_most_once(self) -> None:
        if self.payment_id is None:
            return
        books = assert_split_invariants(self.sim_stripe, self.payment())
        self.payee_transfers_seen.update(t["id"] for t in books["transfers"])

    def settle(self, payment: Any) -> None:
        """Every event delivered: the row agrees with the simulated Stripe."""
        books = assert_split_invariants(self.sim_stripe, payment)
        assert payment.amount_refunded == books["refunded"], (payment.status, books)
        assert payment.amount_transferred == books["transferred"], books
        assert payment.amount_reversed == books["reversed"], books
        for transfer in payment.transfers.exclude(status="failed"):
            assert transfer.stripe_transfer_id in {t["id"] for t in books["transfers"]}
        intent = books["intent"]
        if intent.get("status") == "canceled":
            assert payment.status == "canceled", payment.status
        elif payment.status in ("disputed", "dispute_lost"):
            assert books["disputes"], payment.status
        elif intent.get("status") == "succeeded" and not books["disputes"]:
            if books["refunded"] >= payment.amount:
                assert payment.status == "refunded", payment.status
            elif payment.amount_released == 0:
                assert payment.status in ("held", "partially_released"), payment.status
            elif payment.amount_held > 0:
                assert payment.status == "partially_released", (payment.status, books)


@pytest.mark.django_db(transaction=True)
def test_milestones_and_split_keep_the_invariants_in_any_interleaving(
    settings: Any, sim_stripe: Any
) -> None:
    configure(
        settings,
        ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
        # Tips on a split payment are shared between the payees: the machine's
        # tip rules run here too, under the same invariants.
        TIP_MAX_AMOUNT={"usd": 1_000},
    )
    from tests.payments.conftest import stripe_account

    SplitPaymentMachine.market = build_market()
    partner = factories.make_user("partner")
    stripe_account(owner_user=partner)
    SplitPaymentMachine.partner = partner
    try:
        run_state_machine_as_test(
            SplitPaymentMachine,
            settings=hypothesis_settings(
                max_examples=MAX_EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=not os.environ.get("ESCROW_RANDOM"),
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                phases=PHASES,
            ),
        )
    finally:
        EXTRA.clear()
    # Not vacuous: milestones were released to both payees along the way.
    assert len(SplitPaymentMachine.payee_transfers_seen) >= 4
