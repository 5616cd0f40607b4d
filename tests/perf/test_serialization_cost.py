"""A page of payments is serialized by one serializer, not one per row.

A DRF serializer deep-copies its declared fields (about thirty with the
nested ones) the first time it is used; one instance per row made that copy
the largest cost of the list and dashboards (docs/performance.md). The number
of field sets built must not grow with the rows on the page.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect.api import payments as api
from tests.payments.conftest import market, sim_stripe  # noqa: F401  (fixtures)
from tests.perf.test_query_counts import add_payments


def field_sets_built(monkeypatch: Any, request: Any) -> int:
    built = 0
    original = api.PaymentOutput.get_fields

    def counting(self: Any) -> Any:
        nonlocal built
        built += 1
        return original(self)

    monkeypatch.setattr(api.PaymentOutput, "get_fields", counting)
    response = request()
    assert response.status_code == 200, response.content
    monkeypatch.setattr(api.PaymentOutput, "get_fields", original)
    return built


@pytest.mark.django_db
@pytest.mark.parametrize("view", ["payment-list", "dashboard-customer"])
def test_field_sets_do_not_grow_with_the_page(market: Any, monkeypatch: Any, view: str) -> None:  # noqa: F811
    add_payments(market, 3)
    few = field_sets_built(monkeypatch, lambda: market.get(market.customer, view))
    add_payments(market, 12)
    many = field_sets_built(monkeypatch, lambda: market.get(market.customer, view))
    assert many == few <= 1
