"""The milestone task: a two-person team bid released milestone by milestone."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from django_escrow_connect.services import errors
from django_escrow_connect.states import PaymentStatus
from marketplace import services
from marketplace.models import Notification, Task, TaskStatus

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


# --------------------------------------------------------------------------
# The bid form: milestones and a team partner, checked on the server
# --------------------------------------------------------------------------


def post_bid(client: Any, task: Task, **fields: str) -> list[str]:
    """Post the task page's bid form; the flash messages it answered with."""
    response = client.post(
        reverse("task-bid", args=[task.pk]),
        {"amount": "200.00", "currency": "usd", "bid_as": "me", **fields},
    )
    assert response.status_code == 302
    return [str(message) for message in get_messages(response.wsgi_request)]


FORM_MILESTONES = {
    "milestone_1_name": "Design",
    "milestone_1_amount": "60.00",
    "milestone_2_name": "Build",
    "milestone_2_amount": "90.00",
    "milestone_3_name": "Launch",
    "milestone_3_amount": "50.00",
}


def test_the_bid_form_places_a_team_bid_in_milestones_that_becomes_the_terms(
    people: People, partner: Any
) -> None:
    task = services.post_task(people.customer, "Build a small online shop")
    page = client_for(people.doer).get(f"/tasks/{task.pk}/").content.decode()
    assert 'name="milestone_1_name"' in page
    assert 'name="partner_email"' in page

    texts = post_bid(
        client_for(people.doer),
        task,
        **FORM_MILESTONES,
        partner_email="PARTNER@example.com",
        partner_basis_points="4000",
    )

    assert "Your bid was sent to the customer." in texts
    bid = task.bids.get()
    assert bid.milestones == [
        {"name": "Design", "amount": 6000},
        {"name": "Build", "amount": 9000},
        {"name": "Launch", "amount": 5000},
    ]
    assert (bid.partner_user, bid.partner_basis_points) == (partner, 4000)
    # The task's terms follow: three milestones, the doer 60 %, the partner 40 %.
    services.accept_bid(bid.pk, people.customer)
    task.refresh_from_db()
    terms = task.get_escrow_terms()
    assert [(m.name, m.amount) for m in terms.milestones] == MILESTONES
    assert [(p.user, p.basis_points) for p in terms.payees] == [
        (people.doer, 6000),
        (partner, 4000),
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**FORM_MILESTONES, "milestone_3_amount": "40.00"}, "add up to 190.00 USD"),
        ({"milestone_1_name": "Design"}, "needs both a name and a price"),
        ({"milestone_1_name": "Design", "milestone_1_amount": "abc"}, "Milestone 1 price"),
        ({"partner_email": "nobody@example.com", "partner_basis_points": "4000"}, "sign up"),
        ({"partner_email": "doer@example.com", "partner_basis_points": "4000"}, "someone else"),
        ({"partner_email": "partner@example.com"}, "Give the partner's share"),
        ({"partner_email": "partner@example.com", "partner_basis_points": "10000"}, "9999"),
        ({"partner_basis_points": "4000"}, "Name the partner"),
        ({"fund_per_milestone": "on"}, "Funding per milestone needs milestones"),
    ],
)
def test_the_bid_form_refuses_milestones_or_a_partner_that_do_not_hold(
    people: People, partner: Any, fields: dict[str, str], message: str
) -> None:
    task = services.post_task(people.customer, "Build a small online shop")

    texts = post_bid(client_for(people.doer), task, **fields)

    assert any(message in text for text in texts), texts
    assert not task.bids.exists()


def test_a_partner_without_payouts_is_told_to_onboard(people: People) -> None:
    task = services.post_task(people.customer, "Build a small online shop")

    texts = post_bid(
        client_for(people.doer),
        task,
        partner_email=people.newbie.email,
        partner_basis_points="2500",
    )

    assert any("Nico Newcomer has not set up payouts yet" in text for text in texts), texts
    assert task.bids.get().partner_user == people.newbie
    [notice] = Notification.objects.filter(
        user=people.newbie, kind=Notification.Kind.ONBOARDING_NEEDED
    )
    assert "named you as team partner" in notice.message
    assert notice.url == reverse("onboarding")


# --------------------------------------------------------------------------
# Funding per milestone: the customer pays each milestone when it comes up
# --------------------------------------------------------------------------


def test_the_bid_form_offers_funding_per_milestone_which_becomes_the_terms(
    people: People, partner: Any
) -> None:
    task = services.post_task(people.customer, "Build a small online shop")
    page = client_for(people.doer).get(f"/tasks/{task.pk}/").content.decode()
    assert 'name="fund_per_milestone"' in page

    texts = post_bid(client_for(people.doer), task, **FORM_MILESTONES, fund_per_milestone="on")

    assert "Your bid was sent to the customer." in texts
    bid = task.bids.get()
    assert bid.fund_per_milestone
    services.accept_bid(bid.pk, people.customer)
    task.refresh_from_db()
    terms = task.get_escrow_terms()
    assert terms.funding == "per_milestone"
    assert [(m.name, m.amount) for m in terms.milestones] == MILESTONES
    page = client_for(people.customer).get(f"/tasks/{task.pk}/").content.decode()
    assert "3 milestones, funded one by one" in page


def pay_milestone(client: Any, task: Task, index: int) -> list[str]:
    """Open the payment page of milestone ``index`` and pay with the simulated card."""
    page = client.get(reverse("task-pay", args=[task.pk]), {"milestone": index})
    if page.status_code == 200:
        assert f"Milestone {index} of 3" in page.content.decode()
    response = client.post(
        reverse("task-pay", args=[task.pk]), {"card": "success", "milestone": str(index)}
    )
    assert response.status_code == 302
    return [str(message) for message in get_messages(response.wsgi_request)]


def part_status(client: Any, task: Task, index: int) -> str:
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    marker = f'<tr id="part-{index}" data-status="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_the_customer_pays_and_releases_milestone_by_milestone(
    people: People, partner: Any, settings: Any
) -> None:
    # The package's order rule decides; the page only asks it.
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "FUND_NEXT_MILESTONE": "on_release"}
    task = services.post_task(people.customer, "Build a small online shop")
    bid = services.place_bid(
        task.pk,
        people.doer,
        amount=20000,
        milestones=MILESTONES,
        partner=partner,
        partner_basis_points=4000,
        fund_per_milestone=True,
    )
    services.accept_bid(bid.pk, people.customer)
    client = client_for(people.customer)
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "Pay milestone 1" in page
    assert page.count("Not paid yet") == 3

    assert "Payment received: the money is held in escrow." in pay_milestone(client, task, 1)

    task.refresh_from_db()
    assert task.status == TaskStatus.IN_PROGRESS
    [first] = services.payment_model().objects.filter(task=task)
    assert (first.funded_milestone, first.amount, first.status) == (1, 6000, "held")
    assert part_status(client, task, 1) == "held"
    assert part_status(client, task, 2) == "unpaid"
    assert "Pay milestone 2" in client.get(f"/tasks/{task.pk}/").content.decode()

    # on_release: milestone 2 waits for milestone 1's release; the package says so.
    texts = pay_milestone(client, task, 2)
    assert "Milestone 1 must be released before milestone 2 is paid for." in texts, texts
    assert not services.payment_model().objects.filter(task=task, funded_milestone=2).exists()

    for index, amount in enumerate((6000, 9000, 5000), start=1):
        if index > 1:
            [due] = Notification.objects.filter(
                user=people.customer, kind=Notification.Kind.MILESTONE_FUNDING_DUE
            ).order_by("-pk")[:1]
            assert f"Milestone {index} of “{task.title}” is next: pay {amount / 100:.2f} USD" in (
                due.message
            )
            assert due.url == f"/tasks/{task.pk}/pay/?milestone={index}"
            assert pay_milestone(client, task, index)[-1].startswith("Payment received")
        payment = services.payment_model().objects.get(task=task, funded_milestone=index)
        assert (payment.amount, payment.status) == (amount, PaymentStatus.HELD)
        milestone = payment.milestones.get()
        page = client.get(f"/tasks/{task.pk}/").content.decode()
        assert f'id="release-part-{index}"' in page

        response = client.post(f"/tasks/{task.pk}/milestones/{milestone.pk}/release/")

        assert response.status_code == 302
        payment.refresh_from_db()
        task.refresh_from_db()
        assert payment.status == PaymentStatus.RELEASED
        assert part_status(client, task, index) == "released"
        # Each part pays its two payees (60/40) out of its own net.
        assert payment.transfers.count() == 2
        if index < 3:
            assert task.status == TaskStatus.IN_PROGRESS
            assert f"Pay milestone {index + 1}" in client.get(f"/tasks/{task.pk}/").content.decode()

    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert task.payment_status == "payment_released"
    assert (
        Notification.objects.filter(
            user=people.customer, kind=Notification.Kind.MILESTONE_FUNDING_DUE
        ).count()
        == 2
    )
