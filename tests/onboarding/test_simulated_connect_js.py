"""The simulated Stripe's stand-in for Connect.js: the script, and the content
of each embedded component for the account an AccountSession's client secret
opens (the secret is the only credential, as with Stripe)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.simulation.links import connect_js_url, embedded_component_url

from .conftest import accounts, client_for, configure, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def payouts_page(settings):
    configure(
        settings,
        EMBEDDED_COMPONENTS=["account_onboarding", "payouts", "notification_banner"],
    )


def session_secret(user: Any, *components: str) -> str:
    body: dict[str, Any] = {"account_type": "individual"}
    if components:
        body["components"] = list(components)
    response = client_for(user).post(url("stripe-account-session"), body, format="json")
    assert response.status_code == 200, response.content
    return str(response.json()["client_secret"])


def load(component: str, secret: str) -> Any:
    # No cookies: the stand-in Connect.js sends only the client secret.
    return Client().post(
        embedded_component_url(),
        json.dumps({"client_secret": secret, "component": component}),
        content_type="application/json",
    )


def test_the_script_defines_stripe_connect_init(sim_stripe):
    response = Client().get(connect_js_url())

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    script = response.content.decode()
    assert "connect.init = init" in script
    assert json.dumps(embedded_component_url()) in script
    assert connect_js_url() == "/escrow/simulated/connect-js/"


def test_the_pages_do_not_exist_without_the_simulated_gateway(settings):
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": "django_escrow_connect.gateway.stripe_gateway.StripeGateway",
    }

    assert Client().get(connect_js_url()).status_code == 404
    assert load("payouts", "accs_secret__x").status_code == 404


def test_payouts_show_the_accounts_balance_payouts_and_features(
    sim_stripe, payouts_page, people, seller
):
    secret = session_secret(people.owner, "payouts")
    account_id = accounts().get(owner_user=people.owner).stripe_account_id
    seller.complete_onboarding(account_id)
    sim_stripe.credit(account_id, "usd", 10800)

    response = load("payouts", secret)

    assert response.status_code == 200
    html = response.json()["html"]
    assert f'data-account="{account_id}"' in html
    assert "108.00 USD" in html
    assert "No payouts yet." in html
    assert "instant_payouts: off" in html
    assert response.json()["component"] == "payouts"


def test_the_banner_says_what_stripe_needs(sim_stripe, payouts_page, people, seller):
    secret = session_secret(people.owner, "notification_banner")
    account_id = accounts().get(owner_user=people.owner).stripe_account_id
    seller.complete_onboarding(account_id)

    clear = load("notification-banner", secret).json()
    seller.require_information(account_id, ["individual.verification.document"])
    due = load("notification-banner", secret).json()

    assert "nothing needs your attention" in clear["html"]
    assert clear["notifications"] == {"total": 0, "actionRequired": 0}
    assert "Action required" in due["html"]
    assert "individual.verification.document" in due["html"]
    assert due["notifications"] == {"total": 1, "actionRequired": 1}


def test_a_component_the_session_did_not_enable_is_403(sim_stripe, payouts_page, people):
    secret = session_secret(people.owner, "notification_banner")

    response = load("payouts", secret)

    assert response.status_code == 403
    assert "payouts" in response.json()["error"]["message"]


def test_an_unknown_or_expired_secret_is_401(sim_stripe, payouts_page, people):
    secret = session_secret(people.owner, "payouts")

    assert load("payouts", secret + "x").status_code == 401
    assert load("payouts", "").status_code == 401
    sim_stripe.advance_time(1801)
    assert load("payouts", secret).status_code == 401


def test_only_a_json_post_is_answered(sim_stripe):
    assert Client().get(embedded_component_url()).status_code == 405
    bad = Client().post(embedded_component_url(), "nope", content_type="application/json")
    assert bad.status_code == 400


def test_a_disconnected_account_shows_nothing(sim_stripe, payouts_page, people):
    secret = session_secret(people.owner, "payouts")
    account_id = accounts().get(owner_user=people.owner).stripe_account_id
    SimulatedGateway().deauthorize(account_id)

    assert load("payouts", secret).status_code == 403
