"""The periodic jobs as Django tasks do what their commands do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_escrow_connect import tasks
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import GatewayError

from .conftest import age, configure, due_manual_hold, money_calls, second_release_raises


def run(market, job, **kwargs):
    with market.capture(execute=True):
        return job.call(**kwargs)


def test_auto_release_task_releases_what_is_due(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)
    assert run(market, tasks.auto_release_task) == {"enabled": False, "changes": [], "errors": []}

    configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
    due = market.held_payment()
    age(due, held_at=timezone.now() - timedelta(days=15))
    sim_stripe.calls.clear()
    summary = run(market, tasks.auto_release_task)
    assert summary == {
        "enabled": True,
        "changes": [f"{due.pk}: held -> released (held 14+ days)"],
        "errors": [],
    }
    assert money_calls(sim_stripe) == ["create_transfer"]


def test_a_job_with_failures_raises_after_doing_the_rest(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, AUTO_RELEASE_AFTER_DAYS=14)
    refused, due = market.held_payment(), market.held_payment()
    for payment in (refused, due):
        age(payment, held_at=timezone.now() - timedelta(days=15))
    sim_stripe.fail_next("create_transfer", GatewayError("Stripe is down", code="api_error"))
    with pytest.raises(tasks.PeriodicJobFailed) as failed:
        run(market, tasks.auto_release_task)
    # The task engine records the run as failed; the other payment was released.
    assert len(failed.value.summary["errors"]) == 1
    assert len(failed.value.summary["changes"]) == 1
    statuses = {market.payment(p.pk).status for p in (refused, due)}
    assert statuses == {"held", "released"}


@pytest.mark.parametrize(
    ("job", "changes"),
    [
        (tasks.capture_expiry_task, {"CAPTURE_EXPIRY_WARNING_HOURS": "48"}),
        (tasks.capture_expiry_task, {"CAPTURE_EXPIRY_ACTION": "pray"}),
        (tasks.auto_release_task, {"AUTO_RELEASE_AFTER_DAYS": "14"}),
        (tasks.auto_release_task, {"AUTO_RELEASE_AFTER_DAYS": 10**10}),
    ],
)
def test_a_malformed_setting_fails_the_task_as_every_other_job_does(
    market, sim_stripe, settings, job, changes
):
    """Tasks run without the system checks: these two raised the setting's
    bare ValueError where the other jobs raise PeriodicJobFailed. Nothing is
    released, and the summary names the setting."""
    payment = due_manual_hold(market, settings, **changes)
    sim_stripe.calls.clear()
    setting = next(iter(changes))
    with pytest.raises(tasks.PeriodicJobFailed, match=rf'ESCROW_CONNECT\["{setting}"\]') as failed:
        run(market, job)
    assert failed.value.summary["changes"] == []
    assert market.payment(payment.pk).status == "held"
    assert money_calls(sim_stripe) == []


def test_auto_release_task_stopped_by_an_error_says_what_it_released(
    market, sim_stripe, settings, monkeypatch
):
    """The bug's bare exception said nothing of the release committed
    before it: the failure now names the count, its summary the release."""
    configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, AUTO_RELEASE_AFTER_DAYS=14)
    first, second = second_release_raises(market, monkeypatch)
    with pytest.raises(tasks.PeriodicJobFailed, match="after 1 released") as failed:
        run(market, tasks.auto_release_task)
    assert isinstance(failed.value.__cause__, ValueError)
    assert failed.value.summary == {
        "enabled": True,
        "changes": [f"{first.pk}: held -> released (held 14+ days)"],
        "errors": ["stopped by ValueError: a bug in the release"],
    }
    assert market.payment(first.pk).status == "released"
    assert market.payment(second.pk).status == "held"


def test_capture_expiry_task_warns(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, CAPTURE_EXPIRY_WARNING_HOURS=48)
    payment = market.held_payment()
    age(payment, capture_before=timezone.now() + timedelta(hours=10))
    summary = run(market, tasks.capture_expiry_task)
    [change] = summary["changes"]
    assert change.startswith(f"{payment.pk}: expires in")
    assert market.payment(payment.pk).status == "held"


def test_reconcile_and_purge_tasks_with_nothing_to_do(market, sim_stripe):
    assert run(market, tasks.reconcile_task) == {"changes": [], "errors": []}
    assert run(market, tasks.purge_event_payloads_task) == {"purged": 0, "errors": []}


def test_every_periodic_job_is_a_task() -> None:
    for name in tasks.__all__:
        job = getattr(tasks, name)
        if name != "PeriodicJobFailed":
            assert job.module_path.startswith("django_escrow_connect."), name
