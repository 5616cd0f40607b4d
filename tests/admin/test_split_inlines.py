"""Milestones, payees, releases and per-payee transfers shown on the payment page."""

from __future__ import annotations

import pytest
from django.contrib import admin

from django_escrow_connect import swappable
from django_escrow_connect.terms import MilestoneTerms, PayeeShare
from tests import factories
from tests.payments.conftest import stripe_account
from tests.payments.test_milestones import EXTRA, held, release, split  # noqa: F401

from .test_staff_actions import admin_client, staff, url  # noqa: F401

pytestmark = pytest.mark.django_db

Payment = swappable.load("EscrowPayment")

if not admin.site.is_registered(Payment):
    pytest.skip("the payment model is swapped", allow_module_level=True)


@pytest.mark.usefixtures("split")
def test_the_payment_page_shows_milestones_releases_and_each_payees_transfer(
    admin_client,  # noqa: F811
    market,
):
    partner = factories.make_user("partner")
    stripe_account(owner_user=partner)
    payment = held(
        market,
        milestones=[MilestoneTerms("Design", 4_000), MilestoneTerms("Build", 6_000)],
        payees=[
            PayeeShare(user=market.doer, basis_points=5_000),
            PayeeShare(user=partner, basis_points=5_000),
        ],
    )
    first = payment.milestones.order_by("position").first()
    assert release(market, payment, milestone_id=first.pk).status_code == 200
    page = admin_client.get(url(Payment, "change", payment.pk))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Design" in html
    assert "Build" in html
    for transfer in payment.transfers.all():
        assert transfer.stripe_transfer_id in html
    assert "1800" in html  # each payee's half of 3,600 net
    # Read-only: no rows can be added on the inlines.
    assert 'name="milestones-MAX_NUM_FORMS" value="0"' in html
