"""Keeps the host task's ``payment_status`` in step with its payment."""

from __future__ import annotations

import logging
from typing import Any

from django_fsm import can_proceed

from .. import transitions
from ..states import PaymentStatus as S

logger = logging.getLogger("django_escrow_connect.services")

#: The task transitions (``EscrowTaskMixin``) each payment state asks for, in
#: the order they are tried: the first the task's state allows is applied.
#: The transitions of one entry lead to the same task state; they differ in
#: where they leave from (``payment_in_escrow`` is reached from a new payment,
#: or back from a released or refunded one). An empty entry leaves the task
#: alone: a disputed payment's outcome decides. Every payment state has an
#: entry (tests/payments/test_task_status.py); docs/state-machine.md shows it.
TASK_TRANSITIONS_FOR: dict[str, tuple[str, ...]] = {
    S.AWAITING_PAYMENT: ("mark_payment_pending",),
    S.PROCESSING: ("mark_payment_pending",),
    S.CANCELED: ("mark_payment_pending",),
    S.FAILED: ("mark_payment_failed",),
    S.HELD: ("mark_payment_in_escrow", "mark_payment_returned_to_escrow"),
    S.RELEASING: ("mark_payment_in_escrow", "mark_payment_returned_to_escrow"),
    # Part of the money is still held: the task is not paid out yet.
    S.PARTIALLY_RELEASED: ("mark_payment_in_escrow", "mark_payment_returned_to_escrow"),
    S.RELEASED: ("mark_payment_released",),
    S.PARTIALLY_REFUNDED: ("mark_payment_released",),
    S.REFUNDED: ("mark_payment_refunded",),
    S.DISPUTE_LOST: ("mark_payment_refunded",),
    S.DISPUTED: (),
}


def task_state_for(task_model: Any, payment_status: str) -> str | None:
    """The task state ``payment_status`` leads to (None: the task stays as it is)."""
    names = TASK_TRANSITIONS_FOR[payment_status]
    if not names:
        return None
    (target,) = set().union(*(transitions.targets(task_model, name) for name in names))
    return str(target)


def sync_task_status(payment: Any) -> None:
    """Apply the task transition that matches the payment's state, if any."""
    task = payment.task
    if not hasattr(task, "payment_status"):
        return
    target = task_state_for(type(task), payment.status)
    if target is None or task.payment_status == target:
        return
    for name in TASK_TRANSITIONS_FOR[payment.status]:
        method = getattr(task, name)
        if can_proceed(method):
            method()
            task.save(update_fields=["payment_status"])
            return
    logger.info(
        "task payment status not changed: no transition from %s to %s",
        task.payment_status,
        target,
        extra={"payment_id": str(payment.pk), "task_id": str(task.pk)},
    )
