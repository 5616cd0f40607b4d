"""Every Stripe failure reaches callers as a package exception, never a ``stripe`` type.

HTTP errors replay authored cassettes (pinned to record mode "none": Stripe
cannot be made to fail on demand). Network failures use a socket on
127.0.0.1 that accepts and never answers, or refuses outright.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from datetime import timezone as dt_timezone
from io import StringIO
from typing import Any

import pytest
import stripe
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    CardDeclined,
    EscrowConnectError,
    GatewayAuthenticationFailed,
    GatewayError,
    GatewayPermissionDenied,
    IdempotencyConflict,
    InvalidRequest,
    RateLimited,
    ResourceMissing,
    TemporarilyUnavailable,
    UnreadableAnswer,
)
from django_escrow_connect.gateway import get_gateway
from django_escrow_connect.gateway.stripe_gateway import StripeGateway, translate_error
from django_escrow_connect.gateway.types import AccountSnapshot
from django_escrow_connect.observability import metrics_snapshot
from django_escrow_connect.services.outcomes import refund_request
from django_escrow_connect.services.payments import (
    capture_request,
    payment_intent_request,
    reversal_request,
    transfer_request,
)
from django_escrow_connect.states import MoneyOperationKind as K
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import registry
from tests.stripe_vcr import answer_from_a_proxy, api_key, error_answer, garble
from tests.webhooks.conftest import events

from .service_requests import ACCOUNT, DECLINED, SEPARATE, TOO_SMALL, TRANSFER, send


def release_transfer(gateway: StripeGateway, amount: int = 11250) -> Any:
    """The release of SEPARATE, as services.payments sends it (same key each time)."""
    key = SEPARATE.key(K.TRANSFER)
    return send(gateway, K.TRANSFER, transfer_request(SEPARATE, amount, ACCOUNT, key), key=key)


def _reverse_everything(gateway: StripeGateway) -> Any:
    key = SEPARATE.key(K.REVERSAL, 1)
    return send(gateway, K.REVERSAL, reversal_request(SEPARATE, TRANSFER, 11250, key), key=key)


def _refund_before_release(gateway: StripeGateway) -> Any:
    key = SEPARATE.key(K.REFUND)
    return send(gateway, K.REFUND, refund_request(SEPARATE, SEPARATE.amount, "", key), key=key)


CALLS: dict[str, Callable[[StripeGateway], Any]] = {
    "capture": lambda g: send(
        g,
        K.CAPTURE,
        capture_request(DECLINED),
        key=DECLINED.key(K.CAPTURE),
        target=DECLINED.stripe_payment_intent_id,
    ),
    "create_intent": lambda g: send(
        g,
        K.PAYMENT_INTENT,
        payment_intent_request(TOO_SMALL, ""),
        key=TOO_SMALL.key(K.PAYMENT_INTENT),
    ),
    "retrieve_account": lambda g: g.retrieve_account(ACCOUNT),
    "retrieve_dispute": lambda g: g.retrieve_dispute("dp_1QzV7kPk9xR2vLq7Jm3Xb9Qe"),
    "retrieve_missing_transfer": lambda g: g.retrieve_transfer("tr_1QzZ0aPk9xR2vLq7Mz9Nq4Xe"),
    "reverse_transfer": _reverse_everything,
    "release_changed_amount": lambda g: release_transfer(g, amount=9999),
    "release": release_transfer,
    "refund": _refund_before_release,
    "retrieve_intent": lambda g: g.retrieve_payment_intent("pi_3QzSaBPk9xR2vLq70aH4nM2c"),
}


def case(cassette: str, call: str, exc: type[GatewayError], **attrs: Any) -> Any:
    return pytest.param(call, exc, attrs, marks=pytest.mark.default_cassette(cassette), id=cassette)


ERROR_CASES = [
    case(
        "error_card_declined",
        "capture",
        CardDeclined,
        http_status=402,
        code="card_declined",
        decline_code="insufficient_funds",
        request_id="req_Dq7Nw2Kx5LcVzR",
        should_retry=False,
        error_type="card_error",
        is_transient=False,
    ),
    case(
        "error_invalid_param",
        "create_intent",
        InvalidRequest,
        http_status=400,
        code="amount_too_small",
        param="amount",
        message="Amount must be at least $0.50 usd",
        should_retry=None,
        is_transient=False,
    ),
    case(
        "error_authentication",
        "retrieve_account",
        GatewayAuthenticationFailed,
        http_status=401,
        request_id="req_Ma2Xc6Vr9TkLpQ",
        is_transient=False,
    ),
    case(
        "error_permission",
        "retrieve_dispute",
        GatewayPermissionDenied,
        http_status=403,
        is_transient=False,
    ),
    case(
        "error_resource_missing",
        "retrieve_missing_transfer",
        ResourceMissing,
        http_status=404,
        code="resource_missing",
        param="id",
        is_transient=False,
    ),
    case(
        "error_balance_insufficient",
        "reverse_transfer",
        BalanceInsufficient,
        http_status=400,
        code="balance_insufficient",
        should_retry=False,
        is_transient=False,
    ),
    case(
        "error_idempotency_mismatch",
        "release_changed_amount",
        IdempotencyConflict,
        http_status=400,
        error_type="idempotency_error",
        is_transient=False,
    ),
    case(
        "error_idempotency_in_progress",
        "release",
        IdempotencyConflict,
        http_status=409,
        error_type="idempotency_error",
        should_retry=True,
        is_transient=True,
    ),
    case(
        "error_lock_timeout",
        "refund",
        TemporarilyUnavailable,
        http_status=409,
        code="lock_timeout",
        should_retry=True,
        is_transient=True,
    ),
    case(
        "error_rate_limited",
        "retrieve_intent",
        RateLimited,
        http_status=429,
        code="rate_limit",
        should_retry=None,
        is_transient=True,
    ),
    case(
        "error_rate_limited_should_retry_false",
        "retrieve_intent",
        RateLimited,
        http_status=429,
        should_retry=False,
        is_transient=True,
    ),
    case(
        "error_api_error_500",
        "release",
        TemporarilyUnavailable,
        http_status=500,
        error_type="api_error",
        request_id="req_Rk5Zp8Vd2TqWnX",
        is_transient=True,
    ),
    case(
        # nginx's own page, not Stripe's: who answered, and whether Stripe
        # acted, is unknown (test_an_error_answer_without_stripes_error_object...).
        "error_unavailable_503",
        "retrieve_account",
        UnreadableAnswer,
        http_status=None,
        code="unreadable_answer",
        request_id=None,
        is_transient=True,
    ),
]


@pytest.mark.vcr(record_mode="none")
@pytest.mark.parametrize(("call", "exc_class", "attrs"), ERROR_CASES)
def test_http_errors_are_translated(gateway, vcr, call, exc_class, attrs):
    with pytest.raises(exc_class) as excinfo:
        CALLS[call](gateway)

    error = excinfo.value
    assert type(error) is exc_class
    assert isinstance(error, EscrowConnectError)
    assert not isinstance(error, stripe.StripeError)
    assert error.__cause__ is None
    assert error.__suppress_context__
    for name, expected in attrs.items():
        assert getattr(error, name) == expected, name
    assert vcr.play_count == 1  # max_network_retries=0: one request, no retry


#: What a proxy or WAF in front of Stripe answers itself.
WAF_PAGE = b"<html><head><title>403 Forbidden</title></head><body>Request blocked.</body></html>"
PROXY_PAGE = b"<html><body><h1>400 Bad Request</h1></body></html>"
BAD_GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def proxy_case(cassette: str, call: str, status: int, body: bytes, content_type: str) -> Any:
    return pytest.param(
        call,
        status,
        body,
        content_type,
        marks=pytest.mark.default_cassette(cassette),
        id=f"{status}-{call}-{content_type.split('/')[1]}",
    )


@pytest.mark.vcr(record_mode="none")
@pytest.mark.parametrize(
    ("call", "status", "body", "content_type"),
    [
        proxy_case("error_permission", "retrieve_dispute", 403, WAF_PAGE, "text/html"),
        proxy_case("error_api_error_500", "release", 400, PROXY_PAGE, "text/html"),
        proxy_case("error_authentication", "retrieve_account", 407, PROXY_PAGE, "text/html"),
        proxy_case(
            "error_invalid_param",
            "create_intent",
            400,
            b'{"message": "Bad Request"}',
            "application/json",
        ),
        proxy_case("error_api_error_500", "release", 502, BAD_GATEWAY_PAGE, "text/html"),
        proxy_case("error_unavailable_503", "retrieve_account", 504, PROXY_PAGE, "text/html"),
        proxy_case(
            "error_api_error_500",
            "release",
            500,
            b'{"message": "Internal Server Error"}',
            "application/json",
        ),
    ],
)
def test_an_error_answer_without_stripes_error_object_is_unreadable(
    gateway, vcr, call, status, body, content_type
):
    # Stripe's own 4xx and 5xx (test_http_errors_are_translated) always carry
    # an ``error`` object; this one may have come from a proxy before or after
    # Stripe acted, so it is "outcome unknown" and a money call keeps its key:
    # neither a refusal (4xx) nor a failure Stripe stored under the key (5xx).
    answer_from_a_proxy(vcr, 0, status, body, content_type)

    with pytest.raises(UnreadableAnswer) as excinfo:
        CALLS[call](gateway)

    error = excinfo.value
    assert error.is_transient
    assert (error.http_status, error.code, error.request_id) == (None, "unreadable_answer", None)
    assert str(status) in error.message
    assert vcr.play_count == 1


@pytest.mark.vcr(record_mode="none")
@pytest.mark.parametrize(
    ("call", "raised", "request_id"),
    [
        pytest.param(
            "retrieve_account",
            UnreadableAnswer,
            "req_T4kWn8cQz1HyRe",
            marks=pytest.mark.default_cassette("accounts_retrieve"),
            id="200",
        ),
        # A 429 stays RateLimited, and keeps the id all the same.
        pytest.param(
            "retrieve_intent",
            RateLimited,
            "req_Qx7Nc2Tv5WmKzB",
            marks=pytest.mark.default_cassette("error_rate_limited"),
            id="429",
        ),
    ],
)
def test_an_undecodable_answer_from_stripe_keeps_its_request_id(
    gateway, vcr, call, raised, request_id
):
    # stripe-python hands the headers of a body it cannot decode over as the
    # error's json_body: Stripe's request id is still the one to look up.
    garble(vcr, 0, b"<html><body>Service is running</body></html>", "text/html")

    with pytest.raises(raised) as excinfo:
        CALLS[call](gateway)

    assert excinfo.value.request_id == request_id


#: Error answers whose ``error`` is no object stripe-python can read: it
#: fails on them (an AttributeError) before any StripeError exists.
MALFORMED_ERRORS = [b'{"error": null}', b'{"error": 5}', b'{"error": []}', b'{"error": "gone"}']


#: An account read per API version: the call, its cassette and its answer's request id.
ACCOUNT_READS = {
    "v1": (lambda g: g.retrieve_account(ACCOUNT), "accounts_retrieve", "req_T4kWn8cQz1HyRe"),
    "v2": (lambda g: g.retrieve_account_v2(ACCOUNT), "accounts_v2_retrieve", "req_V2rEtR9mXo1LtB"),
}


def account_read_case(version: str, status: int) -> Any:
    call, cassette, request_id = ACCOUNT_READS[version]
    return pytest.param(
        status,
        call,
        request_id,
        marks=pytest.mark.default_cassette(cassette),
        id=f"{version}-{status}",
    )


@pytest.mark.vcr(record_mode="none")
@pytest.mark.parametrize("body", MALFORMED_ERRORS, ids=lambda body: body.decode())
@pytest.mark.parametrize(
    ("status", "call", "request_id"),
    [account_read_case("v1", 400), account_read_case("v1", 500), account_read_case("v2", 402)],
)
def test_an_error_answer_stripe_python_cannot_read_is_unreadable(
    gateway, vcr, caplog, body, status, call, request_id
):
    # Neither a refusal nor a failure stored under the key: as after a
    # timeout, the outcome is unknown and a money call keeps its key.
    error_answer(vcr, 0, status, body)

    with pytest.raises(UnreadableAnswer) as excinfo:
        call(gateway)

    error = excinfo.value
    assert error.is_transient
    assert (error.http_status, error.code, error.request_id) == (
        None,
        "unreadable_answer",
        request_id,
    )
    assert str(status) in error.message
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.stripe_request_id == request_id
    assert vcr.play_count == 1


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("accounts_retrieve")
@pytest.mark.parametrize("body", MALFORMED_ERRORS, ids=lambda body: body.decode())
def test_a_429_stripe_python_cannot_read_stays_rate_limited(gateway, vcr, body):
    # Whatever its body, a 429 asks to slow down (and alerts as a 429).
    error_answer(vcr, 0, 429, body)

    with pytest.raises(RateLimited) as excinfo:
        gateway.retrieve_account(ACCOUNT)

    assert (excinfo.value.http_status, excinfo.value.request_id) == (429, "req_T4kWn8cQz1HyRe")


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("events_list_two_pages")
def test_a_later_pages_error_answer_stripe_python_cannot_read_keeps_its_request_id(
    gateway, vcr, caplog
):
    # The page is fetched while the caller iterates: the failure is read from
    # stripe-python's frame, with that answer's status and request id.
    gateway.page_size = 2
    error_answer(vcr, 1, 500, b'{"error": null}')

    with pytest.raises(UnreadableAnswer) as excinfo:
        list(_list_events(gateway))

    assert excinfo.value.request_id == "req_Pw1Hx5Rc9TmQzV"
    assert "HTTP 500" in excinfo.value.message
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.stripe_request_id == "req_Pw1Hx5Rc9TmQzV"


def test_an_attribute_error_of_the_packages_own_is_not_taken_for_an_answer(gateway, monkeypatch):
    # Only stripe-python's reading of an error answer is narrowed to
    # "unreadable": a bug of the package stays a bug, loud.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'get'")

    monkeypatch.setattr(type(gateway.client.v1.accounts), "retrieve", broken)

    with pytest.raises(AttributeError):
        gateway.retrieve_account(ACCOUNT)


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("error_rate_limited")
def test_a_proxys_429_is_rate_limited(gateway, vcr):
    # Whoever sends it, a 429 asks to try again later: already transient.
    answer_from_a_proxy(vcr, 0, 429, b"<html><body>Too Many Requests</body></html>")

    with pytest.raises(RateLimited) as excinfo:
        CALLS["retrieve_intent"](gateway)

    assert (excinfo.value.http_status, excinfo.value.is_transient) == (429, True)


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("error_card_declined")
def test_a_decline_message_is_kept_and_the_key_is_not_leaked(gateway):
    with pytest.raises(CardDeclined) as excinfo:
        CALLS["capture"](gateway)

    text = f"{excinfo.value} {excinfo.value!r}"
    assert "Your card has insufficient funds." in text
    assert "req_Dq7Nw2Kx5LcVzR" in text
    assert "sk_test_" not in text


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("retry_after_500")
def test_sdk_retries_resend_the_callers_idempotency_key(vcr, monkeypatch):
    # Both recorded requests demand the same Idempotency-Key header.
    monkeypatch.setattr(stripe.HTTPClient, "_sleep_time_seconds", lambda self, n: 0)
    gateway = StripeGateway(api_key="sk_test_cassette_replay_only", max_network_retries=1)

    transfer = release_transfer(gateway)

    assert transfer.id == "tr_1QzTfGPk9xR2vLq7sD4kXq2L"
    assert vcr.play_count == 2


# --- network failures --------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """http://127.0.0.1:PORT that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.fixture
def refusing_address() -> str:
    """http://127.0.0.1:PORT where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_read_timeout_is_temporarily_unavailable(silent_server):
    gateway = StripeGateway(
        api_key="sk_test_local", api_base=silent_server, timeout=0.3, max_network_retries=0
    )

    started = time.monotonic()
    with pytest.raises(TemporarilyUnavailable) as excinfo:
        release_transfer(gateway)
    elapsed = time.monotonic() - started

    assert elapsed < 5, "STRIPE_TIMEOUT was not applied to the HTTP client"
    error = excinfo.value
    assert error.http_status is None
    assert error.should_retry is True
    assert error.is_transient
    assert "Timeout" in error.message


def test_timeout_comes_from_settings(silent_server, settings):
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "STRIPE_API_BASE": silent_server,
        "STRIPE_TIMEOUT": 0.3,
        "STRIPE_MAX_NETWORK_RETRIES": 0,
    }
    started = time.monotonic()
    with pytest.raises(TemporarilyUnavailable):
        StripeGateway().retrieve_account(ACCOUNT)
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_temporarily_unavailable(refusing_address):
    gateway = StripeGateway(api_key="sk_test_local", api_base=refusing_address, timeout=2)

    with pytest.raises(TemporarilyUnavailable) as excinfo:
        gateway.retrieve_account(ACCOUNT)

    assert excinfo.value.http_status is None
    assert excinfo.value.is_transient


# --- translation rules that cassettes cannot reach ------------------------------------


def test_a_conflict_without_idempotency_error_is_transient():
    exc = stripe.APIError(
        "Conflict", "{}", 409, {"error": {"type": "api_error", "message": "Conflict"}}, {}
    )
    error = translate_error(exc)
    assert type(error) is TemporarilyUnavailable
    assert error.is_transient


def test_a_rate_limit_coded_as_400_is_rate_limited():
    body = {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "slow"}}
    exc = stripe.RateLimitError("slow", "{}", 400, body, {"Request-Id": "req_1"})
    error = translate_error(exc)
    assert type(error) is RateLimited
    assert error.request_id == "req_1"


def test_an_undecodable_success_answer_is_unreadable_not_a_refusal():
    # stripe-python's "Invalid response body from API": a 200 it could not decode.
    exc = stripe.APIError(
        "Invalid response body from API", "<html>", 200, None, {"Request-Id": "req_2"}
    )
    error = translate_error(exc)
    assert type(error) is UnreadableAnswer
    assert isinstance(error, TemporarilyUnavailable)
    assert error.is_transient
    # As after a timeout: no status, so no caller takes the answer for a stored refusal.
    assert (error.http_status, error.code, error.request_id) == (None, "unreadable_answer", "req_2")


def test_a_decline_with_an_unreadable_payment_intent_stays_a_decline():
    body = {
        "error": {
            "type": "card_error",
            "code": "authentication_required",
            "message": "This payment requires authentication.",
            "payment_intent": {"object": "payment_intent", "amount": "1200"},
        }
    }
    exc = stripe.CardError(
        "This payment requires authentication.",
        None,
        "authentication_required",
        http_status=402,
        json_body=body,
    )
    error = translate_error(exc)
    assert type(error) is CardDeclined
    assert error.code == "authentication_required"
    assert error.payment_intent is None


#: A list answer in another shape: an object where a page should be, a page
#: without a list, a page whose item is no object.
A_TRANSFER_FOR_A_PAGE = b'{"id": "tr_1QzTfGPk9xR2vLq7sD4kXq2L", "object": "transfer"}'
A_PAGE_WITHOUT_A_LIST = b'{"object": "list", "url": "/v1/refunds", "has_more": false, "data": 2}'
A_PAGE_OF_IDS = (
    b'{"object": "list", "url": "/v1/events", "has_more": false,'
    b' "data": ["evt_1QzV7kQm5HwJ3uVeZ6t1YhB0"]}'
)


def _list_events(gateway: Any) -> list[Any]:
    listed = gateway.list_events(
        created_gte=1793610845,
        types=registry.event_types(WebhookEndpoint.CONNECT),
        stripe_account=ACCOUNT,
    )
    return list(listed)


def list_case(
    cassette: str, page_size: int, index: int, body: bytes, read: Callable[[StripeGateway], Any]
) -> Any:
    return pytest.param(
        page_size, index, body, read, marks=pytest.mark.default_cassette(cassette), id=cassette
    )


@pytest.mark.vcr(record_mode="none")
@pytest.mark.parametrize(
    ("page_size", "index", "body", "read"),
    [
        # The second page, fetched while iterating.
        list_case(
            "transfers_list_two_pages",
            1,
            1,
            A_TRANSFER_FOR_A_PAGE,
            lambda g: g.list_transfers(transfer_group=SEPARATE.transfer_group),
        ),
        list_case(
            "refunds_list",
            100,
            0,
            A_PAGE_WITHOUT_A_LIST,
            lambda g: g.list_refunds(payment_intent="pi_3QzSaBPk9xR2vLq70aH4nM2c"),
        ),
        list_case("events_list_two_pages", 2, 1, A_PAGE_OF_IDS, _list_events),
        # stripe-python asserts that a later v2 page is a list.
        list_case(
            "accounts_v2_list",
            100,
            1,
            b'{"id": "acct_1QzR8tQm5HwJ3uVe", "object": "v2.core.account"}',
            lambda g: g.list_accounts_v2(),
        ),
        # An object where the first page should be: its class's auto_paging_iter
        # would list every refund with stripe-python's global key.
        pytest.param(
            100,
            0,
            b'{"id": "re_3QzSaBPk9xR2vLq70cR2uH6j", "object": "refund"}',
            lambda g: g.list_refunds(payment_intent="pi_3QzSaBPk9xR2vLq70aH4nM2c"),
            marks=pytest.mark.default_cassette("refunds_list"),
            id="refunds_list-an_object",
        ),
    ],
)
def test_a_list_page_of_another_shape_is_unreadable(gateway, vcr, page_size, index, body, read):
    # outcomes.lookup and escrow_fetch_missed_events catch GatewayError: a
    # bare AttributeError from the paging was a 500 or a dead command.
    gateway.page_size = page_size
    garble(vcr, index, body)

    with pytest.raises(UnreadableAnswer) as excinfo:
        read(gateway)

    assert (excinfo.value.http_status, excinfo.value.code) == (None, "unreadable_answer")
    assert vcr.play_count == index + 1


#: The cassette's ``created[gte]``: what ``--since`` asks for.
EVENTS_SINCE = "2026-11-02T09:14:05+00:00"


@pytest.fixture
def fetch_from_the_cassette(
    db: Any, settings: Any, monkeypatch: Any
) -> Callable[[StringIO, StringIO], None]:
    """``escrow_fetch_missed_events`` for ACCOUNT through the real gateway,
    replaying ``events_list_two_pages``: the clock is set a week after the
    cassette's ``created[gte]``, inside the Events API's 30 days (else the
    command would ask from 30 days before today, which no cassette holds),
    and pages hold two events, as in the cassette."""
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": "django_escrow_connect.gateway.stripe_gateway.StripeGateway",
        "STRIPE_SECRET_KEY": api_key(),
        "STRIPE_MAX_NETWORK_RETRIES": 0,
    }
    monkeypatch.setattr(StripeGateway, "page_size", 2)
    a_week_later = datetime(2026, 11, 9, 9, 14, 5, tzinfo=dt_timezone.utc)
    monkeypatch.setattr(timezone, "now", lambda: a_week_later)

    def fetch(out: StringIO, err: StringIO) -> None:
        call_command(
            "escrow_fetch_missed_events",
            *("--since", EVENTS_SINCE, "--account", ACCOUNT),
            *("--no-platform", "--no-thin-events"),
            stdout=out,
            stderr=err,
        )

    return fetch


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("events_list_two_pages")
def test_fetch_missed_events_records_both_pages_of_the_cassette(vcr, fetch_from_the_cassette):
    # What the next test's failure is measured against: the same run, read.
    out = StringIO()
    fetch_from_the_cassette(out, StringIO())

    assert f"{ACCOUNT}: 3 events, 3 new" in out.getvalue()
    assert vcr.play_count == 2
    assert events().count() == 3


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("events_list_two_pages")
def test_fetch_missed_events_reports_a_page_it_cannot_read(vcr, caplog, fetch_from_the_cassette):
    """The second page is no list of events: the run fails (exit 1), says
    the account could not be listed and asks for the same period again, and
    records the first page's events (read before the failure; they were
    thrown away). The failure, after list_events returned, is counted as a
    failed Stripe call and logged with the second page's request id."""
    garble(vcr, 1, A_PAGE_OF_IDS)
    before = unreadable_listings()

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 sources could not be listed") as failed:
        fetch_from_the_cassette(out, err)

    assert vcr.play_count == 2
    assert f"{ACCOUNT}: Stripe could not list events" in err.getvalue()
    assert "run it again with the same --since" in str(failed.value)
    assert f"{ACCOUNT}: 2 events, 2 new" in out.getvalue()
    assert "read before its listing failed" in out.getvalue()
    assert events().count() == 2
    assert unreadable_listings() == before + 1
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("unreadable Stripe answer")]
    assert logged.stripe_request_id == "req_Pw1Hx5Rc9TmQzV"


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("accounts_retrieve")
def test_a_bug_reading_an_answer_is_unknown_and_logged_with_its_traceback(
    gateway, vcr, caplog, monkeypatch
):
    # Stripe has acted whatever the reason the answer cannot be read, so the
    # outcome stays unknown (same key); the traceback tells a bug of the
    # package from an answer of another shape.
    def buggy(data: dict[str, Any]) -> Any:
        return data["no such field"]

    monkeypatch.setattr(AccountSnapshot, "from_dict", buggy)

    with pytest.raises(UnreadableAnswer) as excinfo:
        gateway.retrieve_account(ACCOUNT)

    assert excinfo.value.request_id == "req_T4kWn8cQz1HyRe"
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("unreadable Stripe answer")]
    assert logged.exc_info is not None
    assert 'return data["no such field"]' in caplog.text  # the failing line of the reader


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("events_retrieve_connected")
def test_an_event_that_is_no_object_is_unreadable(gateway, vcr):
    garble(vcr, 0, b'"evt_1QzW3nQm5HwJ3uVeF8a2LpTs"')

    with pytest.raises(UnreadableAnswer):
        gateway.retrieve_event("evt_1QzW3nQm5HwJ3uVeF8a2LpTs", stripe_account=ACCOUNT)


def unreadable_listings() -> int:
    return sum(
        entry["count"]
        for entry in metrics_snapshot()["stripe_errors"]
        if (entry["method"], entry["code"], entry["http_status"])
        == ("list_events", "unreadable_answer", "none")
    )


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("events_list_two_pages")
@pytest.mark.parametrize(
    ("index", "request_id"),
    [(0, "req_Sd6Kq2Nz8XbTwC"), (1, "req_Pw1Hx5Rc9TmQzV")],
    ids=["first_page", "later_page"],
)
def test_an_unreadable_event_is_counted_and_logged_with_its_pages_request_id(
    db, settings, vcr, caplog, monkeypatch, index, request_id
):
    # The events are read while escrow_fetch_missed_events iterates, after
    # list_events has returned: a failure then is a failed Stripe call all
    # the same, and the log names the page to look up in Stripe's request log.
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": "django_escrow_connect.gateway.stripe_gateway.StripeGateway",
        "STRIPE_SECRET_KEY": api_key(),
        "STRIPE_MAX_NETWORK_RETRIES": 0,
    }
    monkeypatch.setattr(StripeGateway, "page_size", 2)
    garble(vcr, index, A_PAGE_OF_IDS)
    before = unreadable_listings()

    with pytest.raises(UnreadableAnswer) as excinfo:
        _list_events(get_gateway())

    assert excinfo.value.request_id == request_id
    assert unreadable_listings() == before + 1
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("unreadable Stripe answer")]
    assert logged.stripe_request_id == request_id
    assert vcr.play_count == index + 1
