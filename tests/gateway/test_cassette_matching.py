"""The cassette matchers refuse what Stripe would not have answered the same way.

Every replay test relies on ``tests/stripe_vcr.py``: a request that differs
from the stored one in its form body or Stripe headers must be a cassette
miss, never a silent replay. A miss surfaces from the gateway as a connection
failure (vcrpy raises inside the HTTP stack), so no recorded answer is used.
"""

from __future__ import annotations

import pytest
from vcr.request import Request

from django_escrow_connect.exceptions import TemporarilyUnavailable
from django_escrow_connect.services.payments import capture_request
from django_escrow_connect.states import MoneyOperationKind as K
from tests.stripe_vcr import form_body_matcher, form_pairs, stripe_headers_matcher

from .service_requests import DESTINATION, send

CAPTURE_URI = "https://api.stripe.com/v1/payment_intents/pi_1/capture"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def request(body: bytes | str | None, **headers: str) -> Request:
    return Request("POST", CAPTURE_URI, body, {**FORM, **headers})


class TestFormBody:
    def test_parameter_order_does_not_matter(self):
        form_body_matcher()(request(b"a=1&b=2"), request("b=2&a=1"))

    @pytest.mark.parametrize(
        "stored",
        [
            b"amount_to_capture=15000",
            b"a=1&a=2",
            None,
            b"amount_to_capture=1500&application_fee_amount=150",
        ],
    )
    def test_a_changed_value_or_parameter_is_a_miss(self, stored):
        with pytest.raises(AssertionError, match="form body"):
            form_body_matcher()(request(b"amount_to_capture=1500"), request(stored))

    def test_a_renamed_metadata_key_is_a_miss(self):
        with pytest.raises(AssertionError, match="form body"):
            form_body_matcher(normalise=True)(
                request("metadata[payment_id]=731"), request("metadata[escrow_payment_id]=731")
            )

    def test_a_request_without_a_body_has_no_parameters(self):
        assert form_pairs(request(None)) == []
        form_body_matcher()(request(None), request(b""))

    def test_normalising_ignores_uuids_and_the_task_id_only(self):
        live = request("transfer_group=escrow-6f1c2a0e5b7d4c3e9a8b1c2d3e4f5a6b&metadata[task_id]=7")
        stored = request(
            "transfer_group=escrow-00000000-0000-0000-0000-000000000000&metadata[task_id]=x"
        )
        form_body_matcher(normalise=True)(live, stored)
        with pytest.raises(AssertionError):
            form_body_matcher()(live, stored)
        with pytest.raises(AssertionError):
            form_body_matcher(normalise=True)(request("amount=1"), request("amount=2"))


class TestStripeHeaders:
    def test_same_headers_match(self):
        headers = {"Idempotency-Key": "k", "Stripe-Version": "v", "Stripe-Account": "acct_1"}
        stripe_headers_matcher()(request(None, **headers), request(None, **headers))

    @pytest.mark.parametrize(
        ("sent", "stored"),
        [
            ({"Idempotency-Key": "escrow:1:capture"}, {"Idempotency-Key": "escrow:2:capture"}),
            ({"Stripe-Version": "2026-10-28.endive"}, {"Stripe-Version": "2025-01-27.acacia"}),
            ({}, {"Stripe-Account": "acct_1"}),
            ({"Stripe-Account": "acct_1"}, {}),
        ],
    )
    def test_a_different_header_is_a_miss(self, sent, stored):
        with pytest.raises(AssertionError):
            stripe_headers_matcher()(request(None, **sent), request(None, **stored))

    def test_a_stored_request_without_a_key_accepts_the_sdk_s_random_one(self):
        stripe_headers_matcher()(request(None, **{"Idempotency-Key": "uuid"}), request(None))


CAPTURE = capture_request(DESTINATION)


@pytest.mark.vcr
@pytest.mark.default_cassette("payment_intents_capture")
def test_the_request_the_service_sends_is_answered(gateway, vcr):
    """The control for the misses below: only their difference makes them miss."""
    send(
        gateway,
        K.CAPTURE,
        CAPTURE,
        key=DESTINATION.key(K.CAPTURE),
        target=DESTINATION.stripe_payment_intent_id,
    )
    assert vcr.play_count == 1


@pytest.mark.vcr
@pytest.mark.default_cassette("payment_intents_capture")
@pytest.mark.parametrize(
    ("key", "request_"),
    [
        (DESTINATION.key(K.CAPTURE, 1), CAPTURE),  # another attempt's key
        (DESTINATION.key(K.CAPTURE), {"application_fee_amount": 2029}),  # another fee
        (DESTINATION.key(K.CAPTURE), {**CAPTURE, "amount_to_capture": 20000}),  # one more
        (DESTINATION.key(K.CAPTURE), {}),  # one fewer
    ],
)
def test_a_gateway_call_that_differs_from_the_cassette_is_not_answered(gateway, vcr, key, request_):
    with pytest.raises(TemporarilyUnavailable, match="CannotOverwriteExistingCassetteException"):
        send(gateway, K.CAPTURE, request_, key=key, target=DESTINATION.stripe_payment_intent_id)
    assert vcr.play_count == 0
