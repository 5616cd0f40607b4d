"""A new event in one statement (django_escrow_connect/webhooks/shortcuts.py).

On PostgreSQL, a handler whose common case is one conditional change (hold a
payment; a charge on a payment that has it, or has no charge yet) has it
joined to the event's insert: one autocommitted statement after the read of
the recorded state. These tests hold it to the rules the module states: it
either did the handler's whole work (the event ``processed``, the change and
the row committed together, the after-commit part run once) or nothing but
record the event, which the handler then processes as usual; a duplicate, a
recorded failed event and a concurrent first delivery change nothing twice;
a statement the database refuses falls back to the usual path.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext

from django_escrow_connect import swappable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.services.shortcut import Shortcut
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import pipeline, receiver, registry, shortcuts
from tests.reliability.conftest import run_concurrently
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import (
    MANUAL,
    PLATFORM_SECRET,
    events,
    intent_for,
    shortcut_taken,
    status_history,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

HOLD = "payment_intent.succeeded"


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")
        and not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]


def settled(evt: dict[str, Any]) -> tuple[str, int, bool, str]:
    row = events().get(stripe_event_id=evt["id"])
    return row.status, row.attempts, row.processed_at is not None, row.last_error


def test_the_types_with_a_shortcut() -> None:
    assert shortcut_taken("payment_intent.succeeded")
    assert shortcut_taken("payment_intent.amount_capturable_updated")
    assert shortcut_taken("charge.succeeded")
    assert shortcut_taken("charge.updated")
    assert not shortcut_taken("payment_intent.succeeded", WebhookEndpoint.CONNECT)
    assert shortcut_taken("account.updated", WebhookEndpoint.CONNECT)
    assert not shortcut_taken("capability.updated", WebhookEndpoint.CONNECT)


@pytest.mark.parametrize("strategy", ["separate_charges_and_transfers", MANUAL])
def test_a_hold_is_the_read_and_one_statement_and_settles_the_event(
    deliver: Any, make_payment: Any, sent: Any, sim_stripe: Any, strategy: str
) -> None:
    scene = make_payment(strategy=strategy)
    status = "requires_capture" if strategy == MANUAL else "succeeded"
    kind = "amount_capturable_updated" if strategy == MANUAL else "succeeded"
    evt = so.event(f"payment_intent.{kind}", intent_for(scene, status))
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "processed"
    read, statement = statements(captured)
    assert read.startswith("SELECT")
    assert statement.startswith("WITH recorded AS")
    assert "inserted AS (INSERT" in statement
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert settled(evt) == ("processed", 1, True, "")
    [held] = sent.of("payment_held")
    assert held["payment"].pk == scene.payment.pk
    assert held["payment"].status == "held"
    if strategy == MANUAL:
        assert scene.refresh().capture_before is not None
    assert sim_stripe.calls == []


def test_a_duplicate_changes_nothing_and_notifies_nothing(
    deliver: Any, make_payment: Any, sent: Any
) -> None:
    scene = make_payment()
    evt = so.event(HOLD, intent_for(scene, "succeeded"))
    assert deliver.platform(evt).json()["status"] == "processed"
    held_at = scene.refresh().held_at
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "duplicate"
    assert len(statements(captured)) == 1
    assert scene.refresh().held_at == held_at
    assert len(sent.of("payment_held")) == 1
    assert events().filter(stripe_event_id=evt["id"]).count() == 1


def test_when_the_shortcut_does_not_apply_the_handler_decides(
    deliver: Any, make_payment: Any, sent: Any
) -> None:
    """An amount that differs: recorded ``received`` by the statement, then the
    handler (row locked) records the incident and holds nothing."""
    scene = make_payment()
    evt = so.event(HOLD, intent_for(scene, "succeeded", amount=scene.payment.amount + 1))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("awaiting_payment", "pending_payment")
    assert scene.payment.incidents.filter(kind="amount_mismatch").count() == 1
    assert settled(evt) == ("processed", 1, True, "")
    assert sent.of("payment_held") == []


def test_an_unknown_payment_intent_is_deferred_as_before(deliver: Any, make_payment: Any) -> None:
    scene = make_payment()
    intent = intent_for(scene, "succeeded", id="pi_1TestNotYetKnown0001")
    evt = so.event(HOLD, intent)
    assert deliver.platform(evt).json()["status"] == "deferred"
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.attempts) == ("deferred", 1)
    assert scene.refresh().status == "awaiting_payment"


def test_a_recorded_event_keeps_the_statement_from_changing_anything(make_payment: Any) -> None:
    """The race the read cannot close: the row appears between the read and the
    statement. The guard keeps the change from running; the insert does nothing."""
    scene = make_payment()
    evt = so.event(HOLD, intent_for(scene, "succeeded"))
    row = receiver.new_event_row(WebhookEndpoint.PLATFORM, evt)
    row.save()
    events().filter(pk=row.pk).update(status="failed", attempts=1)
    shortcut = shortcuts.plan(WebhookEndpoint.PLATFORM, evt)
    assert shortcut is not None
    found = shortcuts.process(
        receiver.new_event_row(WebhookEndpoint.PLATFORM, evt),
        shortcut,
        scene.payment.stripe_payment_intent_id,
    )
    assert isinstance(found, pipeline.RecordedEvent)
    assert (found.pk, found.status, found.is_pending) == (row.pk, "failed", True)
    assert status_history(scene) == ("awaiting_payment", "pending_payment")
    assert events().filter(stripe_event_id=evt["id"]).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(3))  # a race proves more when repeated
def test_concurrent_first_deliveries_hold_once(
    make_payment: Any, sent: Any, sim_stripe: Any, iteration: int
) -> None:
    scene = make_payment()
    evt = so.event(HOLD, intent_for(scene, "succeeded"))
    payload = so.encode(evt)
    header = sign_webhook_payload(payload, PLATFORM_SECRET)
    outcomes = run_concurrently(
        *[lambda: receiver.receive(WebhookEndpoint.PLATFORM, payload, header)] * 6
    )
    assert all(isinstance(o, receiver.Outcome) for o in outcomes), outcomes
    assert sorted(o.status for o in outcomes) == ["duplicate"] * 5 + ["processed"]
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert settled(evt) == ("processed", 1, True, "")
    assert len(sent.of("payment_held")) == 1


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_the_change_and_the_event_commit_together(
    make_payment: Any, sent: Any
) -> None:
    """Outside any transaction (the webhook view): no BEGIN/COMMIT around it."""
    scene = make_payment()
    evt = so.event(HOLD, intent_for(scene, "succeeded"))
    payload = so.encode(evt)
    header = sign_webhook_payload(payload, PLATFORM_SECRET)
    assert connection.get_autocommit()
    with CaptureQueriesContext(connection) as captured:
        outcome = receiver.receive(WebhookEndpoint.PLATFORM, payload, header)
    assert outcome.status == "processed"
    assert [q["sql"].split()[0] for q in captured.captured_queries] == ["SELECT", "WITH"]
    assert status_history(scene) == ("held", "payment_in_escrow")
    # Notified after the commit (on_commit runs at once in autocommit).
    assert len(sent.of("payment_held")) == 1
    connections.close_all()


def test_a_statement_the_database_refuses_falls_back_to_the_usual_path(
    deliver: Any, make_payment: Any, monkeypatch: Any, caplog: Any
) -> None:
    def broken(payload: dict[str, Any], condition: str) -> Shortcut:
        return Shortcut(
            ctes="broken AS (SELECT no_such_column FROM recorded)",
            params=[],
            applied="EXISTS (SELECT 1 FROM broken)",
            joins="",
            columns=[],
            finish=lambda values: None,
        )

    route = registry.HANDLERS[HOLD]
    monkeypatch.setitem(
        registry.HANDLERS, HOLD, registry.Route(route.handler, route.endpoints, broken)
    )
    scene = make_payment()
    evt = so.event(HOLD, intent_for(scene, "succeeded"))
    with caplog.at_level(logging.WARNING, logger="django_escrow_connect.webhooks"):
        assert deliver.platform(evt).json()["status"] == "processed"
    assert "webhook shortcut failed; taking the usual path" in caplog.text
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert settled(evt) == ("processed", 1, True, "")


# --- charges -------------------------------------------------------------------


def test_a_charge_already_recorded_writes_nothing(deliver: Any, make_payment: Any) -> None:
    scene = make_payment("held")
    payment = scene.payment
    charge = so.charge(id=payment.stripe_charge_id, payment_intent=payment.stripe_payment_intent_id)
    evt = so.event("charge.succeeded", charge)
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "processed"
    assert len(statements(captured)) == 2
    assert scene.refresh().updated_at == payment.updated_at
    assert settled(evt) == ("processed", 1, True, "")


def test_a_charge_before_its_payment_intent_records_the_charge_id(
    deliver: Any, make_payment: Any
) -> None:
    scene = make_payment(with_charge=False)
    charge = so.charge(payment_intent=scene.payment.stripe_payment_intent_id)
    evt = so.event("charge.succeeded", charge)
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "processed"
    assert len(statements(captured)) == 2
    assert scene.refresh().stripe_charge_id == charge["id"]
    assert scene.payment.status == "awaiting_payment"


def test_a_manual_capture_deadline_takes_the_handler(deliver: Any, make_payment: Any) -> None:
    """A charge that carries a capture deadline may change it: the handler decides."""
    scene = make_payment(strategy=MANUAL, with_charge=False)
    charge = so.charge(payment_intent=scene.payment.stripe_payment_intent_id, captured=False)
    charge["payment_method_details"]["card"]["capture_before"] = 1_900_000_000
    evt = so.event("charge.succeeded", charge)
    assert deliver.platform(evt).json()["status"] == "processed"
    payment = scene.refresh()
    assert payment.stripe_charge_id == charge["id"]
    assert int(payment.capture_before.timestamp()) == 1_900_000_000


def test_a_hosts_save_receiver_on_payments_keeps_the_charge_write_on_save(
    deliver: Any, make_payment: Any
) -> None:
    seen: list[str] = []

    def on_save(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance.stripe_charge_id)

    model = swappable.load("EscrowPayment")
    scene = make_payment(with_charge=False)
    charge = so.charge(payment_intent=scene.payment.stripe_payment_intent_id)
    post_save.connect(on_save, sender=model, weak=False)
    try:
        assert deliver.platform(so.event("charge.succeeded", charge)).json()["status"] == (
            "processed"
        )
    finally:
        post_save.disconnect(on_save, sender=model)
    assert seen == [charge["id"]]


# --- task mode ---------------------------------------------------------------------


def test_task_mode_records_in_one_statement(deliver: Any, settings: Any) -> None:
    try:
        import django.tasks  # noqa: F401

        backends = "django.tasks.backends"
    except ImportError:
        backends = "django_tasks.backends"
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}
    settings.TASKS = {"default": {"BACKEND": f"{backends}.dummy.DummyBackend"}}
    evt = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "queued"
    [statement] = statements(captured)
    assert statement.startswith("WITH recorded AS")
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.attempts) == ("received", 0)
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "queued"
    assert len(statements(captured)) == 1
    assert events().filter(stripe_event_id=evt["id"]).count() == 1
