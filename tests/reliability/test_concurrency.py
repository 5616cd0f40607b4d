"""Races on one payment, on PostgreSQL with one connection per thread.

Sixteen concurrent confirms (tests/payments/test_concurrency.py) and eight
concurrent deliveries of one webhook (tests/webhooks/test_pipeline.py) are
proven, five times each, next to the code they exercise. Here: a refund and
a release of the same held payment, sent at the same instant, end in one of
the two consistent orders, never in both or neither.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS

from .conftest import assert_money_invariants, configure, run_concurrently

REPEAT = 5

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def poster(user, name, payment_id, data=None):
    def post():
        client = APIClient()
        client.force_authenticate(user)
        url = reverse(f"escrow_connect:{name}", args=[str(payment_id)])
        return client.post(url, data or {}, format="json")

    return post


def refunded_at(payment):
    """When the (first) refund was recorded."""
    return payment.refunds.order_by("created_at").values_list("created_at", flat=True).first()


@pytest.mark.parametrize("iteration", range(REPEAT))
@pytest.mark.parametrize(
    ("escrow_strategy", "refund_amount"),
    [
        (SEPARATE_CHARGES_AND_TRANSFERS, None),
        (SEPARATE_CHARGES_AND_TRANSFERS, 2_500),
        # A held manual-capture payment can only be voided in full.
        (MANUAL_CAPTURE, None),
    ],
    ids=["sct-full", "sct-partial", "manual-full"],
)
def test_refund_racing_release_has_one_consistent_outcome(
    settings, sim_stripe, market, escrow_strategy, refund_amount, iteration
):
    configure(settings, ESCROW_STRATEGY=escrow_strategy)
    payment = market.held_payment()
    body = {} if refund_amount is None else {"amount": refund_amount}

    release, refund = run_concurrently(
        poster(market.customer, "payment-confirm", payment.pk),
        poster(market.doer, "payment-refund", payment.pk, body),
    )
    for response in (release, refund):
        assert not isinstance(response, BaseException), response
        assert response.status_code in (200, 409), response.content
    payment = market.payment(payment.pk)
    books = assert_money_invariants(sim_stripe, payment)
    refunded = refund_amount or payment.amount

    assert refund.status_code == 200, refund.content
    if payment.status == "canceled":
        # Manual capture, voided first: no money was captured, none moved.
        assert escrow_strategy == MANUAL_CAPTURE
        assert release.status_code == 409
        assert books["intent"]["status"] == "canceled"
        assert books["transfers"] == []
        assert books["refunded"] == 0
        return
    assert payment.amount_refunded == books["refunded"] == refunded
    if books["transfers"] and payment.released_at < refunded_at(payment):
        # Released first: the refund took the doer's share back with it.
        assert release.status_code == 200
        assert payment.amount_reversed == books["reversed"] > 0
        assert payment.status == ("refunded" if refund_amount is None else "partially_refunded")
    elif books["transfers"]:
        # Partly refunded first, then released: only the rest was sent.
        assert refund_amount is not None
        assert release.status_code == 200
        assert payment.status == "released"
        assert books["reversed"] == 0
        assert books["transferred"] == payment.amount_transferred
        assert books["transferred"] <= payment.amount - refund_amount - payment.platform_fee
    else:
        # Refunded first: a full refund leaves nothing to release (409); after
        # a partial one the release may follow, with the rest of the money.
        assert payment.amount_transferred == 0
        if refund_amount is None:
            assert release.status_code == 409
            assert payment.status == "refunded"
        else:
            assert release.status_code == 409
            assert payment.status == "held"
