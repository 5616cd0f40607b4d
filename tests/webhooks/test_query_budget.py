"""What a webhook delivery costs in SQL queries: the brief's budget.

A delivery first reads whether its event is already recorded (one indexed
``SELECT``, no transaction): a duplicate costs that statement alone. A new
event of the common types costs 4 in all: that read, the pipeline's insert,
and its handler's work (a conditional ``UPDATE`` of the payment and one of its
task for a ``payment_intent`` that holds the money; the locked read and an
``UPDATE`` of only the changed columns, with no savepoint, for
``account.updated``). On PostgreSQL a handler with a shortcut
(``payment_intent`` holding the money, ``charge`` on a known payment,
``account.updated`` applied to a known account; see
``django_escrow_connect/webhooks/shortcuts.py``) costs 2: the read, then its
change and the event's insert in one statement. These tests run with real
transactions (``transaction=True``): inside the usual test transaction every
``atomic`` block becomes a savepoint and adds queries production never runs.
Transaction control (``BEGIN``/``COMMIT``/``ROLLBACK``) is not counted:
Django reports it on SQLite but not on PostgreSQL, where the budget is
measured. The in-process latency is measured by the benchmark
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect.webhooks import registry
from django_escrow_connect.webhooks.context import EventContext
from tests import factories
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL, events, fsm_listener, intent_for, status_history

pytestmark = pytest.mark.django_db(transaction=True)

#: The read of the recorded state and the insert of the event.
PIPELINE_STATEMENTS = 2
NEW_EVENT_BUDGET = PIPELINE_STATEMENTS + 2
DUPLICATE_BUDGET = 1


#: PostgreSQL, a handler with a shortcut (webhooks/shortcuts.py): the read,
#: then one statement for the handler's change and the event's insert.
SHORTCUT_BUDGET = 2


def hold_budget() -> int:
    """A ``payment_intent`` that holds the money: on PostgreSQL the read, then
    the payment, its task and the event's insert in one statement; on SQLite
    the pipeline's two and the payment's and the task's ``UPDATE``."""
    return SHORTCUT_BUDGET if connection.vendor == "postgresql" else PIPELINE_STATEMENTS + 2


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


@contextmanager
def statements(*, exactly: int | None = None, at_most: int | None = None) -> Iterator[None]:
    with CaptureQueriesContext(connection) as captured:
        yield
    sql = [q["sql"] for q in captured.captured_queries]
    counted = [q for q in sql if q.strip().upper() not in _TRANSACTION_CONTROL]
    listing = "\n".join(counted)
    if exactly is not None:
        assert len(counted) == exactly, f"{len(counted)} statements, expected {exactly}:\n{listing}"
    if at_most is not None:
        assert len(counted) <= at_most, f"{len(counted)} statements, at most {at_most}:\n{listing}"


def test_an_ignored_type_costs_the_pipeline_only(deliver: Any) -> None:
    evt = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    with statements(exactly=PIPELINE_STATEMENTS):
        assert deliver.platform(evt).json()["status"] == "ignored"


def test_the_pipeline_adds_two_statements_to_its_handler(deliver: Any, monkeypatch: Any) -> None:
    seen: list[str] = []
    route = registry.Route(lambda context: seen.append(context.id), registry.PLATFORM)
    monkeypatch.setitem(registry.HANDLERS, "escrow_test.noop", route)
    evt = so.event("escrow_test.noop", so.charge())
    with statements(exactly=PIPELINE_STATEMENTS):
        assert deliver.platform(evt).json()["status"] == "processed"
    assert seen == [evt["id"]]
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.attempts, row.processed_at is not None) == ("processed", 1, True)


def test_a_duplicate_costs_one_read(deliver: Any) -> None:
    evt = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    deliver.platform(evt)
    with statements(exactly=DUPLICATE_BUDGET):
        assert deliver.platform(evt).json()["status"] == "duplicate"


@pytest.mark.parametrize("strategy", ["separate_charges_and_transfers", MANUAL])
def test_a_payment_intent_that_holds_the_money(
    deliver: Any, make_payment: Any, sim_stripe: Any, strategy: str
) -> None:
    scene = make_payment(strategy=strategy)
    status = "requires_capture" if strategy == MANUAL else "succeeded"
    kind = "amount_capturable_updated" if strategy == MANUAL else "succeeded"
    evt = so.event(f"payment_intent.{kind}", intent_for(scene, status))
    with statements(exactly=hold_budget()):
        assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert sim_stripe.calls == []


def test_a_charge_event(deliver: Any, make_payment: Any) -> None:
    scene = make_payment(strategy=MANUAL, with_charge=False)
    charge = so.charge(payment_intent=scene.payment.stripe_payment_intent_id, captured=False)
    on_postgresql = connection.vendor == "postgresql"
    with statements(at_most=SHORTCUT_BUDGET if on_postgresql else NEW_EVENT_BUDGET):
        assert deliver.platform(so.event("charge.succeeded", charge)).json()["status"] == (
            "processed"
        )
    assert scene.refresh().stripe_charge_id == charge["id"]


def test_an_account_update(deliver: Any) -> None:
    """On PostgreSQL the read, then the account's change and the event's insert
    in one statement; on SQLite the pipeline's two, the locked read and the ``UPDATE``."""
    account = factories.make_account(owner_user=factories.make_user("doer"))
    acct = account.stripe_account_id
    evt = so.event("account.updated", so.account(acct), account=acct)
    on_postgresql = connection.vendor == "postgresql"
    with statements(exactly=SHORTCUT_BUDGET if on_postgresql else NEW_EVENT_BUDGET):
        assert deliver.connect(evt).json()["status"] == "processed"
    account.refresh_from_db()
    assert (account.status, account.synced_at is not None) == ("verified", True)


def test_a_failed_handler_leaves_a_failed_event_and_no_half_write(
    deliver: Any, make_payment: Any, monkeypatch: Any
) -> None:
    """The handler's writes roll back with the event row; the failure is then recorded."""
    scene = make_payment()
    users = get_user_model().objects.count()

    def half_then_boom(context: EventContext) -> None:
        factories.make_user("written-by-the-failing-handler")
        raise RuntimeError("boom")

    monkeypatch.setitem(
        registry.HANDLERS, "escrow_test.boom", registry.Route(half_then_boom, registry.PLATFORM)
    )
    evt = so.event("escrow_test.boom", so.charge())
    response = deliver.platform(evt)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "processing_failed"
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert "RuntimeError: boom" in row.last_error
    assert row.payload["id"] == evt["id"]
    assert get_user_model().objects.count() == users
    assert scene.refresh().status == "awaiting_payment"


def test_an_account_update_writes_only_the_changed_columns(deliver: Any) -> None:
    """The locked read's ``UPDATE`` (the path a host's django-fsm receiver keeps)."""
    account = factories.make_account(owner_user=factories.make_user("doer"))
    acct = account.stripe_account_id
    evt = so.event("account.updated", so.account(acct, payouts_enabled=False), account=acct)
    with fsm_listener("ConnectedAccount"), CaptureQueriesContext(connection) as captured:
        assert deliver.connect(evt).json()["status"] == "processed"
    [update] = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE")]
    assigned = update.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    assert '"payouts_enabled"' in assigned
    assert '"synced_at"' in assigned
    assert '"owner_user_id"' not in assigned
    assert '"created_at"' not in assigned
    account.refresh_from_db()
    assert account.payouts_enabled is False


def test_a_hosts_post_save_receiver_on_the_event_log_still_sees_each_new_event(
    deliver: Any,
) -> None:
    """The event row's one-statement insert stands in for ``save()`` only where
    nobody listens: with a receiver, ``save()`` (and its signals) inserts it."""
    from django.db.models.signals import post_save

    from django_escrow_connect import swappable

    seen: list[tuple[str, bool]] = []

    def receiver(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        seen.append((instance.stripe_event_id, created))

    model = swappable.load("WebhookEvent")
    post_save.connect(receiver, sender=model, weak=False)
    try:
        evt = so.event("customer.created", {"id": "cus_1", "object": "customer"})
        assert deliver.platform(evt).json()["status"] == "ignored"
        assert deliver.platform(evt).json()["status"] == "duplicate"
    finally:
        post_save.disconnect(receiver, sender=model)
    assert seen == [(evt["id"], True)]
    assert events().get(stripe_event_id=evt["id"]).status == "ignored"
