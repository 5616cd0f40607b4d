"""The scheduled commands: capture expiry and automatic release."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS

from .conftest import (
    age,
    auto_release_dry_run,
    configure,
    due_manual_hold,
    money_calls,
    second_release_raises,
)


def run(market, name, *args):
    out = StringIO()
    with market.capture(execute=True):
        call_command(name, *args, stdout=out, stderr=out)
    return out.getvalue()


class TestCaptureExpiry:
    @pytest.fixture(autouse=True)
    def manual(self, settings, sim_stripe):
        configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, CAPTURE_EXPIRY_WARNING_HOURS=48)

    def soon(self, market, hours=10):
        payment = market.held_payment()
        age(payment, capture_before=timezone.now() + timedelta(hours=hours))
        return payment

    def test_nothing_close_to_expiry(self, market, sim_stripe):
        market.held_payment()  # expires in 7 days
        assert "No manual-capture hold expires within 48 hours." in run(
            market, "escrow_capture_expiry"
        )

    def test_warn_lists_and_changes_nothing(self, market, sim_stripe, caplog):
        payment = self.soon(market)
        sim_stripe.calls.clear()
        output = run(market, "escrow_capture_expiry")
        assert f"{payment.pk}: expires in 9h" in output or f"{payment.pk}: expires in 10h" in output
        assert "manual-capture hold expires soon" in caplog.text
        assert market.payment(payment.pk).status == "held"
        assert money_calls(sim_stripe) == []

    def test_release_action_captures(self, market, sim_stripe, settings):
        configure(settings, CAPTURE_EXPIRY_ACTION="release")
        payment = self.soon(market)
        later = market.held_payment()  # 7 days left: not touched
        output = run(market, "escrow_capture_expiry")
        assert f"{payment.pk}: held -> released" in output
        assert market.payment(payment.pk).status == "released"
        assert market.payment(later.pk).status == "held"

    def test_cancel_action_voids_and_dry_run_does_not(self, market, sim_stripe):
        payment = self.soon(market)
        assert "would cancel" in run(
            market, "escrow_capture_expiry", "--action", "cancel", "--dry-run"
        )
        assert market.payment(payment.pk).status == "held"
        output = run(market, "escrow_capture_expiry", "--action", "cancel")
        assert f"{payment.pk}: held -> canceled" in output
        assert sim_stripe.payment_intents[payment.stripe_payment_intent_id]["status"] == "canceled"

    def test_a_lapsed_hold_is_synced_from_stripe(self, market, sim_stripe):
        payment = market.held_payment()
        with market.capture(execute=False):  # Stripe voids it; the webhook is lost
            sim_stripe.advance_time(8 * 24 * 3600)
        age(payment, capture_before=timezone.now() - timedelta(hours=1))
        output = run(market, "escrow_capture_expiry", "--action", "release")
        assert f"{payment.pk}: held -> canceled" in output
        payment = market.payment(payment.pk)
        assert payment.status == "canceled"
        assert payment.incidents.get().kind == "capture_expired"

    def test_an_estimated_deadline_is_corrected_from_stripe(self, market, sim_stripe):
        payment = market.held_payment()
        charge = sim_stripe.charges[payment.stripe_charge_id]
        real = charge["payment_method_details"]["card"]["capture_before"]
        # The recorded deadline passed, but Stripe's has not (the charge event
        # that carries it never arrived): the hold is still valid.
        age(payment, capture_before=timezone.now() - timedelta(minutes=5))
        sim_stripe.calls.clear()
        output = run(market, "escrow_capture_expiry", "--action", "cancel")
        payment = market.payment(payment.pk)
        assert f"{payment.pk}: deadline read from Stripe" in output
        assert payment.status == "held"
        assert int(payment.capture_before.timestamp()) == real
        assert money_calls(sim_stripe) == []  # 7 days left: not canceled


@pytest.mark.parametrize(
    ("command", "changes"),
    [
        ("escrow_capture_expiry", {"CAPTURE_EXPIRY_WARNING_HOURS": "48"}),
        ("escrow_capture_expiry", {"CAPTURE_EXPIRY_WARNING_HOURS": 10**12}),
        ("escrow_capture_expiry", {"CAPTURE_EXPIRY_ACTION": "pray"}),
        ("escrow_auto_release", {"AUTO_RELEASE_AFTER_DAYS": "14"}),
        ("escrow_auto_release", {"AUTO_RELEASE_AFTER_DAYS": 1.5}),
        ("escrow_auto_release", {"AUTO_RELEASE_AFTER_DAYS": 10**10}),
        ("escrow_report", {"STUCK_PAYMENT_HOURS": "72"}),
        ("escrow_report", {"STUCK_PAYMENT_HOURS": 10**12}),
    ],
)
def test_a_setting_the_checks_refuse_is_a_command_error_naming_it(
    market, sim_stripe, settings, command, changes
):
    """call_command (a host's scheduler) and --skip-checks skip the system
    checks: the value was a TypeError, ValueError or OverflowError traceback,
    or a fraction silently taken. Refused before anything is released."""
    payment = due_manual_hold(market, settings, **changes)
    sim_stripe.calls.clear()
    setting = next(iter(changes))
    with pytest.raises(CommandError, match=rf'ESCROW_CONNECT\["{setting}"\]'):
        run(market, command)
    assert market.payment(payment.pk).status == "held"
    assert money_calls(sim_stripe) == []


@pytest.mark.parametrize(
    ("command", "changes"),
    [
        ("escrow_auto_release", {"AUTO_RELEASE_AFTER_DAYS": 14}),
        ("escrow_capture_expiry", {"CAPTURE_EXPIRY_ACTION": "release"}),
    ],
)
def test_a_value_error_during_the_run_is_not_blamed_on_the_settings(
    market, sim_stripe, settings, monkeypatch, command, changes
):
    """Only reading the settings was to become a CommandError: a ValueError
    from the second release (a bug) was one too, its traceback suppressed,
    as if a setting were wrong. It propagates; the first release stays."""
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, **changes)
    first, second = second_release_raises(market, monkeypatch)
    with pytest.raises(ValueError, match="a bug in the release"):
        run(market, command)
    assert market.payment(first.pk).status == "released"
    assert market.payment(second.pk).status == "held"


@pytest.mark.parametrize(
    ("command", "changes", "line", "stopped"),
    [
        (
            "escrow_auto_release",
            {"ESCROW_STRATEGY": SEPARATE_CHARGES_AND_TRANSFERS, "AUTO_RELEASE_AFTER_DAYS": 14},
            "held -> released (held 14+ days)",
            "after 1 released",
        ),
        (
            "escrow_capture_expiry",
            {"ESCROW_STRATEGY": MANUAL_CAPTURE, "CAPTURE_EXPIRY_ACTION": "release"},
            "held -> released (release before ",
            "after 1 changed",
        ),
    ],
)
def test_a_job_stopped_by_an_error_prints_what_it_did_before(
    market, sim_stripe, settings, monkeypatch, command, changes, line, stopped
):
    """The first release (or capture) was committed but never printed (the
    lines were written once the run was over): an operator reading the cron
    log saw only the traceback and could release that payment again by hand."""
    configure(settings, **changes)
    first, second = second_release_raises(market, monkeypatch)
    out, err = StringIO(), StringIO()
    with market.capture(execute=True), pytest.raises(ValueError, match="a bug in the release"):
        call_command(command, stdout=out, stderr=err)
    [printed] = out.getvalue().splitlines()
    assert printed.startswith(f"{first.pk}: {line}")
    assert f"Stopped by the error below {stopped}; the lines above are done." in err.getvalue()
    assert market.payment(first.pk).status == "released"
    assert market.payment(second.pk).status == "held"


def test_a_value_error_while_building_the_report_is_not_blamed_on_the_settings(market, monkeypatch):
    from django_escrow_connect.management.commands import escrow_report

    def report_with_a_bug(**kwargs):
        raise ValueError("a bug in the report")

    monkeypatch.setattr(escrow_report, "build_report", report_with_a_bug)
    with pytest.raises(ValueError, match="a bug in the report"):
        run(market, "escrow_report")


class TestAutoRelease:
    @pytest.fixture(autouse=True)
    def separate_charges(self, settings, sim_stripe):
        configure(settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS)

    def test_off_by_default_and_says_so(self, market, sim_stripe):
        payment = market.held_payment()
        age(payment, held_at=timezone.now() - timedelta(days=365))
        output = run(market, "escrow_auto_release")
        assert "AUTO_RELEASE_AFTER_DAYS" in output
        assert "nothing done" in output
        assert market.payment(payment.pk).status == "held"

    def test_releases_payments_held_long_enough(self, market, sim_stripe, settings):
        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        due = market.held_payment()
        age(due, held_at=timezone.now() - timedelta(days=15))
        recent = market.held_payment()
        age(recent, held_at=timezone.now() - timedelta(days=13))
        assert f"{due.pk}: would release" in run(market, "escrow_auto_release", "--dry-run")
        assert market.payment(due.pk).status == "held"

        sim_stripe.calls.clear()
        output = run(market, "escrow_auto_release")
        assert f"{due.pk}: held -> released" in output
        assert str(recent.pk) not in output
        assert market.payment(due.pk).status == "released"
        assert market.payment(recent.pk).status == "held"
        assert money_calls(sim_stripe) == ["create_transfer"]
        assert "No payment is due" in run(market, "escrow_auto_release")

    def test_a_payee_who_cannot_be_paid_is_reported_not_failed_every_run(
        self, market, sim_stripe, settings
    ):
        """The doer's account cannot receive transfers after the payment was
        held: its release was refused before any Stripe call on every hourly
        run, and the command failed every run for as long as the account
        stays so. It is now an informational line; the payment stays listed
        by ``escrow_report`` (stuck payments) for staff."""
        configure(settings, AUTO_RELEASE_AFTER_DAYS=14, STUCK_PAYMENT_HOURS=24)
        stuck = market.held_payment()
        age(stuck, held_at=timezone.now() - timedelta(days=15))
        market.doer_account.capabilities = {"transfers": "inactive"}
        market.doer_account.save()
        sim_stripe.calls.clear()

        for _run in range(2):
            output = run(market, "escrow_auto_release")  # no CommandError
            assert f"{stuck.pk}: not released (account_not_ready)" in output
        assert market.payment(stuck.pk).status == "held"
        assert money_calls(sim_stripe) == []
        assert str(stuck.pk) in run(market, "escrow_report", "--format", "json")

    def test_a_release_stripe_refused_is_not_sent_again_every_run(
        self, market, sim_stripe, settings
    ):
        """The doer disconnected the platform and its webhook was lost: Stripe
        refused the automatic release, and every hourly run sent it again, was
        refused again, recorded one more incident and failed, for ever. The
        refusal is reported once; later runs leave the payment to staff (an
        informational line) until the incident is resolved."""
        from django_escrow_connect.simulation import SimulatedGateway

        configure(settings, AUTO_RELEASE_AFTER_DAYS=14)
        stuck = market.held_payment()
        age(stuck, held_at=timezone.now() - timedelta(days=15))
        SimulatedGateway().deauthorize(market.doer_account.stripe_account_id)
        sim_stripe.calls.clear()

        out = StringIO()
        with market.capture(execute=True), pytest.raises(Exception, match="could not be released"):
            call_command("escrow_auto_release", stdout=out, stderr=out)
        assert f"{stuck.pk}: release failed" in out.getvalue()
        for _run in range(2):
            output = run(market, "escrow_auto_release")  # no CommandError
            assert f"{stuck.pk}: not released (" in output
            assert "retry the failed transfer or resolve the incident" in output
        assert "would not release" in run(market, "escrow_auto_release", "--dry-run")
        assert money_calls(sim_stripe) == ["create_transfer"]
        incidents = swappable.load("TransferIncident").objects.filter(payment_id=stuck.pk)
        assert incidents.count() == 1
        assert market.payment(stuck.pk).status == "held"

        # Staff resolve the incident: the next run tries again.
        incidents.update(resolved_at=timezone.now())
        with pytest.raises(Exception, match="could not be released"):
            run(market, "escrow_auto_release")
        assert money_calls(sim_stripe) == ["create_transfer", "create_transfer"]


class TestAutoReleaseDryRunTellsTheTruth:
    @pytest.fixture(autouse=True)
    def separate_charges(self, settings, sim_stripe):
        configure(
            settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, AUTO_RELEASE_AFTER_DAYS=14
        )

    def test_a_payment_radar_holds_is_not_listed_as_would_release(self, market, sim_stripe):
        """A held payment under an open Radar review is due by age, but release
        refuses it (``radar_review_open``). ``--dry-run`` said ``would release``
        all the same; it now says the release would be refused, and why, as
        the real run then reports: an informational line, not a failure (an
        hourly job failed for as long as the review lasted)."""
        import dataclasses

        from django.db import transaction

        from django_escrow_connect.services.radar import apply_review
        from tests.webhooks.test_radar_events import review

        frozen = market.held_payment()
        free = market.held_payment()
        for payment in (frozen, free):
            age(payment, held_at=timezone.now() - timedelta(days=15))
        scene = dataclasses.make_dataclass("Scene", ["payment"])(frozen)
        with market.capture(execute=True), transaction.atomic():
            apply_review(review(scene))

        dry = run(market, "escrow_auto_release", "--dry-run")
        assert f"{free.pk}: would release" in dry
        assert f"{frozen.pk}: would release" not in dry
        assert f"{frozen.pk}: would not release (radar_review_open)" in dry

        sim_stripe.calls.clear()
        out = StringIO()
        with market.capture(execute=True):
            call_command("escrow_auto_release", stdout=out, stderr=out)
        assert f"{frozen.pk}: not released (radar_review_open)" in out.getvalue()
        assert "radar" in out.getvalue().lower()
        assert market.payment(frozen.pk).status == "held"
        assert market.payment(free.pk).status == "released"
        assert money_calls(sim_stripe) == ["create_transfer"]

    @pytest.mark.parametrize(
        "unready",
        [{"capabilities": {"transfers": "inactive"}}, {"status": "deauthorized"}],
        ids=["transfers_inactive", "deauthorized"],
    )
    def test_a_payee_who_cannot_be_paid_is_listed_as_the_real_run_reports_it(
        self, market, sim_stripe, unready
    ):
        """The doer's account cannot receive money: the real run refuses the
        release before any Stripe call and says ``not released
        (account_not_ready)``, but ``--dry-run`` said ``would release``. It
        now says the release would not happen, and why, still reading only."""
        stuck = market.held_payment()
        age(stuck, held_at=timezone.now() - timedelta(days=15))
        dry = auto_release_dry_run(market, sim_stripe)
        assert f"{stuck.pk}: would release" in dry  # the account is ready: the control

        swappable.load("ConnectedAccount").objects.filter(pk=market.doer_account.pk).update(
            **unready
        )
        dry = auto_release_dry_run(market, sim_stripe)
        assert f"{stuck.pk}: would not release (account_not_ready)" in dry
        assert "would release" not in dry
        output = run(market, "escrow_auto_release")  # no CommandError
        assert f"{stuck.pk}: not released (account_not_ready)" in output
        assert market.payment(stuck.pk).status == "held"
        assert money_calls(sim_stripe) == []


class TestReportOpenIncidents:
    @pytest.fixture(autouse=True)
    def separate_charges(self, settings, sim_stripe):
        configure(
            settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, AUTO_RELEASE_AFTER_DAYS=14
        )

    def test_an_incident_opened_before_the_period_is_listed_while_open(self, market, sim_stripe):
        """Stripe refused a release ten days ago (the doer disconnected); staff
        refunded the customer but nobody resolved the ``transfer_failed``
        incident. ``escrow_report`` (the last 7 days) counted incidents opened
        in its window only: the incident left the report and ``--check``
        passed. It is listed as still open whatever its age, apart from the
        period's counts, with how long it has been open. ``--check`` does not
        fail on it: some incidents are never resolved although handled (an
        early fraud warning on a released payment staff chose not to refund),
        and what an incident blocks alerts by itself (a stuck payment). A
        declined card's incident (nobody acts on it) is not listed."""
        import json

        from django_escrow_connect.factories import make_payment_incident
        from django_escrow_connect.simulation import SimulatedGateway

        refused = market.held_payment()
        age(refused, held_at=timezone.now() - timedelta(days=15))
        SimulatedGateway().deauthorize(market.doer_account.stripe_account_id)
        with pytest.raises(CommandError, match="could not be released"):
            run(market, "escrow_auto_release")
        refund = market.post(market.staff, "payment-refund", {}, payment_id=refused.pk)
        assert refund.status_code == 200, refund.content
        incidents = swappable.load("TransferIncident").objects.filter(payment_id=refused.pk)
        (incident,) = incidents
        declined = make_payment_incident(market.held_payment())
        ten_days_ago = timezone.now() - timedelta(days=10)
        incidents.update(created_at=ten_days_ago)
        type(declined).objects.filter(pk=declined.pk).update(created_at=ten_days_ago)

        report = json.loads(run(market, "escrow_report", "--format", "json"))
        assert report["incidents"]["by_kind"] == {}  # opened before the period
        still_open = report["open_incidents"]
        assert (still_open["count"], still_open["overdue"]) == (1, 1)
        assert still_open["by_kind"] == {"transfer_failed": 1}
        [item] = still_open["items"]
        assert item["incident"] == f"transfer incident {incident.pk}"
        assert (item["kind"], item["payment"]) == ("transfer_failed", str(refused.pk))
        text = run(market, "escrow_report")
        assert "Incidents opened in the period: none" in text
        assert (
            "Incidents still open (any age): 1 (transfer_failed: 1); open longer than 72 h: 1"
        ) in text
        assert f"  transfer incident {incident.pk} transfer_failed payment {refused.pk}" in text
        checked = run(market, "escrow_report", "--check")  # listed, not an alert
        assert "open longer than 72 h: 1" in checked

        incidents.update(resolved_at=timezone.now())  # staff's Resolve
        assert "Incidents still open (any age): 0 (none)" in run(market, "escrow_report", "--check")

    def test_an_incident_open_for_less_than_the_threshold_is_listed_without_failing(
        self, market, sim_stripe
    ):
        from django_escrow_connect.factories import make_transfer_incident

        make_transfer_incident(market.held_payment())
        out = run(market, "escrow_report", "--check", "--since", "1d")
        assert "open longer than 72 h: 0" in out
        assert "Incidents still open (any age): 1 (transfer_failed: 1)" in out

    @pytest.mark.parametrize(
        ("strategy", "call", "made"),
        [
            (SEPARATE_CHARGES_AND_TRANSFERS, "create_transfer", "transfer tr_"),
            (MANUAL_CAPTURE, "capture_payment_intent", "the capture of pi_"),
        ],
        ids=["transfer", "capture"],
    )
    def test_a_refused_transfer_sent_again_resolves_its_incident(
        self, market, sim_stripe, settings, strategy, call, made
    ):
        """Stripe refused the release (the doer's account; with manual
        capture, the capture), the customer confirmed again once it was
        fixed and the release was made: the ``transfer_failed`` incident
        stayed open, listed by ``escrow_report`` for ever although handled
        (only a void closed it). The release made resolves it, with a note
        saying why."""
        from django_escrow_connect.exceptions import InvalidRequest

        configure(settings, ESCROW_STRATEGY=strategy)
        payment = market.held_payment()
        sim_stripe.fail_next(call, InvalidRequest("No such destination", code="account_invalid"))
        with market.capture(execute=True):
            refused = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert refused.status_code == 409, refused.content
        assert "Incidents still open (any age): 1 (transfer_failed: 1)" in run(
            market, "escrow_report"
        )

        with market.capture(execute=True):
            confirmed = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
        assert confirmed.status_code == 200, confirmed.content
        assert market.payment(payment.pk).status == "released"
        (incident,) = swappable.load("TransferIncident").objects.filter(payment_id=payment.pk)
        assert incident.resolved_at is not None
        assert f"Resolved: the release was sent again and Stripe made {made}" in (incident.message)
        assert "Incidents still open (any age): 0 (none)" in run(market, "escrow_report")
