"""``payment_intent.succeeded`` / ``requires_capture`` hold the money in one
conditional ``UPDATE`` (plus one for the task), and end exactly where the
locked read + ``save()`` path ends.

The locked path is still taken when a host listens to django-fsm's transition
signals (they need the instance and the transition call): connecting a
``post_transition`` receiver is how these tests run the same event both ways.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect import swappable
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL, SCT, fsm_listener, intent_for, status_history

pytestmark = pytest.mark.django_db

#: Columns that differ between two payments by construction, or by the clock.
UNCOMPARED = {
    "id",
    "task_id",
    "payer_id",
    "payee_user_id",
    "destination_account_id",
    "stripe_payment_intent_id",
    "stripe_charge_id",
    "transfer_group",
    "intent_idempotency_key",
    "created_at",
    "updated_at",
    "held_at",
}


def columns(payment: Any) -> dict[str, Any]:
    return {
        field.attname: getattr(payment, field.attname)
        for field in payment._meta.concrete_fields
        if field.attname not in UNCOMPARED
    }


def deliver_both_ways(
    deliver: Any, make_payment: Any, event_type: str, intent_status: str, **options: Any
) -> tuple[Any, Any, list[str], list[str]]:
    """The same event for two identical payments: fast path, then locked path."""
    # One creation time for both intents: a deadline estimated from it must
    # not differ by the second that passed between the two deliveries.
    intent_overrides = {"created": so.now(), **options.pop("intent", {})}
    scenes = [make_payment(**options), make_payment(**options)]
    sql: list[str] = []
    for index, scene in enumerate(scenes):
        evt = so.event(event_type, intent_for(scene, intent_status, **intent_overrides))
        with CaptureQueriesContext(connection) as captured:
            if index == 0:
                assert deliver.platform(evt).json()["status"] == "processed"
            else:
                with fsm_listener() as transitions_seen:
                    assert deliver.platform(evt).json()["status"] == "processed"
        if index == 0:
            sql = [q["sql"] for q in captured.captured_queries]
    return scenes[0], scenes[1], sql, transitions_seen


CASES = {
    "succeeded, separate charges": ("payment_intent.succeeded", "succeeded", {"strategy": SCT}),
    "authorised, manual capture": (
        "payment_intent.amount_capturable_updated",
        "requires_capture",
        {"strategy": MANUAL},
    ),
    "authorised, Stripe's deadline known": (
        "payment_intent.amount_capturable_updated",
        "requires_capture",
        {"strategy": MANUAL, "intent": {"created": 1_700_000_000}},
    ),
    "authorised, deadline already recorded by the charge": (
        "payment_intent.amount_capturable_updated",
        "requires_capture",
        {"strategy": MANUAL, "capture_before": datetime(2031, 1, 2, tzinfo=UTC)},
    ),
    "a failed attempt, then succeeded": (
        "payment_intent.succeeded",
        "succeeded",
        {"status": "failed", "failure_code": "card_declined", "failure_message": "Declined."},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_one_statement_hold_ends_where_the_locked_path_ends(
    deliver: Any, make_payment: Any, sim_stripe: Any, case: str
) -> None:
    event_type, status, options = CASES[case]
    fast, locked, sql, transitions_seen = deliver_both_ways(
        deliver, make_payment, event_type, status, **dict(options)
    )
    assert transitions_seen == ["mark_held"]  # the host's receiver still runs
    assert not any("FOR UPDATE" in q for q in sql)
    assert status_history(fast) == status_history(locked) == ("held", "payment_in_escrow")
    assert columns(fast.payment) == columns(locked.payment)
    assert fast.payment.stripe_charge_id
    assert locked.payment.stripe_charge_id
    assert fast.payment.held_at is not None
    if options.get("strategy") == MANUAL:
        assert fast.payment.capture_before is not None


def test_an_estimated_deadline_is_counted_from_the_intents_creation(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment(strategy=MANUAL)
    evt = so.event(
        "payment_intent.amount_capturable_updated",
        intent_for(scene, "requires_capture", created=1_700_000_000),
    )
    assert deliver.platform(evt).json()["status"] == "processed"
    created = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert scene.refresh().capture_before == created + timedelta(days=7)


def test_held_is_notified_on_commit_with_the_held_payment(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment()
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    assert deliver.platform(evt).json()["status"] == "processed"
    [kwargs] = sent.of("payment_held")
    payment = kwargs["payment"]
    assert isinstance(payment, swappable.load("EscrowPayment"))
    assert (payment.pk, payment.status) == (scene.payment.pk, "held")
    assert columns(payment) == columns(scene.refresh())
    assert payment.task.pk == scene.task.pk


@pytest.mark.parametrize(
    ("start", "expected"),
    [("held", ("held", "pending_payment")), ("released", ("released", "pending_payment"))],
)
def test_a_state_past_held_is_never_moved_back(
    deliver: Any, make_payment: Any, sim_stripe: Any, start: str, expected: tuple[str, str]
) -> None:
    scene = make_payment(start)
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == expected


def test_a_manual_capture_succeeded_is_its_capture_not_a_hold(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    """Excluded from the one-statement hold: it releases the payment."""
    scene = make_payment("held", strategy=MANUAL)
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    assert deliver.platform(evt).json()["status"] == "processed"
    assert scene.refresh().status == "released"
    assert sent.of("payment_held") == []


def test_a_task_state_no_transition_leaves_from_is_logged_and_left(
    deliver: Any, make_payment: Any, sim_stripe: Any, caplog: Any
) -> None:
    """The payment is held; the task's ``UPDATE`` (one statement with the payment's
    on PostgreSQL) matches nothing and says why, as ``sync_task_status`` does."""
    scene = make_payment()
    swappable.load("Task").objects.filter(pk=scene.task.pk).update(payment_status="on_hold")
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    with caplog.at_level("INFO", logger="django_escrow_connect.services"):
        assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("held", "on_hold")
    assert "no transition from on_hold to payment_in_escrow" in caplog.text


def test_a_task_already_in_escrow_stays_and_nothing_is_logged(
    deliver: Any, make_payment: Any, sim_stripe: Any, caplog: Any
) -> None:
    scene = make_payment()
    swappable.load("Task").objects.filter(pk=scene.task.pk).update(
        payment_status="payment_in_escrow"
    )
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    with caplog.at_level("INFO", logger="django_escrow_connect.services"):
        assert deliver.platform(evt).json()["status"] == "processed"
    assert status_history(scene) == ("held", "payment_in_escrow")
    assert "no transition" not in caplog.text


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a data-modifying WITH is PostgreSQL's"
)
def test_on_postgresql_the_payment_and_its_task_move_in_one_statement(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene = make_payment()
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    with CaptureQueriesContext(connection) as captured:
        assert deliver.platform(evt).json()["status"] == "processed"
    updates = [q["sql"] for q in captured.captured_queries if "UPDATE" in q["sql"]]
    assert len(updates) == 1
    # With the event's insert (webhooks/shortcuts.py): one statement in all.
    assert "changed AS (UPDATE" in updates[0]
    assert "followed AS (UPDATE" in updates[0]
    assert "inserted AS (INSERT" in updates[0]
    assert status_history(scene) == ("held", "payment_in_escrow")
