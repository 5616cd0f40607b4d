"""Task mode: an event whose queue message was lost stays ``received``;
``escrow_requeue_stuck_events`` (and its task) enqueue it again, and an event
enqueued twice is still processed once."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone

from django_escrow_connect.tasks import PeriodicJobFailed, requeue_stuck_events_task
from django_escrow_connect.webhooks import registry
from django_escrow_connect.webhooks.tasks import process_webhook_event
from tests.webhooks.conftest import events
from tests.webhooks.test_pipeline import (
    BACKENDS,
    SPY,
    Spy,
    spy_event,
    status_of,
    tasks_framework,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def spy(monkeypatch: Any) -> Spy:
    handler = Spy()
    monkeypatch.setitem(registry.HANDLERS, SPY, registry.Route(handler, registry.PLATFORM))
    return handler


@pytest.fixture
def queue(settings: Any) -> Any:
    """Task mode on a backend that keeps the enqueued tasks (a broker we can lose)."""
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.dummy.DummyBackend"}}
    backend = tasks_framework.default_task_backend
    backend.clear()
    return backend


def received_minutes_ago(deliver: Any, minutes: int) -> dict[str, Any]:
    """An event recorded and queued ``minutes`` ago, its message then lost."""
    evt = spy_event()
    assert deliver.platform(evt).json()["status"] == "queued"
    events().filter(stripe_event_id=evt["id"]).update(
        received_at=timezone.now() - timedelta(minutes=minutes)
    )
    return evt


def requeue(*args: str) -> str:
    out = StringIO()
    call_command("escrow_requeue_stuck_events", *args, stdout=out)
    return out.getvalue()


def enqueued_ids(backend: Any) -> list[str]:
    return [result.args[0] for result in backend.results]


def test_an_event_left_received_is_enqueued_again_and_processed_once(
    deliver: Any, spy: Spy, queue: Any
) -> None:
    stuck = received_minutes_ago(deliver, 20)
    fresh = received_minutes_ago(deliver, 5)
    queue.clear()  # the broker lost both messages

    output = requeue()
    assert "Re-enqueued 1 events received more than 15 minutes ago" in output
    assert stuck["id"] in output
    # Only the event older than WEBHOOK_REQUEUE_AFTER_MINUTES (15).
    assert enqueued_ids(queue) == [stuck["id"]]
    assert process_webhook_event.call(stuck["id"]) == "processed"
    assert status_of(stuck).status == "processed"
    assert status_of(fresh).status == "received"

    # The lost message turns up after all: the event is not processed twice.
    assert process_webhook_event.call(stuck["id"]) is None
    assert spy.calls == [stuck["id"]]
    # Settled events are not enqueued again.
    queue.clear()
    assert "No webhook event is still received after 15 minutes" in requeue()
    assert enqueued_ids(queue) == []


def test_older_than_and_dry_run(deliver: Any, spy: Spy, queue: Any) -> None:
    stuck = received_minutes_ago(deliver, 5)
    queue.clear()
    output = requeue("--older-than", "3", "--dry-run")
    assert "Would re-enqueue 1 events received more than 3 minutes ago" in output
    assert enqueued_ids(queue) == []
    requeue("--older-than", "3")
    assert enqueued_ids(queue) == [stuck["id"]]


def test_the_setting_sets_the_default_threshold(
    deliver: Any, spy: Spy, queue: Any, settings: Any
) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_REQUEUE_AFTER_MINUTES": 60}
    received_minutes_ago(deliver, 20)
    queue.clear()
    requeue()
    assert enqueued_ids(queue) == []


def test_the_periodic_task_requeues(deliver: Any, spy: Spy, queue: Any) -> None:
    stuck = received_minutes_ago(deliver, 20)
    queue.clear()
    summary = requeue_stuck_events_task.call()
    assert summary == {"enabled": True, "requeued": [stuck["id"]], "errors": []}
    assert enqueued_ids(queue) == [stuck["id"]]
    queue.clear()
    assert requeue_stuck_events_task.call(older_than_minutes=30)["requeued"] == []


@pytest.fixture
def broker_gone_at_the_second(deliver: Any, queue: Any, monkeypatch: Any) -> list[dict[str, Any]]:
    """Two events left received; the broker refuses the second's message: (first, second).

    The backend's ``enqueue`` fails, not the task replaced: a backend that
    builds the task again from its import path (Django 6.1's) would find
    the replacement there.
    """
    first = received_minutes_ago(deliver, 30)
    second = received_minutes_ago(deliver, 20)
    queue.clear()
    backend = tasks_framework.task_backends["default"]  # the instance, not the proxy
    real_enqueue = backend.enqueue

    def enqueue(task: Any, args: Any, kwargs: Any) -> Any:
        if second["id"] in (*args, *kwargs.values()):
            raise ConnectionError("the broker is gone")
        return real_enqueue(task, args, kwargs)

    monkeypatch.setattr(backend, "enqueue", enqueue)
    return [first, second]


def test_a_requeue_stopped_by_an_error_has_printed_what_it_enqueued(
    broker_gone_at_the_second: list[dict[str, Any]], queue: Any
) -> None:
    """The ids were printed once all were enqueued: a broker gone midway
    showed only the traceback, not the events already enqueued again."""
    first, second = broker_gone_at_the_second
    out, err = StringIO(), StringIO()
    with pytest.raises(ConnectionError, match="the broker is gone"):
        call_command("escrow_requeue_stuck_events", stdout=out, stderr=err)
    assert out.getvalue() == f"{first['id']}: re-enqueued\n"
    assert err.getvalue() == (
        "Stopped by the error below after 1 re-enqueued; the lines above are done.\n"
    )
    assert enqueued_ids(queue) == [first["id"]]
    assert status_of(second).status == "received"


def test_the_requeue_task_stopped_by_an_error_says_what_it_enqueued(
    broker_gone_at_the_second: list[dict[str, Any]], queue: Any
) -> None:
    first, _ = broker_gone_at_the_second
    with pytest.raises(PeriodicJobFailed, match="after 1 re-enqueued") as failed:
        requeue_stuck_events_task.call()
    assert isinstance(failed.value.__cause__, ConnectionError)
    assert failed.value.summary == {
        "enabled": True,
        "requeued": [first["id"]],
        "errors": ["stopped by ConnectionError: the broker is gone"],
    }


def test_nothing_to_do_in_sync_mode(deliver: Any, spy: Spy, settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.dummy.DummyBackend"}}
    tasks_framework.default_task_backend.clear()
    evt = spy_event()
    events().create(
        stripe_event_id=evt["id"],
        type=SPY,
        endpoint="platform",
        payload=evt,
        received_at=timezone.now() - timedelta(hours=1),
    )
    assert "nothing done" in requeue()
    assert requeue_stuck_events_task.call()["enabled"] is False
    assert tasks_framework.default_task_backend.results == []
    assert spy.calls == []


@pytest.mark.parametrize("value", ["abc", None, 0])
def test_sync_mode_does_not_read_the_threshold_setting(settings: Any, value: Any) -> None:
    """The threshold is of no use in sync mode, and the task leaves it unread
    (``enabled: False``). The command read it before the mode: a host in sync
    mode whose scheduler runs it through call_command (no system checks) got
    a CommandError naming it, every run, where the task said disabled."""
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_REQUEUE_AFTER_MINUTES": value}
    assert "nothing done" in requeue()
    assert "nothing done" in requeue("--dry-run")
    assert requeue_stuck_events_task.call()["enabled"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["--older-than", "0"],
        ["--limit", "0"],
        # Beyond what a date can hold: it was an OverflowError's traceback.
        ["--older-than", "9999999999999"],
    ],
)
def test_bad_arguments_are_refused(queue: Any, args: list[str]) -> None:
    with pytest.raises(CommandError):
        requeue(*args)


#: What system check E115 refuses: beyond what a date can hold too.
MALFORMED_THRESHOLDS = [0, -5, "15", "abc", None, 1.5, True, 10**12]


@pytest.mark.parametrize("value", MALFORMED_THRESHOLDS)
def test_a_malformed_threshold_setting_stops_the_command_and_the_task(
    deliver: Any, spy: Spy, queue: Any, settings: Any, value: Any
) -> None:
    """call_command (a host's scheduler), --skip-checks and the periodic task
    run without E115: int() made "abc" and None a traceback, 10**12 an error
    naming --older-than, and 1.5 or "15" a threshold nobody wrote. Each is
    refused, naming the setting, and nothing is enqueued."""
    received_minutes_ago(deliver, 20)
    queue.clear()
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_REQUEUE_AFTER_MINUTES": value}

    with pytest.raises(CommandError, match="WEBHOOK_REQUEUE_AFTER_MINUTES"):
        requeue("--dry-run")
    with pytest.raises(CommandError, match="WEBHOOK_REQUEUE_AFTER_MINUTES"):
        requeue()
    with pytest.raises(PeriodicJobFailed, match="WEBHOOK_REQUEUE_AFTER_MINUTES") as failed:
        requeue_stuck_events_task.call()
    assert failed.value.summary["requeued"] == []
    assert enqueued_ids(queue) == []
    # --older-than is the operator's way round it meanwhile.
    assert "Re-enqueued 1 events" in requeue("--older-than", "15")


@pytest.mark.parametrize("value", MALFORMED_THRESHOLDS)
def test_the_threshold_setting_is_checked(settings: Any, value: Any) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_REQUEUE_AFTER_MINUTES": value}
    assert "escrow_connect.E115" in {message.id for message in run_checks()}


def test_the_default_threshold_passes_the_check() -> None:
    assert "escrow_connect.E115" not in {message.id for message in run_checks()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(3))  # a race proves more when repeated
def test_two_workers_given_the_same_event_process_it_once(
    spy: Spy, queue: Any, iteration: int
) -> None:
    """The original message and the re-enqueued one run at the same moment:
    the row lock lets one worker process the event; the other does nothing."""
    evt = spy_event()
    events().create(stripe_event_id=evt["id"], type=SPY, endpoint="platform", payload=evt)
    spy.sleep = 0.3
    barrier = threading.Barrier(2)
    results: list[str | None] = []

    def work() -> None:
        try:
            barrier.wait()
            results.append(process_webhook_event.call(evt["id"]))
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(results, key=lambda status: status or "") == [None, "processed"]
    assert spy.calls == [evt["id"]]
    row = status_of(evt)
    assert (row.status, row.attempts) == ("processed", 1)
