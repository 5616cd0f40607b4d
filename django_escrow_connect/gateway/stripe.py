"""Deprecated alias of :mod:`django_escrow_connect.gateway.stripe_gateway` (removed in 0.3).

Renamed because a module called ``stripe`` inside the package reads like the
``stripe`` library itself. ``ESCROW_CONNECT["GATEWAY"]`` set to
``"django_escrow_connect.gateway.stripe.StripeGateway"`` keeps working, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

from .stripe_gateway import (
    StripeGateway,
    build_http_client,
    sign_webhook_payload,
    translate_error,
    translated_errors,
    verify_webhook_payload,
)

__all__ = [
    "StripeGateway",
    "build_http_client",
    "sign_webhook_payload",
    "translate_error",
    "translated_errors",
    "verify_webhook_payload",
]

warnings.warn(
    "django_escrow_connect.gateway.stripe is deprecated; use "
    "django_escrow_connect.gateway.stripe_gateway (it will be removed in 0.3)",
    DeprecationWarning,
    stacklevel=2,
)
