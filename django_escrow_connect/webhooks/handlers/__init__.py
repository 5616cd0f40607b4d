"""Webhook handlers: one small function per event type, one module per area.

A handler takes the :class:`~..context.EventContext` of a locked event and
applies it through a service. It raises
:class:`~django_escrow_connect.services.errors.UnknownObject` when the object
is one of this app's but its row does not exist yet (the event is deferred),
:class:`~..context.IgnoreEvent` when the object is none of this app's, and
lets anything else propagate (the event fails and Stripe retries it).

Which handler answers which event type is decided in one place:
:mod:`django_escrow_connect.webhooks.registry`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ...conf import STRIPE_API_VERSION
from ...money import MAX_MINOR_AMOUNT
from ..context import EventContext, IgnoreEvent, UnparseableEvent

T = TypeVar("T")

#: What a snapshot parser raises on a shape it cannot read.
PARSE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError)


def snapshot(context: EventContext, snapshot_class: type[T]) -> T:
    """The event's ``data.object`` parsed into a gateway snapshot.

    A shape the parser cannot read (often an event of another API version)
    raises :class:`UnparseableEvent`: recorded as failed with the reason,
    answered 200.
    """
    try:
        parsed: Any = snapshot_class.from_dict(context.object)  # type: ignore[attr-defined]
    except PARSE_ERRORS as exc:
        version = str(getattr(context.event, "api_version", "") or "unknown")
        raise UnparseableEvent(
            f"{context.type}: data.object cannot be read as {snapshot_class.__name__}: {exc} "
            f"(event API version {version}, package reads {STRIPE_API_VERSION})"
        ) from exc
    return parsed  # type: ignore[no-any-return]


def check_amounts(context: EventContext, amounts: dict[str, Any]) -> None:
    """:class:`UnparseableEvent` unless each of ``amounts`` (``None``: absent)
    is an integer that a 64-bit amount column holds.

    For the fields a handler reads as they come, without a snapshot parser:
    ``int("1e3")`` raised, and an amount past 64 bits could not be stored,
    on every delivery of the event (a 500 each time).
    """
    for name, value in amounts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_MINOR_AMOUNT:
            raise UnparseableEvent(
                f"{context.type}: data.object cannot be read: {name} is not an amount in "
                f"minor units ({str(value)[:40]!r})"
            )


def ignore_unless(found: Any, reason: str) -> Any:
    """``found``, or :class:`IgnoreEvent` when the object is not this app's."""
    if found is None:
        raise IgnoreEvent(reason)
    return found


def note_payment(context: EventContext, obj: Any) -> None:
    """Put the payment an applier returned on the pipeline's log lines."""
    payment = getattr(obj, "payment", obj)
    if payment is not None and getattr(payment, "pk", None) is not None:
        context.payment_id = str(payment.pk)
        context.connected_account = getattr(payment, "destination_account_id", "") or ""
