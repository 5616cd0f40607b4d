"""Business events go out two ways, both after commit: Django signals, and the
notification backends named in ``ESCROW_CONNECT["NOTIFICATION_BACKENDS"]``.

:func:`notify` is the one function services and webhook handlers call.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from ..conf import escrow_settings
from ..signals import ALL_SIGNALS

logger = logging.getLogger("django_escrow_connect.notifications")


def notify(event: str, /, **kwargs: Any) -> None:
    """Send signal ``event`` and tell every backend, once the transaction commits.

    Nothing raised by a receiver or a backend reaches the caller: the money
    has already moved by then and must not be rolled back by a mail server.
    """
    if event not in ALL_SIGNALS:
        raise ValueError(f"Unknown escrow event {event!r}")
    transaction.on_commit(lambda: deliver(event, **kwargs))


def deliver(event: str, /, **kwargs: Any) -> None:
    """Deliver now (the on-commit half of :func:`notify`)."""
    signal = ALL_SIGNALS[event]
    subject = kwargs.get("payment", kwargs.get("account", kwargs.get("event")))
    sender = type(subject) if subject is not None else None
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "escrow signal receiver failed",
                exc_info=result,
                extra={"escrow_event": event, "receiver": getattr(receiver, "__qualname__", "")},
            )
    for backend in _backends():
        try:
            backend.send(event, **kwargs)
        except Exception:
            logger.exception(
                "escrow notification backend failed",
                extra={"escrow_event": event, "backend": type(backend).__name__},
            )


def _backends() -> list[Any]:
    configured = escrow_settings.NOTIFICATION_BACKENDS or []
    if not isinstance(configured, (list, tuple)):
        # One dotted path instead of a list of them: that one backend
        # (iterating the class would raise, after the money moved).
        configured = [configured]
    backends = []
    for backend_class in configured:
        try:
            backends.append(backend_class())
        except Exception:
            logger.exception("escrow notification backend could not be created")
    return backends
