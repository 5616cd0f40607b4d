"""Sign-up and log-in, the simulated-mode banner, onboarding, dashboards, deauthorization."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.states import AccountStatus, PaymentStatus
from marketplace import services
from marketplace.demo import DEMO_PASSWORD
from marketplace.models import Notification, TaskStatus, User

from .conftest import accepted_task, client_for, make_user, paid_task

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_page_says_it_runs_in_simulated_mode(people: Any) -> None:
    for client, url in [
        (Client(), reverse("home")),
        (Client(), reverse("login")),
        (client_for(people.customer), reverse("task-new")),
        (client_for(people.doer), reverse("onboarding")),
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"SIMULATED MODE" in response.content, url
        assert b"js.stripe.com" not in response.content, url


def test_sign_up_with_an_email_and_log_in() -> None:
    client = Client()
    response = client.post(
        reverse("signup"),
        {
            "email": "new@example.com",
            "name": "New Person",
            "password1": "s3cret-pass-1",
            "password2": "s3cret-pass-1",
        },
    )
    assert response.status_code == 302
    assert User.objects.get(email="new@example.com").name == "New Person"

    other = Client()
    response = other.post(
        reverse("login"), {"username": "new@example.com", "password": "s3cret-pass-1"}
    )
    assert response.status_code == 302
    assert other.get(reverse("notifications")).status_code == 200


def test_demo_people_log_in_with_one_click() -> None:
    make_user("customer@example.com", "Casey Customer")
    make_user("someone@example.com")
    client = Client()

    page = client.get(reverse("login"))
    assert b"Log in as Casey Customer" in page.content
    assert DEMO_PASSWORD.encode() in page.content

    response = client.post(reverse("demo-login"), {"email": "customer@example.com"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard-customer")).status_code == 200
    # Only the listed demo people, never an arbitrary account.
    refused = Client().post(reverse("demo-login"), {"email": "someone@example.com"})
    assert refused.status_code == 404


def test_onboarding_through_the_simulated_stripe_page(people: Any) -> None:
    client = client_for(people.newbie)
    assert b"Start onboarding" in client.get(reverse("onboarding")).content

    response = client.post(reverse("onboarding-start"), {"business_type": "individual"})
    account = account_services.get_account(owner_user=people.newbie)
    assert response.url == f"/escrow/simulated/onboarding/{account.stripe_account_id}/"
    assert account.status == AccountStatus.PENDING_VERIFICATION
    # Someone else cannot finish it.
    assert client_for(people.stranger).get(response.url).status_code == 404

    page = client.get(response.url)
    assert b"Set up payouts for Nico Newcomer" in page.content
    back = client.post(response.url, {"action": "complete"})
    assert back.url.endswith(reverse("onboarding-return"))
    final = client.get(back.url, follow=True)
    assert "Payouts are set up: your Stripe account is verified." in [
        str(m) for m in final.context["messages"]
    ]
    account.refresh_from_db()
    assert account.status == AccountStatus.VERIFIED

    # Leaving the simulated page sends people to refresh_url, which mints a new link.
    leave = client.post(response.url, {"action": "leave"})
    assert leave.url.endswith(reverse("onboarding-refresh"))
    again = client.get(leave.url)
    assert again.url == response.url


def test_an_organization_account_is_managed_by_its_admins_only(people: Any) -> None:
    org_id = people.organization.pk
    page = client_for(people.admin).get(reverse("onboarding"))
    assert b"Acme Studio" in page.content
    assert b"Acme Studio" not in client_for(people.member).get(reverse("onboarding")).content

    response = client_for(people.member).post(
        reverse("onboarding-start"), {"business_type": "company", "organization_id": org_id}
    )
    assert response.status_code == 404
    response = client_for(people.admin).post(
        reverse("onboarding-dashboard"), {"organization_id": org_id}
    )
    account = account_services.get_account(owner_organization=people.organization)
    assert response.url == f"/escrow/simulated/dashboard/{account.stripe_account_id}/"


def test_disconnecting_the_platform_cancels_the_doers_open_tasks(people: Any) -> None:
    paid = paid_task(people)
    unpaid = accepted_task(people, amount=2500)
    account = account_services.get_account(owner_user=people.doer)
    dashboard = reverse("escrow_simulation:dashboard", args=[account.stripe_account_id])
    doer = client_for(people.doer)
    assert b"Disconnect the marketplace" in doer.get(dashboard).content

    doer.post(dashboard, {"action": "deauthorize"})

    account.refresh_from_db()
    paid.refresh_from_db()
    unpaid.refresh_from_db()
    assert account.status == AccountStatus.DEAUTHORIZED
    assert (paid.status, services.current_payment(paid).status) == (
        TaskStatus.CANCELLED,
        PaymentStatus.REFUNDED,
    )
    assert unpaid.status == TaskStatus.CANCELLED
    assert (
        Notification.objects.filter(user=people.customer, kind="account_deauthorized").count() == 2
    )
    assert Notification.objects.filter(user=people.doer, kind="account_deauthorized").exists()


def test_the_dashboards_show_the_packages_totals(people: Any) -> None:
    released = paid_task(people, amount=12000)
    services.complete_task(released.pk, people.customer)
    paid_task(people, amount=5000)  # still held

    customer = client_for(people.customer).get(reverse("dashboard-customer"))
    assert customer.status_code == 200
    spent = {t["currency"]: t["amount"] for t in customer.context["data"]["spent"]}
    assert spent == {"usd": 17000}
    assert b"170.00 USD" in customer.content

    doer = client_for(people.doer).get(reverse("dashboard-doer"))
    data = doer.context["data"]
    assert {t["currency"]: t["amount"] for t in data["earnings"]} == {"usd": 10800}
    assert {t["currency"]: t["amount"] for t in data["in_escrow"]} == {"usd": 4500}
    assert data["account"]["status"] == AccountStatus.VERIFIED
    assert len(data["payments"]) == 2

    org = client_for(people.admin).get(
        reverse("dashboard-doer"), {"organization_id": people.organization.pk}
    )
    assert org.status_code == 200
    assert org.context["data"]["payments"] == []
    assert (
        client_for(people.member)
        .get(reverse("dashboard-doer"), {"organization_id": people.organization.pk})
        .status_code
        == 404
    )


def test_requirements_due_after_verification_notify_the_doer(people: Any) -> None:
    from django_escrow_connect.simulation import SimulatedGateway

    account = account_services.get_account(owner_user=people.doer)
    SimulatedGateway().require_information(account.stripe_account_id)

    note = Notification.objects.get(user=people.doer, kind="account_requirements_due")
    assert "Stripe needs more information" in note.message
    assert note.url == reverse("onboarding")
