"""Connect endpoint: account, capability, authorization, person, bank and payout events."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from django_escrow_connect.exceptions import TemporarilyUnavailable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import receiver
from tests import factories
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import CONNECT_SECRET, events, simulated_account

pytestmark = pytest.mark.django_db


def account_row(account_id: str) -> Any:
    return swappable.load("ConnectedAccount").objects.get(stripe_account_id=account_id)


@pytest.fixture
def account(db: Any) -> Any:
    return factories.make_account(owner_user=factories.make_user("doer"))


def test_account_updated_restricts_and_asks_for_requirements(
    deliver: Any, account: Any, sim_stripe: Any, sent: Any
) -> None:
    acct = account.stripe_account_id
    snapshot = so.account(
        acct,
        payouts_enabled=False,
        requirements=so.requirements(
            currently_due=["external_account"], past_due=["external_account"]
        ),
    )
    evt = so.event("account.updated", snapshot, account=acct)
    assert deliver.connect(evt).json()["status"] == "processed"
    row = account_row(acct)
    assert row.status == "restricted"
    assert row.requirements_past_due == ["external_account"]
    assert [n["account"].pk for n in sent.of("account_requirements_due")] == [row.pk]
    assert sim_stripe.calls == []


def test_older_account_update_arriving_late_is_ignored(
    deliver: Any, account: Any, sim_stripe: Any
) -> None:
    acct = account.stripe_account_id
    newer = so.event(
        "account.updated", so.account(acct, payouts_enabled=False), account=acct, created=2_000
    )
    older = so.event("account.updated", so.account(acct), account=acct, created=1_000)
    deliver.connect(newer)
    deliver.connect(older)
    assert account_row(acct).payouts_enabled is False


def test_deauthorized_then_authorized(
    deliver: Any, account: Any, sim_stripe: Any, sent: Any
) -> None:
    acct = account.stripe_account_id
    gone = so.event("account.application.deauthorized", so.application(), account=acct)
    assert deliver.connect(gone).json()["status"] == "processed"
    assert account_row(acct).status == "deauthorized"
    assert len(sent.of("account_deauthorized")) == 1
    assert deliver.connect(gone).json()["status"] == "duplicate"

    back = so.event(
        "account.application.authorized", so.application(), account=acct, created=so.now() + 5
    )
    sent.log.clear()
    deliver.connect(back)
    assert account_row(acct).status == "verified"
    assert [(n["previous_status"], n["account"].status) for n in sent.of("account_updated")] == [
        ("deauthorized", "verified")
    ]
    assert sent.names() == ["account_updated"]


def test_capability_updated(deliver: Any, account: Any, sim_stripe: Any, sent: Any) -> None:
    acct = account.stripe_account_id
    evt = so.event("capability.updated", so.capability(acct, status="inactive"), account=acct)
    assert deliver.connect(evt).json()["status"] == "processed"
    row = account_row(acct)
    assert row.capabilities["transfers"] == "inactive"
    assert not row.can_transfer
    [notice] = sent.of("capability_restricted")
    assert (notice["capability"], notice["status"]) == ("transfers", "inactive")


# --- events that cannot be ordered against the stored data: Stripe is asked ---

#: A whole second a minute ago: the account's row is synced by an event then.
SYNCED = so.now() - 60

RESTRICTED = dict(
    payouts_enabled=False,
    capabilities={"card_payments": "inactive", "transfers": "active"},
    requirements=so.requirements(
        currently_due=["individual.id_number"],
        past_due=["individual.id_number"],
        disabled_reason="requirements.past_due",
    ),
)


@pytest.fixture
def at_stripe(deliver: Any, sim_stripe: Any) -> str:
    """An account onboarded at the simulated Stripe, its row verified by an
    ``account.updated`` of :data:`SYNCED`."""
    acct = simulated_account()
    factories.make_account(
        owner_user=factories.make_user("doer"), stripe_account_id=acct, ready=False
    )
    deliver.connect(so.event("account.updated", so.account(acct), account=acct, created=SYNCED))
    assert account_row(acct).status == "verified"
    sim_stripe.calls.clear()
    return acct


def restrict_at_stripe(acct: str) -> None:
    """Stripe disables payouts: ``individual.id_number`` is past due."""
    from django_escrow_connect.simulation import SimulatedGateway

    SimulatedGateway().require_information(acct, ["individual.id_number"])


def test_a_capability_event_does_not_hide_an_older_account_update(
    deliver: Any, at_stripe: str, sim_stripe: Any, sent: Any
) -> None:
    """account.updated at +10 s (payouts disabled, id_number past due) and
    capability.updated (card_payments) at +11 s, delivered in reverse order."""
    acct = at_stripe
    restrict_at_stripe(acct)
    older = so.event(
        "account.updated", so.account(acct, **RESTRICTED), account=acct, created=SYNCED + 10
    )
    newer = so.event(
        "capability.updated",
        so.capability(acct, "card_payments", "inactive"),
        account=acct,
        created=SYNCED + 11,
    )
    assert deliver.connect(newer).json()["status"] == "processed"
    assert sim_stripe.calls == []
    assert deliver.connect(older).json()["status"] == "processed"
    # Which of the two is newer for the other fields is not known: Stripe is asked.
    assert [name for name, _ in sim_stripe.calls] == ["retrieve_account"]
    row = account_row(acct)
    assert (row.status, row.payouts_enabled) == ("restricted", False)
    assert row.requirements_past_due == ["individual.id_number"]
    assert row.capabilities["card_payments"] == "inactive"
    assert sent.of("account_requirements_due")


def test_an_authorization_does_not_hide_an_older_account_update(
    deliver: Any, at_stripe: str, sim_stripe: Any
) -> None:
    acct = at_stripe
    restrict_at_stripe(acct)
    authorized = so.event(
        "account.application.authorized", so.application(), account=acct, created=SYNCED + 20
    )
    older = so.event(
        "account.updated", so.account(acct, **RESTRICTED), account=acct, created=SYNCED + 10
    )
    deliver.connect(authorized)
    deliver.connect(older)
    assert account_row(acct).status == "restricted"


def test_an_older_authorization_after_a_newer_deauthorization_is_ignored(
    deliver: Any, account: Any, sim_stripe: Any, sent: Any
) -> None:
    acct = account.stripe_account_id
    deliver.connect(so.event("account.updated", so.account(acct), account=acct, created=SYNCED))
    gone = so.event(
        "account.application.deauthorized", so.application(), account=acct, created=SYNCED + 20
    )
    back = so.event(
        "account.application.authorized", so.application(), account=acct, created=SYNCED + 10
    )
    deliver.connect(gone)
    sent.log.clear()
    assert deliver.connect(back).json()["status"] == "processed"
    assert account_row(acct).status == "deauthorized"
    assert sent.log == []


def test_account_updates_of_one_second_delivered_out_of_order_ask_stripe(
    deliver: Any, at_stripe: str, sim_stripe: Any
) -> None:
    """Stripe's order in one second: restricted, then verified; delivered the
    other way round. Stripe's created is whole seconds: the two cannot be
    ordered, so the account is read."""
    acct = at_stripe
    first = so.event(
        "account.updated",
        so.account(acct, capabilities={"card_payments": "inactive", "transfers": "inactive"}),
        account=acct,
        created=SYNCED + 1,
    )
    second = so.event("account.updated", so.account(acct), account=acct, created=SYNCED + 1)
    deliver.connect(second)
    assert sim_stripe.calls == []
    deliver.connect(first)
    assert [name for name, _ in sim_stripe.calls] == ["retrieve_account"]
    row = account_row(acct)
    assert (row.status, row.capabilities["transfers"]) == ("verified", "active")
    assert row.can_transfer


def test_an_account_update_that_cannot_be_ordered_reads_stripe_with_no_transaction_open(
    deliver: Any, at_stripe: str, reads_checked: Any
) -> None:
    """The account is read with no transaction open and its row unlocked: a
    slow Stripe blocks nobody, and a failed read leaves the event to retry
    with nothing written."""
    acct = at_stripe
    restrict_at_stripe(acct)
    second = so.event("account.updated", so.account(acct), account=acct, created=SYNCED + 1)
    first = so.event(
        "account.updated", so.account(acct, **RESTRICTED), account=acct, created=SYNCED + 1
    )
    deliver.connect(second)
    reads_checked.fail_next("retrieve_account", TemporarilyUnavailable("timed out"))
    assert deliver.connect(first).status_code == 500
    recorded = events().get(stripe_event_id=first["id"])
    assert (recorded.status, recorded.last_error.split(":")[0]) == ("failed", "ProviderUnavailable")
    row = account_row(acct)
    assert (row.status, row.payouts_enabled) == ("verified", True)

    reads_checked.calls.clear()
    assert deliver.connect(first).json()["status"] == "processed"  # delivered again
    assert [name for name, _ in reads_checked.calls] == ["retrieve_account"]
    recorded = events().get(stripe_event_id=first["id"])
    assert (recorded.status, recorded.last_error) == ("processed", "")
    row = account_row(acct)
    assert (row.status, row.payouts_enabled) == ("restricted", False)
    assert row.requirements_past_due == ["individual.id_number"]


def test_a_capability_event_in_doubt_is_checked_again_after_the_read(
    deliver: Any, at_stripe: str, reads_checked: Any, monkeypatch: Any
) -> None:
    """capability.updated of the second the row was synced in: the account is
    read with no transaction open. A newer account.updated applied while
    Stripe answers makes the capability event stale: it is ignored, as it
    would have been had the two arrived in that order."""
    from django_escrow_connect.simulation import SimulatedGateway

    acct = at_stripe
    restrict_at_stripe(acct)
    newer = so.event(
        "account.updated", so.account(acct, **RESTRICTED), account=acct, created=SYNCED + 30
    )
    retrieve_account = SimulatedGateway.retrieve_account  # refuses a transaction (reads_checked)

    def newer_event_meanwhile(self: Any, account_id: str) -> Any:
        payload = so.encode(newer)
        header = sign_webhook_payload(payload, CONNECT_SECRET)
        assert receiver.receive(WebhookEndpoint.CONNECT, payload, header).status == "processed"
        return retrieve_account(self, account_id)

    monkeypatch.setattr(SimulatedGateway, "retrieve_account", newer_event_meanwhile)
    capability = so.event(
        "capability.updated",
        so.capability(acct, "transfers", "inactive"),
        account=acct,
        created=SYNCED,
    )
    assert deliver.connect(capability).json()["status"] == "processed"
    assert [name for name, _ in reads_checked.calls] == ["retrieve_account"]
    assert events().get(stripe_event_id=newer["id"]).status == "processed"
    row = account_row(acct)
    assert (row.status, row.payouts_enabled) == ("restricted", False)
    assert row.capabilities == {"card_payments": "inactive", "transfers": "active"}


@pytest.mark.parametrize(
    ("event_type", "builder"),
    [
        ("person.updated", so.person),
        ("person.deleted", so.person),
        ("account.external_account.created", so.external_account),
        ("account.external_account.deleted", so.external_account),
    ],
)
def test_person_and_bank_events_refresh_the_account(
    deliver: Any, reads_checked: Any, event_type: str, builder: Any
) -> None:
    """Read with no transaction open (``reads_checked``)."""
    acct = simulated_account()
    row = factories.make_account(
        owner_user=factories.make_user("doer"), stripe_account_id=acct, ready=False
    )
    reads_checked.calls.clear()
    evt = so.event(event_type, builder(acct), account=acct)
    assert deliver.connect(evt).json()["status"] == "processed"
    assert [name for name, _ in reads_checked.calls] == ["retrieve_account"]
    row.refresh_from_db()
    assert row.status == "verified"


def test_event_for_an_unknown_account_is_deferred(deliver: Any, sim_stripe: Any) -> None:
    acct = "acct_1TestNotYetStored"
    evt = so.event("account.updated", so.account(acct), account=acct)
    assert deliver.connect(evt).json()["status"] == "deferred"
    factories.make_account(
        owner_user=factories.make_user("doer"), stripe_account_id=acct, ready=False
    )
    deliver.retry_deferred()
    assert events().get(stripe_event_id=evt["id"]).status == "processed"
    assert account_row(acct).status == "verified"


def test_payout_failed_records_an_incident_and_notifies(
    deliver: Any, make_payment: Any, sim_stripe: Any, sent: Any
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    kit.make_transfer(scene.payment)  # what paid the account
    acct = scene.account.stripe_account_id
    payout = so.payout(
        status="failed",
        failure_code="account_closed",
        failure_message="The bank account has been closed.",
    )
    evt = so.event("payout.failed", payout, account=acct)
    assert deliver.connect(evt).json()["status"] == "processed"
    [incident] = swappable.load("TransferIncident").objects.all()
    assert (incident.kind, incident.code, incident.stripe_payout_id) == (
        "payout_failed",
        "account_closed",
        payout["id"],
    )
    assert incident.payment_id == scene.payment.pk
    [notice] = sent.of("payout_failed")
    assert notice["account"].stripe_account_id == acct
    assert notice["payout"].id == payout["id"]

    # Another event about the same payout records no second incident.
    deliver.connect(so.event("payout.failed", payout, account=acct))
    assert swappable.load("TransferIncident").objects.count() == 1


def test_payout_failed_finds_the_payment_that_paid_the_account_by_index(
    deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    """A payout.failed's lookups (its own incident; which payment most recently
    paid the account) are read from their indexes, not by scanning every
    incident, transfer and payment."""
    scene = make_payment("released", amount_transferred=9_000)
    kit.make_transfer(scene.payment)
    acct = scene.account.stripe_account_id
    wanted = {
        swappable.load("TransferIncident")._meta.db_table: (
            "stripe_payout_id",
            "escrow_incident_payout_idx",
        ),
        swappable.load("Transfer")._meta.db_table: (
            "destination_account_id",
            "escrow_transfer_dest_idx",
        ),
        swappable.load("EscrowPayment")._meta.db_table: (
            "destination_account_id",
            "escrow_pay_dest_idx",
        ),
    }
    with CaptureQueriesContext(connection) as captured:
        evt = so.event("payout.failed", so.payout(status="failed"), account=acct)
        assert deliver.connect(evt).json()["status"] == "processed"
    lookups = {
        table: q["sql"]
        for q in captured
        for table, (column, _index) in wanted.items()
        if q["sql"].startswith("SELECT") and f'"{table}"."{column}" = ' in q["sql"]
    }
    assert set(lookups) == set(wanted), [q["sql"] for q in captured]
    for table, sql in lookups.items():
        assert wanted[table][1] in plan(sql), (sql, plan(sql))


def plan(sql: str) -> str:
    """``sql``'s query plan, as text."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # even on a tiny table
            cursor.execute(f"EXPLAIN {sql}")
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(row[-1] for row in cursor.fetchall())


def test_payout_paid_is_logged_only(deliver: Any, account: Any, sim_stripe: Any, sent: Any) -> None:
    acct = account.stripe_account_id
    evt = so.event("payout.paid", so.payout(status="paid"), account=acct)
    assert deliver.connect(evt).json()["status"] == "processed"
    assert not swappable.load("TransferIncident").objects.exists()
    assert sent.log == []


def test_payout_of_the_platform_itself_is_ignored(deliver: Any, sim_stripe: Any) -> None:
    evt = so.event("payout.failed", so.payout(status="failed"))
    assert deliver.platform(evt).json()["status"] == "ignored"
