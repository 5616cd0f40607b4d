"""The periodic jobs as Django tasks do what their commands do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_escrow_connect import tasks
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import GatewayError

from .conftest import (
    age,
    configure,
    due_manual_hold,
    money_calls,
    second_lost_outcome_raises,
    second_release_raises,
)


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


def test_capture_expiry_task_stopped_by_an_error_says_what_it_captured(
    market, sim_stripe, settings, monkeypatch
):
    """As auto release: the capture committed before the bug was in no log."""
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, CAPTURE_EXPIRY_ACTION="release")
    first, second = second_release_raises(market, monkeypatch)
    with pytest.raises(tasks.PeriodicJobFailed, match="after 1 changed") as failed:
        run(market, tasks.capture_expiry_task)
    assert isinstance(failed.value.__cause__, ValueError)
    [captured] = failed.value.summary["changes"]
    assert captured.startswith(f"{first.pk}: held -> released (release before ")
    assert failed.value.summary["errors"] == ["stopped by ValueError: a bug in the release"]
    assert market.payment(first.pk).status == "released"
    assert market.payment(second.pk).status == "held"


def test_reconcile_task_stopped_by_an_error_says_what_it_did(market, sim_stripe, monkeypatch):
    first, second = second_lost_outcome_raises(market, monkeypatch)
    with pytest.raises(tasks.PeriodicJobFailed, match="after 1 changed") as failed:
        run(market, tasks.reconcile_task, older_than_minutes=0)
    assert isinstance(failed.value.__cause__, ValueError)
    assert failed.value.summary == {
        "changes": [f"{first.pk}: awaiting_payment -> held (PaymentIntent succeeded)"],
        "errors": ["stopped by ValueError: a bug in the look-up"],
    }
    assert market.payment(first.pk).status == "held"
    assert market.payment(second.pk).status == "awaiting_payment"


@pytest.mark.parametrize(
    ("job", "arguments", "message"),
    [
        (tasks.reconcile_task, {"older_than_minutes": "30"}, "older_than_minutes must be a whole"),
        (tasks.reconcile_task, {"older_than_minutes": -1}, "older_than_minutes must be zero or"),
        (tasks.reconcile_task, {"older_than_minutes": 10**13}, "older_than_minutes is out of"),
        (tasks.fetch_missed_events_task, {"since": "garbage"}, "since: Not a date"),
        (tasks.fetch_missed_events_task, {"since": "9999999999d"}, "since: Out of range"),
        (tasks.fetch_missed_events_task, {"since": None}, "since is required"),
        (tasks.fetch_missed_events_task, {"since": 3}, "since must be a date"),
        (tasks.fetch_missed_events_task, {"all_accounts": "no"}, "all_accounts must be True or"),
        (tasks.requeue_stuck_events_task, {"older_than_minutes": 0}, "older_than_minutes must be"),
        (tasks.requeue_stuck_events_task, {"older_than_minutes": 2.5}, "older_than_minutes must"),
        # It said "The retention must be at least one day" without naming days.
        (tasks.purge_event_payloads_task, {"days": 0}, "days must be at least 1"),
        (tasks.purge_event_payloads_task, {"days": "30"}, "days must be a whole number"),
        (tasks.purge_event_payloads_task, {"days": 10**10}, "days is out of range"),
        (tasks.audit_books_task, {"payment_id": "nope"}, "payment_id 'nope' is not a payment id"),
        (tasks.audit_books_task, {"since": "garbage"}, "since: Not a date"),
        (tasks.audit_books_task, {"limit": -1}, "limit must be zero or more"),
        (tasks.audit_books_task, {"limit": "10"}, "limit must be a whole number"),
        (tasks.audit_books_task, {"batch_size": 0}, "batch_size must be at least 1"),
        (tasks.audit_books_task, {"batch_size": 2**31}, "batch_size must be at most"),
    ],
)
def test_a_task_refuses_a_bad_argument_before_anything_is_read(
    market, sim_stripe, django_assert_num_queries, job, arguments, message
):
    """These raised a bare ValueError (or TypeError, or none: a requeue of
    events received a moment ago, an audit of nothing) from deep inside the
    run. Now PeriodicJobFailed names the argument, before a query or a Stripe call."""
    market.held_payment()
    sim_stripe.calls.clear()
    with django_assert_num_queries(0), pytest.raises(tasks.PeriodicJobFailed) as failed:
        run(market, job, **arguments)
    assert str(failed.value).split(": ", 1)[1].startswith(message)
    assert failed.value.summary["errors"] == [str(failed.value).split(": ", 1)[1]]
    assert sim_stripe.calls == []


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
