"""What a webhook handler receives and may raise.

Its own module so that handlers, the registry and the pipeline all import it
without importing each other: imports in ``webhooks/`` flow one way,
``context <- handlers <- registry <- pipeline <- dispatch <- receiver``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ..services.common import read_first

T = TypeVar("T")

__all__ = ["EventContext", "IgnoreEvent", "PayloadPurged", "UnparseableEvent", "log_extra"]


class IgnoreEvent(Exception):
    """Raised by a handler: the event is about an object this app does not manage."""


class UnparseableEvent(Exception):
    """Raised by a handler: the event's ``data.object`` cannot be read.

    Usually an event rendered at another API version than the package reads.
    The event is recorded as ``failed`` with the reason (replay it once the
    endpoint or the package is upgraded) but answered 200: Stripe delivering
    the same body again cannot help.
    """


class PayloadPurged(Exception):
    """The event's payload was purged after the retention period."""


@dataclass
class EventContext:
    """What a handler receives: the locked event row and its parsed payload.

    Handlers set :attr:`payment_id` (and :attr:`connected_account` when the
    event does not name it) so that the pipeline's log lines carry them.
    """

    event: Any
    payload: dict[str, Any]
    payment_id: str = ""
    connected_account: str = ""
    notes: list[str] = field(default_factory=list)
    #: What was read from Stripe for this event, by key: one request per event
    #: and processing attempt (a retry reads again: the latest state wins).
    #: The pipeline makes each read with no transaction open and puts the
    #: answer here (``ReadFirst``, :meth:`fetch_once`, :mod:`.pipeline`).
    fetched: dict[str, Any] = field(default_factory=dict)

    def fetch_once(self, key: str, fetch: Callable[[], T]) -> T:
        """``fetch()``'s answer, asked of Stripe at most once for this event.

        Never inside the handler's transaction: without the answer yet, this
        raises ``ReadFirst``; the pipeline rolls back, calls ``fetch()`` with
        no transaction open and runs the handler again, which finds it here.
        """
        return read_first(self.fetched, key, fetch)

    @property
    def related_object_id(self) -> str:
        """A thin event's ``related_object.id`` (blank for a snapshot event)."""
        related = self.payload.get("related_object")
        return str(related.get("id") or "") if isinstance(related, dict) else ""

    @property
    def id(self) -> str:
        return str(self.event.stripe_event_id)

    @property
    def type(self) -> str:
        return str(self.event.type)

    @property
    def account(self) -> str:
        return str(self.event.account or "")

    @property
    def object(self) -> dict[str, Any]:
        return dict(self.payload["data"]["object"])

    @property
    def previous_attributes(self) -> dict[str, Any]:
        value = self.payload.get("data", {}).get("previous_attributes")
        return value if isinstance(value, dict) else {}

    @property
    def created(self) -> datetime:
        """When Stripe created the event (ordering hint for snapshots)."""
        created: datetime = self.event.stripe_created or self.event.received_at
        return created


def log_extra(event: Any, **more: Any) -> dict[str, Any]:
    """The structured fields every pipeline log line carries."""
    return {
        "stripe_event_id": getattr(event, "stripe_event_id", ""),
        "event_type": getattr(event, "type", ""),
        "connected_account": getattr(event, "account", "") or "",
        "payment_id": "",
        **more,
    }
