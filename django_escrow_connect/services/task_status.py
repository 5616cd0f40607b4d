"""Keeps the host task's ``payment_status`` in step with its payment."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django_fsm import can_proceed

from .. import transitions
from ..base.models import EscrowTaskMixin
from ..states import PaymentStatus as S
from . import conditional

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


def move_task_status(task_model: Any, task_id: Any, payment_id: Any, payment_status: str) -> bool:
    """:func:`sync_task_status` in one ``UPDATE``, for a task known only by id.

    The ``WHERE`` admits the source states of the transitions
    :data:`TASK_TRANSITIONS_FOR` names (they all lead to the same state, so
    their union is the order-free equivalent of trying them in turn). Returns
    False, having done nothing, when the fast path does not apply to this
    task model (:func:`.conditional.usable`): the caller loads the task and
    calls :func:`sync_task_status`.
    """
    names = TASK_TRANSITIONS_FOR[payment_status]
    try:
        task_model._meta.get_field("payment_status")
    except FieldDoesNotExist:
        return True  # a task without an escrow payment status: nothing to move
    if not conditional.usable(task_model, EscrowTaskMixin, names):
        return False
    target = task_state_for(task_model, payment_status)
    if target is None:
        return True
    allowed = set().union(*(transitions.sources(task_model, name) for name in names))
    moved = conditional.update_count(
        task_model,
        assignments={"payment_status": target},
        where={"pk": task_id},
        where_in={"payment_status": allowed},
    )
    if not moved:
        log_unmoved(task_model, task_id, payment_id, target)
    return True


def task_move(task_model: Any, payment_status: str) -> tuple[str, frozenset[str]] | None:
    """What :func:`move_task_status` would write: the target and the states it leaves from.

    ``None`` when its single ``UPDATE`` is not the whole answer (no payment
    status on the task, a transition the host overrides or listens to, no
    target): the caller then calls :func:`move_task_status` as usual. Lets
    a caller fold the task's ``UPDATE`` into its own statement
    (:func:`.conditional.update_returning_and_follow`).
    """
    names = TASK_TRANSITIONS_FOR[payment_status]
    try:
        task_model._meta.get_field("payment_status")
    except FieldDoesNotExist:
        return None
    if not conditional.usable(task_model, EscrowTaskMixin, names):
        return None
    target = task_state_for(task_model, payment_status)
    if target is None:
        return None
    return target, frozenset().union(*(transitions.sources(task_model, name) for name in names))


def log_unmoved(task_model: Any, task_id: Any, payment_id: Any, target: str) -> None:
    """The task's status did not move: log it if no transition leads to ``target``."""
    # Rare (already there, or a state the transitions do not leave from):
    # read it to log the second case as sync_task_status does.
    current = task_model.objects.filter(pk=task_id).values_list("payment_status", flat=True).first()
    if current is not None and current != target:
        logger.info(
            "task payment status not changed: no transition from %s to %s",
            current,
            target,
            extra={"payment_id": str(payment_id), "task_id": str(task_id)},
        )
