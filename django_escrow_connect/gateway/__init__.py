"""The seam between the package and the payment provider.

Services call :func:`get_gateway` and program against
:class:`~.base.PaymentGateway`; which implementation answers is the
``ESCROW_CONNECT["GATEWAY"]`` setting (by default
``django_escrow_connect.gateway.stripe_gateway.StripeGateway``, the only module that
imports ``stripe``, imported lazily through that setting). A custom gateway
subclasses :class:`~.basegateway.BaseGateway` (docs/gateways.md).
"""

from __future__ import annotations

import threading
from typing import Any, cast

from django.core.signals import setting_changed

from ..conf import SETTING_NAME, escrow_settings
from .base import AccountsV2Gateway, PaymentGateway
from .basegateway import BaseGateway
from .instrumented import instrumented
from .types import (
    AccountBusinessType,
    AccountLinkCollect,
    AccountLinkResult,
    AccountLinkType,
    AccountSessionResult,
    AccountSnapshot,
    CancellationReason,
    CaptureMethod,
    ChargeSnapshot,
    CustomerSnapshot,
    DisputeSnapshot,
    FutureRequirements,
    LoginLinkResult,
    PaymentIntentSnapshot,
    PaymentMethodSnapshot,
    PayoutSnapshot,
    RefundReason,
    RefundSnapshot,
    SessionComponents,
    SetupFutureUsage,
    TransferReversalSnapshot,
    TransferSnapshot,
)

__all__ = [
    "AccountBusinessType",
    "AccountLinkCollect",
    "AccountLinkResult",
    "AccountLinkType",
    "AccountSessionResult",
    "AccountSnapshot",
    "AccountsV2Gateway",
    "BaseGateway",
    "CancellationReason",
    "CaptureMethod",
    "ChargeSnapshot",
    "CustomerSnapshot",
    "DisputeSnapshot",
    "FutureRequirements",
    "LoginLinkResult",
    "PaymentGateway",
    "PaymentIntentSnapshot",
    "PaymentMethodSnapshot",
    "PayoutSnapshot",
    "RefundReason",
    "RefundSnapshot",
    "SessionComponents",
    "SetupFutureUsage",
    "TransferReversalSnapshot",
    "TransferSnapshot",
    "get_gateway",
    "reset_gateway",
]

_lock = threading.Lock()
_cached: tuple[type[Any], PaymentGateway] | None = None


def get_gateway() -> PaymentGateway:
    """The configured gateway instance.

    One instance per configured class is kept (its HTTP connections are
    reused) until ``ESCROW_CONNECT`` changes, e.g. under ``override_settings``.
    It is an instance of :func:`~.instrumented.instrumented` (the configured
    class, subclassed to count and trace each call to Stripe).
    """
    global _cached
    gateway_class = escrow_settings.GATEWAY
    cached = _cached
    if cached is not None and cached[0] is gateway_class:
        return cached[1]
    with _lock:
        cached = _cached
        if cached is not None and cached[0] is gateway_class:
            return cached[1]
        gateway = cast(PaymentGateway, instrumented(gateway_class)())
        _cached = (gateway_class, gateway)
        return gateway


def reset_gateway() -> None:
    """Forget the cached gateway; the next :func:`get_gateway` builds a new one."""
    global _cached
    with _lock:
        _cached = None


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        reset_gateway()


setting_changed.connect(_settings_changed, dispatch_uid="django_escrow_connect.gateway.reset")
