"""Simulated webhook events: rendering at an endpoint's API version, signing, delivery.

Events go to an *event sink*: by default the receiver named by
``ESCROW_CONNECT["SIMULATED_EVENT_RECEIVER"]`` (the package's webhook receiver), so
this layer names no higher one; tests swap in an :class:`EventCollector`.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from threading import RLock
from typing import Any, NamedTuple, cast

from django.db import transaction

from .. import conf
from ..conf import escrow_settings
from ..gateway.signing import sign_webhook_payload
from .objects import (
    JSON,
    _list,
    iso_time,
    new_id,
)
from .rules import (
    _LATEST_CHARGE_SINCE,
)

#: One logger for the whole simulation: ``django_escrow_connect.simulation``.
logger = logging.getLogger(__package__)

#: Endpoint names passed to the event sink: events about the platform's own
#: objects, and Connect events (about connected accounts; they carry ``account``).
PLATFORM_ENDPOINT = "platform"
CONNECT_ENDPOINT = "connect"
#: Thin (v2) events go to an event destination of their own.
THIN_ENDPOINT = "thin"

#: Signs simulated events when ``WEBHOOK_SECRETS`` / ``CONNECT_WEBHOOK_SECRETS``
#: is empty; :meth:`SimulatedGateway.verify_webhook` accepts it only when it is
#: given no secret, so it never weakens a configured endpoint.
SIMULATED_WEBHOOK_SECRET = "whsec_simulated_escrow_connect_not_secret"

# --- event delivery --------------------------------------------------------------------------

#: ``sink(endpoint, payload, signature_header)``: delivers one signed event.
EventSink = Callable[[str, bytes, str], object]


class Delivery(NamedTuple):
    endpoint: str
    payload: bytes
    signature: str

    @property
    def event(self) -> JSON:
        return cast(JSON, json.loads(self.payload))


class EventCollector:
    """An event sink that keeps every delivery, for tests: ``set_event_sink(EventCollector())``."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()

    def __call__(self, endpoint: str, payload: bytes, signature: str) -> None:
        with self._lock:
            self.deliveries.append(Delivery(endpoint, payload, signature))

    @property
    def events(self) -> list[JSON]:
        """The delivered events, parsed, in delivery order."""
        with self._lock:
            return [delivery.event for delivery in self.deliveries]

    @property
    def types(self) -> list[str]:
        return [str(event["type"]) for event in self.events]

    def of_type(self, event_type: str) -> list[JSON]:
        return [event for event in self.events if event["type"] == event_type]

    def clear(self) -> None:
        with self._lock:
            self.deliveries.clear()


class ReceiverUnavailable(Exception):
    """The configured event receiver cannot be imported or is not callable."""


def default_event_sink(endpoint: str, payload: bytes, signature: str) -> object:
    """Hand the event to the receiver ``ESCROW_CONNECT["SIMULATED_EVENT_RECEIVER"]`` names.

    By default the package's webhook pipeline,
    ``django_escrow_connect.webhooks.receiver.receive(endpoint, payload,
    signature_header)``. The setting names it so this layer imports no
    higher one. Raises :class:`ReceiverUnavailable` when it cannot be
    imported; the event is then kept as undelivered, as it is when the
    receiver answers with a non-2xx ``status_code``.
    """
    try:
        receive = escrow_settings.SIMULATED_EVENT_RECEIVER
    except ImportError as exc:
        raise ReceiverUnavailable(str(exc)) from exc
    if not callable(receive):
        raise ReceiverUnavailable(
            f"ESCROW_CONNECT['SIMULATED_EVENT_RECEIVER'] is not callable: {receive!r}"
        )
    return receive(endpoint, payload, signature)


_sink_lock = threading.Lock()
_event_sink: EventSink | None = None


def set_event_sink(sink: EventSink | None) -> EventSink | None:
    """Deliver simulated events to ``sink`` (``None``: the default, the real receiver).

    Returns the previous sink (``None`` for the default), so a test can restore it.
    """
    global _event_sink
    with _sink_lock:
        previous, _event_sink = _event_sink, sink
    return previous


def get_event_sink() -> EventSink:
    """The callable the simulated Stripe delivers events to."""
    with _sink_lock:
        sink = _event_sink
    return sink if sink is not None else default_event_sink


def signing_secret(endpoint: str) -> str:
    """The secret the simulated Stripe signs ``endpoint``'s events with."""
    name = {
        CONNECT_ENDPOINT: "CONNECT_WEBHOOK_SECRETS",
        THIN_ENDPOINT: "THIN_WEBHOOK_SECRETS",
    }.get(endpoint, "WEBHOOK_SECRETS")
    configured = escrow_settings.raw(name) or []
    if isinstance(configured, str):
        configured = [configured]
    for secret in configured:
        if isinstance(secret, str) and secret.strip():
            return secret
    return SIMULATED_WEBHOOK_SECRET


def event_endpoint(event: Mapping[str, Any]) -> str:
    """Which webhook endpoint receives ``event``."""
    if event.get("object") == "v2.core.event":
        return THIN_ENDPOINT
    return CONNECT_ENDPOINT if event.get("account") else PLATFORM_ENDPOINT


@dataclass(frozen=True)
class UndeliveredEvent:
    endpoint: str
    event_id: str
    reason: str


class EventLog:
    """The store's events: recorded in a request, delivered once it is over.

    A part of :class:`~.store.SimulatedStripe`, which holds the attributes below.
    """

    lock: RLock
    events: dict[str, JSON]
    thin_events: dict[str, JSON]
    charges: dict[str, JSON]
    undelivered: list[UndeliveredEvent]
    endpoint_api_versions: dict[str, str]
    _outbox: list[JSON] | None
    _request: JSON
    now: Callable[[], int]

    def emit(
        self,
        event_type: str,
        obj: Mapping[str, Any],
        *,
        account: str | None = None,
        previous_attributes: Mapping[str, Any] | None = None,
        automatic: bool = False,
    ) -> JSON:
        """Record an event about ``obj`` (a Connect event when ``account`` is given).

        The event is rendered at its endpoint's API version
        (:meth:`endpoint_api_version`), as Stripe renders an event once, at
        creation, for the endpoint.
        """
        version = self.endpoint_api_version(
            PLATFORM_ENDPOINT if account is None else CONNECT_ENDPOINT
        )
        data: JSON = {"object": self._render(dict(obj), version)}
        if previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
        event: JSON = {"id": new_id("evt"), "object": "event"}
        if account is not None:
            event["account"] = account
        event.update(
            {
                "api_version": version,
                "created": self.now(),
                "data": data,
                "livemode": False,
                "pending_webhooks": 1,
                "request": (
                    {"id": None, "idempotency_key": None} if automatic else dict(self._request)
                ),
                "type": event_type,
            }
        )
        self.events[event["id"]] = event
        if self._outbox is not None:
            self._outbox.append(copy.deepcopy(event))
        else:  # pragma: no cover - every emitting path runs inside execute()
            self.undelivered.append(
                UndeliveredEvent(event_endpoint(event), event["id"], "emitted outside a request")
            )
        return event

    def emit_thin(self, event_type: str, account_id: str) -> JSON:
        """Record a thin event about a v2 account: its type and the account's id, no data.

        The shape an event destination delivers (``v2.core.event`` with a
        ``related_object``); the receiver fetches the account to learn more.
        """
        event: JSON = {
            "id": new_id("evt", 24),
            "object": "v2.core.event",
            "type": event_type,
            "created": iso_time(self.now()),
            "livemode": False,
            "context": None,
            "reason": (
                {"type": "request", "request": dict(self._request)}
                if self._request.get("id")
                else None
            ),
            "related_object": {
                "id": account_id,
                "type": "v2.core.account",
                "url": f"/v2/core/accounts/{account_id}",
            },
        }
        self.thin_events[event["id"]] = event
        if self._outbox is not None:
            self._outbox.append(copy.deepcopy(event))
        else:  # pragma: no cover - every emitting path runs inside execute()
            self.undelivered.append(
                UndeliveredEvent(THIN_ENDPOINT, event["id"], "emitted outside a request")
            )
        return event

    def endpoint_api_version(self, endpoint: str) -> str:
        """The API version ``endpoint``'s events are rendered at.

        :attr:`endpoint_api_versions` if set for the endpoint, else
        ``WEBHOOK_API_VERSION`` (the version the host says its endpoints
        have), else the pinned ``STRIPE_API_VERSION``.
        """
        configured = self.endpoint_api_versions.get(endpoint)
        if configured:
            return configured
        return str(escrow_settings.WEBHOOK_API_VERSION or "") or conf.STRIPE_API_VERSION

    def _render(self, obj: JSON, version: str) -> JSON:
        """``obj`` as an endpoint at ``version`` sees it (deep copy).

        One documented difference is rendered: before ``2022-11-15`` a
        PaymentIntent embedded its ``charges`` list and had no ``latest_charge``.
        """
        rendered = copy.deepcopy(obj)
        if rendered.get("object") == "payment_intent" and version < _LATEST_CHARGE_SINCE:
            latest = rendered.pop("latest_charge", None)
            charge = self.charges.get(latest) if isinstance(latest, str) else None
            data = [copy.deepcopy(charge)] if charge is not None else []
            rendered["charges"] = _list(data, f"/v1/charges?payment_intent={rendered['id']}")
        return rendered

    def _dispatch(self, events: list[JSON]) -> None:
        if not events:
            return
        batch = list(events)

        def deliver() -> None:
            for event in batch:
                self.deliver(event)

        # Deliver after the caller's transaction commits, so the webhook
        # pipeline sees its rows; a rolled-back transaction drops the delivery
        # (the events stay in the store, for retrieve_event / list_events).
        if transaction.get_connection().in_atomic_block:
            transaction.on_commit(deliver, robust=True)
        else:
            deliver()

    def deliver(self, event: Mapping[str, Any]) -> bool:
        """Sign ``event`` and give it to the sink; ``False`` if it was not delivered."""
        endpoint = event_endpoint(event)
        payload = json.dumps(event, indent=2).encode("utf-8")
        signature = sign_webhook_payload(payload, signing_secret(endpoint))
        event_id = str(event.get("id"))
        try:
            answer = get_event_sink()(endpoint, payload, signature)
        except ReceiverUnavailable as exc:
            logger.warning(
                "Simulated event %s (%s) not delivered: %s", event_id, event.get("type"), exc
            )
            reason = str(exc)
        except Exception as exc:
            logger.exception(
                "Delivering simulated event %s (%s) failed", event_id, event.get("type")
            )
            reason = f"{type(exc).__name__}: {exc}"
        else:
            # The receiver answers like an HTTP endpoint: Stripe retries non-2xx.
            status = getattr(answer, "status_code", None)
            if not isinstance(status, int) or status < 300:
                return True
            reason = f"HTTP {status}: {getattr(answer, 'reason', '')}".rstrip(": ")
            logger.warning(
                "Simulated event %s (%s) was refused: %s", event_id, event.get("type"), reason
            )
        with self.lock:
            self.undelivered.append(UndeliveredEvent(endpoint, event_id, reason))
        return False

    def redeliver(self, event_id: str) -> bool:
        """Deliver a stored event again (Stripe's at-least-once delivery, or a retry)."""
        with self.lock:
            event = copy.deepcopy(self.events.get(event_id) or self.thin_events.get(event_id))
        if event is None:
            raise KeyError(event_id)
        return self.deliver(event)

    def deliver_undelivered(self) -> int:
        """Try every undelivered event again; returns how many got through."""
        with self.lock:
            pending, self.undelivered = self.undelivered, []
        return sum(1 for item in pending if self.redeliver(item.event_id))
