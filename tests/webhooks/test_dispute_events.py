"""``charge.dispute.*`` events freeze the payment until the dispute closes."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from django_escrow_connect.services import errors
from django_escrow_connect.services.payments import release_payment
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import status_history
from tests.webhooks.test_refund_events import refund_of

pytestmark = pytest.mark.django_db


def usd_withdrawn(amount: int) -> list[dict[str, Any]]:
    return [so.balance_transaction(-amount)]


def dispute_of(scene: Any, **overrides: Any) -> dict[str, Any]:
    payment = scene.payment
    values = {
        "charge": payment.stripe_charge_id,
        "payment_intent": payment.stripe_payment_intent_id,
        "amount": payment.amount,
        "currency": payment.currency,
    }
    values.update(overrides)
    return so.dispute(**values)


def the_dispute(scene: Any) -> Any:
    return swappable.load("Dispute").objects.get(payment=scene.payment.pk)


def test_dispute_opened_freezes_release(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    dispute = dispute_of(scene)
    evt = so.event("charge.dispute.created", dispute)
    assert deliver.platform(evt).json()["status"] == "processed"
    row = the_dispute(scene)
    assert (row.stripe_dispute_id, row.status, row.amount) == (
        dispute["id"],
        "needs_response",
        10_000,
    )
    assert row.evidence_due_by is not None
    payment = scene.refresh()
    assert (payment.status, payment.amount_disputed) == ("disputed", 10_000)
    assert [n["dispute"].pk for n in sent.of("dispute_opened")] == [row.pk]

    with pytest.raises(errors.TransitionNotAllowed):
        release_payment(payment.pk, scene.customer)
    assert sim_stripe.calls == []


def test_won_dispute_returns_the_payment_to_escrow(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    deliver.platform(so.event("charge.dispute.updated", dict(dispute, status="under_review")))
    assert the_dispute(scene).status == "under_review"
    closed = dict(dispute, status="won")
    deliver.platform(so.event("charge.dispute.closed", closed))
    row = the_dispute(scene)
    assert row.status == "won"
    assert row.closed_at is not None
    payment = scene.refresh()
    assert (payment.status, payment.amount_disputed) == ("held", 0)
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == ["won"]

    # An update older than the close, delivered late, changes nothing.
    deliver.platform(so.event("charge.dispute.updated", dict(dispute, status="under_review")))
    assert the_dispute(scene).status == "won"
    assert len(sent.of("dispute_closed")) == 1


def test_lost_dispute(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    assert scene.refresh().status == "disputed"
    deliver.platform(so.event("charge.dispute.closed", dict(dispute, status="lost")))
    assert scene.refresh().status == "dispute_lost"


def test_a_partial_dispute_lost_takes_only_the_disputed_amount_out_of_escrow(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("held")
    client = APIClient()
    client.force_authenticate(scene.customer)

    def shown() -> tuple[str, int, int, int]:
        body = client.get(f"/escrow/payments/{scene.payment.pk}/").json()
        assert (
            body["amount_released"]
            + body["amount_refunded"]
            + body["amount_held"]
            + body["amount_lost"]
            == body["amount"]
        )
        return body["status"], body["amount_disputed"], body["amount_held"], body["amount_lost"]

    t0 = so.now() - 3600
    dispute = dispute_of(scene, amount=3_000)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    # Open: undecided, the money counts as held (frozen) until the outcome.
    assert shown() == ("disputed", 3_000, 10_000, 0)
    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="lost"), created=t0 + 1)
    )
    assert shown() == ("dispute_lost", 3_000, 7_000, 3_000)

    # An appeal under way leaves the money with the customer; won, it is back.
    appeal = dict(dispute, status="appeal_under_review")
    deliver.platform(so.event("charge.dispute.updated", appeal, created=t0 + 60))
    assert shown() == ("dispute_lost", 3_000, 7_000, 3_000)
    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="won"), created=t0 + 120)
    )
    assert shown() == ("held", 0, 10_000, 0)


def disputed_figures(scene: Any) -> tuple[str, int, int, int]:
    """The payment detail's (status, amount_disputed, amount_held, amount_lost)."""
    client = APIClient()
    client.force_authenticate(scene.customer)
    body = client.get(f"/escrow/payments/{scene.payment.pk}/").json()
    return body["status"], body["amount_disputed"], body["amount_held"], body["amount_lost"]


@pytest.mark.parametrize(
    ("event_type", "changed"),
    [
        ("charge.dispute.updated", {}),
        ("charge.dispute.funds_withdrawn", {"balance_transactions": usd_withdrawn(6_000)}),
        ("charge.dispute.closed", {"status": "lost"}),
    ],
)
def test_the_amount_disputed_follows_stripe_s_latest_figure(
    deliver: Any, make_payment: Any, sim_stripe: Any, caplog: Any, event_type: str, changed: Any
) -> None:
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    assert disputed_figures(scene) == ("disputed", 10_000, 10_000, 0)

    # The issuer narrows the dispute to part of the order.
    with caplog.at_level(logging.INFO, logger="django_escrow_connect.services"):
        deliver.platform(
            so.event(event_type, dict(dispute, amount=6_000, **changed), created=t0 + 20)
        )
    assert the_dispute(scene).amount == 6_000
    status = "dispute_lost" if event_type.endswith("closed") else "disputed"
    lost = 6_000 if status == "dispute_lost" else 0
    assert disputed_figures(scene) == (status, 6_000, 10_000 - lost, lost)
    assert f"dispute amount changed: {dispute['id']} (10000 -> 6000 usd)" in caplog.text
    assert "amount disputed changed: 10000 -> 6000" in caplog.text

    # An older update delivered late puts no older figure back.
    deliver.platform(
        so.event("charge.dispute.updated", dict(dispute, amount=8_000), created=t0 + 10)
    )
    assert the_dispute(scene).amount == 6_000
    assert disputed_figures(scene) == (status, 6_000, 10_000 - lost, lost)


def test_an_amount_changed_after_the_loss_changes_what_was_lost(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    lost = dict(dispute, status="lost")
    deliver.platform(so.event("charge.dispute.closed", lost, created=t0 + 10))
    assert disputed_figures(scene) == ("dispute_lost", 10_000, 0, 10_000)
    deliver.platform(so.event("charge.dispute.updated", dict(lost, amount=7_000), created=t0 + 20))
    assert disputed_figures(scene) == ("dispute_lost", 7_000, 3_000, 7_000)


def test_a_dispute_above_the_charge_counts_at_most_what_was_charged(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    """Currency conversion may make Stripe's figure exceed the charge: the
    dispute keeps Stripe's figure, the payment at most what escrow held."""
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    above = dict(dispute, amount=10_400)
    evt = so.event("charge.dispute.updated", above, created=t0 + 10)
    assert deliver.platform(evt).json()["status"] == "processed"
    assert the_dispute(scene).amount == 10_400
    assert disputed_figures(scene) == ("disputed", 10_000, 10_000, 0)
    lost = so.event("charge.dispute.closed", dict(above, status="lost"), created=t0 + 20)
    deliver.platform(lost)
    assert disputed_figures(scene) == ("dispute_lost", 10_000, 0, 10_000)


def test_a_dispute_opened_above_the_charge_is_recorded(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment("held")
    evt = so.event("charge.dispute.created", dispute_of(scene, amount=10_400))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert the_dispute(scene).amount == 10_400
    assert disputed_figures(scene) == ("disputed", 10_000, 10_000, 0)


def test_funds_withdrawn_and_reinstated(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    scene = make_payment("held")
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    withdrawn = dict(dispute, balance_transactions=[so.balance_transaction(-10_000)])
    deliver.platform(so.event("charge.dispute.funds_withdrawn", withdrawn))
    assert the_dispute(scene).funds_withdrawn == 10_000
    reinstated = dict(
        withdrawn,
        status="won",
        balance_transactions=[so.balance_transaction(-10_000), so.balance_transaction(10_000)],
    )
    deliver.platform(so.event("charge.dispute.funds_reinstated", reinstated))
    row = the_dispute(scene)
    assert (row.funds_withdrawn, row.funds_reinstated, row.status) == (10_000, 10_000, "won")
    assert scene.refresh().status == "held"


def test_inquiry_freezes_too(deliver: Any, make_payment: Any, sim_stripe: Any) -> None:
    scene = make_payment("held")
    inquiry = dispute_of(scene, status="warning_needs_response")
    deliver.platform(so.event("charge.dispute.created", inquiry))
    assert scene.refresh().status == "disputed"
    deliver.platform(so.event("charge.dispute.closed", dict(inquiry, status="warning_closed")))
    assert scene.refresh().status == "held"


def test_dispute_on_an_unknown_charge_is_deferred(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("charge.dispute.created", so.dispute(charge="ch_1Unknown"))
    assert deliver.platform(evt).json()["status"] == "deferred"


# --------------------------------------------------------------------------
# Appeals (API version 2026-10-28.endive): lost -> appeal -> won or lost
# --------------------------------------------------------------------------


def lose(deliver: Any, scene: Any, *, at: int) -> dict[str, Any]:
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute, created=at))
    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="lost"), created=at + 1)
    )
    assert scene.refresh().status == "dispute_lost"
    return dispute


@pytest.mark.parametrize("appeal_status", ["appeal_needs_response", "appeal_under_review"])
@pytest.mark.parametrize(
    ("status", "fields", "task_status"),
    [
        ("held", {}, "payment_in_escrow"),
        ("released", {"amount_transferred": 9_000}, "payment_released"),
    ],
)
def test_an_appeal_won_reinstates_the_payment(
    deliver: Any,
    make_payment: Any,
    sim_stripe: Any,
    sent: Any,
    caplog: Any,
    appeal_status: str,
    status: str,
    fields: dict[str, Any],
    task_status: str,
) -> None:
    scene = make_payment(status, **fields)
    swappable.load("Task").objects.filter(pk=scene.task.pk).update(payment_status=task_status)
    t0 = so.now() - 3600
    dispute = lose(deliver, scene, at=t0)
    assert status_history(scene) == ("dispute_lost", "refunded")

    appeal = so.event(
        "charge.dispute.updated", dict(dispute, status=appeal_status), created=t0 + 60
    )
    with caplog.at_level(logging.INFO, logger="django_escrow_connect"):
        assert deliver.platform(appeal).json()["status"] == "processed"
    assert [r for r in caplog.records if r.getMessage().startswith("dispute appealed")]
    row = the_dispute(scene)
    assert (row.status, row.is_open, row.closed_at) == (appeal_status, True, None)
    assert row.appealed_at is not None
    assert scene.refresh().status == "dispute_lost"

    won = so.event("charge.dispute.closed", dict(dispute, status="won"), created=t0 + 120)
    assert deliver.platform(won).json()["status"] == "processed"

    row = the_dispute(scene)
    assert (row.status, row.is_open) == ("won", False)
    payment = scene.refresh()
    assert (payment.status, payment.amount_disputed, payment.status_before_dispute) == (
        status,
        0,
        "",
    )
    assert status_history(scene) == (status, task_status)
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == ["lost", "won"]


def test_release_is_refused_while_an_appeal_runs(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = lose(deliver, scene, at=t0)
    appeal = dict(dispute, status="appeal_under_review")
    deliver.platform(so.event("charge.dispute.updated", appeal, created=t0 + 60))

    with pytest.raises(errors.TransitionNotAllowed):
        release_payment(scene.payment.pk, scene.customer)
    assert sim_stripe.calls == []


def test_an_appeal_lost_is_final(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = lose(deliver, scene, at=t0)
    deliver.platform(
        so.event(
            "charge.dispute.updated", dict(dispute, status="appeal_needs_response"), created=t0 + 60
        )
    )
    deliver.platform(
        so.event(
            "charge.dispute.updated", dict(dispute, status="appeal_under_review"), created=t0 + 90
        )
    )

    lost = so.event("charge.dispute.closed", dict(dispute, status="lost"), created=t0 + 120)
    assert deliver.platform(lost).json()["status"] == "processed"
    row = the_dispute(scene)
    assert (row.status, row.is_open, row.is_final) == ("lost", False, True)
    assert scene.refresh().status == "dispute_lost"
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == ["lost", "lost"]

    # Nothing moves a dispute whose appeal was decided: not a late appeal
    # event, not a "won".
    for late in ("appeal_under_review", "won"):
        evt = so.event("charge.dispute.updated", dict(dispute, status=late), created=t0 + 150)
        deliver.platform(evt)
    assert the_dispute(scene).status == "lost"
    assert scene.refresh().status == "dispute_lost"
    assert len(sent.of("dispute_closed")) == 2


def test_the_first_loss_delivered_during_the_appeal_changes_nothing(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    first_loss = so.event("charge.dispute.closed", dict(dispute, status="lost"), created=t0 + 1)
    appeal = so.event(
        "charge.dispute.updated", dict(dispute, status="appeal_under_review"), created=t0 + 60
    )
    # The appeal event arrives first: the payment is frozen, as for any open dispute.
    deliver.platform(appeal)
    assert the_dispute(scene).status == "appeal_under_review"
    assert scene.refresh().status == "disputed"

    # The first loss, older than the appeal, arrives late: the appeal is still open.
    deliver.platform(first_loss)
    assert the_dispute(scene).status == "appeal_under_review"
    assert scene.refresh().status == "disputed"

    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="won"), created=t0 + 120)
    )
    assert scene.refresh().status == "held"


def test_a_won_after_a_loss_is_an_appeal_won_even_without_the_appeal_events(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    t0 = so.now() - 3600
    dispute = lose(deliver, scene, at=t0)

    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="won"), created=t0 + 120)
    )

    assert the_dispute(scene).status == "won"
    assert the_dispute(scene).is_appealed
    assert scene.refresh().status == "released"
    # The stale first loss, delivered again, changes nothing.
    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="lost"), created=t0 + 1)
    )
    assert the_dispute(scene).status == "won"
    assert scene.refresh().status == "released"


# --------------------------------------------------------------------------
# What the payment and the dashboards say while a dispute decides the payment
# --------------------------------------------------------------------------


def usd(amount: int) -> list[dict[str, Any]]:
    """A dashboard total in usd ([] for 0: a zero total is left out)."""
    return [{"currency": "usd", "amount": amount, "formatted": f"{amount / 100:.2f} USD"}] * bool(
        amount
    )


@dataclass
class Books:
    """A payment and its dashboards as the API shows them to its customer and doer."""

    status: str
    amount_held: int
    amount_lost: int
    refundable_amount: int
    spent: list[dict[str, Any]]
    customer_in_escrow: list[dict[str, Any]]
    earnings: list[dict[str, Any]]
    doer_in_escrow: list[dict[str, Any]]


def books(scene: Any) -> Books:
    def client(user: Any) -> APIClient:
        api = APIClient()
        api.force_authenticate(user)
        return api

    detail = client(scene.customer).get(f"/escrow/payments/{scene.payment.pk}/").json()
    customer = client(scene.customer).get(reverse("escrow_connect:dashboard-customer")).json()
    doer = client(scene.doer).get(reverse("escrow_connect:dashboard-task-doer")).json()
    # The dashboards list the payment as the detail shows it.
    assert customer["payments"] == doer["payments"] == [detail]
    return Books(
        detail["status"],
        detail["amount_held"],
        detail["amount_lost"],
        detail["refundable_amount"],
        customer["spent"],
        customer["in_escrow"],
        doer["earnings"],
        doer["in_escrow"],
    )


def test_a_partial_dispute_open_lost_appealed_and_won_in_the_books_and_dashboards(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    """10,000 held, 7,000 disputed. The customer's dashboard sums the
    payment's amount_held, and spent is what the customer did not get back;
    nothing is refundable while the dispute decides the payment (a refund is
    409); the doer's in_escrow counts what the app can still release to them."""
    scene = make_payment("held")
    assert books(scene) == Books(
        "held", 10_000, 0, 10_000, usd(10_000), usd(10_000), [], usd(9_000)
    )
    t0 = so.now() - 3600
    dispute = dispute_of(scene, amount=7_000)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    assert books(scene) == Books("disputed", 10_000, 0, 0, usd(10_000), usd(10_000), [], [])

    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="lost"), created=t0 + 1)
    )
    # The rest is releasable to the doer (start_release_of_rest): in_escrow
    # shows what its release sends, 3,000 less the fee on it.
    lost = Books("dispute_lost", 3_000, 7_000, 0, usd(3_000), usd(3_000), [], usd(2_700))
    assert books(scene) == lost
    appeal = dict(dispute, status="appeal_under_review")
    deliver.platform(so.event("charge.dispute.updated", appeal, created=t0 + 60))
    # The appeal freezes the release of the rest: the doer's in_escrow leaves it out.
    assert books(scene) == dataclasses.replace(lost, doer_in_escrow=[])

    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="won"), created=t0 + 120)
    )
    assert books(scene) == Books(
        "held", 10_000, 0, 10_000, usd(10_000), usd(10_000), [], usd(9_000)
    )


def test_a_tip_s_lost_dispute_takes_nothing_of_the_payment_in_the_books(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    """A 500 tip's charge was disputed and lost as well as 7,000 of the
    payment's: the tip's money is not the payment's, so the payment's books
    and the customer's totals count only its own dispute."""
    scene = make_payment("held")
    tip = swappable.load("EscrowTip").objects.create(
        payment=scene.payment,
        payer_id=scene.payment.payer_id,
        amount=500,
        currency="usd",
        status="transferred",
        intent_idempotency_key=kit.stripe_id("tipkey"),
        stripe_payment_intent_id=kit.stripe_id("pi"),
        stripe_charge_id=kit.stripe_id("ch"),
    )
    kit.make_dispute(
        scene.payment, tip=tip, amount=500, status="lost", stripe_charge_id=tip.stripe_charge_id
    )
    dispute = dispute_of(scene, amount=7_000)
    deliver.platform(so.event("charge.dispute.created", dispute))
    deliver.platform(so.event("charge.dispute.closed", dict(dispute, status="lost")))
    assert books(scene) == Books(
        "dispute_lost", 3_000, 7_000, 0, usd(3_000), usd(3_000), [], usd(2_700)
    )


def test_a_dispute_lost_after_the_release_leaves_the_doer_s_earnings(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    """The customer got all of it back: spent 0. The doer keeps the transfer
    (the platform bore the loss): it stays in the doer's earnings."""
    scene = make_payment("released", amount_transferred=9_000, amount_released=10_000)
    assert books(scene) == Books("released", 0, 0, 10_000, usd(10_000), [], usd(9_000), [])
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute))
    assert books(scene) == Books("disputed", 0, 0, 0, usd(10_000), [], usd(9_000), [])
    deliver.platform(so.event("charge.dispute.closed", dict(dispute, status="lost")))
    assert books(scene) == Books("dispute_lost", 0, 0, 0, [], [], usd(9_000), [])


# --------------------------------------------------------------------------
# Edges: an inquiry or dispute closed for the platform at once, a refund
# delivered after the loss (Stripe's facts: docs/recovery.md)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opened", "closed"),
    [("warning_needs_response", "warning_closed"), ("needs_response", "won")],
)
@pytest.mark.parametrize(
    ("status", "fields"),
    [
        ("held", {}),
        ("partially_released", {"amount_released": 4_000, "amount_transferred": 3_600}),
    ],
)
def test_a_dispute_closed_for_the_platform_right_after_it_opened_leaves_the_payment_as_it_was(
    deliver: Any,
    make_payment: Any,
    sim_stripe: Any,
    sent: Any,
    opened: str,
    closed: str,
    status: str,
    fields: dict[str, Any],
) -> None:
    """An inquiry the customer drops (warning_closed) or a chargeback withdrawn
    (won) at once: back where it was, its books untouched, nothing reversed."""
    scene = make_payment(status, **fields)
    before = books(scene)
    dispute = dispute_of(scene, status=opened)
    deliver.platform(so.event("charge.dispute.created", dispute))
    deliver.platform(so.event("charge.dispute.closed", dict(dispute, status=closed)))

    payment = scene.refresh()
    assert (payment.status, payment.amount_disputed, payment.status_before_dispute) == (
        status,
        0,
        "",
    )
    assert books(scene) == before
    assert [n["dispute"].status for n in sent.of("dispute_closed")] == [closed]
    assert sim_stripe.calls == []


def test_a_refund_made_before_a_lost_dispute_and_delivered_after_it_is_not_lost_twice(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    """3,000 refunded, then the whole 10,000 disputed (the issuer did not know
    of the refund) and lost. Stripe gives the refunded part back ("partially
    won", status lost): the customer got 3,000 as a refund and 7,000 from the
    dispute. The refund's events arrive after the loss, twice."""
    scene = make_payment("held")
    t0 = so.now() - 3600
    dispute = dispute_of(scene)
    deliver.platform(so.event("charge.dispute.created", dispute, created=t0))
    deliver.platform(
        so.event("charge.dispute.closed", dict(dispute, status="lost"), created=t0 + 1)
    )
    assert books(scene) == Books("dispute_lost", 0, 10_000, 0, [], [], [], [])

    refund = refund_of(scene, amount=3_000, status="succeeded", created=t0 - 60)
    for _ in range(2):
        deliver.platform(so.event("refund.created", refund, created=t0 + 10))
        deliver.platform(so.event("refund.updated", refund, created=t0 + 11))

    payment = scene.refresh()
    assert (payment.amount_refunded, payment.amount_lost, payment.amount_held) == (3_000, 7_000, 0)
    assert books(scene) == Books("dispute_lost", 0, 7_000, 0, [], [], [], [])

    # The refund fails after all: the dispute took all of it after all.
    failed = dict(refund, status="failed", failure_reason="expired_or_canceled_card")
    deliver.platform(so.event("refund.updated", failed, created=t0 + 20))
    payment = scene.refresh()
    assert (payment.amount_refunded, payment.amount_lost, payment.amount_held) == (0, 10_000, 0)
    assert sim_stripe.calls == []
