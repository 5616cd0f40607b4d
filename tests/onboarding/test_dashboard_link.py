"""GET stripe/dashboard-link/: the Express dashboard, once onboarding was submitted."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import accounts, calls, client_for, url

pytestmark = pytest.mark.django_db


def get_link(user: Any, **query: Any) -> Any:
    return client_for(user).get(url("stripe-dashboard-link", **query))


def open_account(user: Any, **body: Any) -> Any:
    response = client_for(user).post(
        url("stripe-onboarding-link"), {"account_type": "company", **body}, format="json"
    )
    assert response.status_code == 200, response.content
    owner = {"owner_organization": people_org(body)} if body else {"owner_user": user}
    return accounts().get(**owner)


def people_org(body: dict[str, Any]) -> Any:
    from django_escrow_connect import swappable

    Organization = swappable.load("Organization")
    return Organization._default_manager.get(pk=body["organization_id"])


def test_no_account_is_404(sim_stripe, people):
    response = get_link(people.owner)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_account"


def test_before_onboarding_is_409_and_no_login_link_is_made(sim_stripe, people):
    open_account(people.owner)

    response = get_link(people.owner)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "onboarding_incomplete"
    assert "create_login_link" not in calls(sim_stripe)


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_after_onboarding_returns_a_login_link_even_before_the_webhook(sim_stripe, seller, people):
    account = open_account(people.owner)
    seller.complete_onboarding(account.stripe_account_id)

    response = get_link(people.owner)

    assert response.status_code == 200, response.content
    assert set(response.json()) == {"url"}
    assert account.stripe_account_id in response.json()["url"]
    assert response["Cache-Control"] == "no-store"
    assert calls(sim_stripe)[-2:] == ["retrieve_account", "create_login_link"]
    assert accounts().get(pk=account.pk).details_submitted is True


def test_synced_account_needs_one_call(sim_stripe, seller, people):
    account = open_account(people.owner)
    seller.complete_onboarding(account.stripe_account_id)
    get_link(people.owner)
    before = len(sim_stripe.calls)

    assert get_link(people.owner).status_code == 200

    assert calls(sim_stripe)[before:] == ["create_login_link"]


class TestRoles:
    def test_admin_gets_the_organization_dashboard(self, sim_stripe, seller, people):
        org_id = str(people.organization.pk)
        account = open_account(people.admin, organization_id=org_id)
        seller.complete_onboarding(account.stripe_account_id)

        response = get_link(people.admin, organization_id=org_id)

        assert response.status_code == 200
        assert account.stripe_account_id in response.json()["url"]

    @pytest.mark.parametrize("who", ["member", "stranger"])
    def test_non_admins_get_404(self, sim_stripe, seller, people, who):
        org_id = str(people.organization.pk)
        account = open_account(people.admin, organization_id=org_id)
        seller.complete_onboarding(account.stripe_account_id)

        response = get_link(getattr(people, who), organization_id=org_id)

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "organization_not_found"
        assert "create_login_link" not in calls(sim_stripe)

    def test_unknown_organization_is_404(self, sim_stripe, people):
        response = get_link(people.admin, organization_id="x-y-z")

        assert response.status_code == 404

    def test_anonymous_is_refused(self, sim_stripe):
        response = get_link(None)

        assert response.status_code in (401, 403)
