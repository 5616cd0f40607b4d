"""Accounts v2 (``ACCOUNTS_API = "v2"``): the requests and events only v2 has.

What hosts and the API see is the same in both modes (the rest of
``tests/onboarding`` runs in both); these tests check the v2 requests
(``/v2/core/accounts``, ``/v2/core/account_links``), the key rules under
v2's idempotency, lost-creation adoption, and thin events updating the
account through the real webhook pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models.signals import pre_save

from django_escrow_connect import simulation as simulated
from django_escrow_connect.exceptions import (
    InvalidRequest,
    TemporarilyUnavailable,
    UnreadableAnswer,
)
from django_escrow_connect.simulation import SimulatedGateway
from tests.checked_gateway import ReadInTransaction, outside_transactions

from .conftest import accounts, calls, client_for, configure, url
from .test_onboarding_link import DAY, age_row, post_link


class SimulationWithoutOwnSecret(SimulatedGateway):
    """A gateway that, like Stripe's, verifies only with configured secrets."""

    verifies_without_configured_secrets = False


pytestmark = [pytest.mark.django_db, pytest.mark.accounts_api("v2")]

RETURN_URL = "https://marketplace.example/onboarding/return/"
REFRESH_URL = "https://marketplace.example/onboarding/refresh/"


def call_params(sim_stripe: Any, method: str) -> list[dict[str, Any]]:
    return [kwargs for name, kwargs in sim_stripe.calls if name == method]


def rendered(sim_stripe: Any, account_id: str) -> dict[str, Any]:
    """The account as ``GET /v2/core/accounts/{id}`` answers it."""
    from django_escrow_connect.simulation.accounts_v2 import render_v2_account

    return render_v2_account(sim_stripe.accounts[account_id], sim_stripe.v2_accounts[account_id])


class TestCreation:
    def test_first_request_creates_a_v2_recipient_account_then_a_v2_link(self, sim_stripe, people):
        response = post_link(people.owner, account_type="individual")

        assert response.status_code == 200, response.content
        assert calls(sim_stripe) == ["create_account_v2", "create_account_link_v2"]
        row = accounts().get(owner_user=people.owner)
        assert row.accounts_api == "v2"
        (create,) = call_params(sim_stripe, "create_account_v2")
        assert create["identity"] == {"country": "US", "entity_type": "individual"}
        assert create["capabilities"] == ["transfers"]
        assert create["metadata"] == {"escrow_owner": f"user:{people.owner.pk}"}
        assert create["idempotency_key"] == row.creation_idempotency_key
        account = rendered(sim_stripe, row.stripe_account_id)
        assert account["applied_configurations"] == ["recipient"]
        assert account["dashboard"] == "express"
        assert account["defaults"]["responsibilities"] == {
            "fees_collector": "application",
            "losses_collector": "application",
        }
        (link,) = call_params(sim_stripe, "create_account_link_v2")
        assert link["account"] == row.stripe_account_id
        assert link["use_case"]["type"] == "account_onboarding"
        assert link["use_case"]["account_onboarding"] == {
            "refresh_url": REFRESH_URL,
            "return_url": RETURN_URL,
        }
        # The API answers as in v1: pending until onboarding is done.
        assert row.status == "pending_verification"
        assert row.capabilities == {"transfers": "inactive"}

    def test_links_collect_eventually_due_when_the_platform_asks(
        self, sim_stripe, settings, people
    ):
        configure(
            settings,
            ONBOARDING_COLLECT="eventually_due",
            ONBOARDING_FUTURE_REQUIREMENTS="include",
        )

        assert post_link(people.owner, account_type="individual").status_code == 200

        (link,) = call_params(sim_stripe, "create_account_link_v2")
        assert link["use_case"]["account_onboarding"]["collection_options"] == {
            "fields": "eventually_due",
            "future_requirements": "include",
        }

    def test_manual_capture_adds_the_merchant_configuration(self, sim_stripe, settings, people):
        configure(settings, ESCROW_STRATEGY="manual_capture")

        assert post_link(people.owner, account_type="company").status_code == 200

        (create,) = call_params(sim_stripe, "create_account_v2")
        assert create["capabilities"] == ["transfers", "card_payments"]
        row = accounts().get(owner_user=people.owner)
        assert rendered(sim_stripe, row.stripe_account_id)["applied_configurations"] == [
            "merchant",
            "recipient",
        ]
        assert row.capabilities == {"transfers": "inactive", "card_payments": "inactive"}

    def test_a_v1_account_keeps_v1_after_the_switch_and_new_ones_are_v2(
        self, sim_stripe, settings, people
    ):
        configure(settings, ACCOUNTS_API="v1")
        assert post_link(people.owner, account_type="individual").status_code == 200
        configure(settings, ACCOUNTS_API="v2")
        sim_stripe.calls.clear()

        assert post_link(people.owner, account_type="individual").status_code == 200
        assert (
            client_for(people.owner).get(url("stripe-account-status", refresh=1)).status_code == 200
        )
        assert post_link(people.stranger, account_type="individual").status_code == 200

        assert calls(sim_stripe) == [
            "create_account_link",
            "retrieve_account",
            "create_account_v2",
            "create_account_link_v2",
        ]
        assert accounts().get(owner_user=people.owner).accounts_api == "v1"
        assert accounts().get(owner_user=people.stranger).accounts_api == "v2"


class TestKeys:
    def creation_keys(self, sim_stripe: Any) -> list[str]:
        return [
            kwargs["idempotency_key"] for kwargs in call_params(sim_stripe, "create_account_v2")
        ]

    def test_after_a_500_the_same_key_finishes_the_creation(self, sim_stripe, people):
        """v2 retries finish failed work: the key is kept, and one account results."""
        sim_stripe.fail_next(
            "create_account_v2",
            TemporarilyUnavailable("An unknown error occurred", http_status=500),
            stored=True,
        )
        assert post_link(people.owner, account_type="individual").status_code == 503

        assert post_link(people.owner, account_type="individual").status_code == 200

        first, second = self.creation_keys(sim_stripe)
        assert first == second
        assert "list_accounts_v2" not in calls(sim_stripe)
        assert len(sim_stripe.accounts) == 1

    def test_a_refusal_is_retried_under_a_new_key_after_a_search(self, sim_stripe, people):
        sim_stripe.fail_next(
            "create_account_v2",
            InvalidRequest("Your platform cannot create accounts yet.", http_status=400),
            stored=True,
        )
        assert post_link(people.owner, account_type="individual").status_code == 409

        assert post_link(people.owner, account_type="individual").status_code == 200

        first, second = self.creation_keys(sim_stripe)
        assert first != second
        assert calls(sim_stripe).count("list_accounts_v2") == 1
        assert accounts().get(owner_user=people.owner).creation_idempotency_key == second

    def test_a_timeout_keeps_the_key_and_gets_the_account_stripe_made(self, sim_stripe, people):
        sim_stripe.fail_next(
            "create_account_v2", TemporarilyUnavailable("Read timed out"), after_effect=True
        )
        assert post_link(people.owner, account_type="individual").status_code == 503
        (made,) = sim_stripe.accounts

        assert post_link(people.owner, account_type="individual").status_code == 200

        first, second = self.creation_keys(sim_stripe)
        assert first == second
        assert list(sim_stripe.accounts) == [made]
        assert accounts().get(owner_user=people.owner).stripe_account_id == made


class TestLostCreation:
    """After 23 hours the key may be gone: the v2 accounts are searched by metadata."""

    def lose_the_answer(self, sim_stripe: Any, people: Any) -> str:
        sim_stripe.fail_next(
            "create_account_v2", TemporarilyUnavailable("Read timed out"), after_effect=True
        )
        assert post_link(people.owner, account_type="individual").status_code == 503
        (made,) = sim_stripe.accounts
        sim_stripe.advance_time(2 * DAY)
        age_row(people, 2 * DAY)
        sim_stripe.calls.clear()
        return made

    def test_the_account_stripe_made_is_adopted_not_duplicated(self, sim_stripe, people):
        made = self.lose_the_answer(sim_stripe, people)

        assert post_link(people.owner, account_type="individual").status_code == 200

        assert list(sim_stripe.accounts) == [made]
        # The list has no configurations: the found account is read whole.
        assert calls(sim_stripe) == [
            "list_accounts_v2",
            "retrieve_account_v2",
            "create_account_link_v2",
        ]
        row = accounts().get(owner_user=people.owner)
        assert row.stripe_account_id == made
        assert row.capabilities == {"transfers": "inactive"}

    def test_without_the_search_the_same_key_would_open_a_second_account(self, sim_stripe, people):
        made = self.lose_the_answer(sim_stripe, people)
        row = accounts().get(owner_user=people.owner)
        again = SimulatedGateway().create_account_v2(
            idempotency_key=row.creation_idempotency_key,
            country=row.country,
            email=row.email or None,
            business_type=row.business_type,
            metadata={"escrow_owner": f"user:{people.owner.pk}"},
        )
        assert again.id != made

    def test_another_owners_account_is_never_adopted(self, sim_stripe, people):
        self.lose_the_answer(sim_stripe, people)
        row = accounts().get(owner_user=people.owner)
        sim_stripe.accounts.clear()
        sim_stripe.v2_accounts.clear()
        SimulatedGateway().create_account_v2(
            idempotency_key="someone-else",
            country="US",
            email=None,
            business_type="individual",
            metadata={"escrow_owner": "user:-1"},
        )

        assert post_link(people.owner, account_type="individual").status_code == 200

        assert len(sim_stripe.accounts) == 2
        assert accounts().get(pk=row.pk).stripe_account_id not in ("", None)
        assert calls(sim_stripe)[-2:] == ["create_account_v2", "create_account_link_v2"]


class TestStatus:
    def test_refresh_reads_the_v2_account_and_maps_it_like_v1(self, sim_stripe, seller, people):
        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(account.stripe_account_id)
        sim_stripe.calls.clear()

        body = client_for(people.owner).get(url("stripe-account-status", refresh=1)).json()

        assert calls(sim_stripe) == ["retrieve_account_v2"]
        assert body["status"] == "verified"
        assert body["can_transfer"] is True
        assert body["details_submitted"] is True
        assert body["payouts_enabled"] is True
        assert body["capabilities"]["transfers"] == "active"

    def test_a_dashboard_link_that_finds_the_account_closed_is_409_and_makes_no_link(
        self, sim_stripe, seller, people
    ):
        # Onboarding not submitted as far as the row knows: the link reads the
        # account first, and Stripe reports it closed (the event not applied yet).
        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.close_account_v2(account.stripe_account_id)

        response = client_for(people.owner).get(url("stripe-dashboard-link"))

        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "account_deauthorized"
        assert "create_login_link" not in calls(sim_stripe)
        assert accounts().get(pk=account.pk).status == "deauthorized"

    def test_staff_cannot_reconnect_an_account_stripe_reports_closed(
        self, sim_stripe, seller, people
    ):
        from django_escrow_connect.services.accounts import refresh_account

        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.close_account_v2(account.stripe_account_id)
        assert refresh_account(account).status == "deauthorized"  # read: closed

        row = refresh_account(accounts().get(pk=account.pk), reauthorize_if_read=True)

        assert calls(sim_stripe)[-1] == "retrieve_account_v2"
        assert row.status == "deauthorized"
        assert accounts().get(pk=account.pk).status == "deauthorized"

    def closed_after_onboarding(self, seller: Any, people: Any) -> Any:
        """A verified account (as the row knows it) that Stripe now reports closed."""
        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(account.stripe_account_id)
        client_for(people.owner).get(url("stripe-account-status", refresh=1))
        assert accounts().get(pk=account.pk).status == "verified"
        seller.close_account_v2(account.stripe_account_id)
        return account

    def test_a_refresh_that_finds_the_account_closed_announces_the_read_then_the_end(
        self, sim_stripe, seller, people, signal_log, django_capture_on_commit_callbacks
    ):
        account = self.closed_after_onboarding(seller, people)
        signal_log.clear()

        with django_capture_on_commit_callbacks(execute=True):
            body = client_for(people.owner).get(url("stripe-account-status", refresh=1)).json()

        assert body["status"] == "deauthorized"
        ends = ("account_updated", "account_deauthorized")
        assert [name for name in signal_log.names() if name in ends] == list(ends)
        row = accounts().get(pk=account.pk)
        assert (row.status, row.payouts_enabled) == ("deauthorized", False)

    def test_a_closed_account_whose_deauthorization_fails_stores_and_announces_nothing(
        self, sim_stripe, seller, people, signal_log, django_capture_on_commit_callbacks
    ):
        account = self.closed_after_onboarding(seller, people)
        signal_log.clear()

        def failing_host_receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
            if instance.status == "deauthorized":
                raise RuntimeError("the host's receiver failed")

        pre_save.connect(failing_host_receiver, sender=type(account))
        try:
            with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
                client_for(people.owner).get(url("stripe-account-status", refresh=1))
        finally:
            pre_save.disconnect(failing_host_receiver, sender=type(account))

        # Not an updated account that is still connected: the read went with it.
        assert signal_log.sent == []
        row = accounts().get(pk=account.pk)
        assert (row.status, row.payouts_enabled) == ("verified", True)

    def test_a_stripe_outage_on_refresh_is_503(self, sim_stripe, people):
        post_link(people.owner, account_type="individual")
        sim_stripe.fail_next("retrieve_account_v2", TemporarilyUnavailable("timeout"))

        response = client_for(people.owner).get(url("stripe-account-status", refresh=1))

        assert response.status_code == 503


@pytest.fixture
def webhooks(sim_stripe: Any) -> Iterator[None]:
    """Deliver the simulated Stripe's events (thin ones too) to the real receiver."""
    previous = simulated.set_event_sink(None)
    yield
    simulated.set_event_sink(previous)
    assert sim_stripe.undelivered == []


@pytest.fixture
def account(
    sim_stripe: Any, webhooks: None, people: Any, django_capture_on_commit_callbacks
) -> Any:
    with django_capture_on_commit_callbacks(execute=True):
        assert post_link(people.owner, account_type="individual").status_code == 200
    return accounts().get(owner_user=people.owner)


def event_log() -> Any:
    from django_escrow_connect import swappable

    return swappable.load("WebhookEvent").objects


class TestThinEvents:
    def test_onboarding_restriction_and_closure_arrive_as_thin_events(
        self, account, seller, sim_stripe, signal_log, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            seller.complete_onboarding(account.stripe_account_id)

        row = accounts().get(pk=account.pk)
        assert row.status == "verified"
        assert row.can_transfer
        assert "account_updated" in signal_log.names()
        thin = event_log().filter(thin=True)
        assert set(thin.values_list("endpoint", flat=True)) == {"thin"}
        assert set(thin.values_list("account", flat=True)) == {account.stripe_account_id}
        assert not event_log().filter(type="account.updated").exists()
        signal_log.clear()

        with django_capture_on_commit_callbacks(execute=True):
            seller.require_information(account.stripe_account_id, ["individual.id_number"])

        row = accounts().get(pk=account.pk)
        assert row.status == "restricted"
        assert row.requirements_past_due == ["individual.id_number"]
        assert row.disabled_reason == "requirements.past_due"
        assert "account_requirements_due" in signal_log.names()
        assert "capability_restricted" in signal_log.names()

        with django_capture_on_commit_callbacks(execute=True):
            seller.close_account_v2(account.stripe_account_id)

        assert accounts().get(pk=account.pk).status == "deauthorized"
        assert "account_deauthorized" in signal_log.names()
        closed = event_log().get(type="v2.core.account.closed")
        assert closed.status == "processed"

    def test_each_thin_event_reads_the_account_once(
        self, account, seller, sim_stripe, django_capture_on_commit_callbacks
    ):
        sim_stripe.calls.clear()
        with django_capture_on_commit_callbacks(execute=True):
            seller.complete_onboarding(account.stripe_account_id)

        handled = event_log().filter(thin=True, status="processed").count()
        assert handled == 2  # requirements, and the recipient capability status
        assert calls(sim_stripe) == ["retrieve_account_v2"] * handled

    def test_the_account_is_read_with_no_transaction_open(
        self, account, seller, sim_stripe, monkeypatch, django_capture_on_commit_callbacks
    ):
        """Not inside the event's transaction: a slow Stripe holds no lock and
        keeps no concurrent delivery of the event waiting."""
        checked = outside_transactions(SimulatedGateway.retrieve_account_v2, ReadInTransaction)
        monkeypatch.setattr(SimulatedGateway, "retrieve_account_v2", checked)
        with django_capture_on_commit_callbacks(execute=True):
            seller.complete_onboarding(account.stripe_account_id)

        thin = event_log().filter(thin=True)
        assert not thin.filter(status="failed").exists(), thin.values_list("last_error")
        assert thin.filter(status="processed").count() == 2
        assert accounts().get(pk=account.pk).status == "verified"

    def test_an_old_thin_event_delivered_late_reads_the_current_state(
        self, account, seller, sim_stripe, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            seller.complete_onboarding(account.stripe_account_id)
        (verified,) = [
            e
            for e in sim_stripe.thin_events.values()
            if e["type"] == "v2.core.account[configuration.recipient].capability_status_updated"
        ]
        sim_stripe.advance_time(60)
        with django_capture_on_commit_callbacks(execute=True):
            seller.require_information(account.stripe_account_id)
        assert accounts().get(pk=account.pk).status == "restricted"

        late = {**verified, "id": verified["id"] + "late"}
        sim_stripe.thin_events[late["id"]] = late
        with django_capture_on_commit_callbacks(execute=True):
            assert sim_stripe.redeliver(late["id"])

        # A thin event is a signal to read again: Stripe's state now wins.
        assert accounts().get(pk=account.pk).status == "restricted"

    def test_a_failed_fetch_fails_the_event_and_a_redelivery_applies_it(
        self, account, seller, sim_stripe, django_capture_on_commit_callbacks
    ):
        sim_stripe.fail_next("retrieve_account_v2", TemporarilyUnavailable("timeout"))
        with django_capture_on_commit_callbacks(execute=True):
            seller.complete_onboarding(account.stripe_account_id)
        failed = event_log().filter(thin=True, status="failed")
        assert failed.count() == 1
        assert sim_stripe.undelivered  # answered 500: Stripe delivers it again
        sim_stripe.undelivered.clear()

        with django_capture_on_commit_callbacks(execute=True):
            assert sim_stripe.redeliver(failed.get().stripe_event_id)

        assert not event_log().filter(thin=True, status="failed").exists()
        assert accounts().get(pk=account.pk).status == "verified"

    def test_a_payment_is_paid_and_released_to_a_v2_account(
        self, account, seller, sim_stripe, people, django_capture_on_commit_callbacks
    ):
        from django.urls import reverse

        from django_escrow_connect import swappable
        from tests import factories

        with django_capture_on_commit_callbacks(execute=True):
            seller.complete_onboarding(account.stripe_account_id)
        assert accounts().get(pk=account.pk).can_transfer
        customer = factories.make_user("customer")
        task = factories.make_task(customer, payee_user=people.owner)
        payer = client_for(customer)

        with django_capture_on_commit_callbacks(execute=True):
            created = payer.post(
                reverse("escrow_connect:payment-create"), {"task_id": str(task.pk)}, format="json"
            )
        assert created.status_code == 201, created.content
        payment = swappable.load("EscrowPayment").objects.get(pk=created.json()["payment_id"])
        with django_capture_on_commit_callbacks(execute=True):
            seller.confirm_payment_intent(payment.stripe_payment_intent_id, "success")
        payment.refresh_from_db()
        assert payment.status == "held"
        with django_capture_on_commit_callbacks(execute=True):
            released = payer.post(
                reverse("escrow_connect:payment-confirm", args=[str(payment.pk)]), format="json"
            )

        assert released.status_code == 200, released.content
        payment.refresh_from_db()
        assert payment.status == "released"
        (transfer,) = sim_stripe.transfers.values()
        assert transfer["destination"] == account.stripe_account_id
        assert not event_log().filter(status__in=["failed", "deferred"]).exists()


class TestCommands:
    def test_fetch_missed_events_records_the_thin_events_that_never_arrived(
        self, sim_stripe, seller, people, stripe_events, django_capture_on_commit_callbacks
    ):
        from django.core.management import call_command

        # The events are collected, never delivered (the endpoint was down).
        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(account.stripe_account_id)
        assert accounts().get(pk=account.pk).status == "pending_verification"
        sim_stripe.calls.clear()

        from io import StringIO

        out = StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("escrow_fetch_missed_events", "--since", "1d", "--no-platform", stdout=out)

        assert "thin events: 2 events, 2 new (2 processed)" in out.getvalue()
        assert calls(sim_stripe) == ["list_thin_events", *["retrieve_account_v2"] * 2]
        assert accounts().get(pk=account.pk).status == "verified"
        assert event_log().filter(thin=True).count() == 2

        out = StringIO()
        call_command("escrow_fetch_missed_events", "--since", "1d", "--no-platform", stdout=out)
        assert "thin events: 2 events, 0 new (2 duplicate)" in out.getvalue()

    def test_fetch_missed_events_records_the_thin_events_read_before_a_page_failed(
        self, sim_stripe, seller, people, monkeypatch, django_capture_on_commit_callbacks
    ):
        """One page of thin events that could not be read made the run record
        none of them: those read before it are recorded now, and the run
        still fails asking for the same --since."""
        from io import StringIO

        from django.core.management import CommandError, call_command

        post_link(people.owner, account_type="individual")
        account = accounts().get(owner_user=people.owner)
        seller.complete_onboarding(account.stripe_account_id)  # two thin events
        listed = SimulatedGateway.list_thin_events

        def second_page_unreadable(self: Any, **kwargs: Any) -> Iterator[Any]:
            for number, event in enumerate(listed(self, **kwargs)):
                if number == 1:
                    raise UnreadableAnswer("Stripe's answer could not be read")
                yield event

        monkeypatch.setattr(SimulatedGateway, "list_thin_events", second_page_unreadable)
        out, err = StringIO(), StringIO()
        with (
            django_capture_on_commit_callbacks(execute=True),
            pytest.raises(CommandError, match="run it again with the same --since"),
        ):
            call_command(
                *("escrow_fetch_missed_events", "--since", "1d", "--no-platform"),
                stdout=out,
                stderr=err,
            )
        assert "thin events: Stripe could not list events" in err.getvalue()
        assert "thin events: 1 events, 1 new (1 processed), read before its listing failed" in (
            out.getvalue()
        )
        assert event_log().filter(thin=True).count() == 1

    @pytest.mark.accounts_api("v1")
    def test_fetch_missed_events_skips_thin_events_without_v2_accounts(self, sim_stripe, people):
        from io import StringIO

        from django.core.management import call_command

        post_link(people.owner, account_type="individual")
        out = StringIO()
        call_command("escrow_fetch_missed_events", "--no-platform", stdout=out)
        assert "thin events" not in out.getvalue()
        call_command("escrow_fetch_missed_events", "--no-platform", "--thin-events", stdout=out)
        assert "thin events: 0 events" in out.getvalue()

    def test_the_report_counts_accounts_per_api_and_explains_switching(
        self, sim_stripe, settings, people
    ):
        import json
        from io import StringIO

        from django.core.management import call_command

        configure(settings, ACCOUNTS_API="v1")
        post_link(people.owner, account_type="individual")
        configure(settings, ACCOUNTS_API="v2")
        post_link(people.stranger, account_type="individual")

        out = StringIO()
        call_command("escrow_accounts_api_report", "--list", stdout=out)
        text = out.getvalue()
        assert "ACCOUNTS_API = 'v2'" in text
        assert "Accounts v1: 1 accounts" in text
        assert "Accounts v2: 1 accounts" in text
        assert "keeps the API it was created with" in text
        assert accounts().get(owner_user=people.owner).stripe_account_id in text
        assert "THIN_WEBHOOK_SECRETS is set (v2 accounts need it)." in text

        def thin_line(**overrides: Any) -> str:
            configure(settings, ACCOUNTS_API="v2", THIN_WEBHOOK_SECRETS=[], **overrides)
            out = StringIO()
            call_command("escrow_accounts_api_report", stdout=out)
            (line,) = [ln for ln in out.getvalue().splitlines() if ln.startswith("  THIN_WEBHOOK")]
            return line.strip()

        # The simulation signs its own thin events: the setting is not missing.
        assert thin_line().startswith("THIN_WEBHOOK_SECRETS is not set; not needed with this")
        assert thin_line(GATEWAY=f"{__name__}.SimulationWithoutOwnSecret") == (
            "THIN_WEBHOOK_SECRETS is NOT set (v2 accounts need it)."
        )

        out = StringIO()
        call_command("escrow_accounts_api_report", "--json", stdout=out)
        report = json.loads(out.getvalue())
        assert report["accounts"] == {"v1": 1, "v2": 1}
        assert report["accounts_api_setting"] == "v2"


class TestMapping:
    """AccountSnapshot.from_v2_dict: the v2 account in v1's words."""

    def account(self, **parts: Any) -> dict[str, Any]:
        return {"id": "acct_1", "object": "v2.core.account", "created": None, **parts}

    def test_a_rejected_recipient_is_restricted_in_v1_words(self):
        from django_escrow_connect.gateway.types import AccountSnapshot

        snapshot = AccountSnapshot.from_v2_dict(
            self.account(
                configuration={
                    "recipient": {
                        "capabilities": {
                            "stripe_balance": {
                                "stripe_transfers": {
                                    "status": "rejected",
                                    "status_details": [{"code": "rejected_fraud"}],
                                }
                            }
                        }
                    }
                }
            )
        )
        assert snapshot.capabilities == {"transfers": "inactive"}
        assert snapshot.disabled_reason == "rejected.fraud"
        assert snapshot.payouts_enabled is False

    def test_requirements_awaiting_stripe_are_verification_not_due(self):
        from django_escrow_connect.gateway.types import AccountSnapshot

        snapshot = AccountSnapshot.from_v2_dict(
            self.account(
                requirements={
                    "entries": [
                        {
                            "awaiting_action_from": "stripe",
                            "description": "identity.individual.verification.document",
                            "minimum_deadline": {"status": "currently_due"},
                        },
                        {
                            "awaiting_action_from": "user",
                            "description": "identity.individual.id_number",
                            "minimum_deadline": {"status": "eventually_due"},
                        },
                    ]
                },
                configuration={
                    "recipient": {
                        "capabilities": {
                            "stripe_balance": {"stripe_transfers": {"status": "pending"}}
                        }
                    }
                },
            )
        )
        assert snapshot.currently_due == snapshot.past_due == ()
        assert snapshot.eventually_due == ("identity.individual.id_number",)
        assert snapshot.details_submitted is True
        assert snapshot.disabled_reason == "requirements.pending_verification"
        assert snapshot.capabilities == {"transfers": "pending"}

    def test_the_merchant_configuration_gives_card_payments_and_charges(self):
        from django_escrow_connect.gateway.types import AccountSnapshot

        active = {"status": "active", "status_details": []}
        snapshot = AccountSnapshot.from_v2_dict(
            self.account(
                configuration={
                    "merchant": {"capabilities": {"card_payments": active}},
                    "recipient": {"capabilities": {"stripe_balance": {"stripe_transfers": active}}},
                },
                closed=True,
            )
        )
        assert snapshot.capabilities == {"card_payments": "active", "transfers": "active"}
        assert snapshot.charges_enabled is True
        assert snapshot.payouts_enabled is True  # no payouts capability in the answer
        assert snapshot.closed is True

    def test_a_v1_object_is_refused(self):
        from django_escrow_connect.gateway.types import AccountSnapshot

        with pytest.raises(ValueError, match=r"v2\.core\.account"):
            AccountSnapshot.from_v2_dict({"id": "acct_1", "object": "account"})

    @pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-05:00"])
    def test_a_time_whose_utc_is_off_the_calendar_is_unreadable(self, moment):
        """An RFC 3339 time with an offset taking its UTC before year 1 or past
        9999 raised OverflowError, not the ValueError of every other answer
        the parsers cannot read."""
        from django_escrow_connect.gateway.types import AccountLinkResult, AccountSnapshot

        with pytest.raises(ValueError, match="off the calendar"):
            AccountSnapshot.from_v2_dict(self.account(created=moment))
        link = {"object": "v2.core.account_link", "url": "https://x.test", "expires_at": moment}
        with pytest.raises(ValueError, match="off the calendar"):
            AccountLinkResult.from_v2_dict(link)
