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
    status_history,
    stripe,
    url_for,
)

pytestmark = pytest.mark.django_db

ACCOUNT = "acct_1TestConnected000001"


def test_an_exact_replay_is_a_duplicate_and_moves_money_once(
    deliver: Any,  # noqa: F811
    make_payment: Any,  # noqa: F811
    sent: Any,  # noqa: F811
    stripe: Any,  # noqa: F811
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
    assert stripe.calls == []


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
