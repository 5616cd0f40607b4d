"""The host task's ``payment_status`` follows its payment through an explicit
map, payment state -> task transitions (``services.task_status.TASK_TRANSITIONS_FOR``),
which covers every payment state, names only transitions the task declares,
and is the table docs/state-machine.md shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from django_escrow_connect import swappable, transitions
from django_escrow_connect.services.task_status import (
    TASK_TRANSITIONS_FOR,
    sync_task_status,
    task_state_for,
)
from django_escrow_connect.states import PaymentStatus, TaskPaymentStatus

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
TICKED = re.compile(r"`(\w+)`")


def task_model():
    return swappable.load("Task")


def test_every_payment_state_has_an_entry():
    assert set(TASK_TRANSITIONS_FOR) == set(PaymentStatus.values)


@pytest.mark.parametrize("payment_status", PaymentStatus.values)
def test_an_entry_names_task_transitions_that_lead_to_one_state(payment_status):
    names = TASK_TRANSITIONS_FOR[payment_status]
    for name in names:
        transitions.declared(task_model(), name)  # LookupError if the task has none
    target = task_state_for(task_model(), payment_status)
    if names:
        assert target in TaskPaymentStatus.values
    else:
        assert target is None


def test_every_task_transition_is_used():
    Task = task_model()
    declared = {t.name for t in Task._meta.get_field("payment_status").get_all_transitions(Task)}
    used = {name for names in TASK_TRANSITIONS_FOR.values() for name in names}
    assert used == declared


def documented_rows():
    """``{payment state: (task state or None, task transitions)}`` from the doc's table."""
    section = DOC.read_text().split("| payment state | task state | task transitions tried |")[1]
    rows = {}
    for line in section.split("\n\n", 1)[0].splitlines()[2:]:
        payment_cell, task_cell, transitions_cell = line.strip("|").split("|")
        task_states = TICKED.findall(task_cell)
        for state in TICKED.findall(payment_cell):
            rows[state] = (
                task_states[0] if task_states else None,
                TICKED.findall(transitions_cell),
            )
    return rows


def test_the_docs_show_the_map():
    expected = {
        state: (task_state_for(task_model(), state), list(names))
        for state, names in TASK_TRANSITIONS_FOR.items()
    }
    assert documented_rows() == expected


def put(instance, field, value):
    """Set a protected state field as a row in that state would have it."""
    type(instance).objects.filter(pk=instance.pk).update(**{field: value})
    instance.refresh_from_db()


@pytest.mark.parametrize(
    ("task_before", "payment_status", "task_after"),
    [
        # A new payment is held; a released one came back (an appeal won,
        # a refund that failed): the second transition of the entry.
        ("pending_payment", "held", "payment_in_escrow"),
        ("payment_released", "held", "payment_in_escrow"),
        ("refunded", "releasing", "payment_in_escrow"),
        ("payment_in_escrow", "released", "payment_released"),
        ("payment_in_escrow", "canceled", "pending_payment"),
        ("pending_payment", "failed", "payment_failed"),
        ("payment_released", "dispute_lost", "refunded"),
        # Disputed: the task waits for the outcome.
        ("payment_released", "disputed", "payment_released"),
        # No transition leads there from the task's state: left as it is.
        ("payment_failed", "released", "payment_failed"),
    ],
)
def test_the_task_follows_the_payment(market, sim_stripe, task_before, payment_status, task_after):
    payment = market.held_payment()
    task = payment.task
    put(task, "payment_status", task_before)
    put(payment, "status", payment_status)
    payment = type(payment).objects.select_related("task").get(pk=payment.pk)
    sync_task_status(payment)
    task.refresh_from_db()
    assert task.payment_status == task_after
