"""The Celery adapter: what it sends to the broker, and what the worker runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

pytest.importorskip("celery")

from django_escrow_connect.contrib import celery as celery_adapter
from django_escrow_connect.contrib.celery import (
    RUN_DJANGO_TASK,
    CeleryBackend,
    run_django_task,
)
from django_escrow_connect.webhooks import registry
from django_escrow_connect.webhooks.tasks import process_webhook_event
from tests.webhooks.test_pipeline import SPY, Spy, spy_event, status_of

BACKEND = "django_escrow_connect.contrib.celery.CeleryBackend"


@pytest.fixture
def spy(monkeypatch: Any) -> Spy:
    handler = Spy()
    monkeypatch.setitem(registry.HANDLERS, SPY, registry.Route(handler, registry.PLATFORM))
    return handler


class FakeCelery:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


@pytest.fixture
def celery_backend(settings: Any) -> tuple[CeleryBackend, FakeCelery]:
    settings.TASKS = {"default": {"BACKEND": BACKEND}}
    backend = process_webhook_event.get_backend()
    assert isinstance(backend, CeleryBackend)
    app = FakeCelery()
    backend._app = app  # type: ignore[assignment]
    return backend, app


def test_enqueue_sends_the_task_path_and_its_arguments(celery_backend: Any) -> None:
    _, app = celery_backend
    result = process_webhook_event.enqueue("evt_1")
    [sent] = app.sent
    assert sent == {
        "name": RUN_DJANGO_TASK,
        "args": ["django_escrow_connect.webhooks.tasks.process_webhook_event", ["evt_1"], {}],
        "task_id": result.id,
        "queue": None,  # Django's default queue is Celery's default queue
        "eta": None,
    }


def test_run_after_becomes_the_eta_and_other_queues_pass_through(celery_backend: Any) -> None:
    _, app = celery_backend
    when = timezone.now() + timedelta(seconds=30)
    process_webhook_event.using(run_after=when).enqueue("evt_1", 2)
    assert app.sent[-1]["eta"] == when
    assert app.sent[-1]["args"][1] == ["evt_1", 2]


def test_other_queue_names_are_celery_queues(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, "QUEUES": ["default", "webhooks"]}}
    backend = process_webhook_event.get_backend()
    app = FakeCelery()
    backend._app = app  # type: ignore[attr-defined]
    process_webhook_event.using(queue_name="webhooks").enqueue("evt_1")
    assert app.sent[-1]["queue"] == "webhooks"


@pytest.mark.django_db
def test_the_worker_side_runs_the_django_task(
    deliver: Any, spy: Spy, settings: Any, monkeypatch: Any
) -> None:
    # A real worker drops stale connections around each task; here the task
    # runs inside the test's transaction, which that would close.
    monkeypatch.setattr(celery_adapter, "close_old_connections", lambda: None)
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}
    settings.TASKS = {"default": {"BACKEND": BACKEND}}
    backend = process_webhook_event.get_backend()
    app = FakeCelery()
    backend._app = app  # type: ignore[attr-defined]
    evt = spy_event()
    assert deliver.platform(evt).json()["status"] == "queued"
    [sent] = app.sent
    # What a Celery worker does with the message.
    assert run_django_task.run(*sent["args"]) == "processed"
    assert status_of(evt).status == "processed"
    assert spy.calls == [evt["id"]]


def test_the_backend_defers_and_is_quiet_in_the_checks(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND}}
    assert process_webhook_event.get_backend().supports_defer
