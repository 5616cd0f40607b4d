"""schemathesis against the package's own OpenAPI document, in process (WSGI).

Every operation of ``openapi/`` is fuzzed with schema-valid input (bounded
and derandomized: the same examples every run) while signed in as user B,
who has payments of their own. Each response must not be a 5xx, must have a
documented status and content type, and must match the documented schema.
Object-level authorization: user A's payment never shows up in anything B
receives, and every operation that takes a payment id answers 404 to B for
A's payment, with nothing changed.

Then every operation again with schema-INVALID input (schemathesis'
negative mode, as bounded and derandomized): never a 5xx, always a
documented 4xx, and nothing written. A 2xx would mean the server accepts
what its schema forbids (``negative_data_rejection``): the schema and the
server must agree, so that fails too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from django.core.signals import request_finished, request_started  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import close_old_connections  # noqa: E402
from django.test import Client  # noqa: E402
from hypothesis import HealthCheck, Phase, given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests import factories  # noqa: E402
from tests.payments.conftest import Marketplace  # noqa: E402

from .conftest import snapshot  # noqa: E402

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
CSRF_TOKEN = "s" * 32  # an unmasked secret: cookie and header must agree
FUZZ_SETTINGS = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def wsgi(settings: Any, two_users: dict[str, Any]) -> Iterator[Any]:
    """The host's WSGI application, sharing the test's database transaction.

    Like Django's test client, keep ``close_old_connections`` from closing
    the connection the test transaction lives on at the end of each request.
    (After ``two_users``: the test client reconnects it after each request.)
    """
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]  # schemathesis' Host
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def absolute_stripe_urls(monkeypatch: Any) -> None:
    """Stripe's account and login links are absolute ``https`` URLs (the
    schema says ``uri``); the simulated Stripe hands out paths on the host so
    the example project can serve its pages. Make them absolute here."""
    # Patched where the gateway's account methods look them up.
    from django_escrow_connect.simulation import accounts

    for name in ("onboarding_url", "dashboard_url"):
        path_of = getattr(accounts, name)
        monkeypatch.setattr(
            accounts,
            name,
            lambda account_id, p=path_of: "https://connect.stripe.test" + p(account_id),
        )


@pytest.fixture(autouse=True)
def tips_allowed(settings: Any, sim_stripe: Any) -> None:
    """Tips are on, so the tip endpoints answer 201 too, not only refusals."""
    from tests.payments.conftest import configure

    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})


@pytest.fixture
def two_users(market: Marketplace) -> dict[str, Any]:
    """B (``market.customer``) with a held payment and a released one; A
    (``market.other``) with a held payment B must never see."""
    b_held = market.held_payment()
    b_released = market.released_payment(to_org=True)
    a_task = factories.make_task(market.other, payee_user=market.doer)
    response = market.create(a_task, user=market.other)
    assert response.status_code == 201, response.content
    a_payment = market.pay(response.json()["payment_id"])
    return {
        "a": a_payment,
        "b": [b_held, b_released],
        "unpaid_task": market.task(),
        "user": market.customer,
    }


def session_of(user: Any) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value, "csrftoken": CSRF_TOKEN}


def operations(wsgi_app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_wsgi("/escrow/openapi/?format=json", wsgi_app)
    return [result.ok() for result in schema.get_all_operations()]


def test_fuzz_every_operation(
    market: Marketplace, sim_stripe: Any, wsgi: Any, two_users: dict[str, Any]
) -> None:
    cookies = session_of(two_users["user"])
    headers = {"X-CSRFToken": CSRF_TOKEN}
    secret = str(two_users["a"].pk).encode()
    ops = operations(wsgi)
    assert len(ops) >= 12, [op.label for op in ops]
    seen: dict[str, set[int]] = {}

    def fuzz(label: str, strategy: Any) -> None:
        @FUZZ_SETTINGS
        @given(case=strategy)
        def run(case: Any) -> None:
            with market.capture(execute=True):
                response = case.call_and_validate(headers=headers, cookies=cookies, checks=CHECKS)
            seen.setdefault(label, set()).add(response.status_code)
            assert secret not in response.content, (label, response.content[:300])

        run()

    own_payments = [str(p.pk) for p in two_users["b"]]
    for operation in ops:
        # Random ids only find 404s: half the examples use B's own objects.
        strategy = operation.as_strategy()
        if "{payment_id}" in operation.path:
            strategy |= st.sampled_from(own_payments).flatmap(
                lambda pk, op=operation: op.as_strategy(path_parameters={"payment_id": pk})
            )
        elif operation.path.endswith("/payments/create/"):
            strategy |= operation.as_strategy(
                body={"task_id": str(two_users["unpaid_task"].pk)}, media_type="application/json"
            )

        fuzz(operation.label, strategy)

    assert set(seen) == {op.label for op in ops}
    # B's own data was reached, not only refusals.
    for label in (
        "GET /escrow/payments/",
        "GET /escrow/dashboard/customer/",
        "GET /escrow/payments/{payment_id}/",
        "POST /escrow/payments/create/",
    ):
        assert 200 in seen[label], seen


#: Query parameters the server reads more leniently than its schema: DRF's
#: pagination answers the default page size for a ``page_size`` that is not a
#: positive integer (and at most ``max_page_size``). And an empty query
#: parameter is an absent one (``role=``, as an HTML form sends it). Both
#: harmless (reads), so a 200 is accepted for them; everything else invalid
#: must be a 4xx.
LENIENT_PARAMETERS = {"page_size"}


#: The operations whose only input besides the session is a path id typed as
#: any string (``<str:...>`` routes): no value is schema-invalid, so the
#: negative run has nothing to send them. test_malformed_input.py sends them
#: ids that are no ids.
ONLY_PATH_IDS = {
    "DELETE /escrow/payments/{payment_id}/saved-payment-method/",
    "GET /escrow/payments/{payment_id}/",
    "GET /escrow/payments/{payment_id}/tips/",
    "POST /escrow/payments/confirm/{payment_id}/",
    "POST /escrow/payments/{payment_id}/cancel/",
    "POST /escrow/payments/{payment_id}/milestones/{milestone_id}/deliver/",
    "POST /escrow/payments/{payment_id}/retry/",
    "POST /escrow/payments/{payment_id}/tips/{tip_id}/retry-transfer/",
}


def only_lenient_parameters(case: Any) -> bool:
    data = case.meta.phase.data
    names = {m.parameter for m in getattr(data, "mutations", ())} or {data.parameter}
    query = case.query or {}
    return all(name in LENIENT_PARAMETERS or query.get(name) == "" for name in names)


def test_invalid_input_is_refused_with_nothing_written(
    market: Marketplace, sim_stripe: Any, wsgi: Any, two_users: dict[str, Any]
) -> None:
    cookies = session_of(two_users["user"])
    headers = {"X-CSRFToken": CSRF_TOKEN}
    seen: dict[str, set[int]] = {}
    # Operations schemathesis finds no invalid case for (ONLY_PATH_IDS).
    nothing_to_get_wrong: set[str] = set()

    def fuzz(label: str, strategy: Any) -> None:
        @FUZZ_SETTINGS
        @given(case=strategy)
        def run(case: Any) -> None:
            before, calls_before = snapshot(), len(sim_stripe.calls)
            checks = CHECKS if only_lenient_parameters(case) else NEGATIVE_CHECKS
            with market.capture(execute=True):
                response = case.call_and_validate(headers=headers, cookies=cookies, checks=checks)
            seen.setdefault(label, set()).add(response.status_code)
            # A 2xx only where schemathesis found nothing to get wrong (an
            # operation without parameters): negative_data_rejection fails
            # any other.
            if response.status_code >= 400:
                assert snapshot() == before, (label, case.body, case.query)
                assert len(sim_stripe.calls) == calls_before, label

        try:
            run()
        except Unsatisfiable:
            nothing_to_get_wrong.add(label)

    own_payments = [str(p.pk) for p in two_users["b"]]
    ops = operations(wsgi)
    # Signed in, always: a missing session is a 403 the positive run and
    # the authorization matrix already prove, not input to get wrong.
    negative = {"generation_mode": GenerationMode.NEGATIVE, "cookies": cookies}
    for operation in ops:
        strategy = operation.as_strategy(**negative)
        if "{payment_id}" in operation.path:
            # Past the 404 of an unknown payment: B's own, with the rest invalid.
            strategy |= st.sampled_from(own_payments).flatmap(
                lambda pk, op=operation: op.as_strategy(
                    **negative, path_parameters={"payment_id": pk}
                )
            )
        fuzz(operation.label, strategy)

    # Exactly these: a change of the schema or of schemathesis that left
    # another operation without an invalid case would drop it unnoticed.
    assert nothing_to_get_wrong == ONLY_PATH_IDS
    assert set(seen) | nothing_to_get_wrong == {op.label for op in ops}
    # The input itself was refused somewhere, not only unknown payments.
    assert any(400 in statuses for statuses in seen.values()), seen


def test_user_b_never_gets_user_a_s_payment(
    market: Marketplace, sim_stripe: Any, wsgi: Any, two_users: dict[str, Any]
) -> None:
    cookies = session_of(two_users["user"])
    headers = {"X-CSRFToken": CSRF_TOKEN}
    a_id = str(two_users["a"].pk)
    by_id = [op for op in operations(wsgi) if "{payment_id}" in op.path]
    # DELETE saved-payment-method included: user B learns nothing of A's card either.
    assert len(by_id) == 11, [op.label for op in by_id]
    before, calls_before = snapshot(), len(sim_stripe.calls)
    for operation in by_id:
        body = {"body": {}, "media_type": "application/json"} if operation.method == "post" else {}
        if operation.path.endswith("/tips/") and operation.method == "post":
            body = {"body": {"amount": 100}, "media_type": "application/json"}
        path_parameters = {"payment_id": a_id}
        if "{milestone_id}" in operation.path:
            path_parameters["milestone_id"] = "1"
        if "{tip_id}" in operation.path:
            path_parameters["tip_id"] = "00000000-0000-0000-0000-000000000001"
        case = operation.Case(path_parameters=path_parameters, **body)
        with market.capture(execute=True):
            response = case.call_and_validate(headers=headers, cookies=cookies, checks=CHECKS)
        assert response.status_code == 404, (operation.label, response.content)
        assert a_id.encode() not in response.content
    assert snapshot() == before
    assert len(sim_stripe.calls) == calls_before
