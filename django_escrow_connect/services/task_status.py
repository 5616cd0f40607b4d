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


#: A part of a task funded per milestone in these states holds money in
#: escrow (they put a task in escrow) ...
_IN_ESCROW = frozenset(
    s for s, names in TASK_TRANSITIONS_FOR.items() if names == TASK_TRANSITIONS_FOR[S.HELD]
)
#: ... and in these its milestone was paid out (they release a task).
_PAID_OUT = frozenset(
    s for s, names in TASK_TRANSITIONS_FOR.items() if names == TASK_TRANSITIONS_FOR[S.RELEASED]
)


def task_payment_state(payment: Any) -> str:
    """The payment state the task follows when ``payment`` changed.

    The payment's own, except for a task funded per milestone (several
    payments, one per milestone: docs/milestones.md), whose task follows
    all of them:

    * a part disputed: the task stays as it is (the dispute decides);
    * any part holding money: in escrow (``held``);
    * a part paid out while some milestone is not: the next part awaits
      payment (``awaiting_payment``: the task is pending payment again);
    * every milestone paid out: released;
    * otherwise the changed part's own state (failed, refunded, ...).

    The webhook fast path (:func:`move_task_status`) moves the task only for
    a payment becoming held, which this rule maps to ``held`` for every part
    (the part itself holds money): both paths agree without it reading the
    other parts.
    """
    if not payment.funded_milestone:
        return str(payment.status)
    status = str(payment.status)
    if status == S.DISPUTED or status in _IN_ESCROW:
        return status if status == S.DISPUTED else S.HELD
    parts = dict(
        type(payment)
        .objects.filter(task_id=payment.task_id, funded_milestone__gt=0)
        .exclude(status=S.CANCELED)
        .values_list("funded_milestone", "status")
    )
    # The changed part as this process sees it (saved or not yet).
    parts[payment.funded_milestone] = status
    if status == S.CANCELED:
        parts.pop(payment.funded_milestone)
    if any(s in _IN_ESCROW for s in parts.values()):
        return S.HELD
    if any(s == S.DISPUTED for s in parts.values()):
        return S.DISPUTED
    if status in _PAID_OUT:
        every = range(1, payment.milestone_count + 1)
        if all(parts.get(k) in _PAID_OUT for k in every):
            return status
        return S.AWAITING_PAYMENT
    return status


def sync_task_status(payment: Any) -> None:
    """Apply the task transition that matches the payment's state, if any."""
    task = payment.task
    if not hasattr(task, "payment_status"):
        return
    state = task_payment_state(payment)
    target = task_state_for(type(task), state)
    if target is None or task.payment_status == target:
        return
    for name in TASK_TRANSITIONS_FOR[state]:
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

    It does not read the task's other payments: use it only for a state
    :func:`task_payment_state` maps to itself for a part funded per
    milestone too (a part becoming ``held``, what the webhook fast path moves).
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
