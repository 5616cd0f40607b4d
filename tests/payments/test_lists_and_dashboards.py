"""Lists and dashboards: newest first, paginated, totals computed in the
database, and a number of SQL queries that does not grow with the data."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS

from .conftest import configure


@pytest.fixture
def separate_charges(settings, sim_stripe):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)


def queries_for(request):
    with CaptureQueriesContext(connection) as captured:
        response = request()
    assert response.status_code == 200, response.content
    return len(captured), response.json()


def test_list_is_newest_first_and_paginated(market, sim_stripe, separate_charges):
    made = [str(market.held_payment().pk) for _ in range(3)]
    page = market.get(market.customer, "payment-list", page_size=2).json()
    assert page["count"] == 3
    assert [p["payment_id"] for p in page["results"]] == made[::-1][:2]
    assert page["next"] is not None
    rest = market.get(market.customer, "payment-list", page_size=2, page=2).json()
    assert [p["payment_id"] for p in rest["results"]] == [made[0]]
    assert market.get(market.customer, "payment-list", page=9).status_code == 404


def test_list_query_count_does_not_depend_on_page_size(market, sim_stripe, separate_charges):
    for _ in range(2):
        market.released_payment()
    payment = market.held_payment()
    market.post(market.doer, "payment-refund", {"amount": 100}, payment_id=payment.pk)

    def list_of(size):
        return lambda: market.get(market.customer, "payment-list", page_size=size)

    small, body = queries_for(list_of(1))
    assert len(body["results"]) == 1
    large, body = queries_for(list_of(3))
    assert len(body["results"]) == 3
    assert small == large
    # The rows carry what detail shows: transfers and refunds were prefetched.
    assert {len(p["transfers"]) for p in body["results"]} == {0, 1}
    assert sum(len(p["refunds"]) for p in body["results"]) == 1


def test_the_list_query_count_is_fixed(
    market, sim_stripe, separate_charges, django_assert_num_queries
):
    market.released_payment()
    market.held_payment()
    # count, page, milestones, payees, transfers, refunds, disputes (the
    # payees' transfers only when the page has payees: see below)
    with django_assert_num_queries(7):
        market.get(market.customer, "payment-list")
    with django_assert_num_queries(7):
        market.get(market.customer, "payment-list", page_size=1)


def test_a_page_of_payments_released_in_parts_costs_one_more_query(
    market, sim_stripe, settings, django_assert_num_queries
):
    from django_escrow_connect.terms import MilestoneTerms

    from .conftest import configure
    from .test_milestones import EXTRA, held

    configure(
        settings,
        ESCROW_STRATEGY="separate_charges_and_transfers",
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
    )
    for _ in range(3):
        payment = held(market, milestones=[MilestoneTerms("A", 4_000), MilestoneTerms("B", 6_000)])
        market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    EXTRA.clear()
    # ... plus the payees' transfers: the same for one payment or a page of them.
    with django_assert_num_queries(8):
        market.get(market.customer, "payment-list")
    with django_assert_num_queries(8):
        market.get(market.customer, "payment-list", page_size=1)


def test_task_doer_dashboard_totals_and_constant_queries(market, sim_stripe, separate_charges):
    market.released_payment()
    empty_queries, _ = queries_for(lambda: market.get(market.doer, "dashboard-task-doer"))

    refunded = market.released_payment()
    market.post(market.doer, "payment-refund", {"amount": 5_000}, payment_id=refunded.pk)
    market.held_payment()
    market.released_payment(amount=5_000)
    queries, body = queries_for(lambda: market.get(market.doer, "dashboard-task-doer", limit=50))
    assert queries == empty_queries
    assert body["payee"]["type"] == "user"
    assert body["account"]["status"] == "verified"
    assert body["account"]["can_receive_transfers"] is True
    assert len(body["payments"]) == 4
    # 9,000 + (9,000 - 4,500) + 4,500: transferred less reversed, released only.
    assert body["earnings"] == [{"currency": "usd", "amount": 18_000, "formatted": "180.00 USD"}]
    assert body["in_escrow"] == [{"currency": "usd", "amount": 9_000, "formatted": "90.00 USD"}]
    assert len(market.get(market.doer, "dashboard-task-doer", limit=1).json()["payments"]) == 1
    assert market.get(market.doer, "dashboard-task-doer", limit=0).status_code == 400


@pytest.mark.parametrize("name", ["dashboard-customer", "dashboard-task-doer"])
def test_a_dashboard_limit_with_many_digits_is_400(market, sim_stripe, name):
    # 5000 digits: past Python's 4300-digit int() limit (it was a 500).
    for limit in ("9" * 5000, "0" * 30 + "51", "99999999999999999999"):
        response = market.get(market.customer, name, limit=limit)
        assert response.status_code == 400, limit
        assert response.json()["error"]["code"] == "invalid_limit"
    # Leading zeros are still a number in range.
    assert market.get(market.customer, name, limit="0" * 30 + "1").status_code == 200


def test_organization_dashboard(market, sim_stripe, separate_charges):
    market.released_payment(to_org=True)
    market.released_payment()  # to the doer, not the organization
    org = str(market.organization.pk)
    body = market.get(market.org_admin, "dashboard-task-doer", organization_id=org).json()
    assert body["payee"] == {"type": "organization", "id": org}
    assert body["account"]["stripe_account_id"] == market.org_account.stripe_account_id
    assert len(body["payments"]) == 1
    assert body["earnings"][0]["amount"] == 9_000


def test_customer_dashboard_spending_net_of_refunds(market, sim_stripe, separate_charges):
    body = market.get(market.customer, "dashboard-customer").json()
    assert body == {"payments": [], "spent": [], "in_escrow": []}
    market.released_payment()
    one_queries, _ = queries_for(lambda: market.get(market.customer, "dashboard-customer"))
    refunded = market.held_payment()
    market.post(market.doer, "payment-refund", {"amount": 2_500}, payment_id=refunded.pk)
    market.create(market.task())  # not paid yet: not spent
    market.held_payment(amount=3_000)
    euros = market.create(market.task(currency="eur", amount=4_000)).json()
    market.pay(euros["payment_id"])
    queries, body = queries_for(lambda: market.get(market.customer, "dashboard-customer"))
    assert queries == one_queries
    assert len(body["payments"]) == 5
    assert body["spent"] == [
        {"currency": "eur", "amount": 4_000, "formatted": "40.00 EUR"},
        {"currency": "usd", "amount": 20_500, "formatted": "205.00 USD"},
    ]
    assert body["in_escrow"] == [
        {"currency": "eur", "amount": 4_000, "formatted": "40.00 EUR"},
        {"currency": "usd", "amount": 10_500, "formatted": "105.00 USD"},
    ]
