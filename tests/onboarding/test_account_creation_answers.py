"""Account creation when Stripe answered with an error: that answer is stored
under the idempotency key (for 24 hours), so the next attempt needs a new key."""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable

from .conftest import accounts
from .test_onboarding_link import post_link

pytestmark = pytest.mark.django_db


def creation_keys(sim_stripe: Any) -> list[str]:
    return [
        kwargs["idempotency_key"] for name, kwargs in sim_stripe.calls if name == "create_account"
    ]


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_a_refused_creation_is_retried_under_a_new_key(sim_stripe: Any, people: Any) -> None:
    sim_stripe.fail_next(
        "create_account",
        InvalidRequest(
            "You must complete your platform profile to create connected accounts.",
            http_status=400,
        ),
        stored=True,
    )
    assert post_link(people.owner, account_type="individual").status_code == 409

    retried = post_link(people.owner, account_type="individual")

    assert retried.status_code == 200, retried.content
    assert len(sim_stripe.accounts) == 1
    first, second = creation_keys(sim_stripe)
    assert first != second
    assert accounts().get(owner_user=people.owner).creation_idempotency_key == second


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_after_a_500_the_retry_looks_for_the_account_before_a_new_key(
    sim_stripe: Any, people: Any
) -> None:
    sim_stripe.fail_next(
        "create_account",
        TemporarilyUnavailable("An unknown error occurred", http_status=500),
        stored=True,
    )
    assert post_link(people.owner, account_type="individual").status_code == 503
    sim_stripe.calls.clear()

    assert post_link(people.owner, account_type="individual").status_code == 200

    assert [name for name, _ in sim_stripe.calls][:2] == ["list_accounts", "create_account"]
    assert len(sim_stripe.accounts) == 1


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_a_timeout_keeps_the_key(sim_stripe: Any, people: Any) -> None:
    """No answer: Stripe may have acted, and only the same key finds out safely."""
    sim_stripe.fail_next(
        "create_account", TemporarilyUnavailable("Read timed out"), after_effect=True
    )
    assert post_link(people.owner, account_type="individual").status_code == 503

    assert post_link(people.owner, account_type="individual").status_code == 200

    first, second = creation_keys(sim_stripe)
    assert first == second
    assert len(sim_stripe.accounts) == 1
