"""End to end: what happens at Stripe reaches the account through the real
Connect webhook pipeline (signed events from the simulated Stripe)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from django.utils import timezone

from django_escrow_connect import simulation as simulated

from .conftest import accounts, client_for, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def webhooks(sim_stripe: Any) -> Iterator[None]:
    """Deliver the simulated Stripe's events to the package's webhook receiver."""
    previous = simulated.set_event_sink(None)
    yield
    simulated.set_event_sink(previous)
    assert sim_stripe.undelivered == []


@pytest.fixture
def account(sim_stripe: Any, webhooks: None, people: Any) -> Any:
    response = client_for(people.owner).post(
        url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
    )
    assert response.status_code == 200
    return accounts().get(owner_user=people.owner)


def test_onboarding_restriction_and_deauthorization_follow_stripe(
    account, seller, signal_log, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        seller.complete_onboarding(account.stripe_account_id)

    row = accounts().get(pk=account.pk)
    assert row.status == "verified"
    assert row.can_transfer
    assert "account_updated" in signal_log.names()
    signal_log.clear()

    with django_capture_on_commit_callbacks(execute=True):
        seller.require_information(account.stripe_account_id, ["individual.id_number"])

    row = accounts().get(pk=account.pk)
    assert row.status == "restricted"
    assert row.requirements_past_due == ["individual.id_number"]
    assert "account_requirements_due" in signal_log.names()
    assert "capability_restricted" in signal_log.names()

    with django_capture_on_commit_callbacks(execute=True):
        seller.deauthorize(account.stripe_account_id)

    assert accounts().get(pk=account.pk).status == "deauthorized"
    assert "account_deauthorized" in signal_log.names()


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_a_redelivered_old_event_does_not_roll_the_account_back(
    account, seller, sim_stripe, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        seller.complete_onboarding(account.stripe_account_id)
    (verified_event,) = [e for e in sim_stripe.events.values() if e["type"] == "account.updated"]
    sim_stripe.advance_time(60)
    with django_capture_on_commit_callbacks(execute=True):
        seller.require_information(account.stripe_account_id)
    assert accounts().get(pk=account.pk).status == "restricted"

    # Stripe delivers the older "verified" event again, late: a new event id
    # would be processed, so rebuild it as a distinct, older event.
    late = {**verified_event, "id": verified_event["id"] + "late"}
    sim_stripe.events[late["id"]] = late
    with django_capture_on_commit_callbacks(execute=True):
        sim_stripe.redeliver(late["id"])

    assert accounts().get(pk=account.pk).status == "restricted"


@pytest.fixture
def same_second(sim_stripe: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """Stripe's clock stops at a whole second T; the package's reads T + 0.4 s.

    A fetch of the account and the events Stripe then creates share the
    second T: whole seconds cannot tell which came first.
    """
    second = sim_stripe.now()
    monkeypatch.setattr(type(sim_stripe), "now", lambda self: second)
    local = datetime.fromtimestamp(second, tz=dt_timezone.utc) + timedelta(milliseconds=400)
    monkeypatch.setattr(timezone, "now", lambda: local)
    return second


@pytest.mark.accounts_api("v1")  # asserts v1 requests or events
def test_onboarding_finished_in_the_second_of_a_dashboard_link_request_is_applied(
    account, seller, sim_stripe, people, same_second, django_capture_on_commit_callbacks
):
    # The doer asks for the dashboard just before Stripe finishes onboarding:
    # the account is read from Stripe (still pending) and stamped T + 0.4 s.
    response = client_for(people.owner).get(url("stripe-dashboard-link"))
    assert response.status_code == 409
    assert accounts().get(pk=account.pk).status == "pending_verification"

    # Stripe finishes onboarding in the same second: its events say "T".
    with django_capture_on_commit_callbacks(execute=True):
        seller.complete_onboarding(account.stripe_account_id)

    row = accounts().get(pk=account.pk)
    assert row.status == "verified"
    assert row.can_transfer
    updates = [e for e in sim_stripe.events.values() if e["type"] == "account.updated"]
    assert updates
    assert all(e["created"] == same_second for e in updates)
