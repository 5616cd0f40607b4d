"""VCR set-up for the Stripe gateway tests.

Cassettes live in ``tests/cassettes/gateway/``. By default they are only
replayed (record mode ``none``): no test can reach the network. Requests match
on method, path (any host, so ``STRIPE_API_BASE`` may differ), query string,
form body (parsed, so key order does not matter) and the ``Idempotency-Key``,
``Stripe-Version`` and ``Stripe-Account`` headers.

Re-recording against Stripe test mode (see ``docs/cassettes.md``)::

    ESCROW_CONNECT_RECORD=all STRIPE_TEST_SECRET_KEY=sk_test_... pytest tests/gateway

``ESCROW_CONNECT_RECORD=1`` (or ``once``) records only cassettes that do not
exist yet. Error cassettes are pinned to ``record_mode="none"`` on their test:
Stripe cannot be made to answer 500 or 429 on demand.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from django_escrow_connect.gateway.stripe_gateway import StripeGateway
from tests.stripe_vcr import (
    FILTER_HEADERS,
    api_key,
    form_body_matcher,
    record_mode,
    stripe_headers_matcher,
)

CASSETTE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cassettes", "gateway")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _drop_sdk_idempotency_key(request: Any) -> Any:
    """When recording, forget stripe-python's random keys (they never replay)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and _UUID.match(key):
        del request.headers["Idempotency-Key"]
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in {
            "set-cookie",
            "content-security-policy",
            "report-to",
            "reporting-endpoints",
        }:
            del headers[name]
    return response


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("stripe_form_body", form_body_matcher())
    vcr.register_matcher("stripe_headers", stripe_headers_matcher())


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    return {
        "record_mode": record_mode(),
        "match_on": ["method", "path", "query", "stripe_form_body", "stripe_headers"],
        "filter_headers": FILTER_HEADERS,
        "before_record_request": _drop_sdk_idempotency_key,
        "before_record_response": _scrub_response,
        "decode_compressed_response": True,
    }


@pytest.fixture(scope="session")
def vcr_cassette_dir() -> str:
    return CASSETTE_DIR


@pytest.fixture
def gateway() -> StripeGateway:
    """A gateway that fails fast: no SDK retries, short timeout."""
    return StripeGateway(api_key=api_key(), max_network_retries=0, timeout=5)
