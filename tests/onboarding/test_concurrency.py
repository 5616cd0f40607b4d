"""Simultaneous first requests make one account (PostgreSQL: real row locks)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from django_escrow_connect.services import accounts as services
from tests import factories

from .conftest import accounts, client_for, url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8


def created(sim_stripe: Any) -> int:
    """Accounts created at Stripe, through Accounts v1 or v2 (the suite runs both)."""
    return sim_stripe.call_count("create_account") + sim_stripe.call_count("create_account_v2")


def run_at_once(work: Callable[[], Any], n: int = THREADS) -> list[Any]:
    """Run ``work`` in ``n`` threads released together; results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def runner(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work()
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    return results


def test_simultaneous_onboarding_requests_make_one_account(sim_stripe):
    owner = factories.make_user("doer")

    def request() -> int:
        response = client_for(owner).post(
            url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
        )
        return response.status_code

    statuses = run_at_once(request)

    assert statuses == [200] * THREADS
    assert accounts().filter(owner_user=owner).count() == 1
    assert created(sim_stripe) == 1
    assert len(sim_stripe.accounts) == 1
    account = accounts().get(owner_user=owner)
    linked = {
        kwargs.get("account_id") or kwargs.get("account")
        for name, kwargs in sim_stripe.calls
        if name in ("create_account_link", "create_account_link_v2")
    }
    assert linked == {account.stripe_account_id}


def test_simultaneous_organization_admins_make_one_account(sim_stripe):
    admins = tuple(factories.make_user(f"admin{i}") for i in range(THREADS))
    organization = factories.make_organization(admins=admins)
    clients = [client_for(admin) for admin in admins]
    index = iter(range(THREADS))
    lock = threading.Lock()

    def request() -> int:
        with lock:
            client = clients[next(index)]
        response = client.post(
            url("stripe-onboarding-link"),
            {"account_type": "company", "organization_id": str(organization.pk)},
            format="json",
        )
        return response.status_code

    statuses = run_at_once(request)

    assert statuses == [200] * THREADS
    assert accounts().filter(owner_organization=organization).count() == 1
    assert created(sim_stripe) == 1


def test_ensure_account_from_many_threads_returns_the_same_account(sim_stripe):
    owner = factories.make_user("doer")

    results = run_at_once(
        lambda: services.ensure_account(owner_user=owner, business_type="individual").pk
    )

    assert all(not isinstance(result, Exception) for result in results), results
    assert len(set(results)) == 1
    assert created(sim_stripe) == 1
