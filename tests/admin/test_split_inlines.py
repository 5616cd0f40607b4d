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


@pytest.mark.usefixtures("split")
def test_releasing_the_rest_of_a_split_payment_is_confirmed_and_recorded_as_sent(
    admin_client,  # noqa: F811
    market,
    sim_stripe,
):
    """After a first milestone's release, *Release* sends what is still held,
    split between the payees. The confirmation offered the whole payment's
    net to the first payee's account (90.00 USD to one account), and the audit
    trail recorded that 9,000 though 5,400 went to two accounts."""
    from tests.admin.test_staff_actions import list_action, messages_of

    partner = factories.make_user("partner")
    partner_account = stripe_account(owner_user=partner)
    payment = held(
        market,
        milestones=[MilestoneTerms("Design", 4_000), MilestoneTerms("Build", 6_000)],
        payees=[
            PayeeShare(user=market.doer, basis_points=6_000),
            PayeeShare(user=partner, basis_points=4_000),
        ],
    )
    first = payment.milestones.order_by("position").first()
    assert release(market, payment, milestone_id=first.pk).status_code == 200
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.status, payment.amount_held) == ("partially_released", 6_000)

    page = list_action(admin_client, market, Payment, "release", [payment])
    text = page.content.decode()
    assert "90.00 USD" not in text
    assert "60.00 USD still held" in text
    assert payment.destination_account_id in text
    assert partner_account.stripe_account_id in text

    sent_before = {t.pk for t in payment.transfers.all()}
    done = list_action(admin_client, market, Payment, "release", [payment], note="rest")
    assert any("now released" in m for m in messages_of(done))
    sent = [t.amount for t in payment.transfers.exclude(pk__in=sent_before)]
    assert sorted(sent) == [2_160, 3_240]  # 6,000 less 600 fee, split 60/40
    entry = swappable.load("StaffAction").objects.get()
    assert (entry.action, entry.outcome, entry.amount) == ("release", "ok", 5_400)
