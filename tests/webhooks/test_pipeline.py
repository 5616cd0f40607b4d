"""The pipeline after verification: record once, dispatch, settle.

A spy handler is registered for a test event type, so these tests observe
the pipeline itself: duplicates, failures and retries, deferral, task
processing, replay, query counts and log lines.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.services.errors import UnknownObject
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import pipeline, receiver, registry
from django_escrow_connect.webhooks.context import EventContext
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import PLATFORM_SECRET, events

SPY = "escrow_test.spy"


class Spy:
    """A handler that records its calls and does what it is told."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.raise_: list[BaseException] = []
        self.sleep = 0.0
        self.atomic_depth: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, context: EventContext) -> None:
        with self.lock:
            self.calls.append(context.id)
        self.atomic_depth.append(len(connection.atomic_blocks))
        context.payment_id = "pay-42"
        context.connected_account = "acct_1TestSpy"
        if self.sleep:
            time.sleep(self.sleep)
        if self.raise_:
            raise self.raise_.pop(0)


@pytest.fixture
def spy(monkeypatch: Any) -> Spy:
    handler = Spy()
    route = registry.Route(handler, registry.PLATFORM | registry.CONNECT)
    monkeypatch.setitem(registry.HANDLERS, SPY, route)
    return handler


def spy_event(**kwargs: Any) -> dict[str, Any]:
    return so.event(SPY, so.charge(), **kwargs)


def status_of(evt: dict[str, Any]) -> Any:
    return events().get(stripe_event_id=evt["id"])


pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------


def test_duplicate_delivery_is_processed_once(deliver: Any, spy: Spy) -> None:
    evt = spy_event()
    first = deliver.platform(evt)
    second = deliver.platform(evt)
    assert first.json()["status"] == "processed"
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert spy.calls == [evt["id"]]
    row = status_of(evt)
    assert (row.status, row.attempts) == ("processed", 1)


def test_duplicate_of_an_ignored_event_does_nothing(deliver: Any) -> None:
    evt = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    assert deliver.platform(evt).json()["status"] == "ignored"
    assert deliver.platform(evt).json()["status"] == "duplicate"
    assert events().count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(5))  # a race proves more when repeated
def test_concurrent_duplicates_are_processed_once(spy: Spy, iteration: int) -> None:
    evt = spy_event()
    payload = so.encode(evt)
    header = sign_webhook_payload(payload, PLATFORM_SECRET)
    spy.sleep = 0.2
    barrier = threading.Barrier(8)
    outcomes: list[pipeline.Outcome] = []

    def deliver_once() -> None:
        try:
            barrier.wait()
            outcomes.append(receiver.receive(WebhookEndpoint.PLATFORM, payload, header))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 8
    assert all(outcome.status_code == 200 for outcome in outcomes), outcomes
    assert sorted(o.status for o in outcomes) == ["duplicate"] * 7 + ["processed"]
    assert spy.calls == [evt["id"]]
    row = status_of(evt)
    assert (row.status, row.attempts) == ("processed", 1)


# --------------------------------------------------------------------------
# Failures, retries, deferral
# --------------------------------------------------------------------------


def test_handler_error_fails_the_event_and_asks_stripe_to_retry(
    deliver: Any, spy: Spy, sent: Any
) -> None:
    spy.raise_.append(RuntimeError("ledger offline"))
    evt = spy_event()
    response = deliver.platform(evt)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "processing_failed"
    row = status_of(evt)
    assert row.status == "failed"
    assert row.attempts == 1
    assert row.last_error == "RuntimeError: ledger offline"
    [failure] = sent.of("webhook_processing_failed")
    assert failure["event"].stripe_event_id == evt["id"]
    assert failure["error"] == "RuntimeError: ledger offline"

    # Stripe delivers the same event again; this time the handler succeeds.
    retry = deliver.platform(evt)
    assert retry.status_code == 200
    assert retry.json()["status"] == "processed"
    row = status_of(evt)
    assert (row.status, row.attempts, row.last_error) == ("processed", 2, "")
    assert spy.calls == [evt["id"], evt["id"]]


def test_handler_writes_are_rolled_back_on_failure(deliver: Any, monkeypatch: Any) -> None:
    from tests import factories

    def half_done(context: EventContext) -> None:
        factories.make_user("written-before-the-crash")
        raise ValueError("boom")

    monkeypatch.setitem(registry.HANDLERS, SPY, registry.Route(half_done, registry.PLATFORM))
    from django.contrib.auth import get_user_model

    before = get_user_model().objects.count()
    assert deliver.platform(spy_event()).status_code == 500
    assert get_user_model().objects.count() == before


@pytest.mark.parametrize("path", ["new", "replay"])
def test_a_read_the_handler_asks_for_is_made_outside_its_transaction(
    deliver: Any, monkeypatch: Any, path: str
) -> None:
    """A handler that needs Stripe's answer under its locks raises ReadFirst:
    its writes are rolled back, the read is made with no transaction open,
    and the handler runs again with the answer. One that keeps asking fails."""
    from django.contrib.auth import get_user_model

    from django_escrow_connect.services.errors import ReadFirst
    from django_escrow_connect.services.operations import in_transaction
    from tests import factories

    made: list[bool] = []
    rounds: list[dict[str, Any]] = []

    def read() -> str:
        made.append(in_transaction())
        return "answer"

    def needs_a_read(context: EventContext) -> None:
        rounds.append(dict(context.fetched))
        factories.make_user(f"round-{len(rounds)}")
        if "thing" not in context.fetched:
            raise ReadFirst("thing", read)

    def handle_with(handler: Any) -> None:
        monkeypatch.setitem(registry.HANDLERS, SPY, registry.Route(handler, registry.PLATFORM))

    handle_with(needs_a_read)
    users_before = get_user_model().objects.count()
    evt = spy_event()
    if path == "replay":
        handle_with(lambda context: None)
        deliver.platform(evt)
        handle_with(needs_a_read)
        assert pipeline.replay(status_of(evt).pk) == "processed"
    else:
        assert deliver.platform(evt).json()["status"] == "processed"
    assert made == [False]
    assert rounds == [{}, {"thing": "answer"}]
    # The first round's user was rolled back with its transaction.
    assert get_user_model().objects.count() == users_before + 1

    def keeps_asking(context: EventContext) -> None:
        raise ReadFirst(f"thing-{len(context.fetched)}", read)

    handle_with(keeps_asking)
    other = spy_event()
    assert deliver.platform(other).status_code == 500
    row = status_of(other)
    assert row.status == "failed"
    assert row.last_error.startswith("RuntimeError: The handler asked Stripe once too often")


def test_unknown_object_defers_then_reconcile_processes_it(deliver: Any, spy: Spy) -> None:
    spy.raise_.append(UnknownObject("No payment for pi_123 (yet)."))
    evt = spy_event()
    response = deliver.platform(evt)
    assert response.status_code == 200
    assert response.json()["status"] == "deferred"
    row = status_of(evt)
    assert (row.status, row.last_error) == ("deferred", "No payment for pi_123 (yet).")

    # A duplicate delivery leaves a deferred event to the reconcile command.
    assert deliver.platform(evt).json()["status"] == "duplicate"
    assert len(spy.calls) == 1

    assert pipeline.process_deferred(limit=10) == {"processed": 1}
    assert status_of(evt).status == "processed"
    assert len(spy.calls) == 2


def test_reconcile_exits_non_zero_when_a_deferred_event_fails_on_retry(
    deliver: Any, spy: Spy
) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    spy.raise_.extend([UnknownObject("No payment for pi_123 (yet)."), RuntimeError("boom")])
    evt = spy_event()
    assert deliver.platform(evt).json()["status"] == "deferred"
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="Some operations failed"):
        call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=err)
    assert "deferred events retried (failed: 1)" in err.getvalue()
    assert status_of(evt).status == "failed"
    # Nothing failed in the next run: exit 0.
    call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=err)


def test_deferred_too_long_is_ignored(deliver: Any, spy: Spy) -> None:
    spy.raise_.extend([UnknownObject("late"), UnknownObject("still late")])
    evt = spy_event()
    deliver.platform(evt)
    events().filter(stripe_event_id=evt["id"]).update(
        received_at=timezone.now() - pipeline.DEFERRED_MAX_AGE - timedelta(hours=1)
    )
    assert pipeline.process_deferred() == {"ignored": 1}
    row = status_of(evt)
    assert row.status == "ignored"
    assert "Gave up" in row.last_error


@pytest.fixture
def waiting(monkeypatch: Any) -> Any:
    """A handler that defers its event until the test says its object arrived."""

    class Waiting:
        arrived: set[str] = set()
        tried: list[str] = []

        def __call__(self, context: EventContext) -> None:
            self.tried.append(context.id)
            if context.id not in self.arrived:
                raise UnknownObject(f"No object for {context.id} (yet).")

    handler = Waiting()
    monkeypatch.setitem(registry.HANDLERS, SPY, registry.Route(handler, registry.PLATFORM))
    return handler


def test_deferred_events_that_never_resolve_do_not_starve_newer_ones(
    deliver: Any, waiting: Any
) -> None:
    # Three events about objects that never come, older and already retried...
    stuck = [spy_event() for _ in range(3)]
    for evt in stuck:
        assert deliver.platform(evt).json()["status"] == "deferred"
    events().update(received_at=timezone.now() - timedelta(days=1))
    assert pipeline.process_deferred(limit=3) == {"deferred": 3}
    # ... and one deferred since, whose object has arrived now.
    late = spy_event()
    assert deliver.platform(late).json()["status"] == "deferred"
    waiting.arrived.add(late["id"])
    waiting.tried.clear()

    # A run that has room for three retries the one tried least first.
    assert pipeline.process_deferred(limit=3) == {"processed": 1, "deferred": 2}
    assert waiting.tried[0] == late["id"]
    assert status_of(late).status == "processed"
    # Round robin: the next run tries the stuck event left out of this one first.
    left_out = next(e["id"] for e in stuck if e["id"] not in waiting.tried)
    waiting.tried.clear()
    pipeline.process_deferred(limit=1)
    assert waiting.tried == [left_out]
    assert {status_of(e).attempts for e in stuck} == {3}


def test_deferred_retries_stop_at_the_time_budget(deliver: Any, waiting: Any) -> None:
    evt = spy_event()
    deliver.platform(evt)
    waiting.arrived.add(evt["id"])
    waiting.tried.clear()

    assert pipeline.process_deferred(time_budget=timedelta(0)) == {"postponed": 1}
    assert waiting.tried == []
    assert (status_of(evt).status, status_of(evt).attempts) == ("deferred", 1)
    assert pipeline.process_deferred() == {"processed": 1}


def test_purged_payload_fails_instead_of_guessing(deliver: Any, spy: Spy) -> None:
    spy.raise_.append(RuntimeError("first attempt"))
    evt = spy_event()
    deliver.platform(evt)
    events().filter(stripe_event_id=evt["id"]).update(payload=None)
    assert deliver.platform(evt).status_code == 500
    assert "purged" in status_of(evt).last_error


# --------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_atomic_requests_do_not_wrap_the_pipeline(deliver: Any, spy: Spy) -> None:
    settings_dict = connections["default"].settings_dict
    settings_dict["ATOMIC_REQUESTS"] = True
    try:
        spy.raise_.append(RuntimeError("boom"))
        evt = spy_event()
        assert deliver.platform(evt).status_code == 500
    finally:
        settings_dict["ATOMIC_REQUESTS"] = False
    # The handler ran in the pipeline's own transaction only, and the failed
    # event row was committed despite ATOMIC_REQUESTS.
    assert spy.atomic_depth == [1]
    assert status_of(evt).status == "failed"


# --------------------------------------------------------------------------
# Task processing
# --------------------------------------------------------------------------


try:  # the same framework webhooks/tasks.py uses: Django 6's, else the backport
    import django.tasks as tasks_framework
except ImportError:
    import django_tasks as tasks_framework

BACKENDS = f"{tasks_framework.__name__}.backends"


@pytest.fixture
def task_processing(settings: Any) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}


def test_task_mode_enqueues_and_the_worker_processes(
    deliver: Any, spy: Spy, task_processing: None, settings: Any
) -> None:
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.immediate.ImmediateBackend"}}
    evt = spy_event()
    response = deliver.platform(evt)
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert status_of(evt).status == "processed"
    assert spy.calls == [evt["id"]]


def test_task_mode_answers_before_processing(
    deliver: Any, spy: Spy, task_processing: None, settings: Any
) -> None:
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.dummy.DummyBackend"}}
    default_task_backend = tasks_framework.default_task_backend
    evt = spy_event()
    assert deliver.platform(evt).json()["status"] == "queued"
    assert status_of(evt).status == "received"
    assert spy.calls == []
    [result] = default_task_backend.results
    assert result.args == [evt["id"]]
    # A duplicate while it waits is queued again: the worker that runs second
    # finds the event processed and does nothing.
    assert deliver.platform(evt).json()["status"] == "queued"
    from django_escrow_connect.webhooks.tasks import process_webhook_event

    assert process_webhook_event.call(evt["id"]) == "processed"
    assert process_webhook_event.call(evt["id"]) is None
    assert spy.calls == [evt["id"]]


# --------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------


def test_replay_runs_a_processed_event_again(deliver: Any, spy: Spy) -> None:
    evt = spy_event()
    deliver.platform(evt)
    row = status_of(evt)
    assert pipeline.replay(row.pk) == "processed"
    assert spy.calls == [evt["id"], evt["id"]]
    assert status_of(evt).attempts == 2


# --------------------------------------------------------------------------
# Query budget
# --------------------------------------------------------------------------


# Query budgets with real transactions are in test_query_budget.py.


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


def test_log_lines_carry_the_event_and_never_secrets(deliver: Any, spy: Spy, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="django_escrow_connect")
    intent = so.payment_intent(client_secret="pi_x_secret_MUSTNOTLEAK")
    evt = so.event(SPY, intent)
    deliver.platform(evt)
    spy.raise_.append(RuntimeError("boom"))
    deliver.platform(spy_event())
    deliver.platform(spy_event(), secret="whsec_wrong")

    records = [r for r in caplog.records if r.name == "django_escrow_connect.webhooks"]
    assert records
    for record in records:
        if getattr(record, "webhook_status", None) == "processed":
            assert record.stripe_event_id == evt["id"]
            assert record.event_type == SPY
            assert record.payment_id == "pay-42"
            assert record.connected_account == "acct_1TestSpy"
    assert any(getattr(r, "webhook_status", "") == "failed" for r in records)
    assert all(hasattr(r, "stripe_event_id") or hasattr(r, "webhook_endpoint") for r in records)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "MUSTNOTLEAK" not in text
    assert PLATFORM_SECRET not in text
