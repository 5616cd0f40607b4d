"""The simulated Stripe's pages (``django_escrow_connect.simulation.urls``), as a
host includes them: onboarding, the Express dashboard and the 3-D Secure challenge."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from django_escrow_connect import simulation
from django_escrow_connect.services.payments import create_payment
from django_escrow_connect.simulation import SimulatedGateway
from tests import factories
from tests.webhooks.conftest import simulated_account

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def onboarding_link(gateway: SimulatedGateway, account_id: str) -> str:
    return gateway.create_account_link(
        account_id=account_id,
        refresh_url="https://host.example/refresh/",
        return_url="https://host.example/return/",
        link_type="account_onboarding",
    ).url


def test_onboarding_finishes_the_account_and_returns_to_the_host(sim_stripe: Any) -> None:
    gateway = SimulatedGateway()
    doer = factories.make_user("doer")
    acct = simulated_account(onboarded=False)
    factories.make_account(owner_user=doer, stripe_account_id=acct, ready=False)
    page = onboarding_link(gateway, acct)
    assert page == f"/escrow/simulated/onboarding/{acct}/"

    assert client_for(factories.make_user("stranger")).get(page).status_code == 404
    assert b"Set up payouts for" in client_for(doer).get(page).content
    leave = client_for(doer).post(page, {"action": "leave"})
    assert leave.url == "https://host.example/refresh/"
    assert not sim_stripe.accounts[acct]["details_submitted"]

    done = client_for(doer).post(page, {"action": "complete"})

    assert done.url == "https://host.example/return/"
    assert sim_stripe.accounts[acct]["details_submitted"]


def test_an_organizations_account_is_shown_to_its_admins_only(sim_stripe: Any) -> None:
    admin, member = factories.make_user("admin"), factories.make_user("member")
    organization = factories.make_organization(admins=(admin,), members=(member,))
    acct = simulated_account(onboarded=False)
    factories.make_account(owner_organization=organization, stripe_account_id=acct, ready=False)
    page = simulation.onboarding_url(acct)

    assert client_for(admin).get(page).status_code == 200
    assert client_for(member).get(page).status_code == 404


def test_the_pages_do_not_exist_with_the_real_gateway(db: Any) -> None:
    doer = factories.make_user("doer")
    factories.make_account(owner_user=doer, stripe_account_id="acct_1Real")
    assert client_for(doer).get(simulation.onboarding_url("acct_1Real")).status_code == 404
    assert client_for(doer).get(simulation.dashboard_url("acct_1Real")).status_code == 404


def test_the_dashboard_disconnects_the_platform(sim_stripe: Any) -> None:
    doer = factories.make_user("doer")
    acct = simulated_account()
    factories.make_account(owner_user=doer, stripe_account_id=acct)
    page = simulation.dashboard_url(acct)
    assert b"Disconnect the marketplace" in client_for(doer).get(page).content
    assert client_for(factories.make_user("stranger")).post(page).status_code == 404

    answer = client_for(doer).post(page, {"action": "deauthorize"})

    assert answer.url == page
    assert acct in sim_stripe.deauthorized
    again = client_for(doer).get(page)
    assert b"You disconnected the platform" in again.content
    assert b"Disconnect the marketplace" not in again.content


def test_the_challenge_authenticates_the_payers_payment(sim_stripe: Any) -> None:
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    acct = simulated_account()
    factories.make_account(owner_user=doer, stripe_account_id=acct)
    task = factories.make_task(customer, payee_user=doer, amount=10_000)
    intent_id = create_payment(task.pk, customer).payment.stripe_payment_intent_id
    intent = SimulatedGateway().confirm_payment_intent(intent_id, "authentication_required")
    assert intent.status == "requires_action"
    page = sim_stripe.payment_intents[intent_id]["next_action"]["use_stripe_sdk"]["stripe_js"]
    assert page == f"/escrow/simulated/authenticate/{intent_id}/"
    assert client_for(doer).get(page).status_code == 404  # not the payer

    answer = client_for(customer).post(page, {"action": "approve", "next": "/tasks/1/"})

    assert answer.status_code == 302
    assert answer.url == "/tasks/1/"
    assert sim_stripe.payment_intents[intent_id]["status"] in ("succeeded", "requires_capture")


def test_the_challenge_ignores_a_next_page_on_another_site(sim_stripe: Any) -> None:
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    factories.make_account(owner_user=doer, stripe_account_id=simulated_account())
    task = factories.make_task(customer, payee_user=doer, amount=10_000)
    intent_id = create_payment(task.pk, customer).payment.stripe_payment_intent_id
    SimulatedGateway().confirm_payment_intent(intent_id, "authentication_required")

    answer = client_for(customer).post(
        simulation.links.authentication_url(intent_id),
        {"action": "deny", "next": "https://evil.example/"},
    )

    assert answer.status_code == 200
    assert b"requires_payment_method" in answer.content


@pytest.mark.parametrize("object_id", ["\x00", "acct_1\x00b"])
def test_a_nul_in_the_url_s_id_is_a_404_on_every_page(sim_stripe: Any, object_id: str) -> None:
    """A NUL in the URL's id was a 500 on PostgreSQL (it refuses NUL in text),
    not the 404 of an unknown account or payment."""
    customer = factories.make_user("customer")
    client = Client(raise_request_exception=False)
    client.force_login(customer)
    pages = (
        simulation.onboarding_url,
        simulation.dashboard_url,
        simulation.links.authentication_url,
    )
    for page in pages:
        for method in (client.get, client.post):
            assert method(page(object_id)).status_code == 404, (page.__name__, method)
