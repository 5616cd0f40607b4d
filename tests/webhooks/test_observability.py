"""Webhook spans and counts; the metrics snapshot, its gauges and ``escrow_metrics``."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_escrow_connect import swappable
from django_escrow_connect.observability import metrics_snapshot, render_prometheus
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL, intent_for

pytestmark = pytest.mark.django_db

EVENTS = "escrow_connect.webhook.events"


def point(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def local_events(event_type: str, outcome: str) -> int:
    return sum(
        entry["count"]
        for entry in metrics_snapshot()["webhook_events"]
        if (entry["event_type"], entry["outcome"]) == (event_type, outcome)
    )


def test_an_event_is_traced_and_counted_by_type_and_outcome(
    deliver: Any, make_payment: Any, sim_stripe: Any, otel: Any
) -> None:
    scene = make_payment()
    evt = so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))
    processed = point(event_type="payment_intent.succeeded", outcome="processed")
    duplicate = point(event_type="payment_intent.succeeded", outcome="duplicate")
    before = otel.metric(EVENTS)
    local_before = local_events("payment_intent.succeeded", "processed")

    assert deliver.platform(evt).json()["status"] == "processed"
    assert deliver.platform(evt).json()["status"] == "duplicate"

    after = otel.metric(EVENTS)
    assert after[processed] == before.get(processed, 0) + 1
    assert after[duplicate] == before.get(duplicate, 0) + 1
    assert local_events("payment_intent.succeeded", "processed") == local_before + 1
    # The duplicate is answered by one read, before the pipeline (and its span).
    [traced] = otel.spans("escrow_connect.webhook")
    assert traced.attributes["webhook.event_type"] == "payment_intent.succeeded"
    assert traced.attributes["webhook.event_id"] == evt["id"]
    assert traced.attributes["webhook.endpoint"] == "platform"
    assert traced.attributes["webhook.outcome"] == "processed"


def test_a_rejected_delivery_is_counted(deliver: Any, otel: Any) -> None:
    key = point(event_type="unknown", outcome="rejected")
    before = otel.metric(EVENTS).get(key, 0)
    response = deliver.platform(so.event("payment_intent.succeeded", {}), signature="t=1,v1=00")
    assert response.status_code == 400
    assert otel.metric(EVENTS)[key] == before + 1


def test_a_failed_event_is_an_error_span_and_counted(
    deliver: Any, make_payment: Any, sim_stripe: Any, otel: Any, monkeypatch: Any
) -> None:
    from django_escrow_connect.webhooks import pipeline

    def broken(context: Any) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(pipeline, "handler_for", lambda *args: broken)
    scene = make_payment()
    evt = so.event("payment_intent.processing", intent_for(scene, "processing"))
    key = point(event_type="payment_intent.processing", outcome="failed")
    before = otel.metric(EVENTS).get(key, 0)

    assert deliver.platform(evt).status_code == 500
    assert deliver.platform(evt).status_code == 500  # Stripe's retry: process_event

    assert otel.metric(EVENTS)[key] == before + 2
    # New: inserted, handler failed, rolled back. Retry: found recorded by the
    # read before the pipeline, processed again from the row.
    first, retry = otel.spans("escrow_connect.webhook")
    assert first.status.status_code.name == "ERROR"
    assert first.attributes["webhook.outcome"] == "failed"
    assert retry.status.status_code.name == "ERROR"
    assert retry.attributes["webhook.outcome"] == "failed"
    assert retry.attributes["webhook.event_id"] == evt["id"]
    for traced in (first, retry):
        assert "handler bug" not in json.dumps(dict(traced.attributes))


def incident(scene: Any, kind: str, *, resolved: bool = False) -> None:
    swappable.load("PaymentIncident").objects.create(
        payment=scene.payment, kind=kind, resolved_at=timezone.now() if resolved else None
    )


def held(make_payment: Any, *, days: int, amount: int = 10_000, currency: str = "usd") -> Any:
    held_at = timezone.now() - timedelta(days=days)
    return make_payment("held", held_at=held_at, amount=amount, currency=currency, platform_fee=0)


def test_the_snapshot_aggregates_in_a_constant_number_of_queries(
    make_payment: Any, django_assert_num_queries: Any
) -> None:
    scene = held(make_payment, days=3)
    incident(scene, "amount_mismatch")
    incident(scene, "payment_failed", resolved=True)
    with django_assert_num_queries(4):
        snapshot = metrics_snapshot()
    [usd] = snapshot["payments_held"]
    assert (usd["currency"], usd["count"], usd["amount"]) == ("usd", 1, 10_000)
    assert 3 * 86400 <= usd["oldest_age_seconds"] < 3 * 86400 + 60
    assert snapshot["incidents_open"] == {"amount_mismatch": 1}

    for days in range(49):
        held(make_payment, days=days % 5, amount=1_000, currency="eur" if days % 2 else "usd")
    with django_assert_num_queries(4):
        snapshot = metrics_snapshot()
    by_currency = {row["currency"]: row for row in snapshot["payments_held"]}
    assert by_currency["usd"]["count"] + by_currency["eur"]["count"] == 50
    assert by_currency["usd"]["oldest_age_seconds"] >= 3 * 86400


def test_the_held_amount_is_what_is_still_held(make_payment: Any) -> None:
    """A milestone release or a release in flight still holds the rest of the money."""
    held(make_payment, days=1, amount=10_000)
    now = timezone.now()
    make_payment(
        "partially_released", held_at=now, amount=9_000, amount_released=3_000, platform_fee=0
    )
    make_payment(
        "releasing",
        held_at=now,
        amount=5_000,
        amount_released=1_000,
        amount_refunded=500,
        platform_fee=0,
    )
    make_payment("released", held_at=now, amount=7_000, amount_released=7_000, platform_fee=0)
    make_payment("partially_refunded", held_at=now, amount=4_000, amount_refunded=4_000)

    [usd] = metrics_snapshot()["payments_held"]
    assert (usd["count"], usd["amount"]) == (3, 10_000 + 6_000 + 3_500)

    text = render_prometheus(metrics_snapshot())
    assert 'escrow_connect_payments_held_amount{currency="usd"} 19500\n' in text


def test_a_lost_dispute_s_rest_still_held_is_counted(make_payment: Any) -> None:
    """A dispute_lost payment counts with what its partial dispute left held
    (docs/recovery.md), released at once or in parts to one doer; one with
    nothing left held does not."""
    from django_escrow_connect import factories as kit

    def lost(disputed: int, **fields: Any) -> Any:
        scene = make_payment("dispute_lost", held_at=timezone.now(), platform_fee=0, **fields)
        kit.make_dispute(scene.payment, status="lost", amount=disputed)
        return scene.payment

    lost(3_000)  # 7,000 left held
    lost(10_000)  # all of it taken
    lost(3_000, amount_released=7_000)  # its rest released
    lost(
        1_000,
        status_before_dispute="partially_released",
        amount_released=4_000,
        released_in_parts=True,
    )  # 5,000 left held: released in parts, its rest is releasable too
    # Manual capture: a dispute means its charge was captured, which paid
    # the doer; nothing is left to release (start_release_of_rest refuses),
    # so nothing counts, whether caught in flight or settled held.
    for before in ("releasing", "held"):
        lost(
            2_000,
            strategy=MANUAL,
            status_before_dispute=before,
            capture_before=timezone.now() - timedelta(days=1),
        )
    # An appeal of the loss under way freezes the release of the rest.
    appealed = lost(4_000)
    kit.make_dispute(appealed, status="appeal_needs_response", amount=4_000)

    [usd] = metrics_snapshot()["payments_held"]
    assert (usd["count"], usd["amount"]) == (2, 7_000 + 5_000)
    assert usd["capture_deadline_seconds"] is None


def test_the_gauges_read_the_database(make_payment: Any, otel: Any) -> None:
    scene = held(make_payment, days=2)
    held(make_payment, days=0)
    incident(scene, "capture_expired")
    make_payment("released")

    assert otel.metric("escrow_connect.payments.held") == {point(currency="usd"): 2}
    [age] = otel.metric("escrow_connect.payments.held.oldest_age_seconds").values()
    assert 2 * 86400 <= age < 2 * 86400 + 60
    assert otel.metric("escrow_connect.incidents.open") == {point(kind="capture_expired"): 1}


def test_a_declined_payments_incident_is_not_counted_open(make_payment: Any, otel: Any) -> None:
    """Nothing resolves a ``payment_failed`` incident (the customer retries or
    leaves): counted open, the gauge would only grow and an alert on it never clear."""
    scene = held(make_payment, days=1)
    incident(scene, "payment_failed")
    incident(scene, "payment_failed")
    incident(scene, "refund_failed")

    assert metrics_snapshot()["incidents_open"] == {"refund_failed": 1}
    assert otel.metric("escrow_connect.incidents.open") == {point(kind="refund_failed"): 1}
    out = io.StringIO()
    call_command("escrow_metrics", "--format", "prometheus", stdout=out)
    # (The process's webhook counters may name the event type; the gauge must not.)
    assert 'escrow_connect_incidents_open{kind="payment_failed"}' not in out.getvalue()
    assert 'escrow_connect_incidents_open{kind="refund_failed"} 1\n' in out.getvalue()


def test_the_soonest_capture_deadline_is_reported(make_payment: Any, otel: Any) -> None:
    soon = timezone.now() + timedelta(hours=20)
    held(make_payment, days=5)  # automatic capture: no deadline
    make_payment("held", strategy=MANUAL, held_at=timezone.now(), capture_before=soon)
    make_payment(
        "held", strategy=MANUAL, held_at=timezone.now(), capture_before=soon + timedelta(days=2)
    )

    [usd] = metrics_snapshot()["payments_held"]
    assert 20 * 3600 - 60 < usd["capture_deadline_seconds"] <= 20 * 3600
    [left] = otel.metric("escrow_connect.payments.held.capture_deadline_seconds").values()
    assert 20 * 3600 - 60 < left <= 20 * 3600


def test_the_gauges_are_empty_when_turned_off(make_payment: Any, otel: Any, settings: Any) -> None:
    held(make_payment, days=1)
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "OPENTELEMETRY": False}
    assert otel.metric("escrow_connect.payments.held") == {}


def test_escrow_metrics_prints_json_and_prometheus_text(make_payment: Any) -> None:
    scene = held(make_payment, days=1, amount=2_500)
    incident(scene, "amount_mismatch")

    out = io.StringIO()
    call_command("escrow_metrics", stdout=out)
    snapshot = json.loads(out.getvalue())
    assert snapshot["payments_held"][0]["amount"] == 2_500
    assert snapshot["incidents_open"] == {"amount_mismatch": 1}

    out = io.StringIO()
    call_command("escrow_metrics", "--format", "prometheus", stdout=out)
    text = out.getvalue()
    assert 'escrow_connect_payments_held{currency="usd"} 1\n' in text
    assert 'escrow_connect_payments_held_amount{currency="usd"} 2500\n' in text
    assert 'escrow_connect_incidents_open{kind="amount_mismatch"} 1\n' in text
    assert "# TYPE escrow_connect_stripe_errors_total counter\n" in text
    assert "# TYPE escrow_connect_payments_held_oldest_age_seconds gauge\n" in text
    assert "escrow_connect_payments_held_capture_deadline_seconds{" not in text  # none due
    for line in text.splitlines():
        assert line.startswith("#") or line.split(" ")[-1].isdigit(), line
