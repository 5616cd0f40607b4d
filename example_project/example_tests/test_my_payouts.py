"""The "My payouts" page: Stripe's payouts and notification banner embedded with
Connect.js, which in simulated mode is the simulated Stripe's stand-in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from django_escrow_connect.simulation import simulated_stripe

from .conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def config_of(response: Any) -> dict[str, Any]:
    html = response.content.decode()
    start = html.index('<script id="connect-config" type="application/json">') + len(
        '<script id="connect-config" type="application/json">'
    )
    return dict(json.loads(html[start : html.index("</script>", start)]))


def test_the_page_loads_the_stand_in_connect_js_and_no_secret(people: Any) -> None:
    response = client_for(people.doer).get(reverse("my-payouts"))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<script src="/escrow/simulated/connect-js/" async></script>' in html
    assert "connect-js.stripe.com" not in html
    assert 'id="nav-my-payouts"' in html
    assert "accs_secret" not in html  # Connect.js asks for the secret itself
    config = config_of(response)
    assert config["sessionUrl"] == "/escrow/stripe/account-session/"
    assert config["sessionBody"] == {"components": ["payouts", "notification_banner"]}


def test_the_session_the_page_asks_for_opens_its_components(people: Any) -> None:
    client = client_for(people.doer)
    config = config_of(client.get(reverse("my-payouts")))

    response = client.post(
        config["sessionUrl"], json.dumps(config["sessionBody"]), content_type="application/json"
    )

    assert response.status_code == 200, response.content
    name, call = simulated_stripe.calls[-1]
    assert name == "create_account_session"
    assert call["components"] == ["payouts", "notification_banner"]
    # The package's safe default: no instant or manual payouts from the page.
    assert call["features"]["payouts"]["instant_payouts"] is False


def test_an_organization_admin_sees_the_organizations_payouts(people: Any) -> None:
    url = reverse("my-payouts") + f"?organization_id={people.organization.pk}"

    config = config_of(client_for(people.admin).get(url))

    assert config["sessionBody"]["organization_id"] == str(people.organization.pk)
    assert client_for(people.member).get(url).status_code == 404


def test_without_an_account_the_page_sends_you_to_onboarding(people: Any) -> None:
    response = client_for(people.newbie).get(reverse("my-payouts"))

    assert response.status_code == 200
    assert b'id="no-account"' in response.content
    assert b"connect-js" not in response.content
