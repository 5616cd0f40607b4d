"""GET stripe/account-status/: the account's state, as synced or re-read."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect.exceptions import TemporarilyUnavailable

from .conftest import accounts, calls, client_for, configure, url

pytestmark = pytest.mark.django_db

KEYS = {
    "account_id",
    "status",
    "is_verified",
    "can_transfer",
    "charges_enabled",
    "payouts_enabled",
    "details_submitted",
    "disabled_reason",
    "requirements",
    "capabilities",
}


def get_status(user: Any, **query: Any) -> Any:
    return client_for(user).get(url("stripe-account-status", **query))


def open_account(user: Any, **body: Any) -> Any:
    response = client_for(user).post(
        url("stripe-onboarding-link"), {"account_type": "individual", **body}, format="json"
    )
    assert response.status_code == 200, response.content
    return response


def test_no_account_yet_is_404_no_account(sim_stripe, people):
    response = get_status(people.owner)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_account"


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_an_account_not_created_at_stripe_yet_is_no_account(sim_stripe, people):
    sim_stripe.fail_next("create_account", TemporarilyUnavailable("timeout"))
    client_for(people.owner).post(
        url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
    )

    response = get_status(people.owner)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_account"


def test_a_new_account_is_pending_verification(sim_stripe, people):
    open_account(people.owner)
    account = accounts().get(owner_user=people.owner)

    response = get_status(people.owner)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == KEYS
    assert body["account_id"] == account.stripe_account_id
    assert body["status"] == "pending_verification"
    assert body["is_verified"] is body["can_transfer"] is False
    assert body["charges_enabled"] is body["payouts_enabled"] is False
    assert body["details_submitted"] is False
    assert "external_account" in body["requirements"]["currently_due"]
    assert set(body["requirements"]) == {"currently_due", "eventually_due", "past_due"}
    # Separate charges and transfers (the default): a recipient account, transfers only.
    assert body["capabilities"] == {"transfers": "inactive", "card_payments": None}


@pytest.mark.parametrize(("key", "livemode"), [("sk_test_x", False), ("sk_live_x", True)])
def test_a_new_account_has_the_mode_of_the_key_that_created_it(
    sim_stripe, people, settings, key, livemode
):
    # Stripe's Account object has no livemode: the row records the key's.
    configure(settings, STRIPE_SECRET_KEY=key)
    open_account(people.owner)
    assert accounts().get(owner_user=people.owner).livemode is livemode


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_status_is_read_from_the_row_unless_refresh_is_asked(sim_stripe, seller, people):
    open_account(people.owner)
    account = accounts().get(owner_user=people.owner)
    seller.complete_onboarding(account.stripe_account_id)

    stored = get_status(people.owner).json()
    assert stored["status"] == "pending_verification"
    assert "retrieve_account" not in calls(sim_stripe)

    fresh = get_status(people.owner, refresh=1).json()

    assert sim_stripe.call_count("retrieve_account") == 1
    assert fresh["status"] == "verified"
    assert fresh["is_verified"] is fresh["can_transfer"] is True
    assert fresh["details_submitted"] is True
    assert fresh["disabled_reason"] is None
    assert fresh["requirements"] == {"currently_due": [], "eventually_due": [], "past_due": []}
    assert fresh["capabilities"] == {"transfers": "active", "card_payments": None}
    # And it was stored.
    assert get_status(people.owner).json() == fresh


def test_restricted_account_reports_the_reason(sim_stripe, seller, people):
    open_account(people.owner)
    account = accounts().get(owner_user=people.owner)
    seller.complete_onboarding(account.stripe_account_id)
    seller.require_information(account.stripe_account_id, ["individual.verification.document"])

    body = get_status(people.owner, refresh="true").json()

    assert body["status"] == "restricted"
    assert body["disabled_reason"] == "requirements.past_due"
    assert body["requirements"]["past_due"] == ["individual.verification.document"]
    assert body["can_transfer"] is False


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_refresh_while_stripe_is_down_is_503(sim_stripe, people):
    open_account(people.owner)
    sim_stripe.fail_next("retrieve_account", TemporarilyUnavailable("timeout"))

    response = get_status(people.owner, refresh=1)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"


def test_bad_refresh_value_is_400(sim_stripe, people):
    open_account(people.owner)

    response = get_status(people.owner, refresh="maybe")

    assert response.status_code == 400
    assert "refresh" in response.json()["error"]["fields"]


class TestRoles:
    def test_owner_sees_only_their_own_account(self, sim_stripe, people):
        open_account(people.owner)

        assert get_status(people.owner).status_code == 200
        assert get_status(people.stranger).json()["error"]["code"] == "no_account"

    def test_admin_sees_the_organization_account(self, sim_stripe, people):
        org_id = str(people.organization.pk)
        open_account(people.admin, account_type="company", organization_id=org_id)

        response = get_status(people.admin, organization_id=org_id)

        assert response.status_code == 200
        account = accounts().get(owner_organization=people.organization)
        assert response.json()["account_id"] == account.stripe_account_id

    @pytest.mark.parametrize("who", ["member", "stranger", "owner"])
    def test_non_admins_get_404(self, sim_stripe, people, who):
        org_id = str(people.organization.pk)
        open_account(people.admin, account_type="company", organization_id=org_id)

        response = get_status(getattr(people, who), organization_id=org_id, refresh=1)

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "organization_not_found"
        assert "retrieve_account" not in calls(sim_stripe)

    @pytest.mark.parametrize("organization_id", ["nope", "0", "2.5"])
    def test_unknown_organization_is_404(self, sim_stripe, people, organization_id):
        response = get_status(people.admin, organization_id=organization_id)

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "organization_not_found"

    def test_anonymous_is_refused(self, sim_stripe):
        response = get_status(None)

        assert response.status_code in (401, 403)
        assert response.json()["error"]["code"] == "not_authenticated"
