"""POST stripe/onboarding-link/: one account per owner, a fresh link each time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable
from django_escrow_connect.simulation import SimulatedGateway

from .conftest import accounts, calls, client_for, configure, url

pytestmark = pytest.mark.django_db


def post_link(user: Any, **body: Any) -> Any:
    return client_for(user).post(url("stripe-onboarding-link"), body, format="json")


class TestOwnAccount:
    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_first_request_creates_the_account_then_the_link(self, sim_stripe, people):
        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        assert set(response.json()) == {"url", "expires_at"}
        assert response["Cache-Control"] == "no-store"
        account = accounts().get(owner_user=people.owner)
        assert account.stripe_account_id in sim_stripe.accounts
        assert account.business_type == "individual"
        assert account.status == "pending_verification"
        assert calls(sim_stripe) == ["create_account", "create_account_link"]
        _, create = sim_stripe.calls[0]
        assert create["idempotency_key"] == account.creation_idempotency_key
        assert create["idempotency_key"] == (
            f"escrow-connect:account-owner:user:{people.owner.pk}:create:0"
        )
        assert create["metadata"] == {"escrow_owner": f"user:{people.owner.pk}"}
        assert create["email"] == people.owner.email
        assert create["country"] == "US"
        assert create["business_type"] == "individual"
        _, link = sim_stripe.calls[1]
        assert link["account_id"] == account.stripe_account_id
        assert link["link_type"] == "account_onboarding"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_second_request_reuses_the_account(self, sim_stripe, people):
        first = post_link(people.owner, account_type="individual")
        second = post_link(people.owner, account_type="individual")

        assert first.status_code == second.status_code == 200
        assert sim_stripe.call_count("create_account") == 1
        assert accounts().filter(owner_user=people.owner).count() == 1
        assert len(sim_stripe.accounts) == 1
        assert calls(sim_stripe) == ["create_account", "create_account_link", "create_account_link"]

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_onboarded_account_still_gets_an_onboarding_link(self, sim_stripe, seller, people):
        # account_update links are refused for Express-dashboard accounts.
        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(account.stripe_account_id)
        client_for(people.owner).get(url("stripe-account-status", refresh=1))

        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 200
        assert sim_stripe.calls[-1][1]["link_type"] == "account_onboarding"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_configured_return_and_refresh_urls_are_sent_to_stripe(
        self, sim_stripe, people, settings
    ):
        post_link(people.owner, account_type="individual")

        _, link = sim_stripe.calls[-1]
        assert link["refresh_url"] == settings.ESCROW_CONNECT["ONBOARDING_REFRESH_URL"]
        assert link["return_url"] == settings.ESCROW_CONNECT["ONBOARDING_RETURN_URL"]

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_package_pages_are_used_when_no_urls_are_configured(self, sim_stripe, people, settings):
        configure(settings, ONBOARDING_REFRESH_URL="", ONBOARDING_RETURN_URL="")

        post_link(people.owner, account_type="individual")

        _, link = sim_stripe.calls[-1]
        assert link["refresh_url"] == "http://testserver/escrow/stripe/onboarding/refresh/"
        assert link["return_url"] == "http://testserver/escrow/stripe/onboarding/return/"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_business_type_cannot_change_silently(self, sim_stripe, people):
        post_link(people.owner, account_type="individual")

        response = post_link(people.owner, account_type="company")

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "business_type_mismatch"
        assert sim_stripe.call_count("create_account") == 1
        assert accounts().get(owner_user=people.owner).business_type == "individual"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_deauthorized_account_gets_no_link(self, sim_stripe, seller, people):
        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.deauthorize(account.stripe_account_id)
        from django_escrow_connect.services.accounts import deauthorize_account

        deauthorize_account(account.stripe_account_id)

        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "account_deauthorized"
        assert sim_stripe.call_count("create_account") == 1


class TestInvalidInput:
    @pytest.mark.parametrize(
        "body",
        [
            {"account_type": "partnership"},
            {"account_type": ""},
            {"account_type": None},
            {"account_type": ["individual"]},
            {},
        ],
    )
    def test_bad_account_type_is_a_400_in_the_package_shape(self, sim_stripe, people, body):
        response = post_link(people.owner, **body)

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert "account_type" in error["fields"]
        assert sim_stripe.calls == []
        assert not accounts().exists()

    def test_unknown_fields_are_refused(self, sim_stripe, people):
        response = post_link(people.owner, account_type="individual", acount_typo="x")

        assert response.status_code == 400
        assert "acount_typo" in response.json()["error"]["fields"]
        assert sim_stripe.calls == []

    def test_anonymous_is_refused(self, sim_stripe):
        response = post_link(None, account_type="individual")

        assert response.status_code in (401, 403)
        assert response.json()["error"]["code"] == "not_authenticated"
        assert sim_stripe.calls == []


class TestOrganizationAccount:
    def test_admin_gets_the_organization_account(self, sim_stripe, people):
        org = people.organization
        response = post_link(people.admin, account_type="company", organization_id=str(org.pk))

        assert response.status_code == 200, response.content
        account = accounts().get(owner_organization=org)
        assert account.owner_user_id is None
        assert account.creation_idempotency_key == (
            f"escrow-connect:account-owner:organization:{org.pk}:create:0"
        )
        assert sim_stripe.calls[0][1]["metadata"] == {"escrow_owner": f"organization:{org.pk}"}
        # The admin's own account is a different one, made only when asked for.
        assert not accounts().filter(owner_user=people.admin).exists()

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_admin_personal_and_organization_accounts_are_separate(self, sim_stripe, people):
        org_id = str(people.organization.pk)
        post_link(people.admin, account_type="company", organization_id=org_id)
        post_link(people.admin, account_type="individual")
        post_link(people.admin, account_type="company", organization_id=org_id)

        assert sim_stripe.call_count("create_account") == 2
        assert accounts().count() == 2

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_organization_id_travels_in_the_return_and_refresh_urls(self, sim_stripe, people):
        org_id = str(people.organization.pk)
        post_link(people.admin, account_type="company", organization_id=org_id)

        _, link = sim_stripe.calls[-1]
        assert link["refresh_url"].endswith(f"?organization_id={org_id}")
        assert link["return_url"].endswith(f"?organization_id={org_id}")

    @pytest.mark.parametrize("who", ["member", "stranger"])
    def test_non_admins_get_the_same_404_as_an_unknown_organization(self, sim_stripe, people, who):
        user = getattr(people, who)
        refused = post_link(
            user, account_type="company", organization_id=str(people.organization.pk)
        )
        unknown = post_link(user, account_type="company", organization_id=_unused_pk(people))

        assert refused.status_code == unknown.status_code == 404
        assert refused.json() == unknown.json()
        assert refused.json()["error"]["code"] == "organization_not_found"
        assert sim_stripe.calls == []
        assert not accounts().exists()

    @pytest.mark.parametrize(
        "organization_id",
        [
            "not-a-key",
            "1.5",
            "-1",
            "9" * 40,
            "00000000-0000-0000-0000-000000000000",
            "12345678-1234-5678-1234-56781234567z",
            123456789,
        ],
    )
    def test_malformed_or_unknown_ids_are_404_not_500(self, sim_stripe, people, organization_id):
        response = post_link(people.admin, account_type="company", organization_id=organization_id)

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "organization_not_found"

    def test_null_or_blank_organization_means_the_users_own_account(self, sim_stripe, people):
        assert (
            post_link(people.owner, account_type="individual", organization_id=None).status_code
            == 200
        )
        assert (
            post_link(people.owner, account_type="individual", organization_id="").status_code
            == 200
        )
        assert accounts().filter(owner_user=people.owner).count() == 1


def _unused_pk(people: Any) -> str:
    pk = people.organization.pk
    if isinstance(pk, int):
        return str(pk + 1000)
    return "00000000-0000-4000-8000-000000000000"


class TestCrashRecovery:
    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_retry_after_a_timeout_before_stripe_acted_makes_one_account(self, sim_stripe, people):
        sim_stripe.fail_next("create_account", TemporarilyUnavailable("Connection timed out"))

        failed = post_link(people.owner, account_type="individual")

        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "provider_unavailable"
        row = accounts().get(owner_user=people.owner)
        assert row.stripe_account_id == ""
        assert sim_stripe.accounts == {}

        retried = post_link(people.owner, account_type="individual")

        assert retried.status_code == 200
        assert len(sim_stripe.accounts) == 1
        assert accounts().get(pk=row.pk).stripe_account_id in sim_stripe.accounts

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_retry_after_stripe_acted_but_the_answer_was_lost_reuses_its_account(
        self, sim_stripe, people
    ):
        sim_stripe.fail_next(
            "create_account", TemporarilyUnavailable("Read timed out"), after_effect=True
        )

        assert post_link(people.owner, account_type="individual").status_code == 503
        assert len(sim_stripe.accounts) == 1  # Stripe made it; we never heard.
        (made,) = sim_stripe.accounts

        assert post_link(people.owner, account_type="individual").status_code == 200

        assert len(sim_stripe.accounts) == 1
        assert accounts().get(owner_user=people.owner).stripe_account_id == made
        keys = [
            kwargs["idempotency_key"]
            for name, kwargs in sim_stripe.calls
            if name == "create_account"
        ]
        assert len(keys) == 2
        assert len(set(keys)) == 1

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_owner_details_are_fixed_at_first_need(self, sim_stripe, people, settings):
        # A retry must send the same parameters with the same key.
        sim_stripe.fail_next("create_account", TemporarilyUnavailable("Connection reset"))
        post_link(people.owner, account_type="individual")
        configure(settings, DEFAULT_ACCOUNT_COUNTRY="FR")

        assert post_link(people.owner, account_type="individual").status_code == 200

        first, second = (kwargs for name, kwargs in sim_stripe.calls if name == "create_account")
        assert first == second

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_stripe_refusal_is_a_409_and_nothing_is_created_at_stripe(self, sim_stripe, people):
        sim_stripe.fail_next(
            "create_account",
            InvalidRequest("Country 'ZZ' is unknown.", code="parameter_invalid", http_status=400),
        )

        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 409
        assert sim_stripe.accounts == {}


DAY = 24 * 3600


def age_row(people: Any, seconds: int) -> Any:
    """Make the owner's account row ``seconds`` older (as if the retry came days later)."""
    row = accounts().get(owner_user=people.owner)
    accounts().filter(pk=row.pk).update(created_at=row.created_at - timedelta(seconds=seconds))
    return row


class TestRetryAfterTheKeyMayHaveExpired:
    """Stripe may prune an idempotency key after 24 hours: a retry with it is then a
    new request, so a lost answer must be found by listing the platform's accounts."""

    def lose_the_answer(self, sim_stripe: Any, people: Any) -> str:
        sim_stripe.fail_next(
            "create_account", TemporarilyUnavailable("Read timed out"), after_effect=True
        )
        assert post_link(people.owner, account_type="individual").status_code == 503
        (made,) = sim_stripe.accounts
        sim_stripe.advance_time(2 * DAY)
        age_row(people, 2 * DAY)
        sim_stripe.calls.clear()
        return made

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_the_account_stripe_made_is_adopted_not_duplicated(self, sim_stripe, people, caplog):
        made = self.lose_the_answer(sim_stripe, people)

        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        assert list(sim_stripe.accounts) == [made]
        assert calls(sim_stripe) == ["list_accounts", "create_account_link"]
        row = accounts().get(owner_user=people.owner)
        assert row.stripe_account_id == made
        assert row.status == "pending_verification"
        assert "adopted" in caplog.text

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_without_the_search_the_same_key_would_open_a_second_account(self, sim_stripe, people):
        """The simulated Stripe prunes keys like Stripe: what the search guards against."""
        made = self.lose_the_answer(sim_stripe, people)
        row = accounts().get(owner_user=people.owner)
        again = SimulatedGateway().create_account(
            idempotency_key=row.creation_idempotency_key,
            country=row.country,
            email=row.email or None,
            business_type=row.business_type,
            metadata={"escrow_owner": f"user:{people.owner.pk}"},
        )
        assert again.id != made

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_nothing_found_creates_the_account(self, sim_stripe, people):
        sim_stripe.fail_next("create_account", TemporarilyUnavailable("Connection timed out"))
        assert post_link(people.owner, account_type="individual").status_code == 503
        assert sim_stripe.accounts == {}
        sim_stripe.advance_time(2 * DAY)
        age_row(people, 2 * DAY)
        sim_stripe.calls.clear()

        assert post_link(people.owner, account_type="individual").status_code == 200

        assert calls(sim_stripe) == ["list_accounts", "create_account", "create_account_link"]
        assert len(sim_stripe.accounts) == 1

    @pytest.mark.parametrize(
        "metadata",
        [
            {"escrow_owner": "user:-1"},  # another owner
            {"escrow_owner": "USER"},  # filled in below with the owner, another install
        ],
        ids=["another-owner", "another-installation"],
    )
    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_someone_else_s_account_is_never_adopted(self, sim_stripe, people, metadata):
        sim_stripe.fail_next("create_account", TemporarilyUnavailable("Connection timed out"))
        post_link(people.owner, account_type="individual")
        if metadata["escrow_owner"] == "USER":
            metadata = {"escrow_owner": f"user:{people.owner.pk}", "escrow_namespace": "staging"}
        other = SimulatedGateway().create_account(
            idempotency_key="another-installation:create",
            country="US",
            email=None,
            business_type="individual",
            metadata=metadata,
        )
        sim_stripe.advance_time(2 * DAY)
        age_row(people, 2 * DAY)

        assert post_link(people.owner, account_type="individual").status_code == 200

        row = accounts().get(owner_user=people.owner)
        assert row.stripe_account_id not in ("", other.id)
        assert len(sim_stripe.accounts) == 2

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_stripe_unreachable_for_the_search_creates_nothing(self, sim_stripe, people):
        sim_stripe.fail_next("create_account", TemporarilyUnavailable("Connection timed out"))
        post_link(people.owner, account_type="individual")
        sim_stripe.advance_time(2 * DAY)
        age_row(people, 2 * DAY)
        sim_stripe.fail_next("list_accounts", TemporarilyUnavailable("Connection reset"))
        sim_stripe.calls.clear()

        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 503
        assert response.json()["error"]["code"] == "provider_unavailable"
        assert "create_account" not in calls(sim_stripe)
        assert sim_stripe.accounts == {}

    def test_a_young_row_relies_on_the_key_and_lists_nothing(self, sim_stripe, people):
        sim_stripe.fail_next("create_account", TemporarilyUnavailable("Connection timed out"))
        post_link(people.owner, account_type="individual")
        age_row(people, 22 * 3600)
        sim_stripe.calls.clear()

        assert post_link(people.owner, account_type="individual").status_code == 200
        assert "list_accounts" not in calls(sim_stripe)


class TestIdempotencyKeyPrefix:
    def test_keys_and_metadata_carry_the_installation_s_prefix(self, sim_stripe, people, settings):
        configure(settings, IDEMPOTENCY_KEY_PREFIX="staging")

        assert post_link(people.owner, account_type="individual").status_code == 200

        _, create = sim_stripe.calls[0]
        assert create["idempotency_key"] == f"staging:account-owner:user:{people.owner.pk}:create:0"
        assert create["metadata"] == {
            "escrow_owner": f"user:{people.owner.pk}",
            "escrow_namespace": "staging",
        }


@pytest.mark.accounts_api("v1")  # v2 links: test_accounts_v2.py
class TestWhatOnboardingCollects:
    """ONBOARDING_COLLECT / ONBOARDING_FUTURE_REQUIREMENTS: AccountLinks'
    ``collection_options``, sent only when not Stripe's defaults."""

    def test_by_default_the_link_asks_for_nothing_more(self, sim_stripe, people):
        post_link(people.owner, account_type="individual")

        _, link = sim_stripe.calls[-1]
        assert set(link) == {"account_id", "link_type", "refresh_url", "return_url"}

    def test_eventually_due_collects_everything_up_front(self, sim_stripe, settings, people):
        configure(settings, ONBOARDING_COLLECT="eventually_due")

        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        _, link = sim_stripe.calls[-1]
        assert link["collect"] == "eventually_due"
        assert "future_requirements" not in link
        account_id = accounts().get(owner_user=people.owner).stripe_account_id
        assert SimulatedGateway().latest_account_link(account_id)["collect"] == "eventually_due"

    def test_future_requirements_can_be_included(self, sim_stripe, settings, people):
        configure(
            settings, ONBOARDING_COLLECT="eventually_due", ONBOARDING_FUTURE_REQUIREMENTS="include"
        )

        post_link(people.owner, account_type="individual")

        _, link = sim_stripe.calls[-1]
        assert (link["collect"], link["future_requirements"]) == ("eventually_due", "include")

    def test_the_refresh_page_mints_links_the_same_way(self, sim_stripe, settings, people):
        configure(settings, ONBOARDING_COLLECT="eventually_due")
        post_link(people.owner, account_type="individual")
        client = client_for(people.owner)

        response = client.get(url("stripe-onboarding-refresh"))

        assert response.status_code == 302
        _, link = sim_stripe.calls[-1]
        assert link["collect"] == "eventually_due"

    def test_the_gateway_refuses_values_stripe_does_not_know(self, sim_stripe, people):
        post_link(people.owner, account_type="individual")
        account_id = accounts().get(owner_user=people.owner).stripe_account_id

        with pytest.raises(ValueError, match="collect"):
            SimulatedGateway().create_account_link(
                account_id=account_id,
                link_type="account_onboarding",
                refresh_url="https://example.com/r",
                return_url="https://example.com/b",
                collect="everything",  # type: ignore[arg-type]
            )
