"""The example's JSON API (post, bid, accept), then the package's payment API."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.states import PaymentStatus
from marketplace import services
from marketplace.models import Task, TaskStatus

pytestmark = pytest.mark.django_db(transaction=True)


def api_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_post_bid_accept_and_pay_through_the_apis(people: Any) -> None:
    customer, doer = api_for(people.customer), api_for(people.doer)

    created = customer.post("/api/tasks/", {"title": "Fix the sink"}, format="json")
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert created.json()["status"] == TaskStatus.CREATED

    bid = doer.post(
        f"/api/tasks/{task_id}/bids/", {"amount": 7500, "currency": "USD"}, format="json"
    )
    assert bid.status_code == 201
    assert (bid.json()["amount"], bid.json()["currency"]) == (7500, "usd")
    assert bid.json()["doer"] == {"type": "user", "id": people.doer.pk, "name": "Dana Doer"}

    accepted = customer.post(f"/api/bids/{bid.json()['id']}/accept/", format="json")
    assert accepted.status_code == 200
    body = accepted.json()
    assert body["task"]["status"] == TaskStatus.BID_ACCEPTED
    assert body["next"]["create_payment"] == reverse("escrow_connect:payment-create")

    # The package's API takes over: the amount comes from the accepted bid.
    start = customer.post(body["next"]["create_payment"], body["next"]["body"], format="json")
    assert start.status_code == 201
    assert start.json()["amount"] == 7500
    assert start.json()["client_secret"]
    payment_id = start.json()["payment_id"]

    # The browser would confirm with Stripe.js; the simulated gateway plays it.
    task = Task.objects.get(pk=task_id)
    SimulatedGateway().confirm_payment_intent(
        services.current_payment(task).stripe_payment_intent_id, "success"
    )
    assert customer.get(f"/escrow/payments/{payment_id}/").json()["status"] == PaymentStatus.HELD

    released = customer.post(f"/escrow/payments/confirm/{payment_id}/", format="json")
    assert released.status_code == 200
    assert released.json()["status"] == PaymentStatus.RELEASED
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED


def test_accepting_an_unready_doer_answers_with_the_onboarding_link(people: Any) -> None:
    task = services.post_task(people.customer, "Walk the dog")
    bid = services.place_bid(task.pk, people.newbie, amount=2000, currency="usd")

    response = api_for(people.customer).post(f"/api/bids/{bid.pk}/accept/", format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "doer_not_verified"
    assert error["onboarding_url"] == reverse("onboarding")


def test_api_errors_have_the_packages_shape(people: Any) -> None:
    customer = api_for(people.customer)
    task_id = customer.post("/api/tasks/", {"title": "Paint"}, format="json").json()["id"]

    own = customer.post(f"/api/tasks/{task_id}/bids/", {"amount": 100}, format="json")
    assert own.status_code == 403
    assert own.json()["error"]["code"] == "own_task"

    fractional = api_for(people.doer).post(
        f"/api/tasks/{task_id}/bids/", {"amount": 12.5}, format="json"
    )
    assert fractional.status_code == 400
    assert fractional.json()["error"]["code"] == "invalid"

    missing = customer.get("/api/tasks/999999/")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "task_not_found"

    anonymous = APIClient().get("/api/tasks/")
    assert anonymous.status_code == 403
    assert "error" in anonymous.json()


def test_bidding_for_an_organization_needs_membership(people: Any) -> None:
    task = services.post_task(people.customer, "Logo")
    org_id = people.organization.pk

    refused = api_for(people.doer).post(
        f"/api/tasks/{task.pk}/bids/", {"amount": 900, "organization_id": org_id}, format="json"
    )
    assert refused.status_code == 404

    ok = api_for(people.member).post(
        f"/api/tasks/{task.pk}/bids/", {"amount": 900, "organization_id": org_id}, format="json"
    )
    assert ok.status_code == 201
    assert ok.json()["doer"]["type"] == "organization"


def test_a_bid_in_a_currency_the_pages_do_not_offer_is_400(people: Any) -> None:
    """The bid form's currencies (USD, EUR, GBP) are the API's too."""
    task = services.post_task(people.customer, "Logo")
    doer = api_for(people.doer)
    for currency in ("zzz", "kwd", "jpy"):
        refused = doer.post(
            f"/api/tasks/{task.pk}/bids/", {"amount": 1000, "currency": currency}, format="json"
        )
        assert refused.status_code == 400, currency
        error = refused.json()["error"]
        assert error["code"] == "invalid"
        assert "usd, eur, gbp" in str(error["fields"]["currency"])
    assert not task.bids.exists()

    ok = doer.post(
        f"/api/tasks/{task.pk}/bids/", {"amount": 1000, "currency": "EUR"}, format="json"
    )
    assert (ok.status_code, ok.json()["currency"]) == (201, "eur")
