"""Milestones, partial releases and split payouts (docs/milestones.md, docs/splits.md),
through the API and the signals, on the simulated Stripe."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils import timezone

from django_escrow_connect import signals, swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import BalanceInsufficient, TemporarilyUnavailable
from django_escrow_connect.money import InvalidAmount, InvalidCurrency
from django_escrow_connect.services import errors
from django_escrow_connect.services.releases import release_in_parts
from django_escrow_connect.services.schedules import auto_release
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.terms import (
    EscrowTerms,
    InvalidTerms,
    MilestoneTerms,
    PayeeShare,
    split_amount,
    terms_from_task,
)
from tests import factories

from .conftest import (
    assert_terms_refused,
    auto_release_dry_run,
    auto_release_run,
    configure,
    stripe_account,
)

#: Per task: what the test's terms add to the task's own (milestones, payees).
EXTRA: dict[Any, dict[str, Any]] = {}


def split_terms(task: Any) -> EscrowTerms:
    """The ``PAYMENT_TERMS`` hook of these tests: the task's terms plus ``EXTRA``.

    ``EXTRA[pk]["typed_milestones"]``: (name, amount) or (name, amount,
    days before its automatic release) rows the hook makes into milestones
    without validating them, as a host does from what its users typed.
    """
    terms = terms_from_task(task)
    extra = dict(EXTRA.get(task.pk) or {})
    typed = extra.pop("typed_milestones", None)
    if typed is not None:
        extra["milestones"] = [typed_milestone(*row) for row in typed]
    return dataclasses.replace(terms, **extra) if extra else terms


def typed_milestone(name: str, amount: str, days: str | None = None) -> MilestoneTerms:
    auto_release_after = None if days is None else timedelta(days=int(days))
    return MilestoneTerms(name, int(amount), auto_release_after=auto_release_after)


@pytest.fixture
def split(settings: Any, sim_stripe: Any) -> Any:
    configure(
        settings,
        ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
        PLATFORM_FEE_BASIS_POINTS=1000,
    )
    EXTRA.clear()
    yield
    EXTRA.clear()


@pytest.fixture
def partner(market: Any) -> Any:
    """A second doer (a subcontractor) with an onboarded account."""
    user = factories.make_user("partner")
    stripe_account(owner_user=user)
    return user


def transfers_in_stripe(sim_stripe: Any, payment: Any) -> list[dict[str, Any]]:
    return [
        t for t in sim_stripe.transfers.values() if t["transfer_group"] == payment.transfer_group
    ]


def held(market: Any, amount: int = 10_000, **extra: Any) -> Any:
    task = market.task(amount=amount)
    if extra:
        EXTRA[task.pk] = extra
    response = market.create(task)
    assert response.status_code == 201, response.content
    payment = market.pay(response.json()["payment_id"])
    assert payment.status == "held"
    return payment


def release(market: Any, payment: Any, user: Any = None, **body: Any) -> Any:
    return market.post(user or market.customer, "payment-release", body, payment_id=payment.pk)


def three_milestones() -> list[MilestoneTerms]:
    return [
        MilestoneTerms("Design", 2_000, due_date=date(2027, 1, 15)),
        MilestoneTerms("Build", 5_000),
        MilestoneTerms("Launch", 3_000),
    ]


class Received:
    """Signals sent during a test (kwargs of each)."""

    def __init__(self, signal: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.signal = signal
        signal.connect(self.receive)

    def receive(self, sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal", None)
        self.calls.append(kwargs)

    def close(self) -> None:
        self.signal.disconnect(self.receive)


@pytest.fixture
def milestone_signals() -> Any:
    received = Received(signals.milestone_released)
    yield received
    received.close()


@pytest.fixture
def payee_failures() -> Any:
    received = Received(signals.payee_transfer_failed)
    yield received
    received.close()


# --------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------


class TestTerms:
    def test_split_amount_is_exact_with_the_remainder_to_the_largest_then_first(self):
        assert split_amount(100, [1, 1, 1]) == [34, 33, 33]
        assert split_amount(101, [1, 1, 1]) == [34, 34, 33]
        assert split_amount(9_000, [6_000, 4_000]) == [5_400, 3_600]
        assert split_amount(7, [3_333, 3_333, 3_334]) == [2, 2, 3]
        for total in range(0, 50):
            assert sum(split_amount(total, [5, 3, 2])) == total

    def test_milestones_must_sum_to_the_amount(self):
        user = object()
        with pytest.raises(
            InvalidTerms, match="add up to 1000, not to the amount 10000"
        ) as refused:
            EscrowTerms(
                payer=user,
                amount=10_000,
                currency="usd",
                payee_user=user,
                milestones=[MilestoneTerms("A", 1_000)],
            )
        # Milestone prices a user typed beside the task's: the payer is told
        # (the 409 of test_create.py), as for a price Stripe cannot charge.
        assert refused.value.payer is user

    @pytest.mark.parametrize(
        ("make", "error"),
        [
            (lambda: MilestoneTerms("A", 1_000.0), "amount must be an int in minor units"),
            (lambda: MilestoneTerms(None, 1_000), "name must be a str"),
            (
                lambda: MilestoneTerms("A", 1_000, auto_release_after=7),
                "auto_release_after must be a timedelta or None",
            ),
            (lambda: PayeeShare(user=object(), basis_points=50.0), "shares must be ints"),
        ],
    )
    def test_a_value_of_the_wrong_type_is_the_hosts_error(self, make, error):
        # Wrong types come from the host's code, not from what a user typed:
        # no 409 for the customer.
        with pytest.raises(ValueError, match=error) as refused:
            make()
        assert not isinstance(refused.value, InvalidAmount)

    def test_a_malformed_currency_is_told_to_the_payer_and_still_an_invalid_currency(self, market):
        # A currency picked in a free-text field: the payer gets the 409
        # (test_create.py), and host code catching InvalidCurrency still does.
        with pytest.raises(InvalidCurrency, match="u\\$d") as refused:
            EscrowTerms(payer=market.customer, amount=1_000, currency="u$d", payee_user=market.doer)
        assert isinstance(refused.value, InvalidTerms)
        assert refused.value.payer == market.customer

    def test_basis_points_must_cover_the_whole_net(self, market, partner):
        with pytest.raises(InvalidTerms, match="add up to 9000 basis points, not to 10000"):
            EscrowTerms(
                payer=market.customer,
                amount=10_000,
                currency="usd",
                payees=[
                    PayeeShare(user=market.doer, basis_points=6_000),
                    PayeeShare(user=partner, basis_points=3_000),
                ],
            )

    @pytest.mark.parametrize(
        ("currency", "shares", "rule"),
        [
            ("kwd", (5_005, 3_995), "KWD amounts must end in 0"),
            ("isk", (5_050, 3_950), "ISK amounts must be whole units"),
        ],
    )
    def test_an_agreed_amount_share_must_be_one_stripe_can_send(
        self, market, partner, currency, shares, rule
    ):
        # 9,000 is the net of 10,000 at the 10 % fee: only the step is wrong.
        with pytest.raises(InvalidAmount, match=rule):
            EscrowTerms(
                payer=market.customer,
                amount=10_000,
                currency=currency,
                payees=[
                    PayeeShare(user=market.doer, amount=shares[0]),
                    PayeeShare(user=partner, amount=shares[1]),
                ],
            )

    def test_a_share_is_basis_points_or_an_amount_not_both(self, market):
        with pytest.raises(ValueError, match="exactly one of basis_points and amount"):
            PayeeShare(user=market.doer, basis_points=5_000, amount=100)

    def test_the_first_payee_is_the_payee(self, market, partner):
        terms = EscrowTerms(
            payer=market.customer,
            amount=10_000,
            currency="usd",
            payees=[
                PayeeShare(user=market.doer, basis_points=6_000),
                PayeeShare(user=partner, basis_points=4_000),
            ],
        )
        assert terms.payee_user == market.doer
        assert terms.is_split


# --------------------------------------------------------------------------
# Milestones
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("split")
class TestMilestones:
    def test_detail_lists_the_milestones(self, market):
        payment = held(market, milestones=three_milestones())
        body = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert [(m["name"], m["amount"], m["status"]) for m in body["milestones"]] == [
            ("Design", 2_000, "held"),
            ("Build", 5_000, "held"),
            ("Launch", 3_000, "held"),
        ]
        assert body["milestones"][0]["due_date"] == "2027-01-15"
        assert body["amount_held"] == 10_000
        assert body["amount_released"] == 0

    def test_release_milestone_by_milestone(self, market, sim_stripe, milestone_signals):
        payment = held(market, milestones=three_milestones())
        design, build, launch = payment.milestones.order_by("position")

        response = release(market, payment, milestone_id=design.pk)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["status"] == "partially_released"
        assert body["amount_released"] == 2_000
        assert body["amount_held"] == 8_000
        # 10 % fee on the milestone: 1,800 to the doer.
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [1_800]
        assert body["milestones"][0]["status"] == "released"
        (call,) = milestone_signals.calls
        assert call["milestone"].pk == design.pk
        assert [t.amount for t in call["transfers"]] == [1_800]

        # Idempotent: releasing a released milestone changes nothing.
        again = release(market, payment, milestone_id=design.pk)
        assert again.status_code == 200
        assert len(transfers_in_stripe(sim_stripe, payment)) == 1

        assert release(market, payment, milestone_id=launch.pk).json()["amount_held"] == 5_000
        final = release(market, payment, milestone_id=build.pk).json()
        assert final["status"] == "released"
        assert final["amount_held"] == 0
        assert final["amount_released"] == 10_000
        made = [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)]
        assert made == [1_800, 2_700, 4_500]
        payment = market.payment(payment.pk)
        assert payment.platform_fee == 1_000
        assert payment.amount_transferred == 9_000
        # Every transfer from the one charge, in the payment's transfer group.
        for transfer in transfers_in_stripe(sim_stripe, payment):
            assert transfer["source_transaction"] == payment.stripe_charge_id
        assert len(milestone_signals.calls) == 3

    def test_confirm_releases_every_milestone_still_held(self, market, sim_stripe):
        payment = held(market, milestones=three_milestones())
        first = payment.milestones.order_by("position").first()
        release(market, payment, milestone_id=first.pk)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["status"] == "released"
        assert [m["status"] for m in body["milestones"]] == ["released"] * 3
        assert sum(t["amount"] for t in transfers_in_stripe(sim_stripe, payment)) == 9_000

    def test_an_amount_cannot_be_released_from_a_milestone_payment(self, market):
        payment = held(market, milestones=three_milestones())
        response = release(market, payment, amount=1_000)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "release_by_milestone"

    def test_an_unknown_milestone_is_404(self, market):
        payment = held(market, milestones=three_milestones())
        response = release(market, payment, milestone_id=999_999)
        assert response.status_code == 404

    def test_only_the_customer_or_staff_release(self, market):
        payment = held(market, milestones=three_milestones())
        first = payment.milestones.order_by("position").first()
        assert release(market, payment, market.doer, milestone_id=first.pk).status_code == 403
        assert release(market, payment, market.other, milestone_id=first.pk).status_code == 404
        assert release(market, payment, market.staff, milestone_id=first.pk).status_code == 200

    def test_the_doer_marks_a_milestone_delivered(self, market):
        payment = held(market, milestones=three_milestones())
        first = payment.milestones.order_by("position").first()
        url = reverse("escrow_connect:milestone-deliver", args=[str(payment.pk), str(first.pk)])
        with market.capture(execute=True):
            customer = market.client(market.customer).post(url, {}, format="json")
        assert customer.status_code == 403
        with market.capture(execute=True):
            response = market.client(market.doer).post(url, {}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["milestones"][0]["status"] == "delivered"

    def test_refunding_all_held_money_refunds_the_held_milestones(self, market, sim_stripe):
        payment = held(market, milestones=three_milestones())
        design = payment.milestones.order_by("position").first()
        release(market, payment, milestone_id=design.pk)
        response = market.post(
            market.staff, "payment-refund", {"amount": 8_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        body = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        assert [m["status"] for m in body["milestones"]] == ["released", "refunded", "refunded"]
        # Released, then the rest refunded: nothing left to release.
        assert body["status"] == "partially_refunded"
        assert body["amount_held"] == 0
        assert body["amount_released"] == 2_000
        # Releasing it again is the idempotent answer of a released payment.
        assert release(market, payment).status_code == 200
        assert len(transfers_in_stripe(sim_stripe, payment)) == 1

    def test_a_partial_refund_of_held_money_refunds_the_latest_milestones(self, market):
        payment = held(market, milestones=three_milestones())
        response = market.post(
            market.staff, "payment-refund", {"amount": 4_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        body = market.get(market.customer, "payment-detail", payment_id=payment.pk).json()
        # Launch (3,000) is wholly refunded; Build keeps what is left of it.
        assert [m["status"] for m in body["milestones"]] == ["held", "held", "refunded"]
        assert body["status"] == "held"
        final = release(market, payment).json()
        assert final["status"] == "released"
        assert [m["status"] for m in final["milestones"]] == ["released", "released", "refunded"]
        assert final["amount_released"] == 6_000

    def test_a_partly_refunded_milestone_releases_only_what_is_left_of_it(self, market, sim_stripe):
        payment = held(market, milestones=three_milestones())
        response = market.post(
            market.staff, "payment-refund", {"amount": 4_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        design, build, launch = market.payment(payment.pk).milestones.order_by("position")
        assert launch.status == "refunded"
        # Build first: 1,000 of it was refunded, it releases the 4,000 left.
        body = release(market, payment, milestone_id=build.pk).json()
        assert body["amount_released"] == 4_000
        assert body["amount_held"] == 2_000
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600]
        # Design keeps all of its 2,000.
        body = release(market, payment, milestone_id=design.pk).json()
        assert body["status"] == "released"
        assert [m["status"] for m in body["milestones"]] == ["released", "released", "refunded"]
        released = market.payment(payment.pk).releases.order_by("position")
        assert [(r.milestone_id, r.amount) for r in released] == [
            (build.pk, 4_000),
            (design.pk, 2_000),
        ]


# --------------------------------------------------------------------------
# Partial amounts on a one-payee payment
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("split")
class TestPartialAmounts:
    def test_release_forty_percent_then_the_rest(self, market, sim_stripe):
        payment = held(market)
        body = release(market, payment, amount=4_000).json()
        assert body["status"] == "partially_released"
        assert body["amount_held"] == 6_000
        body = release(market, payment).json()
        assert body["status"] == "released"
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600, 5_400]

    @pytest.mark.parametrize("amount", [0, -5, 10_001, 1.5, "ten"])
    def test_invalid_amounts_are_400(self, market, amount):
        payment = held(market)
        response = release(market, payment, amount=amount)
        assert response.status_code == 400
        assert response.json()["error"]["code"] in ("invalid", "invalid_amount")

    def test_milestone_and_amount_together_are_400(self, market):
        payment = held(market)
        assert release(market, payment, amount=1, milestone_id=1).status_code == 400

    def test_a_keyed_release_by_amount_sent_again_releases_once(self, market, sim_stripe):
        """A release by amount sent again would release as much again: with
        the same Idempotency-Key it is answered (or finished), never repeated."""
        payment = held(market)

        def keyed(amount: int, key: str = "release-40") -> Any:
            return market.post(
                market.customer,
                "payment-release",
                {"amount": amount},
                payment_id=payment.pk,
                headers={"Idempotency-Key": key},
            )

        sim_stripe.fail_next("create_transfer", TemporarilyUnavailable("timeout", http_status=None))
        assert keyed(4_000).status_code == 503  # the transfer's answer lost
        finished = keyed(4_000)
        assert finished.status_code == 200, finished.content
        again = keyed(4_000)
        assert again.status_code == 200, again.content
        body = again.json()
        assert (body["status"], body["amount_held"]) == ("partially_released", 6_000)
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600]
        assert market.payment(payment.pk).releases.count() == 1

        reused = keyed(3_000)
        assert reused.status_code == 400, reused.content
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        # A new user action, a new key: a release of its own.
        assert keyed(3_000, "release-30").status_code == 200
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600, 2_700]

    @pytest.mark.parametrize(
        ("path", "body", "key", "made", "status"),
        [
            ("payment-release", {"amount": 3_000}, "release-30", [3_600, 2_700],
             "partially_released"),
            ("payment-release", {"amount": 4_000}, "release-40-again", [3_600, 3_600],
             "partially_released"),
            # Without a key a release by amount is always a new request.
            ("payment-release", {"amount": 4_000}, None, [3_600, 3_600], "partially_released"),
            ("payment-release", {}, None, [3_600, 5_400], "released"),
            ("payment-confirm", {}, None, [3_600, 5_400], "released"),
        ],
        ids=["other-amount", "same-amount-other-key", "same-amount-no-key", "all", "confirm"],
    )  # fmt: skip
    def test_another_request_finishes_an_unresolved_keyed_release_then_does_its_own(
        self, market, sim_stripe, path, body, key, made, status
    ):
        """A keyed release of 4,000 timed out (its transfer unresolved). Another
        request (another key, another amount, no key, everything, a confirm)
        finishes that transfer with its key, then releases what it asked for
        itself: never answered 200 on the other's 4,000 alone, never a second
        transfer for the first request, which its retry answers."""
        payment = held(market)
        sim_stripe.fail_next(
            "create_transfer",
            TemporarilyUnavailable("timeout", http_status=None),
            after_effect=True,
        )
        first = market.post(
            market.customer,
            "payment-release",
            {"amount": 4_000},
            payment_id=payment.pk,
            headers={"Idempotency-Key": "release-40"},
        )
        assert first.status_code == 503, first.content

        other = market.post(
            market.customer,
            path,
            body,
            payment_id=payment.pk,
            headers={"Idempotency-Key": key} if key else None,
        )

        assert other.status_code == 200, other.content
        assert other.json()["status"] == status
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == made
        payment = market.payment(payment.pk)
        released = payment.releases.order_by("position")
        # Each release's gross: its transfer plus the 10 % fee.
        assert [r.amount for r in released] == [t * 10 // 9 for t in made]
        # The first request's transfer kept its key; the other's is its own.
        keys = [list(r.transfers.values_list("idempotency_key", flat=True)) for r in released]
        owners = payment.operations.filter(kind="transfer").order_by("created_at")
        assert [op.request_key for op in owners] == ["release-40", key or ""]
        assert [[op.idempotency_key] for op in owners] == keys
        sim_stripe.calls.clear()
        retried = market.post(
            market.customer,
            "payment-release",
            {"amount": 4_000},
            payment_id=payment.pk,
            headers={"Idempotency-Key": "release-40"},
        )
        assert retried.status_code == 200, retried.content
        assert sim_stripe.calls == []

    def test_a_refusal_of_the_unresolved_keyed_release_stops_another_release(
        self, market, sim_stripe
    ):
        """The other request finishing it meets Stripe's refusal of the first
        request's transfer: 409 release_failed, and nothing of its own is
        released (a refused transfer is sent again before any new release)."""
        payment = held(market)
        sim_stripe.fail_next("create_transfer", TemporarilyUnavailable("timeout", http_status=None))
        first = market.post(
            market.customer,
            "payment-release",
            {"amount": 4_000},
            payment_id=payment.pk,
            headers={"Idempotency-Key": "release-40"},
        )
        assert first.status_code == 503, first.content
        sim_stripe.fail_next(
            "create_transfer",
            BalanceInsufficient(
                "Insufficient funds.", code="balance_insufficient", http_status=400
            ),
        )
        other = market.post(
            market.customer,
            "payment-release",
            {"amount": 3_000},
            payment_id=payment.pk,
            headers={"Idempotency-Key": "release-30"},
        )
        assert other.status_code == 409, other.content
        assert other.json()["error"]["code"] == "release_failed"
        payment = market.payment(payment.pk)
        assert [r.amount for r in payment.releases.all()] == [4_000]
        assert payment.amount_released == 4_000
        assert not payment.operations.filter(request_key="release-30").exists()
        assert transfers_in_stripe(sim_stripe, payment) == []

    def test_a_key_reused_for_another_amount_is_refused_once_all_is_released(
        self, market, sim_stripe
    ):
        """A payment released by now answers a keyed retry 200 only when it is
        the same request: the same key with another amount is 400, as for
        refunds and tips, whatever the payment's state."""
        payment = held(market)

        def keyed(amount: int) -> Any:
            return market.post(
                market.customer,
                "payment-release",
                {"amount": amount},
                payment_id=payment.pk,
                headers={"Idempotency-Key": "release-40"},
            )

        assert keyed(4_000).status_code == 200
        assert release(market, payment).json()["status"] == "released"
        sim_stripe.calls.clear()

        reused = keyed(3_000)
        assert reused.status_code == 400, reused.content
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        again = keyed(4_000)
        assert again.status_code == 200, again.content
        assert (again.json()["status"], again.json()["amount_released"]) == ("released", 10_000)
        assert sim_stripe.calls == []
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600, 5_400]

    @pytest.mark.parametrize("headers", [{"Idempotency-Key": "release-20"}, None])
    def test_a_release_by_amount_that_would_all_be_fee_is_refused(
        self, market, sim_stripe, settings, headers
    ):
        """10 % + 30 cents: a release of 20 cents is all fee and sends no
        transfer, the only row its Idempotency-Key could be kept on, so a retry
        would release 20 more. Refused, keyed or not, nothing written."""
        configure(settings, PLATFORM_FEE_FIXED={"usd": 30})
        payment = held(market)
        sim_stripe.calls.clear()
        for _attempt in range(2):
            response = market.post(
                market.customer,
                "payment-release",
                {"amount": 20},
                payment_id=payment.pk,
                headers=headers,
            )
            assert response.status_code == 400, response.content
            error = response.json()["error"]
            assert error["code"] == "invalid_amount"
            assert "(0.20 USD) would be the platform fee" in error["message"]
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_held, payment.amount_released) == (
            "held",
            10_000,
            0,
        )
        assert not payment.releases.exists()
        assert not payment.operations.filter(kind="transfer").exists()
        assert sim_stripe.calls == []
        # A release that pays the payee something goes ahead: 130 of fee.
        body = release(market, payment, amount=1_000).json()
        assert (body["amount_released"], body["amount_held"]) == (1_000, 9_000)
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [870]

    def test_the_doer_earns_what_a_partial_release_paid_out(self, market):
        payment = held(market)
        release(market, payment, amount=4_000)
        body = market.get(market.doer, "dashboard-task-doer").json()
        assert body["earnings"] == [{"currency": "usd", "amount": 3_600, "formatted": "36.00 USD"}]

    def test_in_escrow_counts_only_what_is_still_held(self, market):
        payment = held(market)
        release(market, payment, amount=4_000)
        doer = market.get(market.doer, "dashboard-task-doer").json()
        # 6,000 held, less the 10% fee on it (the release's 400 was its own).
        assert doer["in_escrow"] == [{"currency": "usd", "amount": 5_400, "formatted": "54.00 USD"}]
        customer = market.get(market.customer, "dashboard-customer").json()
        assert customer["in_escrow"] == [
            {"currency": "usd", "amount": 6_000, "formatted": "60.00 USD"}
        ]

    def test_refund_within_held_touches_no_transfer(self, market, sim_stripe):
        payment = held(market)
        release(market, payment, amount=4_000)
        response = market.post(
            market.staff, "payment-refund", {"amount": 6_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        assert [c for c in sim_stripe.calls if c[0] == "create_transfer_reversal"] == []
        payment = market.payment(payment.pk)
        assert payment.amount_reversed == 0
        assert payment.amount_refunded == 6_000
        assert payment.amount_released == 4_000
        assert payment.amount_held == 0

    def test_the_fees_of_releases_in_parts_add_up_to_the_fee_on_the_whole(
        self, market, sim_stripe, settings
    ):
        # 10 % + 30 cents fixed: fee(10,000) = 1,030, fee(1,000) = 130.
        configure(settings, PLATFORM_FEE_FIXED={"usd": 30})
        payment = held(market)
        for _ in range(10):
            assert release(market, payment, amount=1_000).status_code == 200
        payment = market.payment(payment.pk)
        assert payment.status == "released"
        fees = [r.platform_fee for r in payment.releases.order_by("position")]
        # Each release pays the fee on everything released so far less the
        # fees already paid: the fixed part once, not once per release.
        assert fees == [130] + [100] * 9
        assert payment.platform_fee == 1_030
        made = [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)]
        assert sum(made) == payment.amount_transferred == 10_000 - 1_030

    def test_rounding_never_makes_the_fees_of_releases_drift(self, market, sim_stripe):
        # 10 % rounded half up: fee(1,005) = 101 each time would take 909 of 9,050.
        payment = held(market, amount=9_050)
        for _ in range(9):
            assert release(market, payment, amount=1_005).status_code == 200
        body = release(market, payment).json()  # the last 5
        assert body["status"] == "released"
        assert body["platform_fee"] == 905
        fees = [r.platform_fee for r in market.payment(payment.pk).releases.order_by("position")]
        assert fees == [101, 100, 101, 100, 101, 100, 101, 100, 101, 0]
        made = [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)]
        assert sum(made) == 9_050 - 905

    @pytest.mark.parametrize("headers", [{"Idempotency-Key": "release-10"}, None])
    @pytest.mark.parametrize("ended", ["released", "partially_refunded"])
    def test_a_new_release_by_amount_once_the_release_is_over_is_409(
        self, market, sim_stripe, headers, ended
    ):
        """A release by amount asks for money to move: a payment released by
        now (also one partly refunded since) answers it 409 as a release of a
        refunded payment is answered, never 200 as if 1,000 had moved. Only a
        keyed retry of an earlier release by amount is answered 200 (see
        test_a_key_reused_for_another_amount_is_refused_once_all_is_released)."""
        payment = held(market)
        if ended == "released":
            assert release(market, payment).status_code == 200
        else:
            assert release(market, payment, amount=4_000).status_code == 200
            refund = market.post(
                market.staff, "payment-refund", {"amount": 6_000}, payment_id=payment.pk
            )
            assert refund.status_code == 200, refund.content
        before = market.payment(payment.pk)
        assert before.status == ended
        sim_stripe.calls.clear()

        response = market.post(
            market.customer,
            "payment-release",
            {"amount": 1_000},
            payment_id=payment.pk,
            headers=headers,
        )
        assert response.status_code == 409, response.content
        error = response.json()["error"]
        assert error["code"] == "transition_not_allowed"
        assert error["message"] == (
            f"A payment that is {before.get_status_display().lower()} cannot be released."
        )
        after = market.payment(payment.pk)
        assert (after.status, after.amount_released, after.amount_transferred) == (
            before.status,
            before.amount_released,
            before.amount_transferred,
        )
        assert after.releases.count() == before.releases.count()
        assert not after.operations.filter(request_key="release-10").exists()
        assert sim_stripe.calls == []

    def test_a_release_by_amount_of_a_refunded_payment_is_409_as_any_release(
        self, market, sim_stripe
    ):
        """Refused for the payment's state, as a release of everything is, not
        as an amount above the nothing it holds (400)."""
        payment = held(market)
        refund = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert refund.json()["status"] == "refunded"
        for body in ({"amount": 1_000}, {}):
            response = release(market, payment, **body)
            assert response.status_code == 409, response.content
            assert response.json()["error"] == {
                "code": "transition_not_allowed",
                "message": "A payment that is refunded cannot be released.",
            }
        assert not market.payment(payment.pk).releases.exists()

    @pytest.mark.parametrize("state", ["held", "released"])
    def test_manual_capture_refuses_partial_release(self, market, sim_stripe, settings, state):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = held(market)
        if state == "released":
            assert release(market, payment).json()["status"] == "released"
        sim_stripe.calls.clear()
        response = release(market, payment, amount=1_000)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "split_unsupported"
        assert market.payment(payment.pk).status == state
        assert sim_stripe.calls == []

    def test_release_in_parts_refuses_a_manual_capture_payment(self, market, sim_stripe, settings):
        """The service itself, not only the API's path to it: a part of a
        manual-capture payment would be a transfer from a charge that is only
        authorised (its capture pays the doer; nothing else may)."""
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        payment = held(market)
        sim_stripe.calls.clear()
        with pytest.raises(errors.InvalidInput) as refused:
            release_in_parts(payment.pk, market.customer, amount=1_000)
        assert refused.value.code == "split_unsupported"
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_released) == ("held", 0)
        assert not payment.releases.exists()
        assert not payment.payees.exists()
        assert sim_stripe.calls == []


# --------------------------------------------------------------------------
# Split payouts
# --------------------------------------------------------------------------


def figures(market: Any, user: Any, **params: Any) -> tuple[list[int], list[int]]:
    """``user``'s task-doer dashboard: (``in_escrow``, ``earnings``) amounts."""
    body = market.get(user, "dashboard-task-doer", **params).json()
    return (
        [row["amount"] for row in body["in_escrow"]],
        [row["amount"] for row in body["earnings"]],
    )


def refuse_next_transfer(sim_stripe: Any) -> None:
    sim_stripe.fail_next(
        "create_transfer",
        BalanceInsufficient("Insufficient funds.", code="balance_insufficient", http_status=400),
    )


def team(market: Any, partner: Any) -> list[PayeeShare]:
    return [
        PayeeShare(user=market.doer, basis_points=6_000),
        PayeeShare(user=partner, basis_points=4_000),
    ]


def held_for_the_organization_first(market: Any) -> Any:
    """A held payment split 2,500 / 6,500 between the organization and the doer.

    The organization first, so that its transfer is the one a refusal hits.
    """
    return held(
        market,
        payee_user=None,
        payee_organization=market.organization,
        payees=[
            PayeeShare(organization=market.organization, amount=2_500),
            PayeeShare(user=market.doer, amount=6_500),
        ],
    )


def refused_then_refunded(market: Any, sim_stripe: Any, partner: Any) -> Any:
    """A payment split 60/40 between the doer and ``partner`` whose release
    sent the partner's 3,600 but not the doer's 5,400 (refused), then a
    refund of 1,000: the doer is owed 5,400 less their 540 of it."""
    payment = held(market, payees=team(market, partner))
    refuse_then_refund(market, sim_stripe, payment)
    return payment


def refuse_then_refund(market: Any, sim_stripe: Any, payment: Any) -> None:
    """The first payee's transfer of ``payment``'s release is refused; staff then refund 1,000."""
    refuse_next_transfer(sim_stripe)
    confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert confirmed.status_code == 409, confirmed.content
    with market.capture(execute=True):
        response = market.post(
            market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk
        )
    assert response.status_code == 200, response.content


@pytest.mark.usefixtures("split")
class TestSplit:
    def test_one_transfer_per_payee_with_its_share(self, market, sim_stripe, partner):
        payment = held(market, payees=team(market, partner))
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["status"] == "released"
        made = transfers_in_stripe(sim_stripe, payment)
        assert sorted(t["amount"] for t in made) == [3_600, 5_400]
        assert {t["metadata"]["escrow_payee"] for t in made} == {
            str(p["id"]) for p in body["payees"]
        }
        assert [[t["status"] for t in p["transfers"]] for p in body["payees"]] == [
            ["created"],
            ["created"],
        ]

    def test_each_payee_earns_its_own_transfers_released_so_far(self, market, partner):
        payment = held(market, payees=team(market, partner))
        body = release(market, payment, amount=4_000).json()
        assert body["status"] == "partially_released"

        def earned(user: Any) -> list[int]:
            response = market.get(user, "dashboard-task-doer")
            return [row["amount"] for row in response.json()["earnings"]]

        # 4,000 less the 10 % fee, shared 60/40: paid out, though more is held.
        assert earned(market.doer) == [2_160]
        assert earned(partner) == [1_440]
        release(market, payment)
        assert earned(market.doer) == [5_400]
        assert earned(partner) == [3_600]

    def test_the_second_payee_sees_the_payment(self, market, partner):
        payment = held(market, payees=team(market, partner))
        response = market.get(partner, "payment-detail", payment_id=payment.pk)
        assert response.status_code == 200

    def test_the_second_payee_lists_the_payment_and_no_other(self, market, partner):
        market.held_payment()  # the doer's alone
        payment = held(market, payees=team(market, partner))
        listed = market.get(partner, "payment-list").json()
        assert [p["payment_id"] for p in listed["results"]] == [str(payment.pk)]
        assert listed["count"] == 1
        assert market.get(market.doer, "payment-list").json()["count"] == 2
        assert market.get(market.other, "payment-list").json()["count"] == 0

    def test_the_second_payee_lists_the_payment_as_a_task_doer(self, market, partner):
        market.held_payment()  # the doer's alone
        payment = held(market, payees=team(market, partner))

        def as_doer(user: Any) -> list[str]:
            body = market.get(user, "payment-list", role="task_doer").json()
            return [p["payment_id"] for p in body["results"]]

        assert as_doer(partner) == [str(payment.pk)]
        assert len(as_doer(market.doer)) == 2
        assert market.get(partner, "payment-list", role="customer").json()["count"] == 0

    def test_each_payees_dashboard_shows_the_payment_and_their_share_in_escrow(
        self, market, partner
    ):
        market.held_payment()  # the doer's alone: 10,000 less the 10 % fee
        payment = held(market, payees=team(market, partner))

        def dashboard(user: Any) -> tuple[list[str], list[int]]:
            response = market.get(user, "dashboard-task-doer")
            assert response.status_code == 200, response.content
            body = response.json()
            return (
                [p["payment_id"] for p in body["payments"]],
                [row["amount"] for row in body["in_escrow"]],
            )

        # 9,000 net shared 60/40; the first payee is not shown the partner's part.
        assert dashboard(partner) == ([str(payment.pk)], [3_600])
        shown, held_for_doer = dashboard(market.doer)
        assert shown[0] == str(payment.pk)
        assert len(shown) == 2
        assert held_for_doer == [9_000 + 5_400]

        release(market, payment, amount=4_000)  # 6,000 held: 5,400 net
        assert dashboard(partner) == ([str(payment.pk)], [2_160])
        assert dashboard(market.doer)[1] == [9_000 + 3_240]
        release(market, payment)
        assert dashboard(partner) == ([str(payment.pk)], [])

    def test_a_share_in_escrow_is_rounded_down(self, market, partner):
        payment = held(market, amount=10_010, payees=team(market, partner))
        net = payment.amount - payment.platform_fee
        assert net == 9_009  # 60/40: 5,405.4 and 3,603.6

        def in_escrow(user: Any) -> list[int]:
            body = market.get(user, "dashboard-task-doer").json()
            return [row["amount"] for row in body["in_escrow"]]

        assert in_escrow(market.doer) == [5_405]
        assert in_escrow(partner) == [3_603]
        # The release divides the net exactly: the odd unit goes to the larger remainder.
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        earned = market.get(partner, "dashboard-task-doer").json()["earnings"]
        assert [row["amount"] for row in earned] == [3_604]

    def test_a_refused_share_stays_in_the_payees_escrow_until_it_is_sent(
        self, market, sim_stripe, partner
    ):
        payment = held(market, payees=team(market, partner))

        refuse_next_transfer(sim_stripe)
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 409, confirmed.content
        # The release left escrow; the doer's 5,400 did not reach them, the
        # partner's 3,600 did.
        assert figures(market, market.doer) == ([5_400], [])
        assert figures(market, partner) == ([], [3_600])

        # Refused again: two failed attempts, one share.
        refuse_next_transfer(sim_stripe)
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 409, confirmed.content
        assert figures(market, market.doer) == ([5_400], [])

        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        assert figures(market, market.doer) == ([], [5_400])
        assert figures(market, partner) == ([], [3_600])

    def test_shares_of_a_release_cut_short_by_a_timeout_stay_in_escrow(
        self, market, sim_stripe, partner
    ):
        payment = held(market, payees=team(market, partner))

        def in_escrow(user: Any) -> list[int]:
            body = market.get(user, "dashboard-task-doer").json()
            return [row["amount"] for row in body["in_escrow"]]

        # The doer's transfer times out (Stripe did not make it): it is in
        # flight, and the partner's is not sent until it is settled.
        sim_stripe.fail_next(
            "create_transfer", TemporarilyUnavailable("Request timed out", http_status=None)
        )
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 503, confirmed.content
        assert market.payment(payment.pk).amount_held == 0
        assert in_escrow(market.doer) == [5_400]
        assert in_escrow(partner) == [3_600]

        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        assert in_escrow(market.doer) == in_escrow(partner) == []

    def test_an_organizations_dashboard_shows_its_share_by_amount(self, market):
        payment = held(
            market,
            payees=[
                PayeeShare(user=market.doer, amount=6_500),
                PayeeShare(organization=market.organization, amount=2_500),
            ],
        )
        response = market.get(
            market.org_admin, "dashboard-task-doer", organization_id=str(market.organization.pk)
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert [p["payment_id"] for p in body["payments"]] == [str(payment.pk)]
        assert body["in_escrow"] == [{"currency": "usd", "amount": 2_500, "formatted": "25.00 USD"}]
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [row["amount"] for row in doer["in_escrow"]] == [6_500]
        assert market.get(market.other, "dashboard-task-doer").json()["in_escrow"] == []

    def test_an_organizations_refused_share_stays_in_its_escrow(self, market, sim_stripe):
        payment = held_for_the_organization_first(market)
        refuse_next_transfer(sim_stripe)
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 409, confirmed.content

        organization = str(market.organization.pk)
        assert figures(market, market.org_admin, organization_id=organization) == ([2_500], [])
        assert figures(market, market.doer) == ([], [6_500])
        # The admin's own dashboard (as a user) is not the organization's.
        assert figures(market, market.org_admin) == ([], [])

    @pytest.mark.parametrize("in_sql", [True, False], ids=["administered", "predicate"])
    def test_a_later_payee_sees_the_payment_but_may_not_give_it_back(
        self, market, partner, settings, in_sql
    ):
        if not in_sql:  # without ADMINISTERED_ORGANIZATIONS the predicate decides
            configure(settings, ADMINISTERED_ORGANIZATIONS=None)
        payment = held(market, payees=team(market, partner))
        seen = market.get(partner, "payment-detail", payment_id=payment.pk)
        assert seen.status_code == 200, seen.content
        assert [p["party_id"] for p in seen.json()["payees"]] == [
            str(market.doer.pk),
            str(partner.pk),
        ]
        # Seeing is not deciding: a refund gives the whole payment back.
        refused = market.post(partner, "payment-refund", {}, payment_id=payment.pk)
        assert refused.status_code == 403, refused.content
        assert market.get(market.other, "payment-detail", payment_id=payment.pk).status_code == 404

    @pytest.mark.parametrize("in_sql", [True, False], ids=["administered", "predicate"])
    def test_an_organization_among_the_payees_is_shown_the_payment(self, market, settings, in_sql):
        if not in_sql:
            configure(settings, ADMINISTERED_ORGANIZATIONS=None)
        payment = held(
            market,
            payees=[
                PayeeShare(user=market.doer, basis_points=6_000),
                PayeeShare(organization=market.organization, basis_points=4_000),
            ],
        )
        detail = market.get(market.org_admin, "payment-detail", payment_id=payment.pk)
        assert detail.status_code == 200, detail.content
        organization = str(market.organization.pk)
        listed = market.get(market.org_admin, "payment-list", organization_id=organization)
        assert [p["payment_id"] for p in listed.json()["results"]] == [str(payment.pk)]
        # A member who does not administer it sees neither.
        hidden = market.get(market.org_member, "payment-detail", payment_id=payment.pk)
        assert hidden.status_code == 404
        refused = market.get(market.org_member, "payment-list", organization_id=organization)
        assert refused.status_code == 404

    def test_every_payee_may_mark_a_milestone_delivered(self, market, partner):
        payment = held(
            market,
            milestones=three_milestones(),
            payees=[
                PayeeShare(user=market.doer, basis_points=5_000),
                PayeeShare(user=partner, basis_points=3_000),
                PayeeShare(organization=market.organization, basis_points=2_000),
            ],
        )
        milestones = list(payment.milestones.order_by("position"))

        def deliver(user: Any, milestone: Any) -> int:
            url = reverse(
                "escrow_connect:milestone-deliver", args=[str(payment.pk), str(milestone.pk)]
            )
            with market.capture(execute=True):
                return market.client(user).post(url, {}, format="json").status_code

        assert deliver(partner, milestones[0]) == 200
        assert deliver(market.org_admin, milestones[1]) == 200
        assert deliver(market.org_member, milestones[2]) == 404
        assert deliver(market.customer, milestones[2]) == 403

    def test_amount_shares_must_add_up_to_the_net(self, market, partner):
        task = market.task(amount=10_000)
        EXTRA[task.pk] = {
            "payees": [
                PayeeShare(user=market.doer, amount=5_000),
                PayeeShare(user=partner, amount=5_000),
            ]
        }
        response = market.create(task)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "split_mismatch"

    @pytest.mark.parametrize(
        ("kind", "shares", "why"),
        [
            ("basis_points", (10_000, 0), "Payee 2: the share must be positive, got 0."),
            ("basis_points", (11_000, -1_000), "Payee 2: the share must be positive, got -1000."),
            ("amount", (9_000, 0), "Payee 2: the share must be positive, got 0."),
            (
                "basis_points",
                (6_000, 3_000),
                "The payees' shares add up to 9000 basis points, not to 10000 (100 %).",
            ),
        ],
    )
    def test_a_share_a_user_typed_that_is_not_positive_is_a_409_for_the_customer(
        self, market, sim_stripe, caplog, partner, kind, shares, why
    ):
        """A partner's share typed as 0 (the lead keeping 100 %) adds up and
        still pays the partner nothing: the customer is told, not a 500."""
        task = market.task(amount=10_000)
        EXTRA[task.pk] = {
            "payees": [
                PayeeShare(user=market.doer, **{kind: shares[0]}),
                PayeeShare(user=partner, **{kind: shares[1]}),
            ]
        }
        assert_terms_refused(market, sim_stripe, caplog, task, why)

    def test_a_partner_picked_twice_is_a_409_for_the_customer(
        self, market, sim_stripe, caplog, partner
    ):
        task = market.task(amount=10_000)
        EXTRA[task.pk] = {
            "payees": [
                PayeeShare(user=market.doer, basis_points=5_000),
                PayeeShare(user=partner, basis_points=2_500),
                PayeeShare(user=partner, basis_points=2_500),
            ]
        }
        assert_terms_refused(market, sim_stripe, caplog, task, "Payee 3 is listed twice.")

    def test_manual_capture_refuses_a_split_at_creation(self, market, partner, settings):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
        task = market.task(amount=10_000)
        EXTRA[task.pk] = {"payees": team(market, partner)}
        response = market.create(task)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "split_unsupported"

    def test_a_refused_payee_transfer_leaves_the_other_done_and_is_retried_alone(
        self, market, sim_stripe, partner, payee_failures
    ):
        payment = held(market, payees=team(market, partner))
        refuse_next_transfer(sim_stripe)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "release_failed"
        made = transfers_in_stripe(sim_stripe, payment)
        assert [t["amount"] for t in made] == [3_600]  # the partner's went through
        payment = market.payment(payment.pk)
        assert payment.status == "partially_released"
        (incident,) = payment.transfer_incidents.all()
        assert incident.code == "balance_insufficient"
        (failure,) = payee_failures.calls
        assert failure["payee"].user == market.doer
        assert failure["transfer"].amount == 5_400

        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "released"
        made = transfers_in_stripe(sim_stripe, payment)
        assert sorted(t["amount"] for t in made) == [3_600, 5_400]
        creates = [c for c in sim_stripe.calls if c[0] == "create_transfer"]
        # Two successful transfers, one refused: the retry sent only the refused one.
        assert len(creates) == 3

    @pytest.mark.parametrize("freeze", ["dispute", "radar_review"])
    def test_a_refused_share_is_not_resent_while_the_payment_is_frozen(
        self, market, sim_stripe, partner, freeze
    ):
        from django.db import transaction

        from django_escrow_connect.services.radar import apply_review
        from tests.webhooks.test_radar_events import review

        payment = held(market, payees=team(market, partner))
        refuse_next_transfer(sim_stripe)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 409  # the doer's 5,400 refused, the partner's sent
        payment = market.payment(payment.pk)
        with market.capture(execute=True):
            if freeze == "dispute":
                dispute = dispute_event(payment)
            else:
                opened = review(dataclasses.make_dataclass("Scene", ["payment"])(payment))
                with transaction.atomic():
                    apply_review(opened)

        for ask in ("payment-confirm", "payment-release"):
            response = market.post(market.customer, ask, payment_id=payment.pk)
            assert response.status_code == 409, response.content
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600]
        assert market.payment(payment.pk).transfers.filter(amount=5_400).count() == 1  # refused

        # Once the freeze is over the share is sent.
        with market.capture(execute=True):
            if freeze == "dispute":
                dispute_event(payment, status="won", dispute_id=dispute.stripe_dispute_id)
            else:
                with transaction.atomic():
                    apply_review({**opened, "open": False, "closed_reason": "approved"})
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "released"
        assert sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, payment)) == [
            3_600,
            5_400,
        ]

    @pytest.mark.parametrize("milestones", [False, True])
    def test_a_refused_share_is_never_sent_after_a_full_refund(
        self, market, sim_stripe, partner, milestone_signals, milestones
    ):
        extra = {"milestones": three_milestones()} if milestones else {}
        payment = held(market, payees=team(market, partner), **extra)
        refuse_next_transfer(sim_stripe)
        first = payment.milestones.order_by("position").first()
        response = release(market, payment, **({"milestone_id": first.pk} if milestones else {}))
        assert response.status_code == 409
        paid = 720 if milestones else 3_600  # the partner's 40 % of 1,800 or 9,000
        with market.capture(execute=True):
            response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 200, response.content
        reversals = [c[1]["amount"] for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert reversals == [paid]  # the partner's; the doer was never paid
        calls = len(sim_stripe.calls)

        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert [c[0] for c in sim_stripe.calls[calls:]] == []
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        assert payment.amount_transferred == payment.amount_reversed == paid
        # Nothing is owed on the release any more: it is closed, nothing sent;
        # its milestone's money all went back.
        assert payment.releases.get().status == "released"
        if milestones:
            assert {m.status for m in payment.milestones.all()} == {"refunded"}
        assert milestone_signals.calls == []

    def test_a_refund_after_a_refused_share_is_shared_by_every_payee(
        self, market, sim_stripe, partner
    ):
        payment = held(market, payees=team(market, partner))
        refuse_next_transfer(sim_stripe)
        assert (
            market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code
            == 409
        )
        with market.capture(execute=True):
            response = market.post(
                market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk
            )
        assert response.status_code == 200, response.content
        # 900 of the 9,000 net comes back, 60/40: the partner (paid) gives 360
        # back; the doer (not paid yet) bears 540 by a smaller transfer.
        reversals = [c[1]["amount"] for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert reversals == [360]
        assert market.payment(payment.pk).status == "partially_refunded"

        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "partially_refunded"
        made = sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, payment))
        assert made == [3_600, 4_860]
        payment = market.payment(payment.pk)
        assert payment.releases.get().status == "released"
        assert payment.amount_transferred == 8_460
        assert payment.amount_reversed == 360
        # The payees keep 8,100: the 9,000 net less the 900 refunded of it.
        assert payment.amount_transferred - payment.amount_reversed == 8_100
        # Releasing again sends nothing more.
        assert (
            market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code
            == 200
        )
        assert len(transfers_in_stripe(sim_stripe, payment)) == 2

        # A full refund later takes the rest back from each by reversal.
        with market.capture(execute=True):
            response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        assert sorted(t.amount_reversed for t in payment.transfers.filter(status="reversed")) == [
            3_600,
            4_860,
        ]
        assert payment.amount_reversed == payment.amount_transferred == 8_460

    def test_a_keyed_refund_cut_short_is_finished_by_its_retry_never_begun_again(
        self, market, sim_stripe, partner
    ):
        """A split refund is a chain (a reversal per payee, then the refund):
        its Idempotency-Key names the whole chain, so a retry after it ended
        answers instead of beginning another one."""
        payment = held(market, payees=team(market, partner))
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        sim_stripe.calls.clear()
        sim_stripe.fail_next("create_refund", TemporarilyUnavailable("timeout", http_status=None))

        def refund_again() -> Any:
            return market.post(
                market.staff,
                "payment-refund",
                {"amount": 5_000},
                payment_id=payment.pk,
                headers={"Idempotency-Key": "split-refund-1"},
            )

        assert refund_again().status_code == 503  # both reversals made, the refund unsent
        finished = refund_again()
        assert finished.status_code == 200, finished.content
        again = refund_again()
        assert again.status_code == 200, again.content
        assert again.json()["amount_refunded"] == 5_000

        refund_calls = [c[1] for c in sim_stripe.calls if c[0] == "create_refund"]
        assert len({c["metadata"]["escrow_operation"] for c in refund_calls}) == 1
        reversals = [c[1]["amount"] for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert sorted(reversals) == [1_800, 2_700]  # half of each share, once
        payment = market.payment(payment.pk)
        assert (payment.amount_refunded, payment.amount_reversed) == (5_000, 4_500)
        assert payment.operations.filter(request_key="split-refund-1").count() == 3

    def test_a_refund_after_a_refused_share_leaves_the_dashboards_what_is_sent(
        self, market, sim_stripe, partner
    ):
        payment = refused_then_refunded(market, sim_stripe, partner)
        assert market.payment(payment.pk).status == "partially_refunded"
        # 900 of the net comes back 60/40: the doer's unsent 5,400 bears 540,
        # the partner's 3,600 gave 360 back.
        assert figures(market, market.doer) == ([4_860], [])
        assert figures(market, partner) == ([], [3_240])

        calls = len(sim_stripe.calls)
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        sent = [c[1]["amount"] for c in sim_stripe.calls[calls:] if c[0] == "create_transfer"]
        assert sent == [4_860]  # what the doer's dashboard showed in escrow
        assert figures(market, market.doer) == ([], [4_860])
        assert figures(market, partner) == ([], [3_240])

    def test_a_refused_share_stays_in_escrow_when_a_refund_takes_the_rest_held(
        self, market, sim_stripe, partner
    ):
        payment = held(market, milestones=three_milestones(), payees=team(market, partner))
        first = payment.milestones.order_by("position").first()
        refuse_next_transfer(sim_stripe)
        response = release(market, payment, milestone_id=first.pk)
        assert response.status_code == 409, response.content
        # The 8,000 still held goes back: nothing of the release is refunded,
        # but the payment is now partially refunded.
        with market.capture(execute=True):
            response = market.post(
                market.staff, "payment-refund", {"amount": 8_000}, payment_id=payment.pk
            )
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "partially_refunded"

        def in_escrow(user: Any) -> list[int]:
            body = market.get(user, "dashboard-task-doer").json()
            return [row["amount"] for row in body["in_escrow"]]

        # The doer's 60 % of the first milestone's 1,800 net.
        assert in_escrow(market.doer) == [1_080]
        assert in_escrow(partner) == []
        calls = len(sim_stripe.calls)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        sent = [c[1]["amount"] for c in sim_stripe.calls[calls:] if c[0] == "create_transfer"]
        assert sent == [1_080]
        assert in_escrow(market.doer) == []

    def test_a_refund_after_an_organizations_refused_share_leaves_it_what_is_sent(
        self, market, sim_stripe
    ):
        payment = held_for_the_organization_first(market)
        organization = str(market.organization.pk)

        refuse_then_refund(market, sim_stripe, payment)
        # 900 of the net comes back 2,500/6,500: the organization's unsent
        # share bears 250, the doer gave 650 back.
        assert figures(market, market.org_admin, organization_id=organization) == ([2_250], [])
        assert figures(market, market.doer) == ([], [5_850])

        calls = len(sim_stripe.calls)
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        sent = [c[1]["amount"] for c in sim_stripe.calls[calls:] if c[0] == "create_transfer"]
        assert sent == [2_250]
        assert figures(market, market.org_admin, organization_id=organization) == ([], [2_250])
        assert figures(market, market.doer) == ([], [5_850])

    def test_milestones_and_split_combine(self, market, sim_stripe, partner):
        payment = held(market, milestones=three_milestones(), payees=team(market, partner))
        first = payment.milestones.order_by("position").first()
        release(market, payment, milestone_id=first.pk)
        assert sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, payment)) == [
            720,
            1_080,
        ]
        body = market.post(market.customer, "payment-confirm", payment_id=payment.pk).json()
        assert body["status"] == "released"
        made = transfers_in_stripe(sim_stripe, payment)
        assert len(made) == 6
        assert sum(t["amount"] for t in made) == 9_000

    def test_full_refund_after_release_reverses_each_payee_latest_release_first(
        self, market, sim_stripe, partner
    ):
        payment = held(market, milestones=three_milestones(), payees=team(market, partner))
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        assert payment.amount_reversed == payment.amount_transferred == 9_000
        for transfer in payment.transfers.all():
            assert transfer.amount_reversed == transfer.amount
        reversals = [c for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert len(reversals) == 6
        latest = payment.releases.order_by("-position").first()
        latest_ids = {t.stripe_transfer_id for t in latest.transfers.all()}
        assert {reversals[0][1]["transfer_id"], reversals[1][1]["transfer_id"]} == latest_ids

    def test_a_full_refund_needing_many_reversals_is_made_in_one_request(
        self, market, sim_stripe, partner
    ):
        eight = [MilestoneTerms(f"Part {n}", 1_250) for n in range(1, 9)]
        payment = held(market, milestones=eight, payees=team(market, partner))
        body = market.post(market.customer, "payment-confirm", payment_id=payment.pk).json()
        assert body["status"] == "released"
        # 16 transfers to reverse (8 releases, 2 payees) before the refund itself.
        response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        assert payment.status == "refunded"
        assert payment.amount_refunded == 10_000
        assert payment.amount_reversed == payment.amount_transferred == 9_000
        assert len([c for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]) == 16

    def test_a_refund_cut_short_in_its_first_reversal_is_finished_by_reconcile(
        self, market, sim_stripe, partner, settings
    ):
        """Reconcile settles the first payee's reversal, then sends the second
        payee's and the refund. Its line names the reversal it settled; the
        second payee's is another operation, not an attempt sent in its place."""
        from io import StringIO

        from django.core.management import call_command

        payment = held(market, payees=team(market, partner))
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        # The first payee's reversal is made but its answer is lost; the
        # request ends there (503) with the second reversal and the refund unsent.
        sim_stripe.fail_next(
            "create_transfer_reversal",
            TemporarilyUnavailable("timed out", http_status=None),
            after_effect=True,
        )
        response = market.post(market.staff, "payment-refund", {}, payment_id=payment.pk)
        assert response.status_code == 503, response.content
        (visited,) = payment.operations.filter(kind="reversal")
        out = StringIO()
        with market.capture(execute=True):
            call_command("escrow_reconcile", "--older-than", "0", stdout=out)
        assert f"(reversal {visited.idempotency_key}: succeeded)" in out.getvalue()
        other = payment.operations.filter(kind="reversal").exclude(pk=visited.pk).get()
        assert other.idempotency_key not in out.getvalue()
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_refunded) == ("refunded", 10_000)
        assert payment.amount_reversed == payment.amount_transferred == 9_000
        assert sim_stripe.charges[payment.stripe_charge_id]["amount_refunded"] == 10_000

    def test_refund_beyond_held_reverses_proportionally(self, market, sim_stripe, partner):
        payment = held(market, payees=team(market, partner))
        release(market, payment, amount=5_000)  # 4,500 net: 2,700 + 1,800
        response = market.post(
            market.staff, "payment-refund", {"amount": 6_000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        payment = market.payment(payment.pk)
        # 5,000 held refunded first; 1,000 of the release: 900 net reversed 540/360.
        assert sorted(t.amount_reversed for t in payment.transfers.all()) == [360, 540]
        assert payment.amount_refunded == 6_000
        assert payment.amount_released == 4_000
        assert payment.amount_held == 0

    @pytest.mark.parametrize(
        ("currency", "gross", "shares", "refunded", "reversals"),
        [
            # 990 fils net: 594 + 396 in proportion; KWD amounts end in 0 at
            # Stripe. Then 8,900 held is refunded first, and 330 of the
            # release: 297 of its net, 290 in steps of 10.
            ("kwd", 1_100, [400, 590], 9_230, [120, 170]),
            # The fee on 23 kr is 2 kr (2.30 rounded down to whole krónur):
            # 21 kr net, 12.60 + 8.40 in proportion, in whole krónur at
            # Stripe. Then 77 kr held is refunded first, and 10 kr of the
            # release: 9.13 of its net, 9 kr in whole krónur.
            ("isk", 2_300, [800, 1_300], 8_700, [300, 600]),
        ],
    )
    def test_shares_and_reversals_are_amounts_stripe_accepts(
        self, market, sim_stripe, partner, currency, gross, shares, refunded, reversals
    ):
        task = market.task(currency=currency)
        EXTRA[task.pk] = {"payees": team(market, partner)}
        payment = market.pay(market.create(task).json()["payment_id"])
        release(market, payment, amount=gross)
        made = sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, payment))
        assert made == shares  # they still add up to the release's net
        assert sum(made) == market.payment(payment.pk).releases.get().net
        response = market.post(
            market.staff, "payment-refund", {"amount": refunded}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        made = [c[1]["amount"] for c in sim_stripe.calls if c[0] == "create_transfer_reversal"]
        assert sorted(made) == reversals
        assert market.payment(payment.pk).amount_reversed == sum(reversals)

    @pytest.mark.parametrize(
        "policy", ["each_whole_allocation", "one_share_for_two_payees", "float_shares"]
    )
    def test_a_reversal_policy_answer_that_moves_the_wrong_money_is_refused_before_stripe(
        self, market, sim_stripe, partner, settings, policy
    ):
        configure(settings, REVERSAL_POLICY=f"tests.payments.test_milestones.{policy}")
        payment = held(market, payees=team(market, partner))
        release(market, payment, amount=5_000)  # 4,500 net: 2,700 + 1,800
        with pytest.raises(ImproperlyConfigured, match="REVERSAL_POLICY"):
            # 1,000 of the release refunded: 900 of its net may come back, no more.
            market.post(market.staff, "payment-refund", {"amount": 6_000}, payment_id=payment.pk)
        payment = market.payment(payment.pk)
        money = [
            c for c in sim_stripe.calls if c[0] in ("create_transfer_reversal", "create_refund")
        ]
        assert money == []
        assert sorted(t.amount_reversed for t in payment.transfers.all()) == [0, 0]
        assert (payment.amount_refunded, payment.amount_reversed) == (0, 0)
        assert not payment.refunds.exists()
        assert payment.status == "partially_released"


def each_whole_allocation(*, release: Any, transfers: Any, amount: int) -> list[int]:
    """A ``REVERSAL_POLICY`` that takes every payee's whole share, whatever is refunded."""
    return [t.amount for t in transfers]


def one_share_for_two_payees(*, release: Any, transfers: Any, amount: int) -> list[int]:
    """A ``REVERSAL_POLICY`` answering one share for a release of two payees."""
    return [amount]


def float_shares(*, release: Any, transfers: Any, amount: int) -> list[Any]:
    """A ``REVERSAL_POLICY`` computing shares in floats."""
    return [amount * 0.6, amount * 0.4]


# --------------------------------------------------------------------------
# Disputes
# --------------------------------------------------------------------------


def dispute_event(payment: Any, status: str = "needs_response", dispute_id: str = "") -> Any:
    from django.db import transaction

    from django_escrow_connect.gateway.types import DisputeSnapshot
    from django_escrow_connect.services.disputes import apply_dispute
    from tests.webhooks import stripe_objects as so

    obj = so.dispute(
        charge=payment.stripe_charge_id,
        payment_intent=payment.stripe_payment_intent_id,
        amount=payment.amount,
        currency=payment.currency,
        status=status,
        **({"id": dispute_id} if dispute_id else {}),
    )
    with transaction.atomic():
        return apply_dispute(DisputeSnapshot.from_dict(obj))


@pytest.mark.usefixtures("split")
class TestDisputes:
    def test_a_dispute_freezes_the_rest_and_records_what_was_out(self, market, sim_stripe):
        payment = held(market, milestones=three_milestones())
        design, build, _launch = payment.milestones.order_by("position")
        release(market, payment, milestone_id=design.pk)
        with market.capture(execute=True):
            dispute = dispute_event(market.payment(payment.pk))
        payment = market.payment(payment.pk)
        assert payment.status == "disputed"
        assert payment.status_before_dispute == "partially_released"
        out = dispute.released_when_opened
        assert out["amount_released"] == 2_000
        assert out["amount_held"] == 8_000
        (made,) = out["releases"]
        assert made["milestone_id"] == design.pk
        assert made["transfers"] == [payment.transfers.get().stripe_transfer_id]

        response = release(market, payment, milestone_id=build.pk)
        assert response.status_code == 409
        # No automatic reversal: Stripe debits the platform's balance.
        assert [c for c in sim_stripe.calls if c[0] == "create_transfer_reversal"] == []

        with market.capture(execute=True):
            dispute_event(payment, status="won", dispute_id=dispute.stripe_dispute_id)
        assert market.payment(payment.pk).status == "partially_released"
        assert release(market, payment, milestone_id=build.pk).status_code == 200

    def test_a_last_transfer_confirmed_during_the_dispute_releases_the_payment(
        self, market, sim_stripe, partner
    ):
        from io import StringIO

        from django.core.management import call_command

        payment = held(market, payees=team(market, partner))
        refuse_next_transfer(sim_stripe)
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 409  # the doer's 5,400 refused, the partner's 3,600 sent
        # Sent again; Stripe makes it but the answer is lost.
        sim_stripe.fail_next(
            "create_transfer",
            TemporarilyUnavailable("timed out", http_status=None),
            after_effect=True,
        )
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 503
        with market.capture(execute=True):
            dispute = dispute_event(market.payment(payment.pk))
        assert market.payment(payment.pk).status_before_dispute == "partially_released"

        with market.capture(execute=True):
            call_command("escrow_reconcile", "--older-than", "0", stdout=StringIO())
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_transferred) == ("disputed", 9_000)
        assert payment.released_at is not None

        with market.capture(execute=True):
            dispute_event(payment, status="won", dispute_id=dispute.stripe_dispute_id)
        payment = market.payment(payment.pk)
        assert (payment.status, payment.amount_held) == ("released", 0)
        assert sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, payment)) == [
            3_600,
            5_400,
        ]


# --------------------------------------------------------------------------
# Automatic release of delivered milestones
# --------------------------------------------------------------------------


def design_released_after_three_days() -> list[MilestoneTerms]:
    """Design (4,000) released 3 days after delivery, Build (6,000) by hand."""
    return [
        MilestoneTerms("Design", 4_000, auto_release_after=timedelta(days=3)),
        MilestoneTerms("Build", 6_000),
    ]


def deliver_first_milestone(market: Any, payment: Any) -> None:
    """The doer marks the payment's first milestone delivered (API)."""
    first = payment.milestones.order_by("position").first()
    url = reverse("escrow_connect:milestone-deliver", args=[str(payment.pk), str(first.pk)])
    with market.capture(execute=True):
        assert market.client(market.doer).post(url, {}, format="json").status_code == 200


@pytest.mark.usefixtures("split")
class TestMilestoneAutoRelease:
    def test_a_delivered_milestone_is_released_after_its_delay(self, market, sim_stripe):
        payment = held(market, milestones=design_released_after_three_days())
        # Not delivered: nothing is due (and the payment-level policy is off).
        assert auto_release(now=timezone.now() + timedelta(days=30)) is None
        deliver_first_milestone(market, payment)
        assert auto_release(now=timezone.now() + timedelta(days=2)) is None
        with market.capture(execute=True):
            changes = auto_release(now=timezone.now() + timedelta(days=3, minutes=1))
        assert len(changes) == 1
        payment = market.payment(payment.pk)
        assert payment.status == "partially_released"
        assert payment.amount_released == 4_000
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600]
        # Released once: running again changes nothing.
        assert auto_release(now=timezone.now() + timedelta(days=10)) is None

    def test_an_overdue_milestone_the_payee_cannot_be_paid_for_is_a_stuck_payment(
        self, market, sim_stripe, settings
    ):
        """The doer's account stopped receiving transfers after the first
        milestone was released: the delivered second one is not released, on
        an informational line of every hourly run (not a failure). The payment
        released in parts is listed as stuck, and ``escrow_report --check``
        fails, once the milestone is overdue for longer than
        ``STUCK_PAYMENT_HOURS`` (it said nothing: the hourly failure was the
        only alert)."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        configure(settings, STUCK_PAYMENT_HOURS=24)
        payment = held(
            market,
            milestones=[
                MilestoneTerms("Design", 4_000, auto_release_after=timedelta(days=3)),
                MilestoneTerms("Build", 6_000, auto_release_after=timedelta(days=3)),
            ],
        )
        deliver_first_milestone(market, payment)
        with market.capture(execute=True):
            auto_release(now=timezone.now() + timedelta(days=4))
        assert market.payment(payment.pk).status == "partially_released"
        build = payment.milestones.order_by("position")[1]
        url = reverse("escrow_connect:milestone-deliver", args=[str(payment.pk), str(build.pk)])
        with market.capture(execute=True):
            assert market.client(market.doer).post(url, {}, format="json").status_code == 200
        market.doer_account.capabilities = {"transfers": "inactive"}
        market.doer_account.save()

        def report_check() -> str:
            out = StringIO()
            call_command("escrow_report", "--check", stdout=out)
            return out.getvalue()

        assert str(payment.pk) not in report_check()  # waiting for the doer's work: fine
        # Delivered 3 days and 2 hours ago: due 2 hours ago, not yet stuck.
        payment.milestones.filter(pk=build.pk).update(
            delivered_at=timezone.now() - timedelta(days=3, hours=2)
        )
        (waiting,) = auto_release()
        assert (waiting.action, waiting.error) == ("not released (account_not_ready)", False)
        assert str(payment.pk) not in report_check()
        # Overdue for longer than STUCK_PAYMENT_HOURS: the report says so.
        payment.milestones.filter(pk=build.pk).update(
            delivered_at=timezone.now() - timedelta(days=4, hours=1)
        )
        with pytest.raises(CommandError, match="needs attention"):
            report_check()
        out = StringIO()
        call_command("escrow_report", "--format", "json", stdout=out)
        assert str(payment.pk) in out.getvalue()

    def test_a_dry_run_says_a_milestone_whose_payee_cannot_be_paid_would_not_be_released(
        self, market, sim_stripe
    ):
        """A delivered milestone is due but the doer's account cannot receive
        transfers: the real run reports ``not released (account_not_ready)``,
        and ``--dry-run`` said ``would release``."""
        payment = held(market, milestones=design_released_after_three_days())
        deliver_first_milestone(market, payment)
        payment.milestones.filter(status="delivered").update(
            delivered_at=timezone.now() - timedelta(days=4)
        )
        design = payment.milestones.get(status="delivered")
        subject = f"{payment.pk} milestone {design.pk}"
        assert f"{subject}: would release" in auto_release_dry_run(market, sim_stripe)

        market.doer_account.capabilities = {"transfers": "inactive"}
        market.doer_account.save()
        dry = auto_release_dry_run(market, sim_stripe)
        assert f"{subject}: would not release (account_not_ready)" in dry
        assert f"{subject}: not released (account_not_ready)" in auto_release_run(market)
        assert transfers_in_stripe(sim_stripe, payment) == []

    def test_a_dry_run_says_a_split_whose_other_payee_cannot_be_paid_would_not_be_released(
        self, market, sim_stripe, partner, settings
    ):
        """The doer's account is ready, the partner's (40 %) is not: the real
        run refuses the whole release before any transfer, as it does for a
        single payee, and ``--dry-run`` said ``would release``."""
        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        payment = held(market, payees=team(market, partner))
        swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(
            held_at=timezone.now() - timedelta(days=15)
        )
        assert f"{payment.pk}: would release" in auto_release_dry_run(market, sim_stripe)

        swappable.load("ConnectedAccount").objects.filter(owner_user=partner).update(
            capabilities={"transfers": "inactive"}
        )
        dry = auto_release_dry_run(market, sim_stripe)
        assert f"{payment.pk}: would not release (account_not_ready)" in dry
        assert f"{payment.pk}: not released (account_not_ready)" in auto_release_run(market)
        assert market.payment(payment.pk).status == "held"
        assert transfers_in_stripe(sim_stripe, payment) == []

    def test_a_due_milestone_of_a_disputed_payment_does_not_fail_every_run(
        self, market, sim_stripe
    ):
        """A delivered milestone of a payment whose dispute is open is due, and
        its release is refused until the dispute is decided (weeks): each
        hourly run failed for it (exit 1, ``PeriodicJobFailed``). It is an
        informational line, as the other holds, with no Stripe call; a
        dispute won releases it."""
        from io import StringIO

        from django.core.management import call_command

        from django_escrow_connect import tasks

        from .conftest import auto_release_dry_run, calls

        payment = held(market, milestones=design_released_after_three_days())
        deliver_first_milestone(market, payment)
        with market.capture(execute=True):
            dispute = dispute_event(market.payment(payment.pk))
        payment.milestones.filter(status="delivered").update(
            delivered_at=timezone.now() - timedelta(days=4)
        )
        subject = f"{payment.pk} milestone {payment.milestones.get(status='delivered').pk}"
        dry = auto_release_dry_run(market, sim_stripe)
        assert f"{subject}: would not release (dispute_open)" in dry, dry

        sim_stripe.calls.clear()
        out = StringIO()
        with market.capture(execute=True):
            call_command("escrow_auto_release", stdout=out, stderr=out)  # exit 0
        assert f"{subject}: not released (dispute_open)" in out.getvalue(), out.getvalue()
        with market.capture(execute=True):
            summary = tasks.auto_release_task.call()
        assert summary["errors"] == []
        assert [line.split(" (")[0] for line in summary["changes"]] == [f"{subject}: not released"]
        assert calls(sim_stripe) == []
        assert market.payment(payment.pk).status == "disputed"

        with market.capture(execute=True):
            dispute_event(payment, status="won", dispute_id=dispute.stripe_dispute_id)
        assert f"{subject}: delivered -> partially_released" in auto_release_run(market)
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [3_600]

    def test_a_due_milestone_of_a_lost_dispute_is_not_a_failure_on_every_run(
        self, market, sim_stripe
    ):
        """Nothing of a ``dispute_lost`` payment can be released, and nothing an
        operator does makes it releasable: its delivered milestone is not due
        (the scheduled command failed on every run, for good). An appeal won
        makes it due again. A dispute still open is an informational line
        (``not released (dispute_open)``): it waits for the dispute's decision."""
        payment = held(market, milestones=design_released_after_three_days())
        deliver_first_milestone(market, payment)
        with market.capture(execute=True):
            dispute = dispute_event(market.payment(payment.pk))
        later = timezone.now() + timedelta(days=4)
        (open_one,) = auto_release(now=later)
        assert (open_one.action, open_one.error) == ("not released (dispute_open)", False)

        with market.capture(execute=True):
            dispute_event(payment, status="lost", dispute_id=dispute.stripe_dispute_id)
        assert market.payment(payment.pk).status == "dispute_lost"
        assert auto_release(now=later) is None
        assert transfers_in_stripe(sim_stripe, payment) == []

        with market.capture(execute=True):
            appeal = "appeal_under_review"
            dispute_event(payment, status=appeal, dispute_id=dispute.stripe_dispute_id)
        assert market.payment(payment.pk).status == "dispute_lost"
        assert auto_release(now=later) is None
        with market.capture(execute=True):
            dispute_event(payment, status="won", dispute_id=dispute.stripe_dispute_id)
            (released,) = auto_release(now=later)
        assert not released.error, released
        assert market.payment(payment.pk).amount_released == 4_000


# --------------------------------------------------------------------------
# The fee policy receives the split
# --------------------------------------------------------------------------


def charged_back() -> Any:
    """Stripe's refusal of a transfer whose source charge was charged back."""
    from django_escrow_connect.exceptions import InvalidRequest

    return InvalidRequest("The charge has been charged back.", code="charge_disputed")


def after_the_first_transfer(sim_stripe: Any, monkeypatch: Any, then: Any) -> None:
    """``then()`` runs once Stripe made the first transfer, before the second is begun."""
    send = sim_stripe.execute
    transfers: list[str] = []

    def execute(method: str, *args: Any, **kwargs: Any) -> Any:
        result = send(method, *args, **kwargs)
        if method == "create_transfer":
            transfers.append(method)
            if len(transfers) == 1:
                then()
        return result

    monkeypatch.setattr(sim_stripe, "execute", execute)


def hold_after_the_first_transfer(
    market: Any, sim_stripe: Any, monkeypatch: Any, payment: Any
) -> list[Any]:
    """Once Stripe made the first transfer of ``payment``'s release, a
    ``charge_disputed`` hold opens (the list it returns gets it), refusing
    the next payee's transfer before any Stripe call."""
    from django_escrow_connect.factories import make_payment_incident

    holds: list[Any] = []
    after_the_first_transfer(
        sim_stripe,
        monkeypatch,
        lambda: holds.append(
            make_payment_incident(
                payment,
                kind="charge_disputed",
                code="charge_disputed",
                stripe_object_id=market.payment(payment.pk).stripe_charge_id,
            )
        ),
    )
    return holds


def stopped_by_a_hold(market: Any, sim_stripe: Any, monkeypatch: Any, payment: Any) -> Any:
    """``escrow_auto_release`` sends the doer's transfer of ``payment``, then a
    ``charge_disputed`` hold refuses the partner's: the payment is left
    ``partially_released``. Returns the hold."""
    holds = hold_after_the_first_transfer(market, sim_stripe, monkeypatch, payment)
    output = auto_release_run(market)
    assert f"{payment.pk}: released in part: 1 of 2 transfers; held (charge_disputed)" in output
    assert "still released in part" not in output  # left to the next run, reported once
    assert market.payment(payment.pk).status == "partially_released"
    return holds[0]


@pytest.mark.usefixtures("split")
class TestSplitAutoRelease:
    """``escrow_auto_release`` of a payment split 60/40 between the doer and a
    partner, whose release stops after the first payee's transfer went."""

    @pytest.fixture
    def due(self, market: Any, settings: Any, partner: Any) -> Any:
        from .conftest import age

        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        payment = held(market, payees=team(market, partner))
        age(payment, held_at=timezone.now() - timedelta(days=15))
        return payment

    def test_a_hold_opened_between_the_transfers_says_one_went(
        self, market, sim_stripe, monkeypatch, due
    ):
        """A refusal saying the charge is disputed (another request's) opened
        a ``charge_disputed`` hold once the doer's transfer was made: the
        partner's was refused before any Stripe call. The line said ``not
        released (charge_disputed)``: an operator could pay the doer again by
        hand. It says what went; the job does not fail (a hold)."""
        from django_escrow_connect.factories import make_payment_incident

        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: make_payment_incident(
                due,
                kind="charge_disputed",
                code="charge_disputed",
                stripe_object_id=market.payment(due.pk).stripe_charge_id,
            ),
        )
        output = auto_release_run(market)  # no CommandError: the rest waits for the hold

        assert f"{due.pk}: released in part: 1 of 2 transfers; held (charge_disputed)" in output, (
            output
        )
        assert "not released" not in output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400]
        assert market.payment(due.pk).status == "partially_released"

    def test_a_run_stopped_after_it_counts_the_part_as_released(
        self, market, sim_stripe, monkeypatch, due
    ):
        """A bug stops the run at the next payment: the stop line counted
        only ``held -> ...`` lines, so ``after 0 released`` although the
        doer's transfer went; the line released in part counts."""
        from io import StringIO

        from django.core.management import call_command

        from django_escrow_connect.factories import make_payment_incident

        from .conftest import age, release_raises_for

        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: make_payment_incident(due, kind="charge_disputed", code="charge_disputed"),
        )
        later = market.held_payment()
        age(later, held_at=timezone.now() - timedelta(days=14, hours=1))
        release_raises_for(later, monkeypatch)
        out, err = StringIO(), StringIO()
        with market.capture(execute=True), pytest.raises(ValueError, match="a bug"):
            call_command("escrow_auto_release", stdout=out, stderr=err)

        assert f"{due.pk}: released in part: 1 of 2 transfers" in out.getvalue()
        assert "Stopped by the error below after 1 released" in err.getvalue()

    def test_stripe_refusing_the_second_transfer_says_the_first_went(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe refused the partner's transfer (the charge charged back):
        still a failure (exit 1, as a refused release), whose line now says
        the doer's transfer went."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: sim_stripe.fail_next("create_transfer", charged_back()),
        )
        out = StringIO()
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=out, stderr=out)

        assert f"{due.pk}: released in part: 1 of 2 transfers; release failed (" in out.getvalue()
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400]

    def test_a_release_stopped_after_the_first_transfer_is_a_stuck_payment(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe refused the partner's transfer: the payment is partially
        released, no longer held, so the stuck payments' ``held`` rule did not
        see it, and the partner's 3,600 stayed on the platform's balance with
        ``escrow_report --check`` passing (the next automatic release waits
        for staff: Stripe refused it). The payment is stuck once its release
        has owed a transfer for longer than ``STUCK_PAYMENT_HOURS``."""
        import json
        from io import StringIO

        from django.core.management import CommandError, call_command

        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: sim_stripe.fail_next("create_transfer", charged_back()),
        )
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=StringIO(), stderr=StringIO())
        assert market.payment(due.pk).status == "partially_released"

        def report(*args: str) -> str:
            out = StringIO()
            call_command("escrow_report", *args, stdout=out)
            return out.getvalue()

        stuck = json.loads(report("--format", "json"))["stuck_payments"]
        assert stuck["count"] == 0  # refused just now: not stuck yet
        swappable.load("EscrowRelease").objects.filter(payment_id=due.pk).update(
            created_at=timezone.now() - timedelta(hours=73)
        )
        stuck = json.loads(report("--format", "json"))["stuck_payments"]
        assert [(s["payment"], s["status"]) for s in stuck["items"]] == [
            (str(due.pk), "partially_released")
        ]
        with pytest.raises(CommandError, match="needs attention"):
            report("--check")

    def test_a_transfer_whose_answer_was_lost_is_unconfirmed_not_owed(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe made the partner's transfer but its answer was lost (a
        timeout): the line said ``1 of 2 transfers`` as if the partner were
        still owed, and an operator could pay them by hand although Stripe
        had paid both. It says the transfer is unconfirmed, that retrying
        finishes it."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        from django_escrow_connect.exceptions import TemporarilyUnavailable

        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: sim_stripe.fail_next(
                "create_transfer",
                TemporarilyUnavailable("Request timed out", http_status=None),
                after_effect=True,
            ),
        )
        out = StringIO()
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=out, stderr=out)

        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]
        assert (
            f"{due.pk}: released in part: 1 of 2 transfers made, 1 unconfirmed "
            "(retrying finishes it: do not pay by hand); release failed ("
        ) in out.getvalue(), out.getvalue()

    def test_the_next_run_sends_the_rest_once_the_hold_is_lifted(
        self, market, sim_stripe, monkeypatch, due
    ):
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import money_calls

        hold = stopped_by_a_hold(market, sim_stripe, monkeypatch, due)
        resolve_in_the_admin(market, hold)

        output = auto_release_run(market)

        assert f"{due.pk}: partially_released -> released" in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]
        assert market.payment(due.pk).status == "released"
        sim_stripe.calls.clear()
        assert "No payment is due" in auto_release_run(market)  # nothing left to finish
        assert money_calls(sim_stripe) == []
        assert len(transfers_in_stripe(sim_stripe, due)) == 2

    def test_a_run_while_the_hold_lasts_calls_no_stripe(self, market, sim_stripe, monkeypatch, due):
        """Informational, as the first run's hold: no Stripe call, no failure,
        and the line says the doer's transfer went (``still``: this run sent
        nothing, so the run's count of releases leaves it out)."""
        from .conftest import calls

        stopped_by_a_hold(market, sim_stripe, monkeypatch, due)
        sim_stripe.calls.clear()

        output = auto_release_run(market)

        assert (
            f"{due.pk}: still released in part: 1 of 2 transfers; held (charge_disputed)" in output
        ), output
        assert calls(sim_stripe) == []
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400]
        assert market.payment(due.pk).status == "partially_released"

    def test_a_refused_transfer_waits_for_staff_then_is_sent(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe refused the partner's transfer: the next runs make no Stripe
        call while its incident is open; once staff resolve it, the next run
        sends it, once."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import calls

        after_the_first_transfer(sim_stripe, monkeypatch, lambda: refuse_next_transfer(sim_stripe))
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=StringIO(), stderr=StringIO())
        sim_stripe.calls.clear()

        output = auto_release_run(market)  # waiting for staff is no failure

        assert (
            f"{due.pk}: still released in part: 1 of 2 transfers; rest not released ("
        ) in output, output
        assert calls(sim_stripe) == []

        (incident,) = swappable.load("TransferIncident").objects.filter(
            payment_id=due.pk, resolved_at__isnull=True
        )
        resolve_in_the_admin(market, incident)
        output = auto_release_run(market)

        assert f"{due.pk}: partially_released -> released" in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]

    def test_a_payee_whose_account_is_ready_again_is_sent_the_rest(
        self, market, sim_stripe, monkeypatch, due, partner
    ):
        """The partner's account stopped receiving transfers between the two:
        informational, no Stripe call while it lasts; once it is ready again
        the next run sends the partner's 3,600."""
        from .conftest import calls

        accounts = swappable.load("ConnectedAccount").objects.filter(owner_user=partner)
        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: accounts.update(capabilities={"transfers": "inactive"}),
        )
        assert (
            f"{due.pk}: released in part: 1 of 2 transfers; held (account_not_ready)"
        ) in auto_release_run(market)
        sim_stripe.calls.clear()

        output = auto_release_run(market)

        assert (
            f"{due.pk}: still released in part: 1 of 2 transfers; held (account_not_ready)"
        ) in output, output
        assert calls(sim_stripe) == []

        accounts.update(capabilities={"transfers": "active"})
        output = auto_release_run(market)

        assert f"{due.pk}: partially_released -> released" in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]

    def test_a_confirm_stopped_part_way_is_finished(self, market, sim_stripe, monkeypatch, due):
        """The customer's confirm decided to release everything; a hold
        stopped it after the doer's transfer (409). The job finishes it."""
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        holds = hold_after_the_first_transfer(market, sim_stripe, monkeypatch, due)
        with market.capture(execute=True):
            confirmed = market.post(market.customer, "payment-confirm", payment_id=due.pk)
        assert confirmed.status_code == 409, confirmed.content
        assert market.payment(due.pk).status == "partially_released"
        resolve_in_the_admin(market, holds[0])

        output = auto_release_run(market)

        assert f"{due.pk}: partially_released -> released" in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]

    def refund_in_part(self, market: Any, sim_stripe: Any, payment: Any) -> None:
        """Staff refund 1,000 of ``payment`` (nothing held: its release took
        all of it). 900 of the 9,000 net comes back, 60/40: the doer (paid
        5,400) gives 540 back by a reversal, the partner (not paid yet) bears
        360 by a smaller transfer: 3,240 is still owed."""
        calls = len(sim_stripe.calls)
        with market.capture(execute=True):
            response = market.post(
                market.staff, "payment-refund", {"amount": 1_000}, payment_id=payment.pk
            )
        assert response.status_code == 200, response.content
        reversals = [
            c[1]["amount"] for c in sim_stripe.calls[calls:] if c[0] == "create_transfer_reversal"
        ]
        assert reversals == [540]
        assert market.payment(payment.pk).status == "partially_refunded"

    def test_a_stopped_release_refunded_in_part_since_is_finished(
        self, market, sim_stripe, monkeypatch, due
    ):
        """A hold stopped the release after the doer's transfer; once it was
        lifted, staff refunded part of the payment (``partially_refunded``).
        The job picked only ``partially_released`` payments: the partner,
        owed 3,240, waited for a person for ever. It sends exactly that,
        once (not the 3,600 the refund cut, no new release)."""
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import auto_release_dry_run, money_calls

        resolve_in_the_admin(market, stopped_by_a_hold(market, sim_stripe, monkeypatch, due))
        self.refund_in_part(market, sim_stripe, due)
        assert f"{due.pk}: would release" in auto_release_dry_run(market, sim_stripe)

        output = auto_release_run(market)

        assert f"{due.pk}: partially_refunded -> partially_refunded (held 14+ days" in output, (
            output
        )
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_240]
        payment = market.payment(due.pk)
        assert payment.releases.get().status == "released"
        assert payment.amount_transferred - payment.amount_reversed == 8_100  # 9,000 net - 900
        sim_stripe.calls.clear()
        assert "No payment is due" in auto_release_run(market)
        assert money_calls(sim_stripe) == []

    def test_a_refused_share_refunded_in_part_since_waits_for_staff_then_is_sent(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe refused the partner's transfer, then staff refunded part of
        the payment: the runs make no Stripe call while the refusal's
        incident is open (as for a ``partially_released`` one); once staff
        resolve it, the next run sends the partner the 3,240 still owed."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import calls

        after_the_first_transfer(sim_stripe, monkeypatch, lambda: refuse_next_transfer(sim_stripe))
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=StringIO(), stderr=StringIO())
        self.refund_in_part(market, sim_stripe, due)
        sim_stripe.calls.clear()

        output = auto_release_run(market)

        assert (
            f"{due.pk}: still released in part: 1 of 2 transfers; rest not released ("
        ) in output, output
        assert calls(sim_stripe) == []

        (incident,) = swappable.load("TransferIncident").objects.filter(
            payment_id=due.pk, resolved_at__isnull=True
        )
        resolve_in_the_admin(market, incident)
        output = auto_release_run(market)

        assert f"{due.pk}: partially_refunded -> partially_refunded" in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_240]

    @pytest.mark.parametrize("meanwhile", ["confirm", "refund"])
    def test_a_payment_finished_by_someone_else_meanwhile_says_nothing_was_sent(
        self, market, sim_stripe, monkeypatch, due, meanwhile
    ):
        """The job selects the payments it finishes without a lock: the
        customer confirmed (the partner's 3,600 sent), or staff refunded it
        all, between that and its release. The release, which checks it all
        again under the payment's lock, sends nothing; the line said
        ``partially_released -> released`` (a release this run counted)."""
        from django_escrow_connect.services import schedules
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        resolve_in_the_admin(market, stopped_by_a_hold(market, sim_stripe, monkeypatch, due))
        real_check = schedules._waits_for_staff

        def someone_else_first(payment_id: Any, *args: Any, **kwargs: Any) -> Any:
            # After the selection, before the job's release.
            if meanwhile == "confirm":
                response = market.post(market.customer, "payment-confirm", payment_id=due.pk)
            else:
                response = market.post(market.staff, "payment-refund", {}, payment_id=due.pk)
            assert response.status_code == 200, response.content
            return real_check(payment_id, *args, **kwargs)

        monkeypatch.setattr(schedules, "_waits_for_staff", someone_else_first)
        status = "released" if meanwhile == "confirm" else "refunded"
        made = [5_400, 3_600] if meanwhile == "confirm" else [5_400]

        output = auto_release_run(market)

        assert f"{due.pk}: nothing sent ({status} meanwhile)" in output, output
        assert "partially_released ->" not in output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == made
        assert market.payment(due.pk).status == status

    def test_a_lost_transfer_the_job_sends_again_counts_as_sent(
        self, market, sim_stripe, monkeypatch, due
    ):
        """The customer's confirm paid the doer; Stripe answered the partner's
        transfer with a stored 500 (not made). The job's release sends it
        again under the next key, for the customer's request: it was reported
        ``nothing sent (released meanwhile)`` (the transfer was not the
        system's, nor in flight before the call) and not counted."""
        from io import StringIO

        from django.core.management import call_command

        after_the_first_transfer(
            sim_stripe,
            monkeypatch,
            lambda: sim_stripe.fail_next(
                "create_transfer",
                TemporarilyUnavailable("Internal error", http_status=500),
                stored=True,
            ),
        )
        with market.capture(execute=True):
            market.post(market.customer, "payment-confirm", payment_id=due.pk)
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400]

        out = StringIO()
        with market.capture(execute=True):
            call_command("escrow_auto_release", stdout=out, stderr=StringIO())
        output = out.getvalue()

        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]
        assert "nothing sent" not in output, output
        assert f"{due.pk}: partially_released -> released" in output, output
        assert market.payment(due.pk).status == "released"

    def test_a_release_by_amount_whose_rest_was_refunded_is_finished(
        self, market, sim_stripe, monkeypatch, due
    ):
        """The customer released 4,000 of 10,000 (the doer's 2,160 went, a
        hold stopped the partner's): money is held, so the job leaves it (it
        would release what the customer kept). Staff then refund the 6,000
        held: nothing is held, and the job sends the partner what that
        release of 4,000 owes, 1,440, not a share of the refunded 6,000."""
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        holds = hold_after_the_first_transfer(market, sim_stripe, monkeypatch, due)
        with market.capture(execute=True):
            response = market.post(
                market.customer, "payment-release", {"amount": 4_000}, payment_id=due.pk
            )
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [2_160]
        assert f"{due.pk}:" not in auto_release_run(market)  # 6,000 held: not selected
        resolve_in_the_admin(market, holds[0])
        with market.capture(execute=True):
            response = market.post(
                market.staff, "payment-refund", {"amount": 6_000}, payment_id=due.pk
            )
        assert response.status_code == 200, response.content
        assert market.payment(due.pk).status == "partially_refunded"

        output = auto_release_run(market)

        assert f"{due.pk}: partially_refunded -> " in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [2_160, 1_440]
        assert market.payment(due.pk).amount_held == 0

    def test_a_refunded_release_still_owing_is_a_stuck_payment(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe refused the partner's transfer, then staff refunded 1,000:
        ``partially_refunded``, the partner owed 3,240 and the job waiting for
        staff (an informational line, exit 0). ``escrow_report`` listed only
        ``partially_released`` payments' owing releases as stuck: nothing
        alerted while the partner waited. Stuck once older than the
        threshold; not before."""
        import json
        from io import StringIO

        from django.core.management import CommandError, call_command

        after_the_first_transfer(sim_stripe, monkeypatch, lambda: refuse_next_transfer(sim_stripe))
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=StringIO(), stderr=StringIO())
        self.refund_in_part(market, sim_stripe, due)
        assert "rest not released" in auto_release_run(market)

        def stuck() -> list[str]:
            out = StringIO()
            call_command("escrow_report", "--format", "json", stdout=out)
            return [
                item["payment"] for item in json.loads(out.getvalue())["stuck_payments"]["items"]
            ]

        assert stuck() == []  # the release is younger than STUCK_PAYMENT_HOURS
        swappable.load("EscrowRelease").objects.filter(payment_id=due.pk).update(
            created_at=timezone.now() - timedelta(hours=73)
        )
        assert stuck() == [str(due.pk)]

    def test_a_payment_disputed_meanwhile_waits_for_the_dispute(
        self, market, sim_stripe, monkeypatch, due
    ):
        """A dispute opened between the job's selection (without a lock) and
        its release: the release refuses it under the lock, before any Stripe
        call. The line said ``release failed`` (exit 1), although only the
        dispute's decision lifts it; it is a hold, as the dry run says."""
        from django_escrow_connect.services import schedules
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import money_calls

        resolve_in_the_admin(market, stopped_by_a_hold(market, sim_stripe, monkeypatch, due))
        real_release = schedules.release_payment

        def disputed_first(payment_id: Any, **kwargs: Any) -> Any:
            dispute_event(market.payment(due.pk))
            return real_release(payment_id, **kwargs)

        monkeypatch.setattr(schedules, "release_payment", disputed_first)
        sim_stripe.calls.clear()

        output = auto_release_run(market)  # no CommandError

        assert (
            f"{due.pk}: still released in part: 1 of 2 transfers; held (dispute_open)" in output
        ), output
        assert money_calls(sim_stripe) == []
        assert market.payment(due.pk).status == "disputed"

    def test_a_dry_run_says_what_the_run_would_do(self, market, sim_stripe, monkeypatch, due):
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import auto_release_dry_run

        hold = stopped_by_a_hold(market, sim_stripe, monkeypatch, due)

        output = auto_release_dry_run(market, sim_stripe)
        assert f"{due.pk}: would not release (charge_disputed)" in output, output

        resolve_in_the_admin(market, hold)
        output = auto_release_dry_run(market, sim_stripe)
        assert f"{due.pk}: would release" in output, output
        assert "still released in part: 1 of 2 transfers" in output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400]
        assert market.payment(due.pk).status == "partially_released"

    def test_a_dry_run_checks_only_the_payees_still_owed(
        self, market, sim_stripe, monkeypatch, due
    ):
        """The doer, paid already, can no longer receive transfers: the real
        run sends only the partner's share (it checks only the payees owed).
        The dry run checked every payee and said ``would not release`` of a
        payment the real run then released."""
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import auto_release_dry_run

        hold = stopped_by_a_hold(market, sim_stripe, monkeypatch, due)
        resolve_in_the_admin(market, hold)
        swappable.load("ConnectedAccount").objects.filter(owner_user=market.doer).update(
            capabilities={"transfers": "inactive"}
        )

        output = auto_release_dry_run(market, sim_stripe)
        assert f"{due.pk}: would release" in output, output

        output = auto_release_run(market)
        assert f"{due.pk}: partially_released -> released" in output, output
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, due)] == [5_400, 3_600]

    def test_a_release_no_transfer_of_which_went_says_not_released(
        self, market, sim_stripe, monkeypatch, due
    ):
        """Stripe refused both payees' transfers (the first one's since
        retried by nobody): the waiting line said ``still released in part:
        0 of 2 transfers`` of a release that paid nobody."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        from .conftest import calls

        send = sim_stripe.execute
        asked: list[str] = []

        def execute(method: str, *args: Any, **kwargs: Any) -> Any:
            if method == "create_transfer":
                asked.append(method)
                refuse_next_transfer(sim_stripe)  # every payee's, this run
            return send(method, *args, **kwargs)

        monkeypatch.setattr(sim_stripe, "execute", execute)
        with market.capture(execute=True), pytest.raises(CommandError):
            call_command("escrow_auto_release", stdout=StringIO(), stderr=StringIO())
        monkeypatch.setattr(sim_stripe, "execute", send)
        assert len(asked) == 2
        assert transfers_in_stripe(sim_stripe, due) == []
        assert market.payment(due.pk).status == "partially_released"
        sim_stripe.calls.clear()

        output = auto_release_run(market)

        assert f"{due.pk}: not released (" in output, output
        assert "released in part: 0 of" not in output
        assert calls(sim_stripe) == []

    def test_a_second_run_stopped_again_counts_every_transfer(
        self, market, sim_stripe, monkeypatch, settings, partner
    ):
        """Three payees: the first run pays the doer, a hold stops it; the
        second pays the partner and Stripe refuses the third's transfer. Its
        line counts both transfers of the release, not the second run's alone."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        from .conftest import age

        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        third = factories.make_user("third")
        stripe_account(owner_user=third)
        payment = held(
            market,
            payees=[
                PayeeShare(user=market.doer, basis_points=5_000),
                PayeeShare(user=partner, basis_points=3_000),
                PayeeShare(user=third, basis_points=2_000),
            ],
        )
        age(payment, held_at=timezone.now() - timedelta(days=15))
        holds = hold_after_the_first_transfer(market, sim_stripe, monkeypatch, payment)
        assert f"{payment.pk}: released in part: 1 of 3 transfers; held" in auto_release_run(market)
        resolve_in_the_admin(market, holds[0])
        after_the_first_transfer(sim_stripe, monkeypatch, lambda: refuse_next_transfer(sim_stripe))
        out = StringIO()
        with market.capture(execute=True), pytest.raises(CommandError, match="could not"):
            call_command("escrow_auto_release", stdout=out, stderr=out)

        assert (
            f"{payment.pk}: released in part: 2 of 3 transfers; release failed ("
        ) in out.getvalue(), out.getvalue()
        assert [t["amount"] for t in transfers_in_stripe(sim_stripe, payment)] == [4_500, 2_700]


SEEN_BY_POLICY: list[dict[str, Any]] = []


def split_aware_fee(amount: int, currency: str, *, payees: Any = None, payment: Any = None) -> int:
    """5 % per payee: a policy that prices a split by its payees."""
    SEEN_BY_POLICY.append({"amount": amount, "payees": payees, "payment": payment})
    count = len(payees) if payees else 1
    return amount * 5 * count // 100


class TestFeePolicy:
    def test_a_policy_that_accepts_payees_receives_them(
        self, market, settings, sim_stripe, partner
    ):
        configure(
            settings,
            ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
            PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
            PLATFORM_FEE_POLICY="tests.payments.test_milestones.split_aware_fee",
        )
        SEEN_BY_POLICY.clear()
        payment = held(market, payees=team(market, partner))
        EXTRA.clear()
        assert SEEN_BY_POLICY[-1]["payees"] is None  # at creation: no split yet
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        release_call = SEEN_BY_POLICY[-1]
        assert [p.user for p in release_call["payees"]] == [market.doer, partner]
        assert release_call["payment"].pk == payment.pk
        # 10 % (two payees): 9,000 net split 60/40.
        made = sorted(t["amount"] for t in transfers_in_stripe(sim_stripe, payment))
        assert made == [3_600, 5_400]
        assert market.payment(payment.pk).platform_fee == 1_000

    def test_a_two_argument_policy_still_works_for_a_split(
        self, market, settings, sim_stripe, partner
    ):
        configure(
            settings,
            ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
            PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
            PLATFORM_FEE_POLICY=lambda amount, currency: amount // 20,
        )
        payment = held(market, payees=team(market, partner))
        EXTRA.clear()
        body = market.post(market.customer, "payment-confirm", payment_id=payment.pk).json()
        assert body["status"] == "released"
        assert body["platform_fee"] == 500


@pytest.mark.usefixtures("split")
class TestSplitTips:
    def test_a_tip_is_shared_like_the_net_exactly(self, market, sim_stripe, partner, settings):
        configure(settings, TIP_MAX_AMOUNT={"usd": 5_000})
        payment = held(market, payees=team(market, partner))
        confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content

        # 60/40 of 1,001 cents: 600.6 and 400.4, the odd cent to the larger remainder.
        response = market.post(
            market.customer, "payment-tips", {"amount": 1_001}, payment_id=payment.pk
        )
        assert response.status_code == 201, response.content
        tip = swappable.load("EscrowTip").objects.get(pk=response.json()["id"])
        with market.capture(execute=True):
            SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
        tip.refresh_from_db()

        assert tip.status == "transferred"
        payees = {p.destination_account_id: p for p in payment.payees.all()}
        shares = {t.destination_account_id: t.amount for t in tip.transfers.all()}
        assert set(shares) == set(payees)
        by_position = {payees[d].position: amount for d, amount in shares.items()}
        assert by_position == {0: 601, 1: 400}
        made = [
            t for t in sim_stripe.transfers.values() if t["transfer_group"] == tip.transfer_group
        ]
        assert sorted(t["amount"] for t in made) == [400, 601]

    @pytest.mark.parametrize(
        ("currency", "amount", "shares"),
        [
            # 60/40 of 1,010 fils is 606 and 404; KWD amounts end in 0 at Stripe.
            ("kwd", 1_010, [400, 610]),
            # 60/40 of 11 kr is 6.60 and 4.40; ISK amounts are whole krónur at Stripe.
            ("isk", 1_100, [400, 700]),
        ],
    )
    def test_a_tip_is_shared_in_amounts_stripe_accepts(
        self, market, sim_stripe, partner, settings, currency, amount, shares
    ):
        configure(settings, TIP_MAX_AMOUNT={currency: 5_000})
        task = market.task(currency=currency)
        EXTRA[task.pk] = {"payees": team(market, partner)}
        payment = market.pay(market.create(task).json()["payment_id"])
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        response = market.post(
            market.customer, "payment-tips", {"amount": amount}, payment_id=payment.pk
        )
        assert response.status_code == 201, response.content
        tip = swappable.load("EscrowTip").objects.get(pk=response.json()["id"])
        with market.capture(execute=True):
            SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
        made = [
            t for t in sim_stripe.transfers.values() if t["transfer_group"] == tip.transfer_group
        ]
        assert sorted(t["amount"] for t in made) == shares
