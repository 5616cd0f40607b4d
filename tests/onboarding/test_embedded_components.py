"""POST stripe/account-session/ with Connect embedded components: which the
platform enables (EMBEDDED_COMPONENTS), with which features, and which the
escrow strategy allows; what the simulated Stripe is asked for each."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect.conf import MANUAL_CAPTURE
from django_escrow_connect.exceptions import InvalidRequest
from django_escrow_connect.simulation import SimulatedGateway

from .conftest import accounts, calls, client_for, configure, url

pytestmark = pytest.mark.django_db

SAFE_PAYOUTS = {"edit_payout_schedule": False, "instant_payouts": False, "standard_payouts": False}
VIEW_ONLY_CHARGES = {
    "capture_payments": False,
    "destination_on_behalf_of_charge_management": True,
    "dispute_management": False,
    "refund_management": False,
}


def post_session(user: Any, **body: Any) -> Any:
    return client_for(user).post(url("stripe-account-session"), body, format="json")


def session_request(sim_stripe: Any) -> dict[str, Any]:
    name, kwargs = sim_stripe.calls[-1]
    assert name == "create_account_session"
    return kwargs


@pytest.fixture
def payouts_page(settings):
    """A platform offering the payouts page's components besides onboarding."""
    configure(
        settings,
        EMBEDDED_COMPONENTS=["account_onboarding", "payouts", "notification_banner"],
    )


class TestEnabledComponents:
    def test_without_components_every_enabled_one_is_asked_for(
        self, sim_stripe, payouts_page, people
    ):
        response = post_session(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        sent = session_request(sim_stripe)
        assert sent["components"] == ["account_onboarding", "payouts", "notification_banner"]
        # Only payouts carries features: onboarding and the banner keep Stripe's.
        assert sent["features"] == {"payouts": SAFE_PAYOUTS}

    def test_the_requested_components_only(self, sim_stripe, payouts_page, people):
        response = post_session(
            people.owner, account_type="individual", components=["payouts", "notification_banner"]
        )

        assert response.status_code == 200, response.content
        assert response["Cache-Control"] == "no-store"
        sent = session_request(sim_stripe)
        assert sent["components"] == ["payouts", "notification_banner"]
        assert sent["features"] == {"payouts": SAFE_PAYOUTS}

    def test_a_repeated_component_is_asked_for_once(self, sim_stripe, payouts_page, people):
        post_session(people.owner, account_type="individual", components=["payouts", "payouts"])

        assert session_request(sim_stripe)["components"] == ["payouts"]

    def test_the_hosts_features_override_the_defaults(self, sim_stripe, settings, people):
        configure(
            settings,
            EMBEDDED_COMPONENTS=["payouts"],
            EMBEDDED_COMPONENT_FEATURES={"payouts": {"instant_payouts": True}},
        )

        response = post_session(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        assert session_request(sim_stripe)["features"] == {
            "payouts": {**SAFE_PAYOUTS, "instant_payouts": True}
        }

    def test_the_default_setting_keeps_todays_request(self, sim_stripe, people):
        post_session(people.owner, account_type="individual")

        assert session_request(sim_stripe) == {
            "account_id": accounts().get(owner_user=people.owner).stripe_account_id,
            "components": ["account_onboarding"],
        }


class TestRefusedComponents:
    @pytest.mark.parametrize("name", ["tax_settings", "wallet", "payouts_list"])
    def test_a_component_the_package_does_not_offer_is_400_unknown_component(
        self, sim_stripe, payouts_page, people, name
    ):
        response = post_session(people.owner, account_type="individual", components=[name])

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unknown_component"
        assert name in response.json()["error"]["message"]
        # Refused before anything happened: no account was created for it.
        assert sim_stripe.calls == []
        assert not accounts().filter(owner_user=people.owner).exists()

    def test_a_component_the_platform_did_not_enable_is_400_component_not_enabled(
        self, sim_stripe, people
    ):
        response = post_session(people.owner, account_type="individual", components=["payouts"])

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "component_not_enabled"
        assert sim_stripe.calls == []

    def test_an_empty_list_is_400(self, sim_stripe, payouts_page, people):
        response = post_session(people.owner, account_type="individual", components=[])

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid"
        assert sim_stripe.calls == []

    def test_a_name_that_is_not_a_string_is_400(self, sim_stripe, payouts_page, people):
        response = post_session(people.owner, account_type="individual", components=[{"a": 1}])

        assert response.status_code == 400
        assert sim_stripe.calls == []


class TestStrategyRules:
    """payments / disputes_list list the account's own charges: only destination
    charges on behalf of the doer put them there."""

    @pytest.mark.parametrize("name", ["payments", "disputes_list"])
    def test_refused_with_separate_charges_and_transfers(self, sim_stripe, settings, people, name):
        configure(settings, EMBEDDED_COMPONENTS=["account_onboarding", name])

        response = post_session(people.owner, account_type="individual", components=[name])

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "component_not_enabled"
        assert sim_stripe.calls == []

    def test_refused_with_destination_charges_not_on_behalf_of_the_doer(
        self, sim_stripe, settings, people
    ):
        configure(settings, EMBEDDED_COMPONENTS=["payments"], ESCROW_STRATEGY=MANUAL_CAPTURE)

        response = post_session(people.owner, account_type="individual")

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "component_not_enabled"

    @pytest.mark.parametrize("name", ["payments", "disputes_list"])
    def test_view_only_with_destination_charges_on_behalf_of_the_doer(
        self, sim_stripe, settings, people, name
    ):
        configure(
            settings,
            EMBEDDED_COMPONENTS=[name],
            ESCROW_STRATEGY=MANUAL_CAPTURE,
            DESTINATION_ON_BEHALF_OF=True,
        )

        response = post_session(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        # The doer sees the charges but cannot refund, capture or answer
        # disputes behind the escrow's back.
        assert session_request(sim_stripe)["features"] == {name: VIEW_ONLY_CHARGES}


class TestSimulatedStripeRules:
    """The simulated Stripe answers like Stripe for features it refuses."""

    def test_user_authentication_cannot_be_disabled_for_the_packages_accounts(
        self, sim_stripe, people
    ):
        post_session(people.owner, account_type="individual")
        account_id = accounts().get(owner_user=people.owner).stripe_account_id

        with pytest.raises(InvalidRequest) as refused:
            SimulatedGateway().create_account_session(
                account_id=account_id,
                components={"payouts": {"disable_stripe_user_authentication": True}},
            )
        assert "disable_stripe_user_authentication" in str(refused.value.param)

    def test_an_unknown_feature_is_refused(self, sim_stripe, people):
        post_session(people.owner, account_type="individual")
        account_id = accounts().get(owner_user=people.owner).stripe_account_id

        with pytest.raises(InvalidRequest) as refused:
            SimulatedGateway().create_account_session(
                account_id=account_id, components={"documents": {"instant_payouts": False}}
            )
        assert refused.value.param == "components[documents][features][instant_payouts]"

    def test_a_session_opens_only_its_own_components_until_it_expires(
        self, sim_stripe, payouts_page, people
    ):
        response = post_session(people.owner, account_type="individual")
        secret = response.json()["client_secret"]
        gateway = SimulatedGateway()

        session = gateway.account_session(secret)

        assert session is not None
        assert session["account"] == accounts().get(owner_user=people.owner).stripe_account_id
        assert list(session["components"]) == [
            "account_onboarding",
            "payouts",
            "notification_banner",
        ]
        # Only a digest is kept, never the secret.
        assert secret not in repr(sim_stripe.account_sessions)
        assert gateway.account_session(secret + "x") is None
        sim_stripe.advance_time(3600)
        assert gateway.account_session(secret) is None


class TestOrganizations:
    def test_an_admin_gets_the_organizations_payouts(self, sim_stripe, payouts_page, people):
        org_id = str(people.organization.pk)

        response = post_session(
            people.admin, account_type="company", organization_id=org_id, components=["payouts"]
        )

        assert response.status_code == 200, response.content
        account = accounts().get(owner_organization=people.organization)
        assert session_request(sim_stripe)["account_id"] == account.stripe_account_id
        assert calls(sim_stripe)[-1] == "create_account_session"

    @pytest.mark.parametrize("who", ["member", "stranger", "owner"])
    def test_non_admins_get_404(self, sim_stripe, payouts_page, people, who):
        org_id = str(people.organization.pk)
        post_session(people.admin, account_type="company", organization_id=org_id)
        before = len(sim_stripe.calls)

        response = post_session(
            getattr(people, who), organization_id=org_id, components=["payouts"]
        )

        assert response.status_code == 404
        assert len(sim_stripe.calls) == before

    def test_anonymous_is_refused(self, sim_stripe, payouts_page):
        response = post_session(None, components=["payouts"])

        assert response.status_code in (401, 403)
        assert sim_stripe.calls == []
