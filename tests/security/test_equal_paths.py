"""A payment's detail takes the same path whoever asks and whoever is paid.

Payment ids are derived from task numbers (``payment_id_for``), so anyone can
compute the id of task 41's payment. A 404 hides whether it exists; an answer
that takes longer for some ids than for others would not. With
``ADMINISTERED_ORGANIZATIONS`` the visibility rule is one scoped query:
unknown ids, someone else's payment and a payment to an organization the
asker does not administer cost exactly the same queries, and so do the
payer, the payee user and an admin of the payee organization.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect.checks import check_deploy_settings
from tests.payments.conftest import configure


def detail(market, user, payment_id):
    with CaptureQueriesContext(connection) as captured:
        response = market.get(user, "payment-detail", payment_id=payment_id)
    return response.status_code, len(captured)


@pytest.fixture
def payments(market, sim_stripe):
    return market.held_payment(), market.held_payment(to_org=True)


def test_every_404_takes_the_same_single_query(market, payments, other_org_admin):
    to_doer, to_org = payments
    answers = {
        "unknown id": detail(market, market.other, uuid.uuid4()),
        "someone else's, paid to a person": detail(market, market.other, to_doer.pk),
        "someone else's, paid to an organization": detail(market, market.other, to_org.pk),
        "plain member of the payee organization": detail(market, market.org_member, to_org.pk),
        "admin of another organization": detail(market, other_org_admin, to_org.pk),
        "the doer, for the organization's payment": detail(market, market.doer, to_org.pk),
    }
    assert set(answers.values()) == {(404, 1)}, answers


def test_everyone_who_may_see_it_takes_the_same_queries(market, payments):
    to_doer, to_org = payments
    answers = {
        "payer of a payment to a person": detail(market, market.customer, to_doer.pk),
        "payee user": detail(market, market.doer, to_doer.pk),
        "payer of a payment to an organization": detail(market, market.customer, to_org.pk),
        "admin of the payee organization": detail(market, market.org_admin, to_org.pk),
        "staff": detail(market, market.staff, to_org.pk),
    }
    # The payment, then its milestones, payees, transfers, refunds and disputes.
    assert set(answers.values()) == {(200, 6)}, answers


def test_actions_refuse_in_the_same_single_query(market, payments, django_assert_num_queries):
    _, to_org = payments
    for payment_id in (uuid.uuid4(), to_org.pk):
        with django_assert_num_queries(1):
            response = market.post(market.other, "payment-refund", payment_id=payment_id)
        assert response.status_code == 404


def test_without_the_queryset_the_predicate_still_decides(market, payments, settings):
    configure(settings, ADMINISTERED_ORGANIZATIONS=None)
    _, to_org = payments
    assert detail(market, market.org_admin, to_org.pk)[0] == 200
    assert detail(market, market.org_member, to_org.pk)[0] == 404
    assert detail(market, market.other, to_org.pk)[0] == 404


def test_deploy_check_asks_for_the_queryset_next_to_a_predicate(settings):
    configure(settings, GATEWAY="django_escrow_connect.gateway.stripe_gateway.StripeGateway")
    assert "escrow_connect.W041" not in {e.id for e in check_deploy_settings()}

    configure(settings, ADMINISTERED_ORGANIZATIONS=None)
    warnings = [e for e in check_deploy_settings() if e.id == "escrow_connect.W041"]
    assert len(warnings) == 1
    assert 'ESCROW_CONNECT["ADMINISTERED_ORGANIZATIONS"]' in warnings[0].msg

    # The default predicate admits nobody: nothing to leak, nothing to warn about.
    configure(
        settings,
        ORGANIZATION_ADMIN_PREDICATE="django_escrow_connect.permissions.deny_all_organization_admins",
    )
    assert "escrow_connect.W041" not in {e.id for e in check_deploy_settings()}
