"""Malformed input schemathesis does not send, on every endpoint that reads any.

A body that is not a JSON object, numbers past 64 bits, floats and booleans
where an integer is due, NUL characters (PostgreSQL refuses them in text),
very long and non-ASCII strings, junk in query strings, path ids and the
``Idempotency-Key`` header. Each is refused with a 4xx in the API's error
shape, and nothing is written (no row changed, no Stripe call). Run it on
PostgreSQL too (``DATABASE_URL``): that is where a NUL or an out-of-range
integer reaching a query ends in a 500.
"""

from __future__ import annotations

import io
import json
import tempfile
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.test import RequestFactory
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import resolve, reverse
from rest_framework.test import force_authenticate

from tests.payments.conftest import Marketplace

from .conftest import snapshot

pytestmark = pytest.mark.django_db

#: Not an integer amount, or not one any column holds. Raw JSON text: ``1e3``
#: and ``10.0`` are numbers ``json.dumps`` would never write.
NOT_AN_AMOUNT = [
    "9223372036854775808",  # 2**63: past a bigint
    "1000000000000000000000000000000",  # 10**30
    "-1",
    "0",
    "10.5",
    "1e3",
    "100.0",
    "true",
    "null",
    '"\\u0000"',
    '"12\\u0000"',
    '"\\u0661\\u0662"',  # Arabic-Indic digits: str.isdigit() says yes
    '"' + "9" * 5000 + '"',
    "[100]",
    '{"value": 100}',
]
#: Text no key or id is: a NUL, an unpaired surrogate, far too long.
NOT_AN_ID = [
    '"\\u0000"',
    '"1\\u0000"',
    '"\\ud800"',
    '"' + "x" * 10_000 + '"',
    '"\\u00fc\\u00f1\\u00ef"',
    "9223372036854775808",
    "1000000000000000000000000000000",
    '"9223372036854775808"',
    '"-1"',
    '"1.5"',
    "1.5",
    "true",
    "[]",
    "{}",
]
#: What even free text refuses (a reason is cut to 64 characters, not refused).
FREE_TEXT_REFUSES = ['"\\u0000"', '"1\\u0000"', '"\\ud800"', "true", "[]", "{}"]
#: JSON that is not an object: never read as no fields (``{}`` on a release
#: is "everything held").
JSON_NOT_AN_OBJECT = ["null", "[]", "[1, 2]", "1", '"text"', "true"]
#: Bodies that are not a JSON object, sent as ``application/json``.
NOT_AN_OBJECT = ["{", "not json", *JSON_NOT_AN_OBJECT, '{"a": 1}}', "\ufeff{}"]


class Endpoints:
    """Who may call each endpoint, and on what, so a refusal is the input's."""

    def __init__(self, market: Marketplace, sim_stripe: Any) -> None:
        self.market = market
        self.stripe = sim_stripe
        self.held = market.held_payment()
        self.released = market.released_payment()
        self.task = market.task()

    def url(self, name: str, *args: Any) -> str:
        return reverse(f"escrow_connect:{name}", args=[str(a) for a in args])

    def posts(self) -> list[tuple[Any, str, dict[str, str]]]:
        """(user, url, {field: valid JSON text}) of every POST with a body."""
        m = self.market
        return [
            (m.customer, self.url("payment-create"), {"task_id": json.dumps(str(self.task.pk))}),
            (m.doer, self.url("payment-refund", self.held.pk), {"amount": "100", "reason": '""'}),
            (m.customer, self.url("payment-release", self.held.pk), {"amount": "100"}),
            (m.customer, self.url("payment-tips", self.released.pk), {"amount": "100"}),
            (m.customer, self.url("payment-confirm", self.held.pk), {}),
            (m.customer, self.url("payment-cancel", self.held.pk), {}),
            (m.customer, self.url("payment-retry", self.held.pk), {}),
            (m.doer, self.url("milestone-deliver", self.held.pk, 1), {}),
            (m.staff, self.url("payment-tip-retry-transfer", self.released.pk, uuid.uuid4()), {}),
            (m.doer, self.url("stripe-onboarding-link"), {"account_type": '"individual"'}),
            (m.doer, self.url("stripe-account-session"), {}),
        ]


@pytest.fixture
def endpoints(market: Marketplace, settings: Any, sim_stripe: Any) -> Endpoints:
    from tests.payments.conftest import configure

    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})
    return Endpoints(market, sim_stripe)


def refused(endpoints: Endpoints, user: Any, method: str, url: str, **kwargs: Any) -> Any:
    """The response to a request that must be refused: a 4xx in the error
    shape, with nothing written and Stripe not called."""
    before, calls_before = snapshot(), len(endpoints.stripe.calls)
    market = endpoints.market
    with market.capture(execute=True):
        response = getattr(market.client(user), method)(url, **kwargs)
    assert 400 <= response.status_code < 500, (url, kwargs, response.status_code, response.content)
    assert "code" in response.json()["error"], response.content
    assert snapshot() == before, (url, kwargs)
    assert len(endpoints.stripe.calls) == calls_before, (url, kwargs)
    return response


def with_field(fields: dict[str, str], name: str, raw: str) -> str:
    """A JSON object's text: ``fields`` (values as JSON text) with ``name`` set to ``raw``."""
    return json_object({**fields, name: raw})


def json_object(fields: dict[str, str]) -> str:
    """A JSON object's text: ``fields``, values as JSON text."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def test_a_body_that_is_not_a_json_object_is_refused(endpoints: Endpoints, sim_stripe: Any) -> None:
    for user, url, _fields in endpoints.posts():
        for body in NOT_AN_OBJECT:
            refused(endpoints, user, "post", url, data=body, content_type="application/json")
        refused(
            endpoints,
            user,
            "post",
            url,
            data="amount=100&task_id=1",
            content_type="application/x-www-form-urlencoded",
        )
        refused(endpoints, user, "post", url, data=b"\xff\xfe{}", content_type="text/plain")


def test_json_that_is_not_an_object_is_an_invalid_body(endpoints: Endpoints) -> None:
    """``null`` too: it was read as ``{}``, so a release of ``null`` released everything."""
    for user, url, _fields in endpoints.posts():
        for body in JSON_NOT_AN_OBJECT:
            response = refused(
                endpoints, user, "post", url, data=body, content_type="application/json"
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid"
            assert response.json()["error"]["fields"] == {
                "non_field_errors": ["Send a JSON object."]
            }


def test_a_form_body_that_names_no_field_is_refused_not_read_as_empty(
    endpoints: Endpoints,
) -> None:
    """A multipart body with content but no field (a list sent as a form) was
    read as ``{}``: a release released everything held."""
    garbled = f"--{BOUNDARY}\r\n[{{'a': 1}}, ['b']]--{BOUNDARY}--\r\n"
    for user, url, _fields in endpoints.posts():
        response = refused(
            endpoints, user, "post", url, data=garbled, content_type=MULTIPART_CONTENT
        )
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["code"] == "parse_error"


def test_garbage_past_the_first_kilobyte_of_a_form_is_refused(endpoints: Endpoints) -> None:
    """Only separators in the bytes kept, content after them: not an empty form."""
    garbled = f"--{BOUNDARY}\r\n" + "\r\n" * 600 + f"[{{'a': 1}}]--{BOUNDARY}--\r\n"
    market = endpoints.market
    url = endpoints.url("payment-release", endpoints.held.pk)
    response = refused(
        endpoints, market.customer, "post", url, data=garbled, content_type=MULTIPART_CONTENT
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        # What Django's test client and a browser's empty FormData send.
        (encode_multipart(BOUNDARY, {}), MULTIPART_CONTENT),
        # The boundary as Django reads it: any case, spaces, quotes.
        ("--a;b--\r\n", 'multipart/form-data; Boundary = "a;b" ; charset=utf-8'),
        # Exactly the bytes kept, all separators.
        (f"--{BOUNDARY}--".ljust(1024), MULTIPART_CONTENT),
        ("&&", "application/x-www-form-urlencoded"),
    ],
    ids=["multipart", "multipart-quoted-boundary", "multipart-1024", "urlencoded"],
)
def test_an_empty_form_is_no_fields_as_an_empty_body_is(
    endpoints: Endpoints, data: str, content_type: str
) -> None:
    market = endpoints.market
    url = endpoints.url("payment-confirm", endpoints.held.pk)
    with market.capture(execute=True):
        response = market.client(market.customer).post(url, data=data, content_type=content_type)
    assert response.status_code == 200, response.content
    assert market.payment(endpoints.held.pk).status == "released"


def test_a_blank_page_number_is_refused_not_read_as_the_first_page(
    endpoints: Endpoints,
) -> None:
    market = endpoints.market
    response = market.client(market.customer).get(reverse("escrow_connect:payment-list") + "?page=")
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"


def test_a_form_past_django_s_limits_is_a_400_in_the_error_shape(
    endpoints: Endpoints, settings: Any
) -> None:
    """Django refuses such a form with its own HTML 400; the API answers JSON."""
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = {f"field{i}": "1" for i in range(6)}
    for user, url, _fields in endpoints.posts():
        for data, content_type in (
            (urlencode(fields), "application/x-www-form-urlencoded"),
            (encode_multipart(BOUNDARY, fields), MULTIPART_CONTENT),
        ):
            response = refused(endpoints, user, "post", url, data=data, content_type=content_type)
            assert response.json()["error"]["code"] == "parse_error"


def test_a_body_past_data_upload_max_memory_size_is_a_413_unread(
    endpoints: Endpoints, settings: Any
) -> None:
    """Django's limit holds for ``request.body``; DRF's parsers read the stream.

    Each JSON body is a valid request but for its size (whitespace pads it);
    a form over the limit was a ``400 parse_error``.
    """
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    for user, url, fields in endpoints.posts():
        for data, content_type in (
            (json_object(fields).ljust(201), "application/json"),
            (encode_multipart(BOUNDARY, {"padding": "x" * 201}), MULTIPART_CONTENT),
        ):
            response = refused(endpoints, user, "post", url, data=data, content_type=content_type)
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "request_too_large"


def test_an_understated_content_length_is_not_read_past_the_limit(
    endpoints: Endpoints, settings: Any
) -> None:
    """An ASGI server hands Django the whole body, whatever Content-Length said."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    response = asgi_refund(endpoints, '{"amount": 100}'.ljust(1000), content_length="15")
    assert response.status_code == 413, response.data
    assert response.data["error"]["code"] == "request_too_large"


class Unreadable(io.RawIOBase):
    """A request body that must not be read."""

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the body was read")


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read(
    endpoints: Endpoints, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    response = wsgi_refund(endpoints, CONTENT_LENGTH="201", **{"wsgi.input": Unreadable()})
    assert response.status_code == 413, response.data
    assert response.data["error"]["code"] == "request_too_large"


class Python310Spool(io.BytesIO):
    """Django's spooled ASGI body as Python 3.10 builds it: it seeks, but its
    SpooledTemporaryFile has no ``seekable()`` (3.11 added it)."""

    def seekable(self) -> bool:
        raise AttributeError("'SpooledTemporaryFile' object has no attribute 'seekable'")


def already_read(body: bytes) -> io.BytesIO:
    """A spooled body a host's middleware has read to its end."""
    stream = io.BytesIO(body)
    stream.read()
    return stream


@pytest.mark.parametrize(
    "spool",
    [
        pytest.param(lambda body: spooled(body), id="spooled"),
        pytest.param(Python310Spool, id="python-3.10"),
        pytest.param(already_read, id="already-read"),
    ],
)
def test_a_body_without_content_length_is_refused_not_read_as_empty(
    endpoints: Endpoints, spool: Any
) -> None:
    """A chunked ASGI request: DRF reads no body without Content-Length, so a
    refund of 100 was a refund of ``{}``, everything."""
    response = asgi_refund(endpoints, '{"amount": 100}', content_length=None, spool=spool)
    assert response.status_code == 411, response.data
    assert response.data["error"]["code"] == "length_required"


def spooled(body: bytes) -> Any:
    """The body as Django's ASGI handler spools it."""
    stream = tempfile.SpooledTemporaryFile(max_size=1024)  # noqa: SIM115 - the request owns it
    stream.write(body)
    stream.seek(0)
    return stream


def test_a_chunked_wsgi_body_is_refused_not_read_as_empty(endpoints: Endpoints) -> None:
    """A chunked request under WSGI (gunicorn passes ``Transfer-Encoding`` and
    no ``CONTENT_LENGTH``): Django hands the view no body at all, so the
    refund of 100 was read as ``{}``, a refund of everything."""
    response = wsgi_refund(endpoints, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 411, response.data
    assert response.data["error"]["code"] == "length_required"


def wsgi_refund(endpoints: Endpoints, **environ: Any) -> Any:
    """The doer's refund of 100 as a WSGI request with ``environ`` over the
    test client's, checked to write nothing."""
    url = endpoints.url("payment-refund", endpoints.held.pk)
    request = RequestFactory().post(
        url, data='{"amount": 100}', content_type="application/json", **environ
    )
    return refund(endpoints, request)


def asgi_refund(
    endpoints: Endpoints, body: str, *, content_length: str | None, spool: Any = io.BytesIO
) -> Any:
    """The doer's refund of the held payment as an ASGI request with ``body``
    (as ``spool`` holds it) and that Content-Length header (``None``: none),
    checked to write nothing."""
    url = endpoints.url("payment-refund", endpoints.held.pk)
    headers = [(b"content-type", b"application/json"), (b"host", b"testserver")]
    if content_length is not None:
        headers.append((b"content-length", content_length.encode()))
    scope = {"type": "http", "method": "POST", "path": url, "query_string": b"", "headers": headers}
    return refund(endpoints, ASGIRequest(scope, spool(body.encode())))


def refund(endpoints: Endpoints, request: Any) -> Any:
    """The doer's ``request`` to refund the held payment, checked to write nothing."""
    url = endpoints.url("payment-refund", endpoints.held.pk)
    force_authenticate(request, user=endpoints.market.doer)
    before, calls_before = snapshot(), len(endpoints.stripe.calls)
    match = resolve(url)
    response = match.func(request, *match.args, **match.kwargs)
    assert snapshot() == before
    assert len(endpoints.stripe.calls) == calls_before
    return response


@pytest.mark.parametrize("limit", [200, None])
def test_a_body_within_the_limit_is_read(
    endpoints: Endpoints, settings: Any, limit: int | None
) -> None:
    """A body of exactly the limit is read, and ``None`` is no limit, as for Django."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = limit
    market = endpoints.market
    url = endpoints.url("payment-refund", endpoints.held.pk)
    body = '{"amount": 100}'.ljust(200 if limit else 10_000)
    with market.capture(execute=True):
        response = market.client(market.doer).post(url, data=body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["amount_refunded"] == 100


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("payment-create", "amount"),
        ("payment-create", "milestone"),
        ("payment-refund", "amount"),
        ("payment-release", "amount"),
        ("payment-release", "milestone_id"),
        ("payment-tips", "amount"),
    ],
)
def test_an_integer_field_refuses_what_is_not_an_amount(
    endpoints: Endpoints, sim_stripe: Any, endpoint: str, field: str
) -> None:
    user, url, fields = next(p for p in endpoints.posts() if p[1].endswith(_suffix(endpoint)))
    if field == "amount" and endpoint == "payment-create":
        fields = {**fields, "amount": "10000"}
    for raw in NOT_AN_AMOUNT:
        if field == "milestone" and raw in ("100.0", "1e3"):
            continue  # a whole float is a milestone number to DRF; the task has none
        body = with_field(fields, field, raw)
        refused(endpoints, user, "post", url, data=body, content_type="application/json")


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("payment-create", "task_id"),
        ("payment-refund", "reason"),
        ("stripe-onboarding-link", "account_type"),
        ("stripe-onboarding-link", "organization_id"),
        ("stripe-account-session", "organization_id"),
        ("stripe-account-session", "account_type"),
    ],
)
def test_a_text_field_refuses_what_no_value_of_it_is(
    endpoints: Endpoints, sim_stripe: Any, endpoint: str, field: str
) -> None:
    user, url, fields = next(p for p in endpoints.posts() if p[1].endswith(_suffix(endpoint)))
    for raw in NOT_AN_ID:
        if field == "reason" and raw not in FREE_TEXT_REFUSES:
            continue  # a reason is free text: numbers and long text are reasons
        body = with_field(fields, field, raw)
        refused(endpoints, user, "post", url, data=body, content_type="application/json")


def test_components_refuse_what_is_not_a_list_of_names(
    endpoints: Endpoints, sim_stripe: Any
) -> None:
    url = endpoints.url("stripe-account-session")
    for raw in [
        '["\\u0000"]',
        '["x\\u0000"]',
        '["' + "x" * 1000 + '"]',
        "[1]",
        "[[]]",
        '"x"',
        "[]",
    ]:
        body = with_field({}, "components", raw)
        refused(
            endpoints,
            endpoints.market.doer,
            "post",
            url,
            data=body,
            content_type="application/json",
        )


JUNK_QUERY_VALUES = [
    "\x00",
    "1\x00",
    "-1",
    "0",
    "9223372036854775808",
    "1" * 5000,
    "1.5",
    "\u00fc",
    "' OR 1=1 --",
]


@pytest.mark.parametrize(
    ("endpoint", "param"),
    [
        ("payment-list", "page"),
        ("payment-list", "page_size"),
        ("payment-list", "role"),
        ("payment-list", "organization_id"),
        ("payment-list", "task_id"),
        ("payment-list", "ordering"),
        ("dashboard-customer", "limit"),
        ("dashboard-task-doer", "limit"),
        ("dashboard-task-doer", "organization_id"),
        ("stripe-account-status", "organization_id"),
        ("stripe-account-status", "refresh"),
        ("stripe-dashboard-link", "organization_id"),
    ],
)
def test_junk_in_a_query_string_is_never_a_500(
    endpoints: Endpoints, sim_stripe: Any, endpoint: str, param: str
) -> None:
    """Refused (4xx), or for a parameter that only narrows or pages, an answer
    (``page_size=-1`` is the default page size, ``ordering`` is not read):
    never a 500, and nothing written either way."""
    market = endpoints.market
    user = market.doer if "doer" in endpoint or endpoint.startswith("stripe") else market.customer
    url = endpoints.url(endpoint)
    for value in JUNK_QUERY_VALUES:
        before = snapshot()
        response = market.client(user).get(url, {param: value})
        assert response.status_code < 500, (param, value, response.content)
        if response.status_code >= 400:
            assert "code" in response.json()["error"], response.content
        assert snapshot() == before, (param, value)


def test_a_path_id_that_is_no_id_is_a_404(endpoints: Endpoints, sim_stripe: Any) -> None:
    market = endpoints.market
    for bad in ["0", "-1", "9223372036854775808", "x" * 300, "%00", "1%000", "%C3%BC", "1.5"]:
        for name in (
            "payment-detail",
            "payment-confirm",
            "payment-tips",
            "payment-refund",
            "payment-release",
            "payment-cancel",
            "payment-retry",
            "payment-saved-payment-method",
        ):
            url = endpoints.url(name, "PLACEHOLDER").replace("PLACEHOLDER", bad)
            for method in ("get", "post", "delete"):
                response = market.client(market.customer).generic(method.upper(), url)
                assert response.status_code in (404, 405), (url, response.content)
        held = str(endpoints.held.pk)
        for name, args in (
            ("milestone-deliver", (held, "PLACEHOLDER")),
            ("payment-tip-retry-transfer", (held, "PLACEHOLDER")),
        ):
            url = endpoints.url(name, *args).replace("PLACEHOLDER", bad)
            refused(endpoints, market.staff if "tip" in name else market.doer, "post", url)


@pytest.mark.parametrize("key", ["k" * 256, "\u00fcber", "a\x00b", "a\tb", "", " " * 300, "\u2028"])
def test_a_malformed_idempotency_key_is_refused(
    endpoints: Endpoints, sim_stripe: Any, key: str
) -> None:
    market = endpoints.market
    for user, name, payment, body in (
        (market.doer, "payment-refund", endpoints.held, {"amount": 100}),
        (market.customer, "payment-release", endpoints.held, {"amount": 100}),
        (market.customer, "payment-tips", endpoints.released, {"amount": 100}),
    ):
        url = endpoints.url(name, payment.pk)
        response = refused(
            endpoints, user, "post", url, data=body, format="json", headers={"Idempotency-Key": key}
        )
        if key:
            assert response.json()["error"]["code"] == "invalid_idempotency_key"


def _suffix(endpoint: str) -> str:
    return {
        "payment-create": "/payments/create/",
        "payment-refund": "/refund/",
        "payment-release": "/release/",
        "payment-tips": "/tips/",
        "stripe-onboarding-link": "/stripe/onboarding-link/",
        "stripe-account-session": "/stripe/account-session/",
    }[endpoint]
