"""What a scheduled command did, or would do: one :class:`Change` per payment touched."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..exceptions import GatewayError
from . import errors
from .common import gateway
from .payment_intents import apply_payment_intent

__all__ = [
    "RELEASED_IN_PART",
    "Change",
    "ChangeLog",
    "Report",
    "changed",
    "failed_change",
    "status_change",
    "sync_intent",
]

logger = logging.getLogger("django_escrow_connect.reconcile")


@dataclass(frozen=True)
class Change:
    """One thing reconcile did (or, in a dry run, would do)."""

    subject: str
    action: str
    detail: str = ""
    error: bool = False

    def __str__(self) -> str:
        text = f"{self.subject}: {self.action}"
        return f"{text} ({self.detail})" if self.detail else text


#: Called with each change as soon as a run makes it (a command prints it).
Report = Callable[[Change], None]


class ChangeLog(list[Change]):
    """The changes of a run, each passed to ``report`` as soon as it is added.

    A scheduled run commits each payment's change on its own: an unexpected
    error (a bug, the database gone) that ends the run with its exception
    leaves the earlier changes made, and only ``report`` has heard of them
    (the list the run would have returned is lost with the exception).
    """

    def __init__(self, report: Report | None = None) -> None:
        super().__init__()
        self._report = report

    def append(self, change: Change) -> None:
        super().append(change)
        if self._report is not None:
            self._report(change)

    def extend(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.append(change)

    def __iadd__(self, changes: Iterable[Change]) -> ChangeLog:  # type: ignore[override, misc]
        self.extend(changes)
        return self


#: The start of an automatic release's line when it sent some of a split
#: payment's transfers, not all (``released in part: 1 of 2 transfers; ...``).
RELEASED_IN_PART = "released in part"


def changed(changes: Iterable[Change]) -> int:
    """How many of ``changes`` changed a state (``held -> released``): not
    informational lines, failures or a dry run's ``would ...``. A release
    that sent some payees' transfers before a refusal counts (money went),
    failure or not."""
    return sum(
        1
        for change in changes
        if (" -> " in change.action and not change.error)
        or change.action.startswith(RELEASED_IN_PART)
    )


def status_change(payment: Any, before: str) -> Change | None:
    if payment.status == before:
        return None
    return Change(str(payment.pk), f"{before} -> {payment.status}")


def failed_change(subject: Any, action: str, exc: Exception) -> Change:
    message = getattr(exc, "message", "") or str(exc)
    logger.warning("reconcile: %s failed for %s: %s", action, subject, message)
    return Change(str(subject), f"{action} failed", message, error=True)


_NOTHING_TO_APPLY = ("requires_payment_method", "requires_confirmation", "requires_action")


def sync_intent(payment: Any, dry_run: bool) -> list[Change]:
    try:
        intent = gateway().retrieve_payment_intent(
            payment.stripe_payment_intent_id, expand_charge=payment.is_manual_capture
        )
    except GatewayError as exc:
        return [failed_change(payment.pk, "look up the PaymentIntent", exc)]
    if dry_run:
        if intent.status in _NOTHING_TO_APPLY and not intent.last_payment_error:
            return []
        return [Change(str(payment.pk), "would apply PaymentIntent", intent.status)]
    return _apply_intent(payment, intent)


def _apply_intent(payment: Any, intent: Any) -> list[Change]:
    before = payment.status
    try:
        updated = apply_payment_intent(intent)
    except errors.UnknownObject as exc:  # pragma: no cover - the row exists
        return [failed_change(payment.pk, "apply the PaymentIntent", exc)]
    change = status_change(updated, before)
    return (
        [Change(change.subject, change.action, f"PaymentIntent {intent.status}")] if change else []
    )
