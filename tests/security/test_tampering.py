"""Hostile input to the payment API: tampered amounts and currencies, paying
what one should not, refund amounts that are not amounts, and ids that point
at someone else's objects (IDOR). Every refusal has its exact status and
leaves the database and the simulated Stripe untouched.

Already proven elsewhere and not repeated here (see docs/security.md):
``tests/payments/test_create.py`` (a create ``amount`` that differs from the
task's terms, create amounts that are not positive integers, ``currency``/
``payee``/``platform_fee`` in a create request, paying one's own task,
unknown or malformed task ids), ``tests/payments/test_lifecycle.py``
(creating again once held: 409 ``already_paid``), ``tests/payments/
test_refunds.py`` (a refund larger than what is left) and the authorization
matrix (paying or acting on someone else's task or payment).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.urls import reverse

from tests import factories
from tests.payments.conftest import Marketplace

from .conftest import snapshot

PATH_ENDPOINTS = (
    "payment-detail",
    "payment-confirm",
    "payment-refund",
    "payment-cancel",
    "payment-retry",
)


class Unchanged:
    """Asserts that nothing changed in the database or at Stripe."""

    def __init__(self, sim_stripe: Any) -> None:
        self.sim_stripe = sim_stripe
        self.rows = snapshot()
        self.calls = len(sim_stripe.calls)

    def check(self) -> None:
        assert snapshot() == self.rows
        assert self.sim_stripe.calls[self.calls :] == []


def call(market: Marketplace, user: Any, endpoint: str, payment_id: Any, body: Any = None) -> Any:
    if endpoint == "payment-detail":
        return market.get(user, endpoint, payment_id=payment_id)
    return market.post(user, endpoint, body, payment_id=payment_id)


# --- refund amounts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [0, -1, -10_000, 0.5, 99.99, 1e3, "1e3", "-5", " 5", "5 000", "١٢", "", "abc", True, None,
     [100], {"value": 100}, 10**20, "9" * 20, "9" * 5000],
)  # fmt: skip
def test_a_refund_amount_that_is_not_a_positive_integer_is_400(
    market: Marketplace, sim_stripe: Any, amount: Any
) -> None:
    payment = market.released_payment()
    unchanged = Unchanged(sim_stripe)
    response = market.post(market.doer, "payment-refund", {"amount": amount}, payment_id=payment.pk)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in {"invalid", "invalid_amount"}
    unchanged.check()


@pytest.mark.parametrize(
    ("endpoint", "state"),
    [("payment-release", "held_payment"), ("payment-tips", "released_payment")],
)
def test_an_amount_string_past_python_s_int_limit_is_400(
    market: Marketplace, sim_stripe: Any, endpoint: str, state: str
) -> None:
    """5000 digits: int() refuses more than 4300, which was a 500."""
    payment = getattr(market, state)()
    unchanged = Unchanged(sim_stripe)
    response = market.post(market.customer, endpoint, {"amount": "9" * 5000}, payment_id=payment.pk)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    unchanged.check()


@pytest.mark.parametrize("amount", [10_001, 2**31, 2**63, 10**18])
def test_a_refund_larger_than_the_payment_is_400(
    market: Marketplace, sim_stripe: Any, amount: int
) -> None:
    payment = market.held_payment()
    unchanged = Unchanged(sim_stripe)
    response = market.post(market.doer, "payment-refund", {"amount": amount}, payment_id=payment.pk)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_amount"
    unchanged.check()


@pytest.mark.parametrize(
    "extra",
    [{"currency": "jpy"}, {"currency": "usd"}, {"payment_id": "x"}, {"amount_refunded": 0}],
)
def test_refund_fields_the_server_decides_are_refused(
    market: Marketplace, sim_stripe: Any, extra: dict[str, Any]
) -> None:
    payment = market.held_payment()
    unchanged = Unchanged(sim_stripe)
    response = market.post(
        market.doer, "payment-refund", {"amount": 100, **extra}, payment_id=payment.pk
    )
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]["fields"]) == set(extra)
    unchanged.check()


# --- currency and amount come from the task ---------------------------------------------


def test_the_currency_and_amount_are_the_task_s(market: Marketplace, sim_stripe: Any) -> None:
    task = market.task(amount=4_000, currency="eur")
    for body in ({"currency": "usd"}, {"amount": 4_000, "currency": "eur"}):
        unchanged = Unchanged(sim_stripe)
        response = market.create(task, **body)
        assert response.status_code == 400, response.content
        assert "currency" in response.json()["error"]["fields"]
        unchanged.check()
    response = market.create(task, amount=4_000)
    assert response.status_code == 201, response.content
    assert (response.json()["amount"], response.json()["currency"]) == (4_000, "eur")
    (intent,) = sim_stripe.payment_intents.values()
    assert (intent["amount"], intent["currency"]) == (4_000, "eur")


def test_a_query_string_cannot_change_the_amount(market: Marketplace, sim_stripe: Any) -> None:
    task = market.task(amount=10_000)
    url = "/escrow/payments/create/?amount=1&currency=jpy"
    with market.capture(execute=True):
        response = market.client(market.customer).post(
            url, {"task_id": str(task.pk)}, format="json"
        )
    assert response.status_code == 201, response.content
    assert (response.json()["amount"], response.json()["currency"]) == (10_000, "usd")


# --- paying what one should not ------------------------------------------------------------


@pytest.mark.parametrize("payer", ["doer", "other", "org_admin", "staff"])
def test_paying_someone_else_s_task_is_404(
    market: Marketplace, sim_stripe: Any, payer: str
) -> None:
    task = market.task(to_org=payer == "org_admin")
    unchanged = Unchanged(sim_stripe)
    response = market.create(task, user=getattr(market, payer))
    assert response.status_code == 404, response.content
    assert response.json()["error"] == {"code": "not_found", "message": "No such task."}
    unchanged.check()


@pytest.mark.parametrize("payer", ["doer", "other", "staff"])
def test_a_stranger_cannot_tell_whether_a_task_has_an_accepted_bid(
    market: Marketplace, sim_stripe: Any, payer: str
) -> None:
    """Someone else's task with terms, without, and no task at all: one answer."""
    with_terms = market.task()
    without_terms = factories.make_task(market.customer, amount=None)
    unchanged = Unchanged(sim_stripe)
    answers = [
        market.post(getattr(market, payer), "payment-create", {"task_id": task_id})
        for task_id in (with_terms.pk, without_terms.pk, 10**9)
    ]
    assert {(r.status_code, r.content) for r in answers} == {
        (404, b'{"error":{"code":"not_found","message":"No such task."}}')
    }
    unchanged.check()


def test_paying_one_s_own_organization_s_task_is_refused(
    market: Marketplace, sim_stripe: Any
) -> None:
    """An admin of the payee organization posting a task to it pays themselves."""
    task = factories.make_task(market.org_admin, payee_organization=market.organization)
    unchanged = Unchanged(sim_stripe)
    response = market.create(task, user=market.org_admin)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "self_payment"
    unchanged.check()


@pytest.mark.parametrize("state", ["held_payment", "released_payment"])
def test_paying_a_task_twice_is_409(market: Marketplace, sim_stripe: Any, state: str) -> None:
    payment = getattr(market, state)()
    unchanged = Unchanged(sim_stripe)
    response = market.create(payment.task, amount=payment.amount)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "already_paid"
    unchanged.check()


# --- IDOR on every path id ------------------------------------------------------------------

BAD_IDS = {
    "random uuid": lambda market, a: str(uuid.uuid4()),
    "malformed": lambda market, a: "not-a-uuid",
    "sql": lambda market, a: "1' OR '1'='1",
    "integer": lambda market, a: "1",
    "long": lambda market, a: "f" * 300,
    "task id instead": lambda market, a: str(a.task_id),
}


@pytest.mark.parametrize("endpoint", PATH_ENDPOINTS)
def test_another_customer_s_payment_is_404_on_every_path(
    market: Marketplace, sim_stripe: Any, endpoint: str
) -> None:
    theirs = market.held_payment()  # market.customer's
    unchanged = Unchanged(sim_stripe)
    response = call(market, market.other, endpoint, theirs.pk, {})
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"
    assert str(theirs.pk) not in response.content.decode()
    unchanged.check()


@pytest.mark.parametrize("endpoint", PATH_ENDPOINTS)
@pytest.mark.parametrize("kind", list(BAD_IDS))
def test_unknown_or_malformed_payment_ids_are_404(
    market: Marketplace, sim_stripe: Any, endpoint: str, kind: str
) -> None:
    payment = market.held_payment()
    unchanged = Unchanged(sim_stripe)
    response = call(market, market.staff, endpoint, BAD_IDS[kind](market, payment), {})
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"
    unchanged.check()


@pytest.mark.parametrize(
    ("endpoint", "method"),
    [
        ("payment-list", "get"),
        ("dashboard-task-doer", "get"),
        ("stripe-account-status", "get"),
        ("stripe-dashboard-link", "get"),
        ("stripe-onboarding-link", "post"),
        ("stripe-account-session", "post"),
    ],
)
def test_an_organization_one_does_not_administer_is_404(
    market: Marketplace, sim_stripe: Any, endpoint: str, method: str
) -> None:
    """The admin of one organization names another (or a made-up one)."""
    other_admin = factories.make_user("otheradmin")
    factories.make_organization(admins=(other_admin,))
    for organization_id in (str(market.organization.pk), "999999", str(uuid.uuid4()), "x' --"):
        unchanged = Unchanged(sim_stripe)
        body: dict[str, Any] = {"organization_id": organization_id}
        if endpoint == "stripe-onboarding-link":
            body["account_type"] = "company"
        client = market.client(other_admin)
        url = f"/escrow/{_path(endpoint)}"
        with market.capture(execute=True):
            if method == "get":
                response = client.get(url, body)
            else:
                response = client.post(url, body, format="json")
        assert response.status_code == 404, (organization_id, response.content)
        unchanged.check()


def _path(endpoint: str) -> str:
    from django.urls import reverse

    return reverse(f"escrow_connect:{endpoint}").removeprefix("/escrow/")


# --- bodies the JSON parser cannot take ------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["payment-create", "payment-refund", "payment-tips", "stripe-onboarding-link"],
)
def test_a_body_nested_past_the_recursion_limit_is_400(
    market: Marketplace, sim_stripe: Any, endpoint: str
) -> None:
    """``json`` recurses per level: RecursionError escaped DRF's parser (a 500)."""
    payment = market.released_payment()
    unchanged = Unchanged(sim_stripe)
    url = "/escrow/" + (
        _path(endpoint)
        if endpoint.startswith("stripe-") or endpoint == "payment-create"
        else _payment_path(endpoint, payment.pk)
    )
    with market.capture(execute=True):
        response = market.client(market.customer).post(
            url, "[" * 100_000 + "]" * 100_000, content_type="application/json"
        )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "parse_error"
    unchanged.check()


def _payment_path(endpoint: str, payment_id: Any) -> str:
    from django.urls import reverse

    return reverse(f"escrow_connect:{endpoint}", args=[str(payment_id)]).removeprefix("/escrow/")


# --- hostile values in every input of every endpoint -------------------------------------

#: JSON values no input of the API takes as they are: wrong types, integers past
#: 64 bits, non-finite and exponent numbers as strings, NUL bytes (PostgreSQL
#: refuses NUL in text: a query with one is an error, not an empty answer),
#: non-ASCII and over-long strings.
HOSTILE_JSON: list[Any] = [
    10**20, -(10**20), 2**63, 2**31, -1, 0, 1.5, True, None, [], {}, [1], {"a": 1},
    # Sent as the bare NaN / Infinity tokens, which JSON does not have.
    float("nan"), float("inf"), float("-inf"),
    "NaN", "Infinity", "-Infinity", "1e999", "\x00", "1\x00", "a\x00b", "\x00" * 300,
    "\ud800", "é€😀", "١٢", "x" * 10_000, "", " ", "99999999999999999999",
    # As a whole body: fields no endpoint takes, named in the 400 (a lone
    # surrogate cannot be written as UTF-8).
    {"\ud800": 1}, {"\x00": 1}, {"é" * 1000: 1},
]  # fmt: skip
#: The same for query strings and URL path segments (always strings).
HOSTILE_TEXT: list[str] = [
    "99999999999999999999", "-99999999999999999999", "9" * 5000, "-1", "0", "1.5", "NaN",
    "Infinity", "1e999", "\x00", "1\x00", "a\x00b", "é€😀", "١٢", "x" * 5000, " ", "[]",
    "null", "true", "%00",
]  # fmt: skip


def _valid_anyway(name: str | None, value: Any) -> bool:
    """Whether ``value`` is, for all its looks, a valid request for that input."""
    if name is None:  # the whole body: no body, or an empty object
        return value is None or value == {}
    if name == "save_payment_method":
        return value == 0 and not isinstance(value, bool)  # 0 is false
    if name == "organization_id":
        return value in (None, "", " ")  # blank: the user's own account
    if name == "reason":  # free text for the audit trail (only Stripe's reasons are sent)
        text = str(value)
        valid_type = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return valid_type and "\x00" not in text and 0 < len(text.strip()) <= 64
    return False


#: (endpoint, who asks, the payment it acts on, the body's other fields, the field).
BODY_INPUTS = [
    ("payment-create", "customer", None, {"task_id": "TASK"}, "amount"),
    ("payment-create", "customer", None, {"task_id": "TASK"}, "milestone"),
    ("payment-create", "customer", None, {"task_id": "TASK"}, "save_payment_method"),
    ("payment-create", "customer", None, {}, "task_id"),
    ("payment-refund", "staff", "held_payment", {}, "amount"),
    ("payment-refund", "staff", "held_payment", {}, "reason"),
    ("payment-release", "staff", "held_payment", {}, "milestone_id"),
    ("payment-release", "staff", "held_payment", {}, "amount"),
    ("payment-tips", "customer", "released_payment", {}, "amount"),
    ("stripe-onboarding-link", "doer", None, {"account_type": "individual"}, "organization_id"),
    ("stripe-onboarding-link", "doer", None, {}, "account_type"),
    ("stripe-account-session", "doer", None, {}, "organization_id"),
    ("stripe-account-session", "doer", None, {}, "account_type"),
    ("stripe-account-session", "doer", None, {}, "components"),
    # The whole body: a JSON value that is not an object.
    ("payment-confirm", "customer", "held_payment", None, None),
    ("payment-cancel", "customer", "held_payment", None, None),
    ("payment-retry", "customer", "held_payment", None, None),
    ("payment-create", "customer", None, None, None),
]

#: (endpoint, who asks, the query's parameter).
QUERY_INPUTS = [
    ("payment-list", "customer", "role"),
    ("payment-list", "customer", "organization_id"),
    ("payment-list", "customer", "page"),
    ("payment-list", "customer", "page_size"),
    ("payment-list", "customer", "task_id"),
    ("dashboard-task-doer", "doer", "limit"),
    ("dashboard-task-doer", "doer", "organization_id"),
    ("dashboard-customer", "customer", "limit"),
    ("stripe-account-status", "doer", "organization_id"),
    ("stripe-account-status", "doer", "refresh"),
    ("stripe-dashboard-link", "doer", "organization_id"),
    ("stripe-onboarding-refresh", "doer", "organization_id"),
    ("stripe-onboarding-return", "doer", "organization_id"),
]

#: (endpoint, method, who asks, the payment's state, which path segment is hostile).
PATH_INPUTS = [
    ("payment-detail", "get", "customer", "held_payment", "payment_id"),
    ("payment-confirm", "post", "customer", "held_payment", "payment_id"),
    ("payment-release", "post", "staff", "held_payment", "payment_id"),
    ("payment-refund", "post", "staff", "held_payment", "payment_id"),
    ("payment-cancel", "post", "customer", "held_payment", "payment_id"),
    ("payment-retry", "post", "customer", "held_payment", "payment_id"),
    ("payment-tips", "post", "customer", "released_payment", "payment_id"),
    ("payment-tips", "get", "customer", "released_payment", "payment_id"),
    ("payment-saved-payment-method", "delete", "customer", "released_payment", "payment_id"),
    ("milestone-deliver", "post", "doer", "held_payment", "milestone_id"),
    ("payment-tip-retry-transfer", "post", "staff", "released_payment", "tip_id"),
]


def _quiet_client(market: Marketplace, user: Any) -> Any:
    """An API client answering a server error as a 500 (not raising it), signed in as ``user``."""
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.force_login(user)  # the onboarding pages are plain Django views
    return client


def _refused_cleanly(response: Any, unchanged: Unchanged, *, json_error: bool = True) -> None:
    """A 4xx in the API's error shape (the pages: their own) that left nothing behind."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    if json_error:
        assert set(response.json()) == {"error"}, response.content[:300]
    unchanged.check()


@pytest.fixture
def tips_on(settings: Any, sim_stripe: Any) -> None:
    from tests.payments.conftest import configure

    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})


@pytest.mark.parametrize(("endpoint", "who", "state", "base", "name"), BODY_INPUTS)
def test_hostile_body_values_are_a_4xx_on_every_endpoint(
    market: Marketplace,
    sim_stripe: Any,
    tips_on: None,
    endpoint: str,
    who: str,
    state: str | None,
    base: dict[str, Any] | None,
    name: str | None,
) -> None:
    """Never a 500, whatever the JSON: each hostile value of each input is a 4xx
    with nothing written and nothing sent to Stripe."""
    payment = getattr(market, state)() if state else None
    task = market.task()
    user = getattr(market, who)
    client = _quiet_client(market, user)
    args = [str(payment.pk)] if payment is not None else []
    url = reverse(f"escrow_connect:{endpoint}", args=args)
    for value in HOSTILE_JSON:
        if base is None:
            body: Any = value
        else:
            body = {k: str(task.pk) if v == "TASK" else v for k, v in base.items()}
            body[name] = value
        unchanged = Unchanged(sim_stripe)
        with market.capture(execute=True):
            response = client.post(url, json.dumps(body), content_type="application/json")
        if response.status_code < 400 and _valid_anyway(name, value):
            continue
        _refused_cleanly(response, unchanged)


@pytest.mark.parametrize(("endpoint", "who", "name"), QUERY_INPUTS)
def test_hostile_query_values_are_never_a_server_error(
    market: Marketplace, sim_stripe: Any, endpoint: str, who: str, name: str
) -> None:
    """A query parameter the view cannot use is a 4xx (or ignored: a page size
    past the maximum is the maximum); never a 500, nothing written."""
    market.released_payment(to_org=True)
    user = getattr(market, who)
    client = _quiet_client(market, user)
    url = reverse(f"escrow_connect:{endpoint}")
    page = endpoint.startswith("stripe-onboarding-r")
    for value in HOSTILE_TEXT:
        unchanged = Unchanged(sim_stripe)
        with market.capture(execute=True):
            response = client.get(url, {name: value})
        if response.status_code < 400:
            continue  # ignored, or a valid reading of the value
        _refused_cleanly(response, unchanged, json_error=not page)


@pytest.mark.parametrize(("endpoint", "method", "who", "state", "segment"), PATH_INPUTS)
def test_hostile_path_ids_are_a_404(
    market: Marketplace,
    sim_stripe: Any,
    tips_on: None,
    endpoint: str,
    method: str,
    who: str,
    state: str,
    segment: str,
) -> None:
    payment = getattr(market, state)()
    client = _quiet_client(market, getattr(market, who))
    for value in HOSTILE_TEXT:
        ids = {"payment_id": str(payment.pk), "milestone_id": "1", "tip_id": str(uuid.uuid4())}
        ids[segment] = value
        second = {"milestone-deliver": "milestone_id", "payment-tip-retry-transfer": "tip_id"}
        args = [ids["payment_id"]] + ([ids[second[endpoint]]] if endpoint in second else [])
        url = reverse(f"escrow_connect:{endpoint}", args=args)
        unchanged = Unchanged(sim_stripe)
        with market.capture(execute=True):
            response = getattr(client, method)(url, {}, format="json")
        assert response.status_code == 404, (value[:20], response.status_code, response.content)
        _refused_cleanly(response, unchanged)
