"""Who may do what: every actor against every endpoint, with the exact status,
and nothing changed (in the database or at Stripe) when the answer is a refusal.

Actors: the payer; the payee (a user); an admin and a plain member of the
payee organization (the payment goes to the organization); an unrelated
user; platform staff; an anonymous visitor.
"""

from __future__ import annotations

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS

from .conftest import configure, money_calls

ACTORS = ("payer", "payee", "org_admin", "org_member", "other", "staff", "anonymous")

# endpoint: (the state the payment is put in first, each actor's status)
#                                        payer payee admin member other staff anon
MATRIX = {
    "payment-detail": ("held",             (200,  200,  200,  404,   404,  200,  403)),
    "payment-confirm": ("held",            (200,  403,  403,  404,   404,  200,  403)),
    "payment-refund": ("held",             (403,  200,  200,  404,   404,  200,  403)),
    "payment-cancel": ("awaiting_payment", (200,  200,  200,  404,   404,  200,  403)),
    "payment-retry": ("failed",            (200,  403,  403,  404,   404,  403,  403)),
}  # fmt: skip

CASES = [
    pytest.param(endpoint, actor, expected, id=f"{endpoint}-{actor}")
    for endpoint, (_, statuses) in MATRIX.items()
    for actor, expected in zip(ACTORS, statuses, strict=True)
]


def actor_user(market, actor):
    return {
        "payer": market.customer,
        "payee": market.doer,
        "org_admin": market.org_admin,
        "org_member": market.org_member,
        "other": market.other,
        "staff": market.staff,
        "anonymous": None,
    }[actor]


def prepare(market, state, *, to_org):
    body = market.create(market.task(to_org=to_org)).json()
    payment = market.payment(body["payment_id"])
    if state == "held":
        market.pay(payment.pk)
    elif state == "failed":
        market.pay(payment.pk, card="declined")
    payment.refresh_from_db()
    assert payment.status == state
    return payment


def state_of(payment):
    payment.refresh_from_db()
    return (
        payment.status,
        payment.amount_refunded,
        payment.amount_transferred,
        payment.updated_at,
        payment.transfers.count(),
        payment.refunds.count(),
    )


@pytest.mark.parametrize(("endpoint", "actor", "expected"), CASES)
def test_permission_matrix(market, sim_stripe, settings, endpoint, actor, expected):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)
    state, _ = MATRIX[endpoint]
    payment = prepare(market, state, to_org=actor in ("org_admin", "org_member"))
    before = state_of(payment)
    sim_stripe.calls.clear()
    user = actor_user(market, actor)
    if endpoint == "payment-detail":
        response = market.get(user, endpoint, payment_id=payment.pk)
    else:
        response = market.post(user, endpoint, payment_id=payment.pk)
    assert response.status_code == expected, response.content
    if expected != 200:
        assert set(response.json()) == {"error"}
        assert state_of(payment) == before
        assert money_calls(sim_stripe) == []
    elif endpoint != "payment-detail":
        assert state_of(payment) != before


@pytest.mark.parametrize(
    ("actor", "expected"), [("payee", 404), ("other", 404), ("staff", 404), ("anonymous", 403)]
)
def test_only_the_customer_can_create_the_payment(market, sim_stripe, actor, expected):
    # Signed in but not the customer: the task is not theirs to pay, so it
    # is answered like a task that does not exist.
    task = market.task()
    response = market.create(task, user=actor_user(market, actor))
    assert response.status_code == expected, response.content
    assert not swappable.load("EscrowPayment").objects.filter(task_id=task.pk).exists()
    assert money_calls(sim_stripe) == []


def test_anonymous_gets_the_error_shape(market):
    response = market.get(None, "payment-list")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_authenticated"


class TestVisibility:
    """Lists and dashboards show only what the user may see."""

    def ids(self, response):
        assert response.status_code == 200, response.content
        return {row["payment_id"] for row in response.json()["results"]}

    def test_list_by_role_and_organization(self, market, sim_stripe):
        to_doer = str(market.held_payment().pk)
        to_org = str(market.held_payment(to_org=True).pk)
        someone_else = market.other
        assert self.ids(market.get(market.customer, "payment-list")) == {to_doer, to_org}
        assert self.ids(market.get(market.customer, "payment-list", role="customer")) == {
            to_doer,
            to_org,
        }
        assert self.ids(market.get(market.customer, "payment-list", role="task_doer")) == set()
        assert self.ids(market.get(market.doer, "payment-list")) == {to_doer}
        assert self.ids(market.get(market.doer, "payment-list", role="task_doer")) == {to_doer}
        assert self.ids(market.get(someone_else, "payment-list")) == set()
        assert self.ids(market.get(market.staff, "payment-list")) == {to_doer, to_org}
        org = str(market.organization.pk)
        assert self.ids(market.get(market.org_admin, "payment-list", organization_id=org)) == {
            to_org
        }
        assert self.ids(market.get(market.org_admin, "payment-list")) == set()
        refused = market.get(market.org_member, "payment-list", organization_id=org)
        assert refused.status_code == 404
        assert market.get(market.customer, "payment-list", role="boss").status_code == 400

    def test_a_malformed_or_unknown_payment_id_is_404(self, market, sim_stripe):
        for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
            for name in ("payment-detail", "payment-confirm", "payment-refund", "payment-cancel"):
                if name == "payment-detail":
                    response = market.get(market.staff, name, payment_id=bad)
                else:
                    response = market.post(market.staff, name, payment_id=bad)
                assert response.status_code == 404, (bad, name, response.content)
                assert response.json()["error"]["code"] == "not_found"

    def test_a_malformed_or_unknown_organization_is_404(self, market, sim_stripe):
        for bad in ("nope", "00000000-0000-0000-0000-000000000000", "999999"):
            response = market.get(market.staff, "dashboard-task-doer", organization_id=bad)
            assert response.status_code == 404, (bad, response.content)

    def test_dashboards_show_only_ones_own_payments(self, market, sim_stripe):
        mine = str(market.held_payment().pk)
        market.held_payment(to_org=True)
        doer = market.get(market.doer, "dashboard-task-doer").json()
        assert [p["payment_id"] for p in doer["payments"]] == [mine]
        assert market.get(market.other, "dashboard-task-doer").json()["payments"] == []
        assert market.get(market.other, "dashboard-customer").json()["payments"] == []
        response = market.get(
            market.org_member, "dashboard-task-doer", organization_id=str(market.organization.pk)
        )
        assert response.status_code == 404
