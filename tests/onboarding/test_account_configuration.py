"""Requested capabilities and service agreement follow the escrow strategy.

Separate charges and transfers: the doer only receives transfers, so the
account requests ``transfers`` alone under the ``recipient`` service agreement
(what cross-border payouts need). Manual-capture destination charges:
``card_payments`` and ``transfers`` under the ``full`` agreement. The
owner-details hook may override both for one owner; values Stripe would refuse
are refused before anything is created.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from .conftest import accounts, calls, client_for, configure, url

pytestmark = pytest.mark.django_db

HOOK = "tests.onboarding.test_account_configuration.owner_details"

#: What :func:`owner_details` adds to the country and email (set per test).
EXTRA: dict[str, Any] = {}


def owner_details(owner: Any) -> dict[str, Any]:
    return {"country": "US", "email": owner.email, **EXTRA}


@pytest.fixture
def hook(settings: Any, sim_stripe: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    configure(settings, ACCOUNT_OWNER_DETAILS=HOOK)
    extra: dict[str, Any] = {}
    monkeypatch.setattr(f"{__name__}.EXTRA", extra)
    return extra


def open_account(user: Any) -> Any:
    response = client_for(user).post(
        url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
    )
    assert response.status_code == 200, response.content
    return stripe_account_of(user)


def stripe_account_of(user: Any) -> dict[str, Any]:
    from django_escrow_connect.simulation import simulated_stripe

    return simulated_stripe.accounts[accounts().get(owner_user=user).stripe_account_id]


def agreement(account: dict[str, Any]) -> str:
    return account["tos_acceptance"]["service_agreement"]


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_separate_charges_and_transfers_requests_transfers_under_recipient(sim_stripe, people):
    account = open_account(people.owner)

    assert account["capabilities"] == {"transfers": "inactive"}
    assert agreement(account) == "recipient"
    _, create = sim_stripe.calls[calls(sim_stripe).index("create_account")]
    assert create["capabilities"] == ["transfers"]
    assert create["service_agreement"] == "recipient"


def test_manual_capture_requests_card_payments_and_transfers_under_full(
    sim_stripe, people, settings
):
    configure(settings, ESCROW_STRATEGY="manual_capture")

    account = open_account(people.owner)

    assert account["capabilities"] == {"transfers": "inactive", "card_payments": "inactive"}
    assert agreement(account) == "full"


def test_a_recipient_account_is_ready_with_transfers_alone(sim_stripe, seller, people):
    account = open_account(people.owner)
    seller.complete_onboarding(account["id"])

    body = client_for(people.owner).get(url("stripe-account-status", refresh=1)).json()

    assert body["status"] == "verified"
    assert body["can_transfer"] is True
    assert body["charges_enabled"] is False  # a recipient cannot process charges
    assert body["capabilities"] == {"transfers": "active", "card_payments": None}


class TestOwnerDetailsHook:
    def test_the_hook_may_ask_for_a_full_account_with_card_payments(self, hook, people):
        hook.update(service_agreement="full", capabilities=["transfers", "card_payments"])

        account = open_account(people.owner)

        assert agreement(account) == "full"
        assert set(account["capabilities"]) == {"transfers", "card_payments"}

    def test_asking_for_card_payments_alone_implies_the_full_agreement(self, hook, people):
        hook.update(capabilities=["transfers", "card_payments"])

        assert agreement(open_account(people.owner)) == "full"

    def test_the_hook_may_ask_for_a_recipient_under_manual_capture(self, hook, people, settings):
        configure(settings, ESCROW_STRATEGY="manual_capture")
        hook.update(service_agreement="recipient")

        account = open_account(people.owner)

        assert agreement(account) == "recipient"
        assert account["capabilities"] == {"transfers": "inactive"}

    @pytest.mark.parametrize(
        "extra",
        [
            {"service_agreement": "partial"},
            {"service_agreement": ""},
            {"capabilities": "transfers"},
            {"capabilities": []},
            {"capabilities": ["card_payments"]},
            {"capabilities": ["transfers", ""]},
            {"service_agreement": "recipient", "capabilities": ["transfers", "card_payments"]},
        ],
    )
    def test_values_stripe_would_refuse_create_nothing(self, hook, people, sim_stripe, extra):
        hook.update(extra)

        with pytest.raises(ImproperlyConfigured, match="ACCOUNT_OWNER_DETAILS"):
            client_for(people.owner).post(
                url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
            )

        assert not accounts().filter(owner_user=people.owner).exists()
        assert sim_stripe.accounts == {}

    @pytest.mark.parametrize(
        "extra",
        [{"service_agreement": "recipient"}, {"capabilities": ["transfers"]}],
    )
    def test_on_behalf_of_needs_a_full_account_with_card_payments(
        self, hook, people, sim_stripe, settings, extra
    ):
        configure(settings, ESCROW_STRATEGY="manual_capture", DESTINATION_ON_BEHALF_OF=True)
        hook.update(extra)

        with pytest.raises(ImproperlyConfigured, match="settlement merchant"):
            client_for(people.owner).post(
                url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
            )

        assert sim_stripe.accounts == {}
