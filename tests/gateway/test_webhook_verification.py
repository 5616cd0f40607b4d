"""StripeGateway.verify_webhook: signature, rotation, age and body checks."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from django_escrow_connect.exceptions import InvalidWebhookPayload, SignatureVerificationFailed
from django_escrow_connect.gateway.stripe_gateway import StripeGateway, sign_webhook_payload

SECRET = "whsec_platform_current_6f1d2c"
OLD_SECRET = "whsec_platform_previous_93ab7e"
TOLERANCE = 300

EVENT = {
    "id": "evt_1QzW9rPk9xR2vLq7Zc4Nb8Xd",
    "object": "event",
    "api_version": "2026-10-28.endive",
    "created": 1794043200,
    "data": {
        "object": {
            "id": "ch_3QzSaBPk9xR2vLq70b7TeY5d",
            "object": "charge",
            "amount": 12500,
            "balance_transaction": "txn_3QzSaBPk9xR2vLq70qW3sZ8m",
            "currency": "usd",
        },
        "previous_attributes": {"balance_transaction": None},
    },
    "livemode": False,
    "pending_webhooks": 1,
    "request": {"id": None, "idempotency_key": None},
    "type": "charge.updated",
}
PAYLOAD = json.dumps(EVENT, indent=2).encode("utf-8")


@pytest.fixture
def gateway() -> StripeGateway:
    # No API key needed: verification never calls Stripe.
    return StripeGateway()


def verify(gateway, payload=PAYLOAD, header=None, secrets=(SECRET,), tolerance=TOLERANCE):
    if header is None:
        header = sign_webhook_payload(payload, SECRET)
    return gateway.verify_webhook(payload, header, list(secrets), tolerance)


def test_a_valid_signature_returns_the_event_as_a_plain_dict(gateway):
    event = verify(gateway)

    assert event == EVENT
    assert type(event) is dict
    assert type(event["data"]["object"]) is dict


def test_the_helper_signs_exactly_like_stripe_python():
    timestamp = 1794043200
    assert sign_webhook_payload(PAYLOAD, SECRET, timestamp) == (
        stripe.WebhookSignature.generate_signature_header(
            PAYLOAD.decode("utf-8"), SECRET, timestamp=timestamp
        )
    )


def test_a_header_signed_by_stripe_python_is_accepted(gateway):
    header = stripe.WebhookSignature.generate_signature_header(PAYLOAD.decode("utf-8"), SECRET)
    assert verify(gateway, header=header)["id"] == EVENT["id"]


def test_a_wrong_secret_is_rejected(gateway):
    header = sign_webhook_payload(PAYLOAD, "whsec_someone_else")
    with pytest.raises(SignatureVerificationFailed, match="matches"):
        verify(gateway, header=header)


def test_a_tampered_body_is_rejected(gateway):
    header = sign_webhook_payload(PAYLOAD, SECRET)
    tampered = PAYLOAD.replace(b"12500", b"99999")
    with pytest.raises(SignatureVerificationFailed):
        verify(gateway, payload=tampered, header=header)


def test_during_rotation_the_second_secret_may_match(gateway):
    header = sign_webhook_payload(PAYLOAD, OLD_SECRET)
    event = verify(gateway, header=header, secrets=[SECRET, OLD_SECRET])
    assert event["id"] == EVENT["id"]


def test_a_header_carrying_signatures_for_both_secrets_is_accepted(gateway):
    timestamp = int(time.time())
    new = sign_webhook_payload(PAYLOAD, SECRET, timestamp).split(",")[1]
    header = f"{sign_webhook_payload(PAYLOAD, OLD_SECRET, timestamp)},{new}"
    assert verify(gateway, header=header, secrets=[SECRET])["id"] == EVENT["id"]


def test_a_stale_timestamp_is_rejected_even_with_a_valid_signature(gateway):
    header = sign_webhook_payload(PAYLOAD, SECRET, timestamp=int(time.time()) - TOLERANCE - 60)
    with pytest.raises(SignatureVerificationFailed, match="seconds old"):
        verify(gateway, header=header)


def test_a_timestamp_within_tolerance_is_accepted(gateway):
    header = sign_webhook_payload(PAYLOAD, SECRET, timestamp=int(time.time()) - TOLERANCE + 30)
    assert verify(gateway, header=header)["id"] == EVENT["id"]


@pytest.mark.parametrize("header", ["", None])
def test_a_missing_header_is_rejected(gateway, header):
    with pytest.raises(SignatureVerificationFailed, match="missing"):
        gateway.verify_webhook(PAYLOAD, header, [SECRET], TOLERANCE)


@pytest.mark.parametrize("header", ["garbage", "t=notanumber,v1=abc", "t=1794043200", "v1=abc"])
def test_a_malformed_header_is_rejected(gateway, header):
    with pytest.raises(SignatureVerificationFailed):
        verify(gateway, header=header)


@pytest.mark.parametrize("secrets", [[], [""], ["  "]])
def test_without_a_configured_secret_nothing_is_accepted(gateway, secrets):
    with pytest.raises(SignatureVerificationFailed, match="secret"):
        verify(gateway, secrets=secrets)


def test_a_single_string_is_not_mistaken_for_a_list_of_secrets(gateway):
    with pytest.raises(TypeError):
        gateway.verify_webhook(PAYLOAD, sign_webhook_payload(PAYLOAD, SECRET), SECRET, TOLERANCE)


@pytest.mark.parametrize("tolerance", [0, -1])
def test_the_age_check_cannot_be_switched_off(gateway, tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        verify(gateway, tolerance=tolerance)


def test_a_non_utf8_body_is_an_invalid_payload_not_a_unicode_error(gateway):
    body = b'{"id": "evt_1", "type": "charge.updated", "note": "caf\xe9"}'
    with pytest.raises(InvalidWebhookPayload, match="UTF-8"):
        verify(gateway, payload=body, header=sign_webhook_payload(body, SECRET))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>not json</html>", "JSON"),
        (b"", "JSON"),
        (b'["evt_1"]', "object"),
        (b'{"object": "event"}', "event"),
    ],
)
def test_a_signed_body_that_is_not_an_event_is_an_invalid_payload(gateway, body, match):
    with pytest.raises(InvalidWebhookPayload, match=match):
        verify(gateway, payload=body, header=sign_webhook_payload(body, SECRET))


def test_an_unsigned_non_json_body_fails_on_the_signature_first(gateway):
    body = b"not json"
    with pytest.raises(SignatureVerificationFailed):
        verify(gateway, payload=body, header=sign_webhook_payload(body, "whsec_someone_else"))
