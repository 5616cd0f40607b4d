"""Stripe refuses the platform access to an account whose deauthorization event was lost.

When the owner disconnects the platform, Stripe sends
``account.application.deauthorized`` and from then on answers every request
about the account ``403 account_invalid``. If that event never arrives, a
refresh (the API's ``?refresh=1``, the return page, the admin's "Refresh from
Stripe") applies Stripe's answer instead; and a deauthorized account that
Stripe reads again is connected again.

Accounts v1 only: the simulated Stripe refuses a deauthorized account's v1
requests (retrieve, events) but still answers its v2 retrieve; the package
follows whichever answer Stripe gives.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_escrow_connect import tasks

from .conftest import accounts, client_for, configure, url
from .test_account_status import get_status, open_account

pytestmark = [pytest.mark.django_db, pytest.mark.accounts_api("v1")]


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Any:
    """Run a call and what it sends on commit (the package's signals)."""

    def run(call: Any, *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return call(*args, **kwargs)

    return run


@pytest.fixture
def connected(sim_stripe: Any, seller: Any, people: Any) -> Any:
    """The doer's account, verified; then the doer disconnects the platform and
    the deauthorization event is lost (the simulated Stripe's events are only collected)."""
    open_account(people.owner)
    account = accounts().get(owner_user=people.owner)
    seller.complete_onboarding(account.stripe_account_id)
    assert get_status(people.owner, refresh=1).json()["status"] == "verified"
    return account


def fetch_all_accounts() -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(
        "escrow_fetch_missed_events",
        "--all-accounts",
        "--no-platform",
        "--no-thin-events",
        stdout=out,
        stderr=err,
    )
    return out.getvalue(), err.getvalue()


def test_a_refresh_stripe_refuses_deauthorizes_the_account(
    connected: Any, seller: Any, people: Any, signal_log: Any, committed: Any
) -> None:
    seller.deauthorize(connected.stripe_account_id)
    signal_log.clear()

    response = committed(get_status, people.owner, refresh=1)

    assert response.status_code == 200
    assert response.json()["status"] == "deauthorized"
    assert response.json()["can_transfer"] is False
    assert accounts().get(pk=connected.pk).deauthorized_at is not None
    assert signal_log.names() == ["account_deauthorized"]
    # Asked again, Stripe still refuses: the account is as stored, nothing is signalled again.
    signal_log.clear()
    again = committed(get_status, people.owner, refresh=1)
    assert (again.status_code, again.json()["status"]) == (200, "deauthorized")
    assert signal_log.names() == []


def test_a_key_of_the_other_mode_deauthorizes_nothing(
    connected: Any, seller: Any, people: Any, settings: Any, signal_log: Any, committed: Any
) -> None:
    # Stripe answers account_invalid for an id the key cannot see at all: a
    # test-mode account read with a live key is a configuration error.
    seller.deauthorize(connected.stripe_account_id)
    configure(settings, STRIPE_SECRET_KEY="sk_live_" + "x" * 24)
    signal_log.clear()

    response = committed(get_status, people.owner, refresh=1)

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "account_invalid"
    assert accounts().get(pk=connected.pk).status == "verified"
    assert signal_log.names() == []


def test_a_deauthorized_account_stripe_reads_again_is_connected(
    connected: Any, people: Any, signal_log: Any, committed: Any
) -> None:
    # Marked deauthorized while Stripe still gives the platform access (e.g.
    # by a refresh made with a wrong key, since fixed).
    account = accounts().get(pk=connected.pk)
    account.deauthorize()
    account.save()
    signal_log.clear()

    body = committed(get_status, people.owner, refresh=1).json()

    assert body["status"] == "verified"
    assert body["can_transfer"] is True
    assert accounts().get(pk=connected.pk).deauthorized_at is None
    (updated, *_) = signal_log.of("account_updated")
    assert updated["previous_status"] == "deauthorized"


def test_fetching_missed_events_applies_a_lost_deauthorization_once(
    connected: Any, seller: Any, signal_log: Any, committed: Any
) -> None:
    seller.deauthorize(connected.stripe_account_id)
    signal_log.clear()

    out, err = committed(fetch_all_accounts)  # no CommandError: Stripe's answer is applied

    assert (
        f"{connected.stripe_account_id}: Stripe refuses the platform access (account_invalid): "
        "the account is deauthorized"
    ) in out
    assert err == ""
    assert accounts().get(pk=connected.pk).status == "deauthorized"
    assert signal_log.names() == ["account_deauthorized"]
    # The next run does not list the account any more.
    out, err = fetch_all_accounts()
    assert connected.stripe_account_id not in out + err


def test_fetching_with_a_key_of_the_other_mode_still_fails(
    connected: Any, seller: Any, settings: Any
) -> None:
    seller.deauthorize(connected.stripe_account_id)
    configure(settings, STRIPE_SECRET_KEY="sk_live_" + "x" * 24)

    with pytest.raises(CommandError, match="1 sources could not be listed"):
        fetch_all_accounts()

    assert accounts().get(pk=connected.pk).status == "verified"


def test_a_dashboard_link_before_the_webhook_finds_the_platform_disconnected(
    sim_stripe: Any, seller: Any, people: Any, committed: Any
) -> None:
    # Onboarding not submitted as far as the row knows: the link reads the
    # account first, and Stripe refuses the platform access.
    open_account(people.owner)
    account = accounts().get(owner_user=people.owner)
    seller.deauthorize(account.stripe_account_id)

    response = committed(client_for(people.owner).get, url("stripe-dashboard-link"))

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "account_deauthorized"
    assert sim_stripe.call_count("create_login_link") == 0


def test_the_scheduled_task_applies_it_as_the_command_does(
    connected: Any, seller: Any, settings: Any, committed: Any
) -> None:
    seller.deauthorize(connected.stripe_account_id)
    configure(settings, STRIPE_SECRET_KEY="sk_live_" + "x" * 24)
    # With a key of the other mode the source is a failure, and the run fails.
    with pytest.raises(tasks.PeriodicJobFailed, match=connected.stripe_account_id):
        committed(tasks.fetch_missed_events_task.call, since="1d")
    assert accounts().get(pk=connected.pk).status == "verified"

    configure(settings, STRIPE_SECRET_KEY="sk_test_" + "x" * 24)
    summary = committed(tasks.fetch_missed_events_task.call, since="1d")

    assert summary["deauthorized"] == [connected.stripe_account_id]
    assert summary["errors"] == []
    assert connected.stripe_account_id not in summary["sources"]
    assert accounts().get(pk=connected.pk).status == "deauthorized"
