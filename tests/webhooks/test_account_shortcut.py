"""``account.updated`` in one statement (django_escrow_connect/webhooks/shortcuts.py).

On PostgreSQL a new ``account.updated`` for a known account that the locked
read would apply (newer than the row's data, not in doubt against a fetch,
not deauthorized) locks the row, writes the snapshot and the state its data
implies, and inserts the event ``processed``: the read and one statement.
These tests hold it to the rules of the shortcuts: it ends exactly where the
locked read ends (columns, signals, log line; the locked read is forced by a
host's django-fsm receiver, as tests/webhooks/test_one_statement_hold.py
does), and every other case is the handler's, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models.signals import pre_save
from django.test.utils import CaptureQueriesContext

from django_escrow_connect import swappable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import receiver
from tests import factories
from tests.reliability.conftest import run_concurrently
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import CONNECT_SECRET, events, fsm_listener, simulated_account
from tests.webhooks.test_shortcuts import settled, statements

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

#: A whole second (an event's stamp), a minute ago.
T = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=1)

#: Columns that differ between two accounts by construction, or by the clock.
UNCOMPARED = {
    "id",
    "owner_user_id",
    "owner_organization_id",
    "stripe_account_id",
    "creation_idempotency_key",
    "created_at",
    "updated_at",
}

PAST_DUE = so.requirements(
    currently_due=["individual.verification.document"],
    eventually_due=["individual.verification.document"],
    past_due=["individual.verification.document"],
    disabled_reason="requirements.past_due",
)


def accounts() -> Any:
    return swappable.load("ConnectedAccount").objects


def make_account(name: str = "doer", *, ready: bool = True, **fields: Any) -> Any:
    """A connected account row (:func:`tests.factories.make_account`) with ``fields`` set."""
    account = factories.make_account(owner_user=factories.make_user(name), ready=ready)
    if fields:
        accounts().filter(pk=account.pk).update(**fields)
    return accounts().get(pk=account.pk)


def account_event(account: Any, created: datetime = T, **fields: Any) -> dict[str, Any]:
    acct = account.stripe_account_id
    return so.event(
        "account.updated",
        so.account(acct, **fields),
        account=acct,
        created=int(created.timestamp()),
    )


def columns(account: Any) -> dict[str, Any]:
    row = accounts().get(pk=account.pk)
    return {
        field.attname: getattr(row, field.attname)
        for field in row._meta.concrete_fields
        if field.attname not in UNCOMPARED
    }


def signals_of(sent: Any, account: Any) -> list[tuple[str, dict[str, Any]]]:
    """The signals about ``account``, its instance replaced by its state then."""
    found = []
    for name, kwargs in sent.log:
        subject = kwargs.get("account")
        if subject is None or subject.pk != account.pk:
            continue
        described = {key: value for key, value in kwargs.items() if key != "account"}
        described["account.status"] = subject.status
        described["account.capabilities"] = subject.capabilities
        found.append((name, described))
    return found


def test_the_type_has_a_shortcut() -> None:
    from tests.webhooks.conftest import shortcut_taken

    assert shortcut_taken("account.updated", WebhookEndpoint.CONNECT)


def test_a_new_account_update_is_the_read_and_one_statement(
    deliver: Any, sent: Any, caplog: Any
) -> None:
    account = make_account(ready=False)
    evt = account_event(account)
    with (
        caplog.at_level(logging.INFO, logger="django_escrow_connect.accounts"),
        CaptureQueriesContext(connection) as captured,
    ):
        assert deliver.connect(evt).json()["status"] == "processed"
    read, statement = statements(captured)
    assert read.startswith("SELECT")
    assert statement.startswith("WITH recorded AS")
    assert "account_set AS (UPDATE" in statement
    row = accounts().get(pk=account.pk)
    assert (row.status, row.synced_at) == ("verified", T)
    assert settled(evt) == ("processed", 1, True, "")
    [updated] = sent.of("account_updated")
    assert (updated["account"].pk, updated["previous_status"]) == (
        account.pk,
        "pending_verification",
    )
    assert updated["account"].status == "verified"
    assert "connected account pending_verification -> verified" in caplog.text


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "onboarded": ({"ready": False}, {}),
    "restricted, a capability lost, a requirement due": (
        {"ready": True},
        {"requirements": PAST_DUE, "capabilities": {"transfers": "inactive"}},
    ),
    "nothing new": (
        {"ready": True, "capabilities": {"card_payments": "active", "transfers": "active"}},
        {},
    ),
    "an email, no country": (
        {"ready": False, "country": "FR"},
        {"email": "owner@example.com", "country": None},
    ),
    "verification in progress": (
        {"ready": True, "synced_at": T - timedelta(hours=1)},
        {
            "requirements": so.requirements(disabled_reason="requirements.pending_verification"),
            "payouts_enabled": False,
        },
    ),
    "an event of the second before": (
        {"ready": True, "synced_at": T - timedelta(seconds=1)},
        {"requirements": PAST_DUE},
    ),
    "after a capability event of the second before": (
        {"ready": True, "synced_at": T - timedelta(seconds=1) + timedelta(microseconds=1)},
        {"requirements": PAST_DUE},
    ),
    "after a fetch long enough ago": (
        {"ready": False, "synced_at": T - timedelta(seconds=2, microseconds=1)},
        {},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_shortcut_ends_where_the_locked_read_ends(
    deliver: Any, sent: Any, caplog: Any, case: str
) -> None:
    row_fields, event_fields = CASES[case]
    row_fields = dict(row_fields)
    ready = row_fields.pop("ready")
    shortcut, locked = (
        make_account(f"doer-{way}", ready=ready, **row_fields) for way in ("shortcut", "locked")
    )
    results = []
    for account in (shortcut, locked):
        sent.log.clear()
        caplog.clear()
        with (
            caplog.at_level(logging.INFO, logger="django_escrow_connect.accounts"),
            CaptureQueriesContext(connection) as captured,
        ):
            if account is shortcut:
                assert deliver.connect(account_event(account, **event_fields)).json()["status"] == (
                    "processed"
                )
            else:
                with fsm_listener("ConnectedAccount") as transitions_seen:
                    assert deliver.connect(account_event(account, **event_fields)).json()[
                        "status"
                    ] == ("processed")
        logged = [
            r.getMessage().replace(account.stripe_account_id, "acct")
            for r in caplog.records
            if r.name == "django_escrow_connect.accounts"
        ]
        results.append((columns(account), signals_of(sent, account), logged, captured))
    (fast, fast_signals, fast_log, fast_sql), (slow, slow_signals, slow_log, slow_sql) = results
    assert len(statements(fast_sql)) == 2
    assert len(statements(slow_sql)) > 2
    assert transitions_seen == ["apply_stripe_status"]
    assert fast == slow
    assert fast["synced_at"] == T
    assert fast_signals == slow_signals
    assert fast_log == slow_log
    if case == "nothing new":
        assert fast_signals == []
    if case.startswith("restricted"):
        assert [name for name, _ in fast_signals] == [
            "account_updated",
            "account_requirements_due",
            "capability_restricted",
        ]


def test_a_stale_event_takes_the_handler_and_changes_nothing(deliver: Any, sent: Any) -> None:
    account = make_account(synced_at=T)
    before = columns(account)
    evt = account_event(account, T - timedelta(minutes=1), requirements=PAST_DUE)
    with CaptureQueriesContext(connection) as captured:
        assert deliver.connect(evt).json()["status"] == "processed"
    assert any("FOR UPDATE" in q and q.startswith("SELECT") for q in statements(captured))
    assert columns(account) == before
    assert settled(evt) == ("processed", 1, True, "")
    assert sent.log == []


def test_an_event_in_doubt_is_checked_with_stripe(deliver: Any, sim_stripe: Any) -> None:
    """As old as the row's fetch (T + 0.4 s on the package's clock): read again."""
    acct = simulated_account()  # onboarded at Stripe
    account = make_account(
        stripe_account_id=acct,
        ready=False,
        synced_at=T + timedelta(milliseconds=400),
    )
    evt = account_event(account, requirements=PAST_DUE, details_submitted=False)
    before = len(sim_stripe.calls)
    assert deliver.connect(evt).json()["status"] == "processed"
    assert [name for name, _ in sim_stripe.calls[before:]] == ["retrieve_account"]
    row = accounts().get(pk=account.pk)
    assert row.status == "verified"
    assert row.synced_at > T + timedelta(seconds=1)
    assert settled(evt) == ("processed", 1, True, "")


@pytest.mark.parametrize(
    "synced_at",
    [
        pytest.param(T, id="an account.updated of the same second"),
        pytest.param(T + timedelta(microseconds=1), id="a capability event of the same second"),
        pytest.param(
            T + timedelta(seconds=5, microseconds=1), id="a capability event of a later second"
        ),
    ],
)
def test_an_event_that_cannot_be_ordered_is_checked_with_stripe(
    deliver: Any, sim_stripe: Any, synced_at: datetime
) -> None:
    """The row's data is of the event's second, or partly newer (a
    ``capability.updated``): the handler reads the account from Stripe."""
    acct = simulated_account()  # onboarded at Stripe
    account = make_account(stripe_account_id=acct, ready=True, synced_at=synced_at)
    evt = account_event(account, requirements=PAST_DUE)
    before = len(sim_stripe.calls)
    with CaptureQueriesContext(connection) as captured:
        assert deliver.connect(evt).json()["status"] == "processed"
    assert any("FOR UPDATE" in q and q.startswith("SELECT") for q in statements(captured))
    assert [name for name, _ in sim_stripe.calls[before:]] == ["retrieve_account"]
    row = accounts().get(pk=account.pk)
    assert (row.status, row.requirements_past_due) == ("verified", [])
    assert row.synced_at > T + timedelta(seconds=5)
    assert settled(evt) == ("processed", 1, True, "")


def test_a_deauthorized_account_is_left_to_the_handler(deliver: Any, sent: Any) -> None:
    """The handler stores the data but keeps the state; the shortcut changes nothing."""
    account = make_account(
        ready=False,
        status="deauthorized",
        deauthorized_at=T - timedelta(days=1),
    )
    evt = account_event(account)
    with CaptureQueriesContext(connection) as captured:
        assert deliver.connect(evt).json()["status"] == "processed"
    shortcut_statement, *handler = statements(captured)[1:]
    assert shortcut_statement.startswith("WITH recorded AS")
    assert any("FOR UPDATE" in q and q.startswith("SELECT") for q in handler)
    row = accounts().get(pk=account.pk)
    assert (row.status, row.payouts_enabled, row.synced_at) == ("deauthorized", True, T)
    assert settled(evt) == ("processed", 1, True, "")


def test_an_unknown_account_is_deferred(deliver: Any) -> None:
    acct = "acct_1TestNotYetKnown01"
    evt = so.event("account.updated", so.account(acct), account=acct)
    assert deliver.connect(evt).json()["status"] == "deferred"
    row = events().get(stripe_event_id=evt["id"])
    assert (row.status, row.attempts) == ("deferred", 1)


def test_a_duplicate_changes_nothing(deliver: Any, sent: Any) -> None:
    account = make_account(ready=False)
    evt = account_event(account)
    assert deliver.connect(evt).json()["status"] == "processed"
    updated_at = accounts().get(pk=account.pk).updated_at
    with CaptureQueriesContext(connection) as captured:
        assert deliver.connect(evt).json()["status"] == "duplicate"
    assert len(statements(captured)) == 1
    assert accounts().get(pk=account.pk).updated_at == updated_at
    assert len(sent.of("account_updated")) == 1


def test_a_hosts_save_receiver_on_accounts_keeps_the_write_on_save(deliver: Any) -> None:
    seen: list[str] = []

    def on_save(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance.status)

    model = swappable.load("ConnectedAccount")
    account = make_account(ready=False)
    pre_save.connect(on_save, sender=model, weak=False)
    try:
        assert deliver.connect(account_event(account)).json()["status"] == "processed"
    finally:
        pre_save.disconnect(on_save, sender=model)
    assert seen == ["verified"]


def test_an_unreadable_account_object_is_left_to_the_handler(deliver: Any) -> None:
    account = make_account(ready=False)
    evt = account_event(account)
    evt["data"]["object"]["object"] = "not_an_account"
    assert deliver.connect(evt).json()["status"] == "failed"
    assert accounts().get(pk=account.pk).status == "pending_verification"


# --- concurrency ----------------------------------------------------------------------


def receive(evt: dict[str, Any]) -> Any:
    payload = so.encode(evt)
    header = sign_webhook_payload(payload, CONNECT_SECRET)
    return receiver.receive(WebhookEndpoint.CONNECT, payload, header)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("iteration", range(3))  # a race proves more when repeated
def test_concurrent_first_deliveries_of_two_updates_end_with_the_newer(
    sent: Any, iteration: int
) -> None:
    account = make_account(ready=False)
    older = account_event(account, T - timedelta(seconds=10), requirements=PAST_DUE)
    newer = account_event(account, T)
    outcomes = run_concurrently(lambda: receive(older), lambda: receive(newer))
    assert all(isinstance(o, receiver.Outcome) for o in outcomes), outcomes
    assert [o.status for o in outcomes] == ["processed", "processed"]
    row = accounts().get(pk=account.pk)
    assert (row.status, row.synced_at, row.requirements_past_due) == ("verified", T, [])
    assert settled(older)[0] == settled(newer)[0] == "processed"


def lock_holder(account: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """A transaction that holds the account's row lock for a second, and a
    ``wait`` that returns once it holds it: deliveries started after ``wait``
    all pass the read of the recorded state and queue in their statement."""
    locked = threading.Event()

    def hold() -> None:
        with transaction.atomic():
            accounts().select_for_update().get(pk=account.pk)
            locked.set()
            time.sleep(1)

    def wait() -> None:
        assert locked.wait(timeout=30)

    return hold, wait


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_deliveries_of_one_update_apply_it_once(sent: Any) -> None:
    """The deliveries that waited for the first one's row lock find the row
    holding this event's data: they write nothing (and the insert meets the
    first one's event row)."""
    account = make_account(ready=False)
    evt = account_event(account)

    def delivery() -> Any:
        wait()
        return receive(evt)

    hold, wait = lock_holder(account)
    _, *outcomes = run_concurrently(hold, *[delivery] * 3)
    assert all(isinstance(o, receiver.Outcome) for o in outcomes), outcomes
    assert sorted(o.status for o in outcomes) == ["duplicate"] * 2 + ["processed"]
    assert accounts().get(pk=account.pk).status == "verified"
    assert len(sent.of("account_updated")) == 1
    assert events().filter(stripe_event_id=evt["id"]).count() == 1
    # The account row was last written by the transaction that inserted the
    # event: the deliveries that waited for its lock wrote nothing.
    assert last_writer(accounts().model, account.pk) == last_writer(
        events().model, events().get(stripe_event_id=evt["id"]).pk
    )


def last_writer(model: Any, pk: Any) -> str:
    """The transaction that wrote the row's current version (PostgreSQL's ``xmin``)."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT xmin::text FROM {quote(model._meta.db_table)} "
            f"WHERE {quote(model._meta.pk.column)} = %s",
            [pk],
        )
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_the_locked_row_is_the_newest_version(sent: Any) -> None:
    """A change committed while the statement waits for the row lock is what the
    shortcut compares with: here the ``transfers`` capability it turned active,
    which the event then reports inactive (``capability_restricted``)."""
    account = make_account(ready=False)
    locked = threading.Event()

    def concurrent_change() -> None:
        with transaction.atomic():
            row = accounts().select_for_update().get(pk=account.pk)
            locked.set()
            row.capabilities = {"transfers": "active"}
            row.save(update_fields=["capabilities"])
            time.sleep(1)  # the event's statement waits for the lock meanwhile

    def delivery() -> Any:
        assert locked.wait(timeout=30)
        return receive(
            account_event(account, requirements=PAST_DUE, capabilities={"transfers": "inactive"})
        )

    _, outcome = run_concurrently(concurrent_change, delivery)
    assert isinstance(outcome, receiver.Outcome), outcome
    assert outcome.status == "processed"
    [restricted] = sent.of("capability_restricted")
    assert (restricted["capability"], restricted["status"]) == ("transfers", "inactive")
    row = accounts().get(pk=account.pk)
    assert (row.capabilities, row.status) == ({"transfers": "inactive"}, "restricted")
