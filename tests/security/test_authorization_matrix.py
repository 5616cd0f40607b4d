"""The authorization matrix: every endpoint of the package x every role x
every verb, with the exact status of each cell, for a payment to a user and
a payment to an organization.

On every refusal (any status that is not a success or a redirect to Stripe)
nothing changed: the same rows in the database and not one call to the
simulated Stripe. Whatever the answer, the body never shows the payment's id
to someone who may not see the payment.

Reading the tables: one row per endpoint, the verb it answers to, then one
status per role in the order of ``ROLES``. Every other verb gets
``OFF_VERB``: 405 once signed in (DRF checks permissions first, so an
anonymous caller gets 403 there; the browser pages send anonymous callers
to the login page with 302). ``tests/payments/test_permissions.py`` checks
the same action endpoints against the state each one needs; this table adds
the other endpoints, roles and verbs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from django_escrow_connect import swappable
from tests.payments.conftest import Marketplace

from .conftest import snapshot

ROLES = (
    "payer",
    "other_customer",
    "payee_user",
    "org_admin",
    "org_member",
    "other_org_admin",
    "staff",
    "anonymous",
)
VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# The state the payment is put in before the request (None: a task not paid yet).
STATE = {
    "payment-create": None,
    "payment-cancel": "awaiting_payment",
    "payment-retry": "failed",
    "payment-tips-list": "released",
    "payment-tips-create": "released",
    "payment-tip-retry-transfer": "released",
}
# Rows of the tables that share one URL (name) but not the verb.
URL_NAME = {"payment-tips-list": "payment-tips", "payment-tips-create": "payment-tips"}
#: Verbs an endpoint answers to besides its row's (documented by another row).
OTHER_VERBS = {"payment-tips-list": {"POST"}, "payment-tips-create": {"GET"}}
DEFAULT_STATE = "held"

# Endpoints scoped to a payee: in the organization scenario they are asked
# about the payee organization (``organization_id``).
ORG_SCOPED = {
    "payment-list",
    "dashboard-task-doer",
    "stripe-onboarding-link",
    "stripe-account-status",
    "stripe-dashboard-link",
    "stripe-account-session",
    "stripe-onboarding-refresh",
    "stripe-onboarding-return",
}

#                                     payer oth.cust payee admin member oth.adm staff anon
USER_PAYEE = {
    "payment-create":          ("POST", (201, 404, 404, 404, 404, 404, 404, 403)),
    "payment-confirm":         ("POST", (200, 404, 403, 404, 404, 404, 200, 403)),
    "payment-release":         ("POST", (200, 404, 403, 404, 404, 404, 200, 403)),
    "milestone-deliver":       ("POST", (403, 404, 200, 404, 404, 404, 403, 403)),
    "payment-detail":          ("GET",  (200, 404, 200, 404, 404, 404, 200, 403)),
    "payment-list":            ("GET",  (200, 200, 200, 200, 200, 200, 200, 403)),
    "payment-refund":          ("POST", (403, 404, 200, 404, 404, 404, 200, 403)),
    "payment-cancel":          ("POST", (200, 404, 200, 404, 404, 404, 200, 403)),
    "payment-retry":           ("POST", (200, 404, 403, 404, 404, 404, 403, 403)),
    "payment-tips-list":       ("GET",  (200, 404, 200, 404, 404, 404, 200, 403)),
    "payment-tips-create":     ("POST", (201, 404, 403, 404, 404, 404, 403, 403)),
    # Staff only; this tip is not one whose transfer failed: 409 after the check.
    "payment-tip-retry-transfer": ("POST", (403, 404, 403, 404, 404, 404, 409, 403)),
    # Payer or staff; this payment saved no card: 409 after the check.
    "payment-saved-payment-method": ("DELETE", (409, 404, 403, 404, 404, 404, 409, 403)),
    "dashboard-task-doer":     ("GET",  (200, 200, 200, 200, 200, 200, 200, 403)),
    "dashboard-customer":      ("GET",  (200, 200, 200, 200, 200, 200, 200, 403)),
    "stripe-onboarding-link":  ("POST", (200, 200, 200, 200, 200, 200, 200, 403)),
    "stripe-account-status":   ("GET",  (404, 404, 200, 404, 404, 404, 404, 403)),
    "stripe-dashboard-link":   ("GET",  (404, 404, 200, 404, 404, 404, 404, 403)),
    "stripe-account-session":  ("POST", (404, 404, 200, 404, 404, 404, 404, 403)),
    "stripe-onboarding-refresh": ("GET", (404, 404, 302, 404, 404, 404, 404, 302)),
    "stripe-onboarding-return": ("GET", (404, 404, 200, 404, 404, 404, 404, 302)),
    "stripe-webhook":          ("POST", (400, 400, 400, 400, 400, 400, 400, 400)),
    "stripe-webhook-connect":  ("POST", (400, 400, 400, 400, 400, 400, 400, 400)),
    "stripe-webhook-thin":     ("POST", (400, 400, 400, 400, 400, 400, 400, 400)),
    "openapi-schema":          ("GET",  (200, 200, 200, 200, 200, 200, 200, 200)),
}  # fmt: skip

#                                     payer oth.cust payee admin member oth.adm staff anon
ORGANIZATION_PAYEE = {
    "payment-create":          ("POST", (201, 404, 404, 404, 404, 404, 404, 403)),
    "payment-confirm":         ("POST", (200, 404, 404, 403, 404, 404, 200, 403)),
    "payment-release":         ("POST", (200, 404, 404, 403, 404, 404, 200, 403)),
    "milestone-deliver":       ("POST", (403, 404, 404, 200, 404, 404, 403, 403)),
    "payment-detail":          ("GET",  (200, 404, 404, 200, 404, 404, 200, 403)),
    "payment-list":            ("GET",  (404, 404, 404, 200, 404, 404, 200, 403)),
    "payment-refund":          ("POST", (403, 404, 404, 200, 404, 404, 200, 403)),
    "payment-cancel":          ("POST", (200, 404, 404, 200, 404, 404, 200, 403)),
    "payment-retry":           ("POST", (200, 404, 404, 403, 404, 404, 403, 403)),
    "payment-tips-list":       ("GET",  (200, 404, 404, 200, 404, 404, 200, 403)),
    "payment-tips-create":     ("POST", (201, 404, 404, 403, 404, 404, 403, 403)),
    "payment-tip-retry-transfer": ("POST", (403, 404, 404, 403, 404, 404, 409, 403)),
    "payment-saved-payment-method": ("DELETE", (409, 404, 404, 403, 404, 404, 409, 403)),
    "dashboard-task-doer":     ("GET",  (404, 404, 404, 200, 404, 404, 200, 403)),
    "dashboard-customer":      ("GET",  (200, 200, 200, 200, 200, 200, 200, 403)),
    "stripe-onboarding-link":  ("POST", (404, 404, 404, 200, 404, 404, 404, 403)),
    "stripe-account-status":   ("GET",  (404, 404, 404, 200, 404, 404, 404, 403)),
    "stripe-dashboard-link":   ("GET",  (404, 404, 404, 200, 404, 404, 404, 403)),
    "stripe-account-session":  ("POST", (404, 404, 404, 200, 404, 404, 404, 403)),
    "stripe-onboarding-refresh": ("GET", (404, 404, 404, 302, 404, 404, 404, 302)),
    "stripe-onboarding-return": ("GET", (404, 404, 404, 200, 404, 404, 404, 302)),
    "stripe-webhook":          ("POST", (400, 400, 400, 400, 400, 400, 400, 400)),
    "stripe-webhook-connect":  ("POST", (400, 400, 400, 400, 400, 400, 400, 400)),
    "stripe-webhook-thin":     ("POST", (400, 400, 400, 400, 400, 400, 400, 400)),
    "openapi-schema":          ("GET",  (200, 200, 200, 200, 200, 200, 200, 200)),
}  # fmt: skip

TABLES = {"user": USER_PAYEE, "organization": ORGANIZATION_PAYEE}
BROWSER_PAGES = {"stripe-onboarding-refresh", "stripe-onboarding-return"}
WEBHOOKS = {"stripe-webhook", "stripe-webhook-connect", "stripe-webhook-thin"}
PUBLIC = {"openapi-schema"}
WITH_PAYMENT_ID = {
    "payment-confirm",
    "payment-release",
    "payment-detail",
    "payment-refund",
    "payment-cancel",
    "payment-retry",
    "payment-tips-list",
    "payment-tips-create",
    "payment-saved-payment-method",
}
# Answers that may change something; every other status is a refusal.
SUCCESS = {200, 201, 302}
EMBEDDED = ("payouts", "notification_banner")


@pytest.fixture(autouse=True)
def embedded_payouts(settings: Any) -> None:
    """The platform offers the payouts page's embedded components."""
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "EMBEDDED_COMPONENTS": ["account_onboarding", *EMBEDDED],
    }


def off_verb(endpoint: str, role: str) -> int:
    """The status of a verb the endpoint does not answer to."""
    if role == "anonymous" and endpoint in BROWSER_PAGES:
        return 302  # login_required runs before the method check
    if role == "anonymous" and endpoint not in WEBHOOKS | PUBLIC:
        return 403  # DRF checks permissions before the method
    return 405


def cells() -> list[Any]:
    params = []
    for payee, table in TABLES.items():
        for endpoint, (verb, statuses) in table.items():
            for role, status in zip(ROLES, statuses, strict=True):
                for method in VERBS:
                    if method in OTHER_VERBS.get(endpoint, ()):
                        continue
                    expected = status if method == verb else off_verb(endpoint, role)
                    params.append(
                        pytest.param(
                            payee,
                            endpoint,
                            role,
                            method,
                            expected,
                            id=f"{payee}-{endpoint}-{role}-{method}-{expected}",
                        )
                    )
    return params


def user_for(market: Marketplace, other_org_admin: Any, role: str) -> Any:
    return {
        "payer": market.customer,
        "other_customer": market.other,
        "payee_user": market.doer,
        "org_admin": market.org_admin,
        "org_member": market.org_member,
        "other_org_admin": other_org_admin,
        "staff": market.staff,
        "anonymous": None,
    }[role]


def prepare(market: Marketplace, endpoint: str, *, to_org: bool) -> tuple[Any, Any]:
    """``(payment, task)``: the payment the request is about, in the state the
    endpoint needs, and for ``payment-create`` a task of the same people not
    paid yet."""
    state = STATE.get(endpoint, DEFAULT_STATE)
    payment = market.held_payment(to_org=to_org)
    task = None
    if state is None:
        task = market.task(to_org=to_org)
    elif state == "released":
        payment = market.released_payment(to_org=to_org)
        if endpoint == "payment-tip-retry-transfer":
            # A tip the customer has not paid yet: nothing to retry.
            response = market.post(
                market.customer, "payment-tips", {"amount": 100}, payment_id=payment.pk
            )
            assert response.status_code == 201, response.content
    elif state != "held":
        response = market.create(market.task(to_org=to_org))
        payment = market.payment(response.json()["payment_id"])
        if state == "failed":
            payment = market.pay(payment.pk, card="declined")
        assert payment.status == state
    return payment, task


def request_for(
    market: Marketplace, endpoint: str, payment: Any, task: Any, *, to_org: bool
) -> tuple[str, dict[str, Any]]:
    args = [str(payment.pk)] if endpoint in WITH_PAYMENT_ID else []
    if endpoint == "milestone-deliver":
        # A milestone of the payment (as split terms would have made it).
        milestone = swappable.load("EscrowMilestone").objects.create(
            payment=payment, position=0, name="All", amount=payment.amount, currency="usd"
        )
        args = [str(payment.pk), str(milestone.pk)]
    if endpoint == "payment-tip-retry-transfer":
        args = [str(payment.pk), str(payment.tips.get().pk)]
    url = reverse(f"escrow_connect:{URL_NAME.get(endpoint, endpoint)}", args=args)
    data: dict[str, Any] = {}
    if endpoint == "payment-tips-create":
        data = {"amount": 100}
    elif endpoint == "payment-create":
        data = {"task_id": str(task.pk)}
    elif endpoint == "stripe-onboarding-link":
        data = {"account_type": "company" if to_org else "individual"}
    elif endpoint == "stripe-account-session":
        # Embedded payouts, as the example's "My payouts" page asks for them
        # (enabled by the embedded_payouts fixture below).
        data = {"components": list(EMBEDDED)}
    elif endpoint in WEBHOOKS:
        data = {"id": "evt_unsigned", "object": "event", "type": "payment_intent.succeeded"}
    if to_org and endpoint in ORG_SCOPED:
        data["organization_id"] = str(market.organization.pk)
    return url, data


def send(client: APIClient, method: str, url: str, data: dict[str, Any]) -> Any:
    if method == "GET":
        return client.get(url, data)
    return client.generic(method, url, json.dumps(data), content_type="application/json")


@pytest.fixture(autouse=True)
def tips_allowed(settings: Any, sim_stripe: Any) -> None:
    from tests.payments.conftest import configure

    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})


@pytest.mark.parametrize(("payee", "endpoint", "role", "method", "expected"), cells())
def test_authorization_matrix(
    market: Marketplace,
    sim_stripe: Any,
    other_org_admin: Any,
    payee: str,
    endpoint: str,
    role: str,
    method: str,
    expected: int,
) -> None:
    to_org = payee == "organization"
    payment, task = prepare(market, endpoint, to_org=to_org)
    url, data = request_for(market, endpoint, payment, task, to_org=to_org)
    user = user_for(market, other_org_admin, role)
    client = APIClient()
    if user is not None:
        client.force_login(user)
    before, calls_before = snapshot(), len(sim_stripe.calls)

    with market.capture(execute=True):
        response = send(client, method, url, data)

    assert response.status_code == expected, response.content[:500]
    if endpoint == "stripe-account-session" and expected == 200:
        assert sim_stripe.calls[-1][1]["components"] == list(EMBEDDED)
    if expected not in SUCCESS:
        assert snapshot() == before
        assert len(sim_stripe.calls) == calls_before, sim_stripe.calls[calls_before:]
        if endpoint not in BROWSER_PAGES and response.status_code != 405:
            assert set(response.json()) == {"error"}
    sees_payment = TABLES[payee]["payment-detail"][1][ROLES.index(role)] == 200
    if not sees_payment:
        assert str(payment.pk).encode() not in response.content
