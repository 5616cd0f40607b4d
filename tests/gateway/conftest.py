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

from django_escrow_connect.gateway.stripe import StripeGateway

CASSETTE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cassettes", "gateway")

#: Used when replaying; never valid, so a cassette miss cannot charge anyone.
REPLAY_API_KEY = "sk_test_cassette_replay_only"

_RECORD_MODES = {"1": "once", "once": "once", "all": "all", "new_episodes": "new_episodes"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_STRIPE_HEADERS = ("Idempotency-Key", "Stripe-Version", "Stripe-Account")


def record_mode() -> str:
    value = os.environ.get("ESCROW_CONNECT_RECORD", "").strip().lower()
    if not value or value in {"0", "no", "false", "none"}:
        return "none"
    if value not in _RECORD_MODES:
        raise pytest.UsageError(
            f"ESCROW_CONNECT_RECORD={value!r}: use 1/once (new cassettes only) or all"
        )
    return _RECORD_MODES[value]


RECORDING = record_mode() != "none"


def stripe_headers_matcher(live: Any, recorded: Any) -> None:
    """The request carries the recorded Idempotency-Key, Stripe-Version and Stripe-Account.

    A cassette without ``Idempotency-Key`` is a call where stripe-python adds
    its own random key (no caller key is passed); any key matches then.
    """
    for name in _STRIPE_HEADERS:
        expected = recorded.headers.get(name)
        actual = live.headers.get(name)
        if name == "Idempotency-Key" and expected is None:
            continue
        if actual != expected:
            raise AssertionError(f"{name}: sent {actual!r}, cassette has {expected!r}")


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
    vcr.register_matcher("stripe_headers", stripe_headers_matcher)


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    return {
        "record_mode": record_mode(),
        "match_on": ["method", "path", "query", "body", "stripe_headers"],
        "filter_headers": ["authorization", "x-stripe-client-user-agent", "user-agent"],
        "before_record_request": _drop_sdk_idempotency_key,
        "before_record_response": _scrub_response,
        "decode_compressed_response": True,
    }


@pytest.fixture(scope="session")
def vcr_cassette_dir() -> str:
    return CASSETTE_DIR


def api_key() -> str:
    if not RECORDING:
        return REPLAY_API_KEY
    key = os.environ.get("STRIPE_TEST_SECRET_KEY", "")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise pytest.UsageError(
            "Recording needs STRIPE_TEST_SECRET_KEY=sk_test_... (test mode only)"
        )
    return key


@pytest.fixture
def gateway() -> StripeGateway:
    """A gateway that fails fast: no SDK retries, short timeout."""
    return StripeGateway(api_key=api_key(), max_network_retries=0, timeout=5)
