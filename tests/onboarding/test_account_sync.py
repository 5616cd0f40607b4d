"""Keeping the row in step with Stripe: the service functions the Connect
webhook handlers call (account.updated, capability.updated,
account.application.[de]authorized) and what they signal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.utils import timezone as django_timezone

from django_escrow_connect.gateway.types import AccountSnapshot
from django_escrow_connect.services import accounts as services
from tests import factories

from .conftest import accounts, calls, client_for, url

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)
ACCOUNT_ID = "acct_1SyncTest0000001"

NEW = dict(
    details_submitted=False,
    currently_due=("external_account", "tos_acceptance.date"),
    eventually_due=("external_account", "tos_acceptance.date"),
    past_due=("external_account", "tos_acceptance.date"),
    disabled_reason="requirements.past_due",
    capabilities={"transfers": "inactive", "card_payments": "inactive"},
)
VERIFIED = dict(
    details_submitted=True,
    charges_enabled=True,
    payouts_enabled=True,
    capabilities={"transfers": "active", "card_payments": "active"},
)
RESTRICTED = dict(
    details_submitted=True,
    currently_due=("individual.verification.document",),
    eventually_due=("individual.verification.document",),
    past_due=("individual.verification.document",),
    disabled_reason="requirements.past_due",
    capabilities={"transfers": "inactive", "card_payments": "inactive"},
)


def snapshot(**fields: Any) -> AccountSnapshot:
    return AccountSnapshot(id=ACCOUNT_ID, **fields)


@pytest.fixture
def account(db: Any) -> Any:
    return factories.make_account(
        owner_user=factories.make_user(), stripe_account_id=ACCOUNT_ID, ready=False
    )


@pytest.fixture
def apply(django_capture_on_commit_callbacks: Any, signal_log: Any) -> Any:
    """Apply a snapshot as a webhook handler would, running on-commit signals."""

    def run(as_of: datetime, **fields: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return services.apply_account_snapshot(snapshot(**fields), as_of=as_of)

    return run


def reload(account: Any) -> Any:
    return accounts().get(pk=account.pk)


class TestApplySnapshot:
    def test_unknown_account_is_none(self, db):
        assert services.apply_account_snapshot(snapshot(**VERIFIED), as_of=T0) is None

    def test_new_account_is_pending_not_restricted(self, account, apply):
        apply(T0, **NEW)

        row = reload(account)
        assert row.status == "pending_verification"
        assert row.requirements_past_due == ["external_account", "tos_acceptance.date"]
        assert row.disabled_reason == "requirements.past_due"
        assert row.synced_at == T0

    def test_onboarded_account_becomes_verified(self, account, apply, signal_log):
        apply(T0, **VERIFIED)

        row = reload(account)
        assert row.status == "verified"
        assert row.can_transfer
        assert row.is_verified
        (updated,) = signal_log.of("account_updated")
        assert updated["previous_status"] == "pending_verification"
        assert updated["account"].pk == account.pk

    def test_older_snapshot_never_overwrites_newer_data(self, account, apply, signal_log):
        apply(T0, **VERIFIED)
        signal_log.clear()

        result = apply(T0 - timedelta(seconds=1), **RESTRICTED)

        assert result is not None
        row = reload(account)
        assert row.status == "verified"
        assert row.capabilities["transfers"] == "active"
        assert row.requirements_past_due == []
        assert row.synced_at == T0
        assert signal_log.sent == []

    def test_newer_restriction_is_applied_and_signalled(self, account, apply, signal_log):
        apply(T0, **VERIFIED)
        signal_log.clear()

        apply(T0 + timedelta(minutes=5), **RESTRICTED)

        row = reload(account)
        assert row.status == "restricted"
        assert row.disabled_reason == "requirements.past_due"
        assert signal_log.names() == [
            "account_updated",
            "account_requirements_due",
            "capability_restricted",
            "capability_restricted",
        ]
        assert signal_log.of("account_updated")[0]["previous_status"] == "verified"
        due = signal_log.of("account_requirements_due")[0]
        assert due["currently_due"] == ["individual.verification.document"]
        assert due["past_due"] == ["individual.verification.document"]
        assert {s["capability"]: s["status"] for s in signal_log.of("capability_restricted")} == {
            "card_payments": "inactive",
            "transfers": "inactive",
        }

    def test_unchanged_data_signals_nothing(self, account, apply, signal_log):
        apply(T0, **VERIFIED)
        signal_log.clear()

        apply(T0 + timedelta(minutes=1), **VERIFIED)

        assert signal_log.sent == []
        assert reload(account).synced_at == T0 + timedelta(minutes=1)

    def test_requirements_already_due_are_not_signalled_again(self, account, apply, signal_log):
        apply(T0, **RESTRICTED)
        signal_log.clear()

        apply(T0 + timedelta(minutes=1), **{**RESTRICTED, "eventually_due": ("x", "y")})

        assert signal_log.names() == ["account_updated"]

    def test_submitted_details_under_review_are_pending(self, account, apply):
        apply(
            T0,
            details_submitted=True,
            disabled_reason="requirements.pending_verification",
            capabilities={"transfers": "pending"},
        )

        assert reload(account).status == "pending_verification"

    def test_rejected_account_is_restricted(self, account, apply):
        apply(T0, details_submitted=False, disabled_reason="rejected.fraud")

        row = reload(account)
        assert row.status == "restricted"
        assert row.disabled_reason == "rejected.fraud"

    def test_naive_as_of_is_refused(self, account):
        with pytest.raises(ValueError, match="timezone-aware"):
            services.apply_account_snapshot(snapshot(**VERIFIED), as_of=datetime(2026, 1, 1))

    def test_signals_wait_for_the_commit(self, account, signal_log):
        services.apply_account_snapshot(snapshot(**VERIFIED), as_of=T0)

        # The test's transaction has not committed: nothing was sent yet.
        assert signal_log.sent == []


class TestCapability:
    def test_transfers_going_inactive_stops_transfers(self, account, apply, signal_log):
        apply(T0, **VERIFIED)
        signal_log.clear()

        with _commit():
            services.apply_capability(
                ACCOUNT_ID, "transfers", "inactive", T0 + timedelta(seconds=5)
            )

        row = reload(account)
        assert row.can_transfer is False
        assert row.status == "pending_verification"
        assert signal_log.of("capability_restricted")[0]["capability"] == "transfers"
        assert signal_log.of("capability_restricted")[0]["status"] == "inactive"

    def test_stale_capability_event_is_ignored(self, account, apply):
        apply(T0, **VERIFIED)

        services.apply_capability(ACCOUNT_ID, "transfers", "inactive", T0 - timedelta(seconds=1))

        assert reload(account).capabilities["transfers"] == "active"

    def test_unknown_account_is_none(self, db):
        assert services.apply_capability("acct_unknown", "transfers", "active", T0) is None


class TestDeauthorization:
    def test_deauthorize_is_sticky_and_signalled_once(self, account, apply, signal_log):
        apply(T0, **VERIFIED)
        signal_log.clear()

        with _commit():
            services.deauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(minutes=1))
            services.deauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(minutes=1))

        row = reload(account)
        assert row.status == "deauthorized"
        assert row.deauthorized_at is not None
        assert row.can_transfer is False
        assert signal_log.names() == ["account_deauthorized"]

        # Later data is stored, but the state stays deauthorized.
        apply(T0 + timedelta(minutes=2), **RESTRICTED)
        assert reload(account).status == "deauthorized"

    def test_reauthorize_returns_to_the_state_the_data_implies(self, account, apply, signal_log):
        apply(T0, **VERIFIED)
        services.deauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(minutes=1))
        signal_log.clear()

        with _commit():
            services.reauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(minutes=5))

        row = reload(account)
        assert row.status == "verified"
        assert row.deauthorized_at is None
        assert signal_log.of("account_updated")[0]["previous_status"] == "deauthorized"

    def test_late_deauthorization_older_than_a_reauthorization_is_ignored(self, account, apply):
        apply(T0, **VERIFIED)

        # Delivered out of order: authorized (t+2) arrives before deauthorized (t+1).
        services.reauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(minutes=2))
        services.deauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(minutes=1))

        assert reload(account).status == "verified"

    def test_late_authorization_older_than_the_deauthorization_is_ignored(
        self, account, apply, signal_log
    ):
        apply(T0, **VERIFIED)

        # Delivered out of order: deauthorized (t+20 s) arrives before authorized (t+10 s).
        services.deauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(seconds=20))
        signal_log.clear()
        with _commit():
            services.reauthorize_account(ACCOUNT_ID, as_of=T0 + timedelta(seconds=10))

        row = reload(account)
        assert row.status == "deauthorized"
        assert row.deauthorized_at == T0 + timedelta(seconds=20)
        assert signal_log.sent == []

    def test_refresh_of_a_deauthorized_account_does_not_call_stripe(
        self, sim_stripe, account, apply
    ):
        services.deauthorize_account(ACCOUNT_ID)

        services.refresh_account(reload(account))

        assert sim_stripe.calls == []

    def test_unknown_account_is_none(self, db):
        assert services.deauthorize_account("acct_unknown") is None
        assert services.reauthorize_account("acct_unknown") is None


class _commit:
    """Run on-commit callbacks of the block (the test transaction never commits)."""

    def __enter__(self) -> None:
        from django.test import TestCase

        self._cm = TestCase.captureOnCommitCallbacks(execute=True)
        self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


class TestEventsAgainstAFetch:
    """A fetch is stamped with the package's clock, an event with Stripe's whole
    seconds: each is compared with its own kind, and an event as old as a fetch
    (the same second, give or take FETCH_DOUBT) makes the package read the
    account once more instead of guessing."""

    @pytest.fixture
    def fetched(self, sim_stripe, seller, people, monkeypatch):
        """An onboarded account, read from Stripe at T0 + 0.4 s (package clock)."""
        response = client_for(people.owner).post(
            url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
        )
        assert response.status_code == 200
        row = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(row.stripe_account_id)
        monkeypatch.setattr(django_timezone, "now", lambda: T0 + timedelta(milliseconds=400))
        row = services.refresh_account(row)
        assert row.status == "verified"
        assert row.synced_at == T0 + timedelta(milliseconds=400)
        return row

    def pending(self, account):
        return AccountSnapshot(id=account.stripe_account_id, **NEW)

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_an_event_of_the_fetch_second_is_checked_with_stripe(self, sim_stripe, fetched):
        before = len(sim_stripe.calls)

        services.apply_account_snapshot(self.pending(fetched), as_of=T0)

        assert calls(sim_stripe)[before:] == ["retrieve_account"]
        assert reload(fetched).status == "verified"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests or events
    def test_a_capability_event_of_the_fetch_second_is_checked_with_stripe(
        self, sim_stripe, fetched
    ):
        before = len(sim_stripe.calls)

        services.apply_capability(fetched.stripe_account_id, "transfers", "inactive", T0)

        assert calls(sim_stripe)[before:] == ["retrieve_account"]
        assert reload(fetched).capabilities["transfers"] == "active"

    def test_an_event_clearly_older_than_the_fetch_is_ignored(self, sim_stripe, fetched):
        before = len(sim_stripe.calls)

        services.apply_account_snapshot(self.pending(fetched), as_of=T0 - timedelta(minutes=1))

        assert sim_stripe.calls[before:] == []
        assert reload(fetched).status == "verified"

    def test_an_event_clearly_newer_than_the_fetch_is_applied(self, sim_stripe, fetched):
        before = len(sim_stripe.calls)
        later = T0 + timedelta(minutes=1)

        services.apply_account_snapshot(self.pending(fetched), as_of=later)

        assert sim_stripe.calls[before:] == []
        row = reload(fetched)
        assert row.status == "pending_verification"
        assert row.synced_at == later


class TestEventsThatCannotBeOrdered:
    """An event is not guessed at when the row's data cannot be ordered against
    it: two events of the same second (Stripe's ``created`` is whole seconds,
    and onboarding emits several per second), or an ``account.updated`` older
    than a ``capability.updated`` / ``account.application.authorized`` that
    changed only part of the row (the rest of the row may be older than the
    snapshot). The account is read from Stripe once, and Stripe's answer is
    applied."""

    @pytest.fixture
    def synced(self, sim_stripe, seller, people):
        """An account onboarded at Stripe, its row synced by an event at T0."""
        response = client_for(people.owner).post(
            url("stripe-onboarding-link"), {"account_type": "individual"}, format="json"
        )
        assert response.status_code == 200
        row = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(row.stripe_account_id)
        services.apply_account_snapshot(self.snapshot(row, **VERIFIED), as_of=T0)
        row = reload(row)
        assert (row.status, row.synced_at) == ("verified", T0)
        return row

    def snapshot(self, account, **fields):
        return AccountSnapshot(id=account.stripe_account_id, **fields)

    def apply(self, account, as_of, **fields):
        with _commit():
            return services.apply_account_snapshot(self.snapshot(account, **fields), as_of=as_of)

    @pytest.mark.accounts_api("v1")  # asserts v1 requests
    def test_a_snapshot_of_the_rows_second_is_checked_with_stripe(self, sim_stripe, seller, synced):
        before = len(sim_stripe.calls)
        # One that says what the row holds needs no answer from Stripe.
        self.apply(synced, T0, **VERIFIED)
        assert calls(sim_stripe)[before:] == []

        # Stripe's order: restricted, then verified again, in one second; the
        # restriction is delivered last. Stripe says verified.
        self.apply(synced, T0, **RESTRICTED)

        assert calls(sim_stripe)[before:] == ["retrieve_account"]
        row = reload(synced)
        assert row.status == "verified"
        assert row.synced_at > T0  # the read's stamp

    def test_stripes_answer_is_applied(self, sim_stripe, seller, synced, signal_log):
        seller.require_information(synced.stripe_account_id, ["individual.id_number"])

        self.apply(synced, T0, **VERIFIED, currently_due=("external_account",))

        row = reload(synced)
        assert row.status == "restricted"
        assert row.requirements_past_due == ["individual.id_number"]
        assert signal_log.of("account_requirements_due")

    def test_a_capability_event_does_not_hide_an_older_snapshot(
        self, sim_stripe, seller, synced, signal_log
    ):
        """account.updated at T0+10 s (payouts disabled, id_number past due) and
        capability.updated (transfers) at T0+11 s, delivered in reverse order."""
        acct = synced.stripe_account_id
        seller.require_information(acct, ["individual.id_number"])
        with _commit():
            services.apply_capability(acct, "transfers", "inactive", T0 + timedelta(seconds=11))
        assert reload(synced).capabilities["transfers"] == "inactive"
        signal_log.clear()

        self.apply(
            synced,
            T0 + timedelta(seconds=10),
            **{**RESTRICTED, "past_due": ("individual.id_number",)},
        )

        row = reload(synced)
        assert (row.status, row.payouts_enabled) == ("restricted", False)
        assert row.requirements_past_due == ["individual.id_number"]
        assert row.capabilities["transfers"] == "inactive"
        assert [due["past_due"] for due in signal_log.of("account_requirements_due")] == [
            ["individual.id_number"]
        ]

    def test_an_older_snapshot_cannot_turn_a_capability_back_on(self, sim_stripe, seller, synced):
        acct = synced.stripe_account_id
        seller.require_information(acct, ["individual.id_number"])
        services.apply_capability(acct, "transfers", "inactive", T0 + timedelta(seconds=10))

        self.apply(synced, T0 + timedelta(seconds=5), **VERIFIED)

        row = reload(synced)
        assert row.capabilities["transfers"] == "inactive"
        assert not row.can_transfer

    def test_an_authorization_does_not_hide_an_older_snapshot(self, sim_stripe, seller, synced):
        acct = synced.stripe_account_id
        seller.require_information(acct, ["external_account"])
        services.reauthorize_account(acct, as_of=T0 + timedelta(seconds=20))

        self.apply(synced, T0 + timedelta(seconds=10), **RESTRICTED)

        assert reload(synced).status == "restricted"

    @pytest.mark.accounts_api("v1")  # asserts v1 requests
    def test_a_capability_event_of_the_rows_second_is_checked_with_stripe(
        self, sim_stripe, seller, synced
    ):
        acct = synced.stripe_account_id
        before = len(sim_stripe.calls)

        # The row already says so: nothing to decide.
        services.apply_capability(acct, "transfers", "active", T0)
        assert calls(sim_stripe)[before:] == []

        services.apply_capability(acct, "transfers", "inactive", T0)

        assert calls(sim_stripe)[before:] == ["retrieve_account"]
        assert reload(synced).capabilities["transfers"] == "active"

    def test_a_snapshot_of_a_capability_events_second_that_agrees_is_applied(
        self, sim_stripe, synced
    ):
        """The capability event was newer than everything the row held: a snapshot
        of its second is newer than the rest, and it says the same of the
        capabilities. No need to ask Stripe."""
        acct = synced.stripe_account_id
        services.apply_capability(acct, "transfers", "inactive", T0 + timedelta(seconds=10))
        before = len(sim_stripe.calls)

        self.apply(
            synced,
            T0 + timedelta(seconds=10),
            **{**RESTRICTED, "capabilities": {"transfers": "inactive", "card_payments": "active"}},
        )

        assert sim_stripe.calls[before:] == []
        row = reload(synced)
        assert (row.status, row.synced_at) == ("restricted", T0 + timedelta(seconds=10))
        assert row.requirements_past_due == ["individual.verification.document"]
