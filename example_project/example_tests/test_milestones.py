"""The milestone task: a two-person team bid released milestone by milestone."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect.services import errors
from django_escrow_connect.states import PaymentStatus
from marketplace import services
from marketplace.models import Task, TaskStatus

from .conftest import People, client_for, make_user, verify

pytestmark = pytest.mark.django_db(transaction=True)

MILESTONES = [("Design", 6000), ("Build", 9000), ("Launch", 5000)]


def team_task(people: People, partner: Any) -> Task:
    """Dana Doer and a partner (40 %) bid 200.00 USD in three milestones; paid."""
    task = services.post_task(people.customer, "Build a small online shop")
    bid = services.place_bid(
        task.pk,
        people.doer,
        amount=20000,
        milestones=MILESTONES,
        partner=partner,
        partner_basis_points=4000,
    )
    services.accept_bid(bid.pk, people.customer)
    services.pay_with_simulated_card(task.pk, people.customer, "success")
    task.refresh_from_db()
    return task


@pytest.fixture
def partner(people: People) -> Any:
    user = make_user("partner@example.com", "Pia Partner")
    verify(owner_user=user)
    return user


def test_the_customer_releases_each_milestone_from_the_task_page(
    people: People, partner: Any
) -> None:
    task = team_task(people, partner)
    assert task.status == TaskStatus.IN_PROGRESS
    payment = services.current_payment(task)
    milestones = list(payment.milestones.order_by("position"))
    client = client_for(people.customer)

    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert page.count('class="small release-milestone"') == 3
    assert "with Pia Partner (40 %)" in page
    assert "3 milestones: Design 60.00 USD" in page
    assert "60 %" in page

    # Each payee's share of each release's net (10 % fee, 60/40).
    expected = [(3240, 2160), (4860, 3240), (2700, 1800)]
    for number, milestone in enumerate(milestones, start=1):
        response = client.post(f"/tasks/{task.pk}/milestones/{milestone.pk}/release/")
        assert response.status_code == 302
        milestone.refresh_from_db()
        assert milestone.status == "released"
        page = client.get(f"/tasks/{task.pk}/").content.decode()
        assert page.count('class="small release-milestone"') == 3 - number
        for doer_share, partner_share in expected[:number]:
            assert f"{doer_share / 100:.2f} USD created" in page
            assert f"{partner_share / 100:.2f} USD created" in page

    payment.refresh_from_db()
    task.refresh_from_db()
    assert payment.status == PaymentStatus.RELEASED
    assert task.status == TaskStatus.COMPLETED
    # The partner is a doer of the task: they see it, with their transfers.
    page = client_for(partner).get(f"/tasks/{task.pk}/").content.decode()
    assert "Completed. The payment was released" in page


def test_confirming_the_work_releases_every_milestone_left(people: People, partner: Any) -> None:
    task = team_task(people, partner)
    payment = services.current_payment(task)
    first = payment.milestones.order_by("position").first()
    client = client_for(people.customer)
    client.post(f"/tasks/{task.pk}/milestones/{first.pk}/release/")

    client.post(f"/tasks/{task.pk}/complete/")

    payment.refresh_from_db()
    task.refresh_from_db()
    assert set(payment.milestones.values_list("status", flat=True)) == {"released"}
    assert payment.status == PaymentStatus.RELEASED
    assert task.status == TaskStatus.COMPLETED
    assert payment.transfers.count() == 6


def test_only_the_customer_releases_a_milestone(people: People, partner: Any) -> None:
    task = team_task(people, partner)
    milestone = services.current_payment(task).milestones.order_by("position").first()

    response = client_for(partner).post(
        f"/tasks/{task.pk}/milestones/{milestone.pk}/release/", follow=True
    )

    assert "Only the task&#x27;s customer" in response.content.decode()
    milestone.refresh_from_db()
    assert milestone.status == "held"


def test_a_team_bid_needs_a_verified_partner(people: People) -> None:
    task = services.post_task(people.customer, "Build a small online shop")
    bid = services.place_bid(
        task.pk, people.doer, amount=20000, partner=people.newbie, partner_basis_points=4000
    )

    with pytest.raises(services.DoerNotReady):
        services.accept_bid(bid.pk, people.customer)


def test_milestones_must_add_up_to_the_bid(people: People) -> None:
    task = services.post_task(people.customer, "Build a small online shop")

    with pytest.raises(errors.InvalidInput) as refused:
        services.place_bid(task.pk, people.doer, amount=20000, milestones=[("Design", 6000)])

    assert refused.value.code == "milestones_mismatch"
