"""Stripe's webhook signature scheme, without ``stripe``.

``Stripe-Signature: t=<unix>,v1=<hex>`` where ``v1`` is
HMAC-SHA256(secret, ``"<t>.<raw body>"``). The simulated gateway signs the
events it delivers and verifies webhooks with these functions; they behave
like :func:`django_escrow_connect.gateway.stripe_gateway.verify_webhook_payload`
(same checks, same exceptions), so a host can switch gateways without its
webhook endpoint noticing. Tests can sign payloads here without importing
``stripe`` either.

This module must not import ``stripe``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..exceptions import InvalidWebhookPayload, SignatureVerificationFailed

__all__ = [
    "SIGNATURE_SCHEME",
    "compute_signature",
    "parse_signature_header",
    "sign_webhook_payload",
    "signature_matches",
    "verify_webhook_payload",
]

#: The only signature scheme Stripe uses for webhook endpoints.
SIGNATURE_SCHEME = "v1"


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` keyed with ``secret``."""
    signed = f"{int(timestamp)}.".encode() + bytes(payload)
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign_webhook_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A valid ``Stripe-Signature`` header for ``payload`` (tests, simulated gateway).

    Same scheme as ``stripe.WebhookSignature.generate_signature_header``,
    computed over the raw bytes; ``timestamp`` defaults to now.
    """
    if timestamp is None:
        timestamp = int(time.time())
    return f"t={int(timestamp)},{SIGNATURE_SCHEME}={compute_signature(payload, secret, timestamp)}"


def parse_signature_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and the ``v1`` signatures of a ``Stripe-Signature`` header.

    Raises :class:`SignatureVerificationFailed` when the header has no
    integer ``t`` or no ``v1`` signature (other schemes, such as Stripe's
    ``v0`` test signatures, are ignored).
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                break
        elif key == SIGNATURE_SCHEME and value:
            signatures.append(value)
    if timestamp is None:
        raise SignatureVerificationFailed(
            "Unable to extract a timestamp from the Stripe-Signature header."
        )
    if not signatures:
        raise SignatureVerificationFailed("No v1 signature found in the Stripe-Signature header.")
    return timestamp, signatures


def signature_matches(payload: bytes, header: str, secret: str, tolerance: int | None) -> bool:
    """Whether ``header`` signs ``payload`` with ``secret`` and is recent enough.

    Like ``stripe.WebhookSignature.verify_header``: any ``v1`` signature may
    match (constant-time comparison), and only timestamps older than
    ``tolerance`` seconds are rejected (``None`` or ``0``: no age check).
    """
    try:
        timestamp, signatures = parse_signature_header(header)
    except SignatureVerificationFailed:
        return False
    expected = compute_signature(payload, secret, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        return False
    return not (tolerance and timestamp < time.time() - tolerance)


class _NotJSON(ValueError):
    """Python's json module accepts it; JSON (and PostgreSQL's jsonb) does not."""


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"the number {text[:40]} is out of range.")
    return value


#: ``(payload, header, secret, tolerance) -> bool``: whether one secret signs the payload.
SignatureCheck = Callable[[bytes, str, str, "int | None"], bool]


def verify_webhook_payload(
    payload: bytes,
    sig_header: str | None,
    secrets: Sequence[str],
    tolerance: int,
    *,
    matches: SignatureCheck | None = None,
) -> dict[str, Any]:
    """Verify a webhook and return its event as a plain dict.

    The ``Stripe-Signature`` header is checked against each of ``secrets``
    (several are accepted during a rotation; any match counts), and its
    timestamp must be at most ``tolerance`` seconds old. Raises
    :class:`SignatureVerificationFailed` (missing/malformed/wrong/stale
    signature, or no secret configured) and :class:`InvalidWebhookPayload`
    (body not UTF-8, not JSON, nested beyond Python's recursion limit, with
    ``NaN``/``Infinity`` or a number out of a double's range, or not an event
    object) - never ``UnicodeDecodeError``, ``JSONDecodeError`` or
    ``RecursionError``.

    ``matches`` checks one secret (default :func:`signature_matches`); the
    Stripe gateway passes stripe-python's own check, so both gateways share
    every other rule here.
    """
    check = matches or signature_matches
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance <= 0:
        raise ValueError("tolerance must be a positive number of seconds")
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of signing secrets, not a single string")
    usable = [secret for secret in secrets if secret and secret.strip()]
    if not usable:
        raise SignatureVerificationFailed("No webhook signing secret is configured.")
    if not sig_header:
        raise SignatureVerificationFailed("The Stripe-Signature header is missing.")
    body = bytes(payload)
    try:
        # Stripe signs the UTF-8 text of the body; anything else is not a webhook.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWebhookPayload("The webhook body is not valid UTF-8.") from None

    if not any(check(body, sig_header, secret, tolerance) for secret in usable):
        # Tell a stale (possibly replayed) delivery apart from a wrong signature.
        if any(check(body, sig_header, secret, None) for secret in usable):
            raise SignatureVerificationFailed(
                f"The Stripe-Signature timestamp is more than {tolerance} seconds old."
            )
        raise SignatureVerificationFailed(
            "No signature in the Stripe-Signature header matches a configured secret."
        )

    try:
        event = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidWebhookPayload("The webhook body is nested too deeply.") from None
    except _NotJSON as exc:
        raise InvalidWebhookPayload(f"The webhook body is not valid JSON: {exc}") from None
    except ValueError:
        raise InvalidWebhookPayload("The webhook body is not valid JSON.") from None
    if not isinstance(event, dict):
        raise InvalidWebhookPayload("The webhook body is not a JSON object.")
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise InvalidWebhookPayload("The webhook body is not an event (no 'id' or 'type').")
    return event
