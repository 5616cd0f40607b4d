"""Webhook cells the endpoint contract (``tests/webhooks/test_endpoints.py``)
does not already prove: the exact same signed request replayed, and events
whose fields have the wrong type or shape. Everything refused answers 4xx
and records no event; a replay answers ``duplicate`` and moves money once.

Forged, missing, malformed and stale signatures, the other endpoint's
secret, a signature of another body, oversized and malformed bodies,
livemode mismatches, a Connect event on the platform endpoint and an event
without ``account`` on the Connect endpoint are in the contract and run
against both endpoints there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.states import WebhookEndpoint
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import (  # noqa: F401 (fixtures)
    SECRETS,
    deliver,
    events,
    intent_for,
    make_payment,
    sent,
    sim_stripe,
    status_history,
    url_for,
)

pytestmark = pytest.mark.django_db

ACCOUNT = "acct_1TestConnected000001"


def test_an_exact_replay_is_a_duplicate_and_moves_money_once(
    deliver: Any,  # noqa: F811
    make_payment: Any,  # noqa: F811
    sent: Any,  # noqa: F811
    sim_stripe: Any,  # noqa: F811
) -> None:
    scene = make_payment()
    payload = so.encode(so.event("payment_intent.succeeded", intent_for(scene, "succeeded")))
    header = sign_webhook_payload(payload, SECRETS[WebhookEndpoint.PLATFORM])
    answers = [
        deliver.post(WebhookEndpoint.PLATFORM, payload, signature=header).json()["status"]
        for _ in range(3)
    ]
    assert answers == ["processed", "duplicate", "duplicate"]
    assert events().count() == 1
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert len(sent.of("payment_held")) == 1
    assert sim_stripe.calls == []


def _odd(evt: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = evt
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return evt


ODD_FIELDS = [
    ("livemode", "false"),
    ("livemode", 0),
    ("livemode", None),
    ("id", 12345),
    ("id", ""),
    ("id", "x" * 10_000),
    ("type", None),
    ("type", ["payment_intent.succeeded"]),
    ("data", "not an object"),
    ("data", []),
    ("data.object", None),
    ("data.object", "pi_123"),
    ("created", "yesterday"),
    ("created", 10**20),
    ("created", -1),
]


@pytest.mark.parametrize("endpoint", [WebhookEndpoint.PLATFORM, WebhookEndpoint.CONNECT])
@pytest.mark.parametrize(("path", "value"), ODD_FIELDS, ids=lambda v: repr(v)[:20])
def test_a_signed_event_with_odd_fields_is_refused(
    deliver: Any,  # noqa: F811
    endpoint: str,
    path: str,
    value: Any,
) -> None:
    account = ACCOUNT if endpoint == WebhookEndpoint.CONNECT else None
    evt = _odd(so.event("escrow_test.unhandled", so.charge(), account=account), path, value)
    response = deliver.post(endpoint, evt)
    assert 400 <= response.status_code < 500, response.content
    assert json.loads(response.content)["error"]["code"] == "invalid_webhook"
    assert events().count() == 0


@pytest.mark.parametrize("account", [123, "", None, ["acct_1"], {"id": ACCOUNT}])
def test_a_connect_event_with_an_odd_account_is_refused(
    deliver: Any,  # noqa: F811
    account: Any,
) -> None:
    evt = so.event("escrow_test.unhandled", so.payout(), account=ACCOUNT)
    evt["account"] = account
    response = deliver.post(WebhookEndpoint.CONNECT, evt)
    assert 400 <= response.status_code < 500, response.content
    assert events().count() == 0


@pytest.mark.parametrize(
    "header",
    [
        "t=1,v1=" + "0" * 64,
        "v1=" + "0" * 64,
        "t=" + "9" * 400 + ",v1=abc",
        ",".join(["v1=" + "0" * 64] * 500),
        "t=\x00,v1=\x00",
    ],
    ids=["epoch", "no timestamp", "huge timestamp", "many signatures", "nul bytes"],
)
def test_hostile_signature_headers_are_refused(deliver: Any, header: str) -> None:  # noqa: F811
    response = deliver.post(
        WebhookEndpoint.PLATFORM, so.event("escrow_test.unhandled", so.charge()), signature=header
    )
    assert response.status_code == 400, response.content
    assert events().count() == 0


# --------------------------------------------------------------------------
# Well-signed but hostile bodies: 2xx (recorded) or a clear 4xx, never a 500.
# The NUL case matters on PostgreSQL, whose jsonb and text columns refuse
# U+0000; run this file with DATABASE_URL set too.
# --------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    """A signed event whose ``data.object.metadata`` is ``depth`` arrays deep."""
    evt = so.event("escrow_test.unhandled", so.charge(metadata="DEEP"))
    return so.encode(evt).replace(b'"DEEP"', b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("depth", [100, 900, 100_000])
def test_a_deeply_nested_body_is_refused_not_a_500(
    deliver: Any,  # noqa: F811
    depth: int,
) -> None:
    response = deliver.post(WebhookEndpoint.PLATFORM, _nested(depth))

    assert response.status_code == 400, response.content
    error = json.loads(response.content)["error"]
    assert error["code"] == "invalid_webhook"
    assert "nested" in error["message"]
    assert events().count() == 0


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"], ids=lambda v: v.decode()
)
def test_a_non_finite_number_is_refused_not_a_500(
    deliver: Any,  # noqa: F811
    literal: bytes,
) -> None:
    body = so.encode(so.event("escrow_test.unhandled", so.charge(amount="AMOUNT")))
    response = deliver.post(WebhookEndpoint.PLATFORM, body.replace(b'"AMOUNT"', literal))

    assert response.status_code == 400, response.content
    assert json.loads(response.content)["error"]["code"] == "invalid_webhook"
    assert events().count() == 0


NUL = "\u0000"
REPLACEMENT = "\ufffd"


@pytest.mark.parametrize("endpoint", [WebhookEndpoint.PLATFORM, WebhookEndpoint.CONNECT])
def test_a_nul_character_in_a_string_is_recorded_without_it(
    deliver: Any,  # noqa: F811
    endpoint: str,
) -> None:
    account = ACCOUNT if endpoint == WebhookEndpoint.CONNECT else None
    obj = so.charge(description=f"a{NUL}b", metadata={f"key{NUL}": f"value{NUL}"})
    evt = so.event("escrow_test.unhandled", obj, account=account)
    body = so.encode(evt)
    assert b"\\u0000" in body

    response = deliver.post(endpoint, body)

    assert response.status_code == 200, response.content
    row = events().get()
    assert row.stripe_event_id == evt["id"]
    stored = row.payload["data"]["object"]
    assert stored["description"] == f"a{REPLACEMENT}b"
    assert stored["metadata"] == {f"key{REPLACEMENT}": f"value{REPLACEMENT}"}


def test_a_handler_sees_the_payload_without_nul_characters(
    deliver: Any,  # noqa: F811
    make_payment: Any,  # noqa: F811
    sim_stripe: Any,  # noqa: F811
) -> None:
    scene = make_payment()
    error = {**so.card_error(), "message": f"Declined{NUL}!"}
    intent = intent_for(scene, "requires_payment_method", last_payment_error=error)

    response = deliver.post(
        WebhookEndpoint.PLATFORM, so.event("payment_intent.payment_failed", intent)
    )

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "processed"
    assert status_history(scene) == ("failed", "payment_failed")
    [incident] = scene.payment.incidents.all()
    assert incident.message == f"Declined{REPLACEMENT}!"


def test_an_unpaired_surrogate_is_recorded_without_it(deliver: Any) -> None:  # noqa: F811
    body = so.encode(so.event("escrow_test.unhandled", so.charge(description="SURROGATE")))
    body = body.replace(b'"SURROGATE"', b'"a\\ud800b"')

    response = deliver.post(WebhookEndpoint.PLATFORM, body)

    assert response.status_code == 200, response.content
    assert events().get().payload["data"]["object"]["description"] == f"a{REPLACEMENT}b"


def test_an_event_the_database_refuses_is_a_clear_400(
    deliver: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last line of defence: whatever a column cannot hold is not a 500."""
    from django.db import DataError

    from django_escrow_connect.webhooks import pipeline

    def refuse(event: Any) -> Any:
        raise DataError("value too long")

    monkeypatch.setattr(pipeline, "process_new", refuse)
    response = deliver.post(
        WebhookEndpoint.PLATFORM, so.event("escrow_test.unhandled", so.charge())
    )

    assert response.status_code == 400, response.content
    assert json.loads(response.content)["error"]["code"] == "invalid_webhook"
    assert events().count() == 0


@pytest.mark.parametrize("path", ["id", "type"])
def test_a_nul_character_in_an_identifier_is_refused(
    deliver: Any,  # noqa: F811
    path: str,
) -> None:
    evt = so.event("escrow_test.unhandled", so.charge())
    evt[path] = f"{evt[path]}{NUL}"

    response = deliver.post(WebhookEndpoint.PLATFORM, evt)

    assert response.status_code == 400, response.content
    assert events().count() == 0


def test_a_nul_character_in_the_connected_account_is_refused(deliver: Any) -> None:  # noqa: F811
    evt = so.event("escrow_test.unhandled", so.payout(), account=f"{ACCOUNT}{NUL}")

    response = deliver.post(WebhookEndpoint.CONNECT, evt)

    assert response.status_code == 400, response.content
    assert events().count() == 0


#: Longer than any Stripe id (255 characters): no id column holds it.
TOO_LONG = "x" * 256


def _intent(scene: Any, **overrides: Any) -> tuple[str, dict[str, Any]]:
    return "payment_intent.succeeded", intent_for(scene, "succeeded", **overrides)


def _of_charge(scene: Any) -> dict[str, Any]:
    payment = scene.payment
    return {"payment_intent": payment.stripe_payment_intent_id, "charge": payment.stripe_charge_id}


def _fee(scene: Any, **overrides: Any) -> tuple[str, dict[str, Any]]:
    payment = scene.payment
    fee = {
        "id": so.new_id("fee"),
        "object": "application_fee",
        "amount": payment.platform_fee,
        "amount_refunded": 0,
        "charge": payment.stripe_charge_id,
        "currency": payment.currency,
    }
    return "application_fee.created", {**fee, **overrides}


def _funds_withdrawn(scene: Any, amount: int) -> tuple[str, dict[str, Any]]:
    dispute = so.dispute(**_of_charge(scene))
    dispute["balance_transactions"] = [so.balance_transaction(amount)]
    return "charge.dispute.funds_withdrawn", dispute


HELD = {"status": "held"}
#: (the payment, the event) with a value the handler cannot read or no column can hold.
UNREADABLE_OBJECTS = {
    "amount past 64 bits": ({}, lambda s: _intent(s, amount=10**30)),
    "latest_charge too long": ({}, lambda s: _intent(s, latest_charge=TOO_LONG)),
    "refund id too long": (
        HELD,
        lambda s: ("refund.created", so.refund(id=TOO_LONG, **_of_charge(s))),
    ),
    "dispute id too long": (
        HELD,
        lambda s: ("charge.dispute.created", so.dispute(id=TOO_LONG, **_of_charge(s))),
    ),
    "transfer id too long": (
        HELD,
        lambda s: (
            "transfer.created",
            so.transfer(
                id=TOO_LONG,
                transfer_group=s.payment.transfer_group,
                destination=s.payment.destination_account_id,
            ),
        ),
    ),
    "dispute funds past 64 bits": (HELD, lambda s: _funds_withdrawn(s, -(10**30))),
    # A currency column holds three lowercase letters (a check constraint on
    # most tables, varchar(3) on PostgreSQL everywhere).
    "refund currency not a currency": (
        HELD,
        lambda s: ("refund.created", so.refund(currency="usdx", **_of_charge(s))),
    ),
    "dispute currency not a currency": (
        HELD,
        lambda s: ("charge.dispute.created", so.dispute(currency="dollars", **_of_charge(s))),
    ),
    "application fee of '1e3'": (
        {"status": "released", "strategy": MANUAL_CAPTURE},
        lambda s: _fee(s, amount="1e3"),
    ),
    "application fee refunded as a list": (
        {"status": "released", "strategy": MANUAL_CAPTURE},
        lambda s: _fee(s, amount_refunded=[100]),
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE_OBJECTS))
def test_an_object_the_handler_cannot_read_is_recorded_failed_not_a_500(
    deliver: Any,  # noqa: F811
    make_payment: Any,  # noqa: F811
    sim_stripe: Any,  # noqa: F811
    sent: Any,  # noqa: F811
    case: str,
) -> None:
    """An id longer than Stripe's (PostgreSQL: varchar(255)), an amount past
    64 bits (SQLite cannot bind it) or an amount that is not an integer failed
    the handler on every delivery: 500, and Stripe retried for days. They are
    refused as unreadable: recorded failed, answered 200, nothing applied."""
    payment_fields, build = UNREADABLE_OBJECTS[case]
    scene = make_payment(**payment_fields)
    before = status_history(scene)
    event_type, obj = build(scene)

    response = deliver.post(WebhookEndpoint.PLATFORM, so.event(event_type, obj))

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    row = events().get()
    assert row.status == "failed"
    assert "cannot be read" in row.last_error
    assert status_history(scene) == before
    assert sent.names() == ["webhook_processing_failed"]


@pytest.mark.parametrize(
    "created",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
    ids=["before year 1 in UTC", "after year 9999 in UTC"],
)
def test_a_thin_event_created_off_the_calendar_is_refused(
    deliver: Any,  # noqa: F811
    created: str,
) -> None:
    """A valid RFC 3339 time whose UTC moment no ``datetime`` can hold."""
    evt = so.thin_event("v2.escrow_test.unhandled", created=created)

    response = deliver.post(WebhookEndpoint.THIN, evt)

    assert response.status_code == 400, response.content
    assert json.loads(response.content)["error"]["code"] == "invalid_webhook"
    assert events().count() == 0


LONGER_THAN_A_CODE_COLUMN = "x" * 300  # the incident's code columns hold 255


@pytest.mark.parametrize(
    ("event_type", "status", "fields"),
    [
        (
            "payment_intent.payment_failed",
            "requires_payment_method",
            {"last_payment_error": {**so.card_error(), "code": LONGER_THAN_A_CODE_COLUMN}},
        ),
        (
            "payment_intent.payment_failed",
            "requires_payment_method",
            {"last_payment_error": {**so.card_error(), "decline_code": LONGER_THAN_A_CODE_COLUMN}},
        ),
        ("payment_intent.canceled", "canceled", {"cancellation_reason": LONGER_THAN_A_CODE_COLUMN}),
    ],
    ids=["error code", "decline code", "cancellation reason"],
)
def test_a_code_longer_than_its_column_is_recorded_cut(
    deliver: Any,  # noqa: F811
    make_payment: Any,  # noqa: F811
    sim_stripe: Any,  # noqa: F811
    event_type: str,
    status: str,
    fields: dict[str, Any],
) -> None:
    """PostgreSQL refuses a string longer than its column (SQLite stores it):
    the event failed there, a 500 Stripe retried for days, and the payment
    never changed. Cut as the payment's own ``failure_code`` is."""
    scene = make_payment()
    intent = intent_for(scene, status, **fields)

    response = deliver.post(WebhookEndpoint.PLATFORM, so.event(event_type, intent))

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "processed"
    [incident] = scene.payment.incidents.all()
    assert incident.code in ("card_declined", LONGER_THAN_A_CODE_COLUMN[:255])
    assert incident.decline_code in ("insufficient_funds", "", LONGER_THAN_A_CODE_COLUMN[:255])
    assert scene.refresh().status in ("failed", "canceled")


def test_a_payout_in_no_currency_is_recorded_failed_not_a_500(
    deliver: Any,  # noqa: F811
    make_payment: Any,  # noqa: F811
    sim_stripe: Any,  # noqa: F811
) -> None:
    """PostgreSQL refused the payout's incident (``currency`` is varchar(3)):
    500 on every delivery. Unreadable instead, like any other such object."""
    scene = make_payment("released", amount_transferred=9_000)
    kit.make_transfer(scene.payment)
    payout = so.payout(status="failed", failure_code="account_closed", currency="usdx")
    evt = so.event("payout.failed", payout, account=scene.account.stripe_account_id)

    response = deliver.post(WebhookEndpoint.CONNECT, evt)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    assert "cannot be read" in events().get().last_error
    assert not swappable.load("TransferIncident").objects.exists()
