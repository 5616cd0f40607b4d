"""What a scheduled command did, or would do: one :class:`Change` per payment touched."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..exceptions import GatewayError
from . import errors
from .common import gateway
from .payment_intents import apply_payment_intent

__all__ = ["Change", "failed_change", "status_change", "sync_intent"]

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
