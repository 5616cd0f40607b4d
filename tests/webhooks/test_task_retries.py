"""Task mode: a failed event is retried by the task engine with backoff, then
left ``failed`` for the replay command; duplicates never start a second chain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import run_checks
from django.utils import timezone

from django_escrow_connect.checks import check_task_backend
from django_escrow_connect.webhooks import registry
from django_escrow_connect.webhooks.tasks import process_webhook_event, retry_delay
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
def task_processing(settings: Any) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}


@pytest.fixture
def deferring_backend(settings: Any, task_processing: None) -> Any:
    """A backend that stores tasks (and their run_after) instead of running them."""
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.dummy.DummyBackend"}}
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "WEBHOOK_TASK_MAX_ATTEMPTS": 3,
        "WEBHOOK_TASK_RETRY_DELAY": 10,
    }
    backend = tasks_framework.default_task_backend
    backend.clear()
    return backend


def test_a_failed_event_is_retried_with_backoff_then_left_failed(
    deliver: Any, spy: Spy, deferring_backend: Any
) -> None:
    spy.raise_ = [RuntimeError("boom")] * 3
    evt = spy_event()
    assert deliver.platform(evt).json()["status"] == "queued"
    [first] = deferring_backend.results
    assert first.task.run_after is None

    before = timezone.now()
    assert process_webhook_event.call(*first.args) == "failed"
    [_, retry] = deferring_backend.results
    assert retry.args == [evt["id"], 1]
    assert (
        before + timedelta(seconds=10)
        <= retry.task.run_after
        <= timezone.now() + timedelta(seconds=10)
    )

    assert process_webhook_event.call(*retry.args) == "failed"
    [_, _, second_retry] = deferring_backend.results
    assert second_retry.args == [evt["id"], 2]
    # The delay doubles.
    assert second_retry.task.run_after >= timezone.now() + timedelta(seconds=19)

    assert process_webhook_event.call(*second_retry.args) == "failed"
    assert len(deferring_backend.results) == 3  # out of tries: no more retries
    row = status_of(evt)
    assert (row.status, row.attempts) == ("failed", 3)
    assert spy.calls == [evt["id"]] * 3


def test_a_retry_does_nothing_once_the_event_was_tried_since(
    deliver: Any, spy: Spy, deferring_backend: Any
) -> None:
    spy.raise_ = [RuntimeError("boom")]
    evt = spy_event()
    deliver.platform(evt)
    # Delivered twice while waiting: two first runs are queued.
    deliver.platform(evt)
    [first, duplicate] = deferring_backend.results
    assert process_webhook_event.call(*first.args) == "failed"
    # The duplicate finds the event failed with its retry under way: nothing.
    assert process_webhook_event.call(*duplicate.args) is None
    retry = deferring_backend.results[-1]
    assert process_webhook_event.call(*retry.args) == "processed"
    # A retry scheduled for a try that is already past does nothing.
    assert process_webhook_event.call(evt["id"], 1) is None
    assert spy.calls == [evt["id"], evt["id"]]


def test_a_new_delivery_after_the_last_try_gets_one_more(
    deliver: Any, spy: Spy, deferring_backend: Any, settings: Any
) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_TASK_MAX_ATTEMPTS": 1}
    spy.raise_ = [RuntimeError("boom")]
    evt = spy_event()
    deliver.platform(evt)
    assert process_webhook_event.call(evt["id"]) == "failed"
    assert len(deferring_backend.results) == 1  # one attempt allowed: no retry
    # Resent from the Stripe dashboard: queued, and tried again.
    assert deliver.platform(evt).json()["status"] == "queued"
    assert process_webhook_event.call(evt["id"]) == "processed"


def test_retry_delay_doubles(settings: Any) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_TASK_RETRY_DELAY": 30}
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]


def _ids(**kwargs: Any) -> set[str]:
    return {message.id for message in run_checks(**kwargs)}


def test_check_warns_when_the_backend_cannot_defer(settings: Any, task_processing: None) -> None:
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.immediate.ImmediateBackend"}}
    assert "escrow_connect.W095" in _ids()
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_TASK_MAX_ATTEMPTS": 1}
    assert "escrow_connect.W095" not in _ids()


def test_check_is_quiet_with_a_deferring_backend(settings: Any, deferring_backend: Any) -> None:
    assert "escrow_connect.W095" not in _ids()


@pytest.mark.parametrize(
    ("key", "value", "check"),
    [
        ("WEBHOOK_TASK_MAX_ATTEMPTS", 0, "escrow_connect.E095"),
        ("WEBHOOK_TASK_MAX_ATTEMPTS", "3", "escrow_connect.E095"),
        ("WEBHOOK_TASK_RETRY_DELAY", -1, "escrow_connect.E096"),
        ("WEBHOOK_TASK_RETRY_DELAY", True, "escrow_connect.E096"),
    ],
)
def test_retry_settings_are_checked(settings: Any, key: str, value: Any, check: str) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, key: value}
    assert check in _ids()


def test_without_a_deferring_backend_a_new_delivery_retries_at_once(
    deliver: Any, spy: Spy, settings: Any, task_processing: None
) -> None:
    # The immediate backend runs the task in the request and cannot defer:
    # no retry is scheduled, so Stripe's (or an operator's) next delivery
    # processes the failed event again, as in sync mode.
    settings.TASKS = {"default": {"BACKEND": f"{BACKENDS}.immediate.ImmediateBackend"}}
    spy.raise_ = [RuntimeError("boom")]
    evt = spy_event()
    deliver.platform(evt)
    assert status_of(evt).status == "failed"
    deliver.platform(evt)
    assert status_of(evt).status == "processed"
    assert spy.calls == [evt["id"], evt["id"]]


def test_check_warns_when_the_task_backend_cannot_be_loaded(
    settings: Any, task_processing: None
) -> None:
    settings.TASKS = {"default": {"BACKEND": "nowhere.NoBackend"}}
    # Called directly: on Django 6.x, Django's own tasks check raises
    # InvalidTaskBackend for the same setting, out of run_checks, before
    # this warning could be listed (the backport on Django 5.2 does not).
    assert [message.id for message in check_task_backend()] == ["escrow_connect.W096"]
