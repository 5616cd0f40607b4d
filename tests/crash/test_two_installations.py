"""Two installations on one Stripe account (issue 11, item 6).

Installation A (the test database, the ``main`` server, the default key
prefix) and installation B (its own database and server, prefix
``install_b``) share one Stripe account, so each receives every event of the
account at its endpoints. Both have a task with the same number. The
customer pays in both; B refunds 2,000; A releases. Nothing of one may reach
the other: A's payment is not refunded by B's refund, B's payment gets no
transfer of A's, and no endpoint answers 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.simulation import SimulatedGateway

from .harness import World, assert_books_clean, check_case, describe_payment

pytestmark = pytest.mark.django_db(transaction=True)


def same_task_number(task_b: Any, number: Any) -> Any:
    """B's task, renumbered to A's number if the hosts' keys are not sequential."""
    if task_b.pk == number:
        return task_b
    Task = swappable.load("Task")
    Task.objects.filter(pk=task_b.pk).update(**{Task._meta.pk.attname: number})
    return Task.objects.get(pk=number)


def created_with_prefix(world: World, method: str, prefix: str) -> list[str]:
    """Ids of the objects Stripe made for ``method`` calls whose key starts with ``prefix``."""
    with world.shared.session() as store:
        return [
            str(record.response["id"])
            for key, record in store.idempotency.items()
            if record.method == method and key.startswith(f"{prefix}:")
        ]


def test_no_cross_talk_between_installations_sharing_a_stripe_account(installation_b, world):
    b = installation_b
    a_server = world.server
    world.servers.append(b.server)
    task_a = world.task()
    with b.use():
        world_b = World.build(world.shared, b.server)
        world_b.answers = world.answers
        task_b = same_task_number(world_b.task(), task_a.pk)
    world.steps.append(f"task number {task_a.pk} in both installations")

    # The customer pays in both; Stripe delivers every event to both endpoints.
    payment_a = world.create(task_a)
    with b.use():
        payment_b = world_b.create(task_b)
    world.steps.append(f"payment ids: A {payment_a.pk}, B {payment_b.pk}")
    with world.shared.session():
        SimulatedGateway().confirm_payment_intent(payment_a.stripe_payment_intent_id, "success")
        SimulatedGateway().confirm_payment_intent(payment_b.stripe_payment_intent_id, "success")
    world.deliver()

    # B refunds 2,000; A releases; every event reaches both.
    world_b.http(
        world_b.market.doer, "payment-refund", payment_b.pk, {"amount": 2000}, server=b.server
    )
    world.deliver()
    world.http(world.market.customer, "payment-confirm", payment_a.pk, server=a_server)
    world.deliver()

    with b.use():
        b_row = world_b.payment(payment_b.pk)
        b_story = describe_payment(b_row)
    world.steps.append(f"B: {b_story}")
    a_transfers = created_with_prefix(world, "create_transfer", "escrow-connect")

    def a_untouched_by_b() -> None:
        a_row = world.payment(payment_a.pk)
        assert a_row.amount_refunded == 0, (
            f"A's payment carries B's refund: {a_row.amount_refunded}"
        )
        assert a_row.status == "released", f"A's payment is {a_row.status}, expected released"
        recorded = [t.stripe_transfer_id for t in a_row.transfers.all()]
        assert recorded == a_transfers, f"A's transfers {recorded}, A made {a_transfers}"

    def b_untouched_by_a() -> None:
        assert b_row.amount_refunded == 2000, f"B's refund: {b_row.amount_refunded}"
        assert b_row.status not in ("released", "partially_refunded"), f"B is {b_row.status}"
        assert b_row.amount_transferred == 0, f"B's payment carries A's transfer: {b_story}"
        with b.use():
            assert not world_b.payment(payment_b.pk).transfers.exists(), (
                f"B's payment carries A's transfer: {b_story}"
            )

    def b_books_clean() -> None:
        with b.use():
            assert_books_clean(payment_b)

    check_case(world, payment_a, a_untouched_by_b, b_untouched_by_a, b_books_clean)
