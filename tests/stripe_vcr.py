"""What every cassette-replaying suite shares: the record mode, the API key
and the request matchers (see ``docs/cassettes.md``).

The matchers are the package's own rather than vcrpy's ``body``: vcrpy 8
(the last release for Python 3.10) crashes parsing the form body of a request
that has none (``POST .../capture`` with no parameters), and the comparison
rules (parameter order ignored, optionally UUIDs normalised) are ours to
state anyway.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import parse_qsl

import pytest

#: Used when replaying; never valid, so a cassette miss cannot charge anyone.
REPLAY_API_KEY = "sk_test_cassette_replay_only"

STRIPE_HEADERS = ("Idempotency-Key", "Stripe-Version", "Stripe-Account")
FILTER_HEADERS = ["authorization", "x-stripe-client-user-agent", "user-agent"]

_RECORD_MODES = {"1": "once", "once": "once", "all": "all", "new_episodes": "new_episodes"}
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")


def record_mode() -> str:
    """``ESCROW_CONNECT_RECORD``: unset/0 replays only, 1/once records new, all re-records."""
    value = os.environ.get("ESCROW_CONNECT_RECORD", "").strip().lower()
    if not value or value in {"0", "no", "false", "none"}:
        return "none"
    if value not in _RECORD_MODES:
        raise pytest.UsageError(
            f"ESCROW_CONNECT_RECORD={value!r}: use 1/once (new cassettes only) or all"
        )
    return _RECORD_MODES[value]


def api_key() -> str:
    if record_mode() == "none":
        return REPLAY_API_KEY
    key = os.environ.get("STRIPE_TEST_SECRET_KEY", "")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise pytest.UsageError(
            "Recording needs STRIPE_TEST_SECRET_KEY=sk_test_... (test mode only)"
        )
    return key


def normalise_uuids(text: str) -> str:
    return _UUID.sub("<uuid>", text)


def form_pairs(request: Any, *, normalise: bool = False) -> list[tuple[str, str]]:
    """The request's form parameters, sorted; a request without a body has none."""
    body = request.body or b""
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    if body.lstrip().startswith("{"):
        # A /v2 request: a JSON body, compared as data (key order does not matter).
        return [("<json>", json.dumps(json.loads(body), sort_keys=True))]
    pairs = parse_qsl(body, keep_blank_values=True)
    if normalise:
        pairs = [
            (k, "<task>" if k == "metadata[task_id]" else normalise_uuids(v)) for k, v in pairs
        ]
    return sorted(pairs)


def form_body_matcher(*, normalise: bool = False) -> Any:
    def form_body(live: Any, recorded: Any) -> None:
        sent = form_pairs(live, normalise=normalise)
        stored = form_pairs(recorded, normalise=normalise)
        if sent != stored:
            raise AssertionError(f"form body: sent {sent}, cassette has {stored}")

    return form_body


def stripe_headers_matcher(*, normalise: bool = False) -> Any:
    """The request carries the recorded Idempotency-Key, Stripe-Version and Stripe-Account.

    A cassette without ``Idempotency-Key`` is a call where stripe-python adds
    its own random key (no caller key is passed); any key matches then.
    """

    def stripe_headers(live: Any, recorded: Any) -> None:
        for name in STRIPE_HEADERS:
            expected = recorded.headers.get(name)
            actual = live.headers.get(name)
            if name == "Idempotency-Key":
                if expected is None:
                    continue
                if normalise:
                    expected = normalise_uuids(expected)
                    actual = normalise_uuids(actual) if actual else None
            if actual != expected:
                raise AssertionError(f"{name}: sent {actual!r}, cassette has {expected!r}")

    return stripe_headers


def garble(cassette: Any, index: int, body: bytes, content_type: str = "application/json") -> None:
    """What reaches the package in place of the cassette's answer ``index``."""
    _, response = cassette.data[index]
    response["body"]["string"] = body
    response["headers"]["Content-Type"] = [content_type]


def error_answer(cassette: Any, index: int, status: int, body: bytes) -> None:
    """Stripe's answer ``index`` turned into an error answer with ``body``.

    Stripe's headers (its ``Request-Id``) stay: the answer came from Stripe.
    """
    garble(cassette, index, body)
    _, response = cassette.data[index]
    response["status"] = {"code": status, "message": "Error"}


def answer_from_a_proxy(
    cassette: Any, index: int, status: int, body: bytes, content_type: str = "text/html"
) -> None:
    """A proxy's or WAF's own answer in place of Stripe's answer ``index``.

    The request may or may not have gone on to Stripe: the answer carries
    none of Stripe's headers (no ``Request-Id``), only the proxy's status.
    """
    garble(cassette, index, body, content_type)
    _, response = cassette.data[index]
    response["status"] = {"code": status, "message": "Proxy"}
    response["headers"] = {
        name: value
        for name, value in response["headers"].items()
        if name in ("Server", "Date", "Content-Type")
    }
