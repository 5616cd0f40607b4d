"""Keeps the host task's ``payment_status`` in step with its payment."""

from __future__ import annotations

import logging
from typing import Any

from django_fsm import can_proceed

from ..states import PaymentStatus as S
from ..states import TaskPaymentStatus as T

logger = logging.getLogger("django_escrow_connect.services")

#: The task state each payment state implies.
TASK_STATE_FOR = {
    S.AWAITING_PAYMENT: T.PENDING_PAYMENT,
    S.PROCESSING: T.PENDING_PAYMENT,
    S.FAILED: T.PAYMENT_FAILED,
    S.CANCELED: T.PENDING_PAYMENT,
    S.HELD: T.PAYMENT_IN_ESCROW,
    S.RELEASING: T.PAYMENT_IN_ESCROW,
    S.DISPUTED: None,  # unchanged: the outcome decides
    S.RELEASED: T.PAYMENT_RELEASED,
    S.PARTIALLY_REFUNDED: T.PAYMENT_RELEASED,
    S.REFUNDED: T.REFUNDED,
    S.DISPUTE_LOST: T.REFUNDED,
}

_TRANSITIONS = (
    "mark_payment_in_escrow",
    "mark_payment_released",
    "mark_payment_failed",
    "mark_payment_refunded",
    "mark_payment_pending",
    "mark_payment_returned_to_escrow",
)


def sync_task_status(payment: Any) -> None:
    """Apply the task transition that matches the payment's state, if any."""
    target = TASK_STATE_FOR.get(payment.status)
    task = payment.task
    if target is None or not hasattr(task, "payment_status"):
        return
    if task.payment_status == target:
        return
    for name in _TRANSITIONS:
        method = getattr(task, name)
        if _target_of(method) == target and can_proceed(method):
            method()
            task.save(update_fields=["payment_status"])
            return
    logger.info(
        "task payment status not changed: no transition from %s to %s",
        task.payment_status,
        target,
        extra={"payment_id": str(payment.pk), "task_id": str(task.pk)},
    )


def _target_of(bound_method: Any) -> Any:
    meta = bound_method._django_fsm
    transition = meta.get_transition(meta.field.get_state(bound_method.__self__))
    return transition.target if transition else None
