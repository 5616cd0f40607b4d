"""POST stripe/account-session/: embedded onboarding; the secret is never kept."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.forms.models import model_to_dict

from .conftest import accounts, calls, client_for, url

pytestmark = pytest.mark.django_db


def post_session(user: Any, **body: Any) -> Any:
    return client_for(user).post(url("stripe-account-session"), body, format="json")


def test_without_an_account_is_404_no_account(sim_stripe, people):
    response = post_session(people.owner)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_account"
    assert sim_stripe.calls == []


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_account_type_creates_the_account_first(sim_stripe, people):
    response = post_session(people.owner, account_type="individual")

    assert response.status_code == 200, response.content
    assert calls(sim_stripe) == ["create_account", "create_account_session"]
    account = accounts().get(owner_user=people.owner)
    _, session = sim_stripe.calls[-1]
    assert session["account_id"] == account.stripe_account_id
    assert session["components"] == ["account_onboarding"]


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_existing_account_gets_a_session_and_the_secret_is_not_kept(sim_stripe, people, caplog):
    post_session(people.owner, account_type="individual")
    caplog.set_level(logging.DEBUG)

    response = post_session(people.owner)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"client_secret", "expires_at"}
    assert body["client_secret"].startswith("accs_secret_")
    assert response["Cache-Control"] == "no-store"
    assert sim_stripe.call_count("create_account") == 1
    row = model_to_dict(accounts().get(owner_user=people.owner))
    assert body["client_secret"] not in repr(row)
    assert body["client_secret"] not in caplog.text
    assert "account session created" in caplog.text


def test_business_type_mismatch_is_409(sim_stripe, people):
    post_session(people.owner, account_type="individual")

    response = post_session(people.owner, account_type="company")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "business_type_mismatch"


def test_bad_input_is_400(sim_stripe, people):
    assert post_session(people.owner, account_type="sole-trader").status_code == 400
    assert post_session(people.owner, components=["payments"]).status_code == 400
    assert sim_stripe.calls == []


class TestRoles:
    def test_admin_gets_a_session_for_the_organization(self, sim_stripe, people):
        org_id = str(people.organization.pk)

        response = post_session(people.admin, account_type="company", organization_id=org_id)

        assert response.status_code == 200
        account = accounts().get(owner_organization=people.organization)
        assert sim_stripe.calls[-1][1]["account_id"] == account.stripe_account_id

    @pytest.mark.parametrize("who", ["member", "stranger", "owner"])
    def test_non_admins_get_404(self, sim_stripe, people, who):
        org_id = str(people.organization.pk)
        post_session(people.admin, account_type="company", organization_id=org_id)
        before = len(sim_stripe.calls)

        response = post_session(getattr(people, who), organization_id=org_id)

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "organization_not_found"
        assert len(sim_stripe.calls) == before

    def test_unknown_organization_is_404(self, sim_stripe, people):
        response = post_session(people.admin, account_type="company", organization_id="nope")

        assert response.status_code == 404

    def test_anonymous_is_refused(self, sim_stripe):
        response = post_session(None, account_type="individual")

        assert response.status_code in (401, 403)
        assert sim_stripe.calls == []
