"""Fixtures of the example's tests: people, verified accounts, a fresh simulated Stripe.

The flows run with ``transaction=True``: the package sends its signals, and
the simulated gateway delivers its webhook events, when a transaction
commits, exactly as in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from django_escrow_connect import simulation as simulated
from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.simulation import simulated_stripe
from marketplace import services
from marketplace.models import Membership, Organization, Task, User


@pytest.fixture(autouse=True)
def fresh_simulated_stripe() -> Any:
    """Each test starts with an empty simulated Stripe delivering to the real pipeline."""
    previous = simulated.set_event_sink(None)
    simulated.reset()
    yield simulated_stripe
    simulated.set_event_sink(previous)
    simulated.reset()


def make_user(email: str, name: str = "", **extra: Any) -> User:
    return User.objects.create_user(
        email, "pw-for-tests", name=name or email.split("@")[0], **extra
    )


def verify(**owner: Any) -> Any:
    """A connected account that finished (simulated) onboarding."""
    business_type = "company" if owner.get("owner_organization") else "individual"
    account = account_services.ensure_account(business_type=business_type, **owner)
    simulated.SimulatedGateway().complete_onboarding(account.stripe_account_id)
    account.refresh_from_db()
    assert account.is_verified
    return account


@dataclass
class People:
    customer: User
    doer: User
    newbie: User
    admin: User
    member: User
    stranger: User
    organization: Organization


@pytest.fixture
def people(transactional_db: Any) -> People:
    customer = make_user("customer@example.com", "Casey Customer")
    doer = make_user("doer@example.com", "Dana Doer")
    newbie = make_user("newbie@example.com", "Nico Newcomer")
    admin = make_user("admin@acme.example", "Ada Admin")
    member = make_user("member@acme.example", "Milo Member")
    stranger = make_user("stranger@example.com", "Stan Stranger")
    org = Organization.objects.create(name="Acme Studio")
    Membership.objects.create(organization=org, user=admin, role=Membership.Role.ADMIN)
    Membership.objects.create(organization=org, user=member, role=Membership.Role.MEMBER)
    verify(owner_user=doer)
    verify(owner_organization=org)
    return People(customer, doer, newbie, admin, member, stranger, org)


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def accepted_task(people: People, amount: int = 12000, doer: User | None = None) -> Task:
    """A task whose bid (by the doer) was accepted: next comes the payment."""
    task = services.post_task(people.customer, "Paint the fence")
    bid = services.place_bid(task.pk, doer or people.doer, amount=amount, currency="usd")
    services.accept_bid(bid.pk, people.customer)
    task.refresh_from_db()
    return task


def paid_task(people: People, amount: int = 12000) -> Task:
    task = accepted_task(people, amount)
    services.pay_with_simulated_card(task.pk, people.customer, "success")
    task.refresh_from_db()
    return task
