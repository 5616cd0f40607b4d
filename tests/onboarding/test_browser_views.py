"""The pages Stripe sends the browser back to: refresh (mint a new link) and return."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings

from django_escrow_connect.exceptions import TemporarilyUnavailable

from .conftest import accounts, client_for, configure, url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def package_pages(settings: Any, sim_stripe: Any) -> None:
    """No host URLs configured: the package's own pages are used."""
    configure(settings, ONBOARDING_REFRESH_URL="", ONBOARDING_RETURN_URL="")


def open_account(user: Any, **body: Any) -> Any:
    response = client_for(user).post(
        url("stripe-onboarding-link"), {"account_type": "individual", **body}, format="json"
    )
    assert response.status_code == 200, response.content
    return response


class TestRefresh:
    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_mints_a_new_link_and_redirects_to_it(self, sim_stripe, people):
        open_account(people.owner)
        account = accounts().get(owner_user=people.owner)
        links_before = sim_stripe.call_count("create_account_link")

        first = client_for(people.owner).get(url("stripe-onboarding-refresh"))
        second = client_for(people.owner).get(url("stripe-onboarding-refresh"))

        assert first.status_code == second.status_code == 302
        assert account.stripe_account_id in first["Location"]
        assert first["Cache-Control"] == "no-store"
        assert sim_stripe.call_count("create_account_link") == links_before + 2
        assert sim_stripe.call_count("create_account") == 1
        _, link = sim_stripe.calls[-1]
        assert link["refresh_url"] == "http://testserver/escrow/stripe/onboarding/refresh/"
        assert link["return_url"] == "http://testserver/escrow/stripe/onboarding/return/"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_organization_link_for_its_admin(self, sim_stripe, people):
        org_id = str(people.organization.pk)
        open_account(people.admin, account_type="company", organization_id=org_id)
        account = accounts().get(owner_organization=people.organization)

        response = client_for(people.admin).get(
            url("stripe-onboarding-refresh", organization_id=org_id)
        )

        assert response.status_code == 302
        assert account.stripe_account_id in response["Location"]
        assert sim_stripe.calls[-1][1]["refresh_url"].endswith(f"?organization_id={org_id}")

    def test_login_required(self, sim_stripe):
        response = client_for(None).get(url("stripe-onboarding-refresh"))

        assert response.status_code == 302
        assert response["Location"].startswith(django_settings.LOGIN_URL)
        assert sim_stripe.calls == []

    @pytest.mark.parametrize("who", ["member", "stranger"])
    def test_non_admins_get_a_404_page(self, sim_stripe, people, who):
        org_id = str(people.organization.pk)
        open_account(people.admin, account_type="company", organization_id=org_id)
        before = len(sim_stripe.calls)

        response = client_for(getattr(people, who)).get(
            url("stripe-onboarding-refresh", organization_id=org_id)
        )

        assert response.status_code == 404
        assert b'data-code="organization_not_found"' in response.content
        assert len(sim_stripe.calls) == before

    def test_no_account_is_a_404_page(self, sim_stripe, people):
        response = client_for(people.owner).get(url("stripe-onboarding-refresh"))

        assert response.status_code == 404
        assert b'data-code="no_account"' in response.content
        assert sim_stripe.calls == []

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_stripe_down_is_a_503_page(self, sim_stripe, people):
        open_account(people.owner)
        sim_stripe.fail_next("create_account_link", TemporarilyUnavailable("timeout"))

        response = client_for(people.owner).get(url("stripe-onboarding-refresh"))

        assert response.status_code == 503
        assert b'data-code="provider_unavailable"' in response.content


class TestReturn:
    def test_shows_the_fresh_status(self, sim_stripe, seller, people):
        open_account(people.owner)
        account = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(account.stripe_account_id)

        response = client_for(people.owner).get(url("stripe-onboarding-return"))

        assert response.status_code == 200
        assert b'data-status="verified"' in response.content
        assert b"Continue onboarding" not in response.content
        assert accounts().get(pk=account.pk).status == "verified"

    def test_unfinished_onboarding_offers_to_continue(self, sim_stripe, people):
        open_account(people.owner)

        response = client_for(people.owner).get(url("stripe-onboarding-return"))

        assert response.status_code == 200
        assert b'data-status="pending_verification"' in response.content
        assert b'href="http://testserver/escrow/stripe/onboarding/refresh/"' in response.content

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_stripe_down_shows_the_stored_status(self, sim_stripe, people):
        open_account(people.owner)
        sim_stripe.fail_next("retrieve_account", TemporarilyUnavailable("timeout"))

        response = client_for(people.owner).get(url("stripe-onboarding-return"))

        assert response.status_code == 200
        assert b'data-status="pending_verification"' in response.content
        assert b"escrow-refresh-failed" in response.content

    def test_organization_status_for_its_admin_only(self, sim_stripe, seller, people):
        org_id = str(people.organization.pk)
        open_account(people.admin, account_type="company", organization_id=org_id)

        admin = client_for(people.admin).get(
            url("stripe-onboarding-return", organization_id=org_id)
        )
        member = client_for(people.member).get(
            url("stripe-onboarding-return", organization_id=org_id)
        )

        assert admin.status_code == 200
        assert member.status_code == 404

    def test_login_required(self, sim_stripe):
        response = client_for(None).get(url("stripe-onboarding-return"))

        assert response.status_code == 302
        assert sim_stripe.calls == []
