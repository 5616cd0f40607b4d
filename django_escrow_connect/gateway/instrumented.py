"""Spans and counters around every gateway call, whatever the gateway class.

:func:`~django_escrow_connect.gateway.get_gateway` builds the configured
gateway from :func:`instrumented`, a subclass in which each method of the
:class:`~.base.PaymentGateway` protocol counts the request, opens the span
``stripe.<method>``, calls the configured class's method and, on a
:class:`~django_escrow_connect.exceptions.GatewayError`, counts it by code
and HTTP status before re-raising it unchanged (a listing's items, fetched
while iterating, are counted alike when they fail). Anything
else (a simulated gateway's test controls) is inherited untouched.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from typing import Any

from .. import observability
from ..exceptions import GatewayError
from .base import AccountsV2Gateway, PaymentGateway

__all__ = ["INSTRUMENTED_METHODS", "instrumented"]

#: The calls that are instrumented: the protocol's methods, except
#: ``verify_webhook`` (a local signature check, no request to Stripe, on the
#: webhook hot path; the webhook span covers it).
INSTRUMENTED_METHODS = frozenset(
    name
    for protocol in (PaymentGateway, AccountsV2Gateway)
    for name, value in vars(protocol).items()
    if not name.startswith("_") and callable(value) and name != "verify_webhook"
)

#: Keyword arguments naming a Stripe object, copied onto the span.
_ID_ARGUMENTS = (
    "account_id",
    "payment_intent_id",
    "transfer_id",
    "charge_id",
    "dispute_id",
    "refund_id",
    "event_id",
    "stripe_account",
    "destination",
    "payment_intent",
)
#: A Stripe object id (``pi_...``, ``acct_...``): one prefix, one underscore.
#: A client secret (``pi_..._secret_...``) never matches.
_STRIPE_ID = re.compile(r"^[a-z]{2,6}_[A-Za-z0-9]+$")


def _call_attributes(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "stripe.method": method,
        "stripe.idempotency_key.present": bool(kwargs.get("idempotency_key")),
    }
    if args and isinstance(args[0], str) and _STRIPE_ID.match(args[0]):
        attributes["stripe.object_id"] = args[0]
    for name in _ID_ARGUMENTS:
        value = kwargs.get(name)
        if isinstance(value, str) and _STRIPE_ID.match(value):
            attributes[f"stripe.{name}"] = value
    return attributes


_instrumented_classes: dict[type[Any], type[Any]] = {}
_lock = threading.Lock()


def instrumented(gateway_class: type[Any]) -> type[Any]:
    """A subclass of ``gateway_class`` whose protocol methods are counted and traced.

    A subclass rather than a proxy: ``isinstance`` and ``type(get_gateway())``
    keep meaning the configured gateway (tests patch methods on that class),
    and each call looks the method up on ``gateway_class`` at call time, so a
    patch of the configured class is seen at once. One subclass per class.
    """
    if getattr(gateway_class, "escrow_instrumented", False):
        return gateway_class
    with _lock:
        subclass = _instrumented_classes.get(gateway_class)
        if subclass is None:
            namespace: dict[str, Any] = {
                "__module__": __name__,
                "__doc__": gateway_class.__doc__,
                "escrow_instrumented": True,
            }
            for name in INSTRUMENTED_METHODS:
                if callable(getattr(gateway_class, name, None)):
                    namespace[name] = _traced(gateway_class, name)
            subclass = type(f"Instrumented{gateway_class.__name__}", (gateway_class,), namespace)
            _instrumented_classes[gateway_class] = subclass
    return subclass


def _traced(gateway_class: type[Any], method: str) -> Any:
    span_name = f"stripe.{method}"

    @functools.wraps(getattr(gateway_class, method))
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = getattr(gateway_class, method)
        observability.record_stripe_request(method)
        try:
            if not observability.tracing_enabled():
                result = call(self, *args, **kwargs)
            else:
                with observability.span(span_name, **_call_attributes(method, args, kwargs)):
                    result = call(self, *args, **kwargs)
        except GatewayError as exc:
            observability.record_stripe_error(method, exc.code, exc.http_status)
            raise
        if isinstance(result, Iterator):
            return _counted_while_iterating(method, result)
        return result

    return traced


def _counted_while_iterating(method: str, items: Iterator[Any]) -> Iterator[Any]:
    """``items`` of a lazy listing, whose failure while iterating is counted as the call's.

    A listing (``list_events``) fetches its later pages, and reads every
    item, after the call has returned: a page or item that fails then is
    as much a failed Stripe call as one that fails at once.
    """
    try:
        yield from items
    except GatewayError as exc:
        observability.record_stripe_error(method, exc.code, exc.http_status)
        raise
