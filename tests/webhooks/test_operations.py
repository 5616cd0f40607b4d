"""Operator tools: replay, catch-up, report, purge, and their admin pages."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any
from unittest.mock import ANY

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable, tasks
from django_escrow_connect.exceptions import UnreadableAnswer
from django_escrow_connect.simulation import SimulatedGateway
from django_escrow_connect.webhooks import operations, registry
from tests import factories
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import MANUAL, events, intent_for, simulated_account

pytestmark = pytest.mark.django_db

FLAKY = "escrow_test.flaky"


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def flaky(monkeypatch: Any) -> list[int]:
    """A handler that fails while the list holds a 1."""
    state = [1]

    def handler(context: Any) -> None:
        if state[0]:
            raise RuntimeError("downstream unavailable")

    monkeypatch.setitem(registry.HANDLERS, FLAKY, registry.Route(handler, registry.PLATFORM))
    return state


# --------------------------------------------------------------------------
# escrow_replay_events
# --------------------------------------------------------------------------


def test_replay_retries_failed_events(deliver: Any, flaky: list[int]) -> None:
    evt = so.event(FLAKY, so.charge())
    assert deliver.platform(evt).status_code == 500
    with pytest.raises(CommandError, match="failed again"):
        run("escrow_replay_events")
    assert events().get().attempts == 2

    flaky[0] = 0
    assert "Replayed 1 events: 1 processed." in run("escrow_replay_events")
    row = events().get()
    assert (row.status, row.attempts) == ("processed", 3)
    assert run("escrow_replay_events") == "No events to replay.\n"


def test_replay_selects_by_id_type_and_date(deliver: Any, flaky: list[int]) -> None:
    flaky[0] = 0
    done = so.event(FLAKY, so.charge())
    ignored = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    deliver.platform(done)
    deliver.platform(ignored)

    out = run("escrow_replay_events", "--event", done["id"], "--dry-run")
    assert out == f"would replay {done['id']} {FLAKY} (processed)\n"
    assert "1 processed" in run("escrow_replay_events", "--event", done["id"])
    assert events().get(stripe_event_id=done["id"]).attempts == 2

    out = run("escrow_replay_events", "--status", "ignored", "--type", "customer.created")
    assert "1 ignored" in out
    later = run("escrow_replay_events", "--status", "ignored", "--since", "2099-01-01")
    assert "No events" in later
    with pytest.raises(CommandError, match="evt_missing"):
        run("escrow_replay_events", "--event", "evt_missing")


def test_replay_selects_the_ids_and_types_stripe_writes() -> None:
    """The checks of --event and --type take every id and type Stripe
    writes: a v2 (thin) event's id and its bracketed type included."""
    thin = kit.make_webhook_event(
        "v2.core.account[configuration.recipient].capability_status_updated",
        stripe_event_id="evt_test_65R9Ijk8KHmbyfYxWzF16S3Gpm4ZzAx",
        status="failed",
        thin=True,
    )
    out = run(
        "escrow_replay_events",
        *("--event", thin.stripe_event_id, "--type", thin.type),
        *("--type", "charge.dispute.closed", "--dry-run"),
    )
    assert out == f"would replay {thin.stripe_event_id} {thin.type} (failed)\n"


def test_scheduled_replay_leaves_an_unreadable_event_alone(deliver: Any) -> None:
    """An event whose object cannot be read fails the same way on every replay:
    the hourly ``escrow_replay_events`` failed on every run, for good, and no
    operator action cleared it. The default run now leaves it alone (one
    informational line); named, or with ``--unreadable``, it is replayed
    (after an upgrade), and the report still lists it without alerting."""
    unreadable = so.event("payment_intent.succeeded", so.payment_intent(amount=10**30))
    assert deliver.platform(unreadable).status_code == 200
    row = events().get()
    assert row.status == "failed"

    for _run in range(2):
        out = run("escrow_replay_events")
        assert "No events to replay." in out
        assert "1 failed event whose object cannot be read is left alone" in out
    assert events().get().attempts == 1

    with pytest.raises(CommandError, match="failed again"):
        run("escrow_replay_events", "--unreadable")
    with pytest.raises(CommandError, match="failed again"):
        run("escrow_replay_events", "--event", unreadable["id"])
    assert events().get().attempts == 3

    report = json.loads(run("escrow_report", "--format", "json"))
    assert report["webhook_events"]["failed"] == 0
    assert report["webhook_events"]["unreadable"] == 1
    assert [e["event"] for e in report["webhook_events"]["unresolved"]] == [unreadable["id"]]
    run("escrow_report", "--check")  # does not exit 1


def admin_replay(client: Client, rows: list[Any], *, confirm: bool) -> Any:
    data: dict[str, Any] = {"action": "replay_events", "_selected_action": [r.pk for r in rows]}
    if confirm:
        data["confirm"] = "yes"
    url = reverse("admin:escrow_connect_webhookevent_changelist")
    return client.post(url, data, follow=confirm)


def test_admin_replay_action_is_confirmed_then_done(
    deliver: Any, flaky: list[int], admin_client: Client
) -> None:
    evt = so.event(FLAKY, so.charge())
    deliver.platform(evt)
    flaky[0] = 0
    row = events().get()

    page = admin_replay(admin_client, [row], confirm=False)
    assert page.status_code == 200
    text = page.content.decode()
    assert "are you sure?" in text
    assert evt["id"] in text
    assert "downstream unavailable" in text  # why it failed
    assert 'name="confirm"' in text
    assert f'name="_selected_action" value="{row.pk}"' in text
    # Nothing is replayed before the confirmation.
    assert (events().get().status, events().get().attempts) == ("failed", 1)

    assert not swappable.load("StaffAction").objects.exists()

    response = admin_replay(admin_client, [row], confirm=True)
    assert response.status_code == 200
    assert "Replayed: 1 processed." in response.content.decode()
    assert events().get().status == "processed"
    # Who replayed what, and how it ended, is in the staff audit trail.
    entry = swappable.load("StaffAction").objects.get()
    assert (entry.staff, entry.action, entry.outcome, entry.code) == (
        response.wsgi_request.user,
        "replay_event",
        "ok",
        "",
    )
    assert entry.message == f"{evt['id']} ({FLAKY}): processed"


def test_admin_replay_of_an_event_that_fails_again_is_audited_as_an_error(
    deliver: Any, flaky: list[int], admin_client: Client
) -> None:
    evt = so.event(FLAKY, so.charge())
    deliver.platform(evt)  # fails: flaky stays failing
    response = admin_replay(admin_client, [events().get()], confirm=True)
    assert "Replayed: 1 failed." in response.content.decode()
    entry = swappable.load("StaffAction").objects.get()
    assert (entry.action, entry.outcome, entry.code) == ("replay_event", "error", "event_failed")
    assert entry.message == f"{evt['id']} ({FLAKY}): failed"


def test_admin_replay_runs_outside_a_request_wide_transaction(
    deliver: Any, flaky: list[int], admin_client: Client, monkeypatch: Any
) -> None:
    """A handler's read of Stripe (ReadFirst) is made with no transaction open,
    as by escrow_replay_events, not inside ATOMIC_REQUESTS' transaction."""
    from django.db import connection

    from django_escrow_connect.services.operations import in_transaction

    deliver.platform(so.event(FLAKY, so.charge()))
    row = events().get()
    reads: list[bool] = []

    def read() -> str:
        reads.append(in_transaction())
        return "answer"

    def handler(context: Any) -> None:
        context.fetch_once("charge", read)

    monkeypatch.setitem(registry.HANDLERS, FLAKY, registry.Route(handler, registry.PLATFORM))
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    response = admin_replay(admin_client, [row], confirm=True)
    assert "Replayed: 1 processed." in response.content.decode()
    assert reads == [False]
    assert events().get().status == "processed"


def test_admin_replay_inside_a_transaction_replays_nothing(
    deliver: Any, flaky: list[int], admin_user: Any, rf: Any
) -> None:
    """A host that wraps the admin in a transaction some other way (not
    ATOMIC_REQUESTS): the confirmed replay refuses instead of running there."""
    from django.contrib import admin
    from django.contrib.messages import get_messages
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.db import transaction

    deliver.platform(so.event(FLAKY, so.charge()))
    flaky[0] = 0
    Event = swappable.load("WebhookEvent")
    model_admin = admin.site._registry[Event]
    request = rf.post("/", {"confirm": "yes"})
    request.user = admin_user
    request.session = {}
    request._messages = FallbackStorage(request)
    with transaction.atomic():
        answer = model_admin.replay_events(request, Event.objects.all())
    assert answer is None
    assert [str(m) for m in get_messages(request)] == [
        "Nothing replayed: a database transaction is open, and replaying must run "
        "outside one (its handlers read Stripe) (in_transaction)."
    ]
    assert (events().get().status, events().get().attempts) == ("failed", 1)
    entry = swappable.load("StaffAction").objects.get()
    assert (entry.staff, entry.action, entry.outcome, entry.code) == (
        admin_user,
        "replay_event",
        "refused",
        "in_transaction",
    )


# --------------------------------------------------------------------------
# escrow_fetch_missed_events
# --------------------------------------------------------------------------


def test_fetch_missed_events_records_and_processes_them(
    deliver: Any, make_payment: Any, sim_stripe: Any, django_capture_on_commit_callbacks: Any
) -> None:
    gateway = SimulatedGateway()
    # A connected account finished onboarding; its Connect events were lost.
    acct = simulated_account()
    account = factories.make_account(
        owner_user=factories.make_user("doer"), stripe_account_id=acct, ready=False
    )
    # A customer paid; the platform's payment_intent.succeeded was lost too.
    scene = make_payment(with_charge=False)
    intent = gateway.create_payment_intent(
        idempotency_key="test-fetch-intent",
        amount=scene.payment.amount,
        currency=scene.payment.currency,
        transfer_group=scene.payment.transfer_group,
        metadata=intent_for(scene, "succeeded")["metadata"],
        capture_method="automatic",
    )
    swappable.load("EscrowPayment").objects.filter(pk=scene.payment.pk).update(
        stripe_payment_intent_id=intent.id
    )
    with django_capture_on_commit_callbacks(execute=True):
        gateway.confirm_payment_intent(intent.id, "success")
    assert events().count() == 0

    with django_capture_on_commit_callbacks(execute=True):
        out = run("escrow_fetch_missed_events", "--since", "1d", "--account", acct)
    assert "platform:" in out
    assert f"{acct}:" in out
    assert scene.refresh().status == "held"
    account.refresh_from_db()
    assert account.status == "verified"
    types = set(events().values_list("type", flat=True))
    assert {"payment_intent.succeeded", "account.updated"} <= types
    assert set(events().values_list("status", flat=True)) <= {"processed", "ignored"}
    assert all(t in registry.HANDLERS for t in types)

    # Running again finds nothing new. The payment's doer has no account in
    # the simulated Stripe: that one source is reported, the others still run.
    recorded = events().count()
    out, err = StringIO(), StringIO()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError):
        call_command("escrow_fetch_missed_events", "--all-accounts", stdout=out, stderr=err)
    assert "platform: " in out.getvalue()
    assert f"{acct}: " in out.getvalue()
    assert " 0 new" in out.getvalue()
    assert f"{scene.account.stripe_account_id}: Stripe could not list events" in err.getvalue()
    assert events().count() == recorded


def test_fetch_leaves_known_failed_events_to_replay(
    deliver: Any, flaky: list[int], sim_stripe: Any
) -> None:
    """A failed event Stripe still listed within ``--since`` was processed
    again on every run: one whose object cannot be read failed alike each
    time, and the hourly run exited 1 for as long as it stayed in the window
    (although ``escrow_replay_events`` leaves it alone). Known events of
    every state now change nothing; the failed ones are left to
    ``escrow_replay_events``, on an informational line."""
    unreadable = so.event("payment_intent.succeeded", so.payment_intent(amount=10**30))
    broken = so.event(FLAKY, so.charge())
    assert deliver.platform(unreadable).status_code == 200
    assert deliver.platform(broken).status_code == 500
    for evt in (unreadable, broken):
        sim_stripe.events[evt["id"]] = evt  # Stripe lists both
    logged = list(events().order_by("pk").values_list("status", "attempts", "last_error"))
    assert [(status, attempts) for status, attempts, _ in logged] == [("failed", 1)] * 2

    for _run in range(2):
        out = run("escrow_fetch_missed_events", "--since", "1d")  # no CommandError
        assert "platform: 2 events, 0 new (2 duplicate)" in out
        assert "platform: 2 known failed events left alone" in out
        assert "1 whose object cannot be read fails alike until an upgrade" in out
    assert list(events().order_by("pk").values_list("status", "attempts", "last_error")) == logged

    flaky[0] = 0  # the handler's trouble is over: the replay retries it
    assert "Replayed 1 events: 1 processed." in run("escrow_replay_events")
    out = run("escrow_fetch_missed_events", "--since", "1d")
    assert "platform: 1 known failed event left alone" in out
    assert events().get(stripe_event_id=unreadable["id"]).attempts == 1


def test_fetch_records_the_events_read_before_a_page_failed(
    flaky: list[int], sim_stripe: Any, monkeypatch: Any
) -> None:
    """One page that could not be read made the whole source record nothing,
    the pages read before it included. Those events are recorded now (once
    each, by id); the run still fails and asks for the same --since, which
    reads the older events Stripe had not listed yet."""
    flaky[0] = 0
    older = so.event(FLAKY, so.charge(), created=so.now() - 60)
    newer = so.event(FLAKY, so.charge(), created=so.now())
    for evt in (older, newer):
        sim_stripe.events[evt["id"]] = evt
    listed = SimulatedGateway.list_events

    def second_page_unreadable(self: Any, **kwargs: Any) -> Any:
        for number, evt in enumerate(listed(self, **kwargs)):  # newest first
            if number == 1:
                raise UnreadableAnswer("Stripe's answer could not be read")
            yield evt

    monkeypatch.setattr(SimulatedGateway, "list_events", second_page_unreadable)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="run it again with the same --since"):
        call_command("escrow_fetch_missed_events", "--since", "1d", stdout=out, stderr=err)
    assert "platform: Stripe could not list events" in err.getvalue()
    assert out.getvalue() == (
        f"{newer['id']}: received -> processed ({FLAKY}, platform)\n"
        "platform: 1 events, 1 new (1 processed), read before its listing failed\n"
    )
    assert list(events().values_list("stripe_event_id", "status")) == [(newer["id"], "processed")]
    with pytest.raises(tasks.PeriodicJobFailed, match="could not be read") as failed:
        tasks.fetch_missed_events_task.call(since="1d", all_accounts=False)
    assert failed.value.summary["sources"]["platform"]["outcomes"] == {"duplicate": 1}

    monkeypatch.setattr(SimulatedGateway, "list_events", listed)
    out = run("escrow_fetch_missed_events", "--since", "1d")
    assert "platform: 2 events, 1 new (1 duplicate, 1 processed)" in out
    assert set(events().values_list("stripe_event_id", flat=True)) == {older["id"], newer["id"]}


def stopped_at_the_second_event(sim_stripe: Any, monkeypatch: Any) -> list[dict[str, Any]]:
    """Two events Stripe lists that the log lacks; processing the second
    raises what no handler expects (the database gone): (first, second)."""
    first = so.event(FLAKY, so.charge(), created=so.now() - 60)
    second = so.event(FLAKY, so.charge(), created=so.now())
    for evt in (first, second):
        sim_stripe.events[evt["id"]] = evt
    dispatch = operations.dispatch_recorded

    def database_gone_at_the_second(row: Any) -> Any:
        if row.stripe_event_id == second["id"]:
            raise DatabaseError("the database is gone")
        return dispatch(row)

    monkeypatch.setattr(operations, "dispatch_recorded", database_gone_at_the_second)
    return [first, second]


def test_fetch_stopped_by_an_error_has_printed_the_events_it_recorded(
    flaky: list[int], sim_stripe: Any, monkeypatch: Any
) -> None:
    """Its lines were printed once every source was done: an error midway
    showed only the traceback, not the events recorded and processed before
    it. Each is printed as it is, a failed one on stderr, and how many."""
    flaky[0] = 0
    first, second = stopped_at_the_second_event(sim_stripe, monkeypatch)
    out, err = StringIO(), StringIO()
    with pytest.raises(DatabaseError, match="the database is gone"):
        call_command("escrow_fetch_missed_events", "--since", "1d", stdout=out, stderr=err)
    assert out.getvalue() == f"{first['id']}: received -> processed ({FLAKY}, platform)\n"
    assert err.getvalue() == (
        "Stopped by the error below after 1 events recorded or processed; "
        "the lines above are done.\n"
    )
    assert events().get(stripe_event_id=first["id"]).status == "processed"
    # Recorded, not processed: the next run (or escrow_requeue_stuck_events) takes it.
    assert events().get(stripe_event_id=second["id"]).status == "received"


def test_fetch_task_stopped_by_an_error_says_what_it_recorded(
    flaky: list[int], sim_stripe: Any, monkeypatch: Any
) -> None:
    first, _ = stopped_at_the_second_event(sim_stripe, monkeypatch)
    with pytest.raises(
        tasks.PeriodicJobFailed,
        match=r"stopped by DatabaseError.*, after 1 events recorded or processed$",
    ) as failed:
        tasks.fetch_missed_events_task.call(since="1d", all_accounts=False)
    assert isinstance(failed.value.__cause__, DatabaseError)
    # The first failed processing (the handler's trouble): an error, listed.
    assert failed.value.summary == {
        "sources": {},
        "changes": [],
        "errors": [
            f"{first['id']}: received -> failed ({FLAKY}, platform)",
            "stopped by DatabaseError: the database is gone",
        ],
    }


def test_fetch_tells_what_to_do_about_an_account_stripe_refuses(sim_stripe: Any) -> None:
    # The owner disconnected the platform and the deauthorization event was
    # lost: Stripe refuses to list the account's events (account_invalid).
    acct = simulated_account()
    account = factories.make_account(owner_user=factories.make_user("doer"), stripe_account_id=acct)
    SimulatedGateway().deauthorize(acct)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 sources could not be listed"):
        call_command(
            "escrow_fetch_missed_events", "--no-platform", "--account", acct, stdout=out, stderr=err
        )
    assert f"{acct}: Stripe could not list events" in err.getvalue()
    assert "Refresh from Stripe" in err.getvalue()
    assert "'Mark deauthorized if Stripe refuses access'" in err.getvalue()
    # Never decided by the command: a wrong key is refused the same way.
    account.refresh_from_db()
    assert account.status != "deauthorized"


@pytest.mark.parametrize(
    "account", ["", " ", "acct_1 ", "acct_1\r\nX-Evil: 1", "ACCT_1", "acct_1é"]
)
def test_fetch_refuses_a_malformed_account_before_asking_stripe(
    sim_stripe: Any, monkeypatch: Any, account: str
) -> None:
    """The value is sent as the Stripe-Account header: an empty one listed the
    platform's own events as the account's, a line break was a traceback."""
    asked: list[Any] = []
    monkeypatch.setattr(SimulatedGateway, "list_events", lambda *args, **kw: asked.append(kw))
    with pytest.raises(CommandError, match="is not a connected account's id"):
        run(
            "escrow_fetch_missed_events",
            *("--account", "acct_1QzR8tQm5HwJ3uVe", "--account", account),
        )
    assert asked == []


def test_fetch_refuses_a_bad_date(sim_stripe: Any) -> None:
    """The message names the option, as the task's names its argument (one check for both)."""
    with pytest.raises(CommandError, match=r"^--since: Not a date"):
        run("escrow_fetch_missed_events", "--since", "last tuesday")


# --------------------------------------------------------------------------
# escrow_purge_event_payloads
# --------------------------------------------------------------------------


def test_purge_keeps_rows_so_duplicates_are_still_refused(
    deliver: Any, flaky: list[int], settings: Any
) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_PAYLOAD_RETENTION_DAYS": 30}
    old_done = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    old_failed = so.event(FLAKY, so.charge())
    recent = so.event("customer.updated", {"id": "cus_1", "object": "customer"})
    for evt in (old_done, old_failed, recent):
        deliver.platform(evt)
    events().exclude(stripe_event_id=recent["id"]).update(
        received_at=timezone.now() - timedelta(days=31)
    )

    assert "Would purge the payload of 1 event older than 30 days." in run(
        "escrow_purge_event_payloads", "--dry-run"
    )
    assert "Purged the payload of 1 event older than 30 days." in run("escrow_purge_event_payloads")
    purged = events().get(stripe_event_id=old_done["id"])
    assert purged.payload is None
    assert purged.payload_purged_at is not None
    assert events().get(stripe_event_id=old_failed["id"]).payload is not None
    assert events().get(stripe_event_id=recent["id"]).payload is not None

    response = deliver.platform(old_done)
    assert response.json()["status"] == "duplicate"
    assert events().count() == 3


def test_the_purge_command_counts_in_words(deliver: Any) -> None:
    for name in ("customer.created", "customer.updated"):
        deliver.platform(so.event(name, {"id": "cus_1", "object": "customer"}))
    events().update(received_at=timezone.now() - timedelta(days=2))

    dry = run("escrow_purge_event_payloads", "--days", "1", "--dry-run")
    assert "Would purge the payload of 2 events older than 1 day." in dry


@pytest.mark.parametrize("retention", [0, -1, True, "abc", [30], 2.5, Decimal("2.5"), float("inf")])
def test_the_purge_task_refuses_a_retention_under_a_day(
    deliver: Any, settings: Any, retention: int
) -> None:
    """Else the payload of every settled event would go, one processed a moment ago too."""
    from django_escrow_connect import tasks

    deliver.platform(so.event("customer.created", {"id": "cus_1", "object": "customer"}))
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "WEBHOOK_PAYLOAD_RETENTION_DAYS": retention,
    }
    with pytest.raises(tasks.PeriodicJobFailed, match="at least one day") as failed:
        tasks.purge_event_payloads_task.call()
    assert failed.value.summary == {"purged": 0, "errors": [ANY]}
    # The argument is named, as the other tasks name theirs.
    with pytest.raises(tasks.PeriodicJobFailed, match=r"^purge_event_payloads: days must be "):
        tasks.purge_event_payloads_task.call(days=retention)
    assert events().filter(payload__isnull=True).count() == 0


@pytest.mark.parametrize(("days", "message"), [("0", "at least 1"), ("-1", "at least 1")])
def test_the_purge_command_names_days(deliver: Any, days: str, message: str) -> None:
    with pytest.raises(CommandError, match=f"^--days must be {message}"):
        run("escrow_purge_event_payloads", "--days", days)


@pytest.mark.parametrize("retention", [0, True, "abc", [30], 2.5, Decimal("2.5"), float("inf")])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_the_purge_command_refuses_a_malformed_retention_setting(
    deliver: Any, settings: Any, retention: Any, dry_run: list[str]
) -> None:
    """E036 reports it, but call_command (a host's scheduler) and --skip-checks
    run the command without the checks: a CommandError, not a traceback."""
    deliver.platform(so.event("customer.created", {"id": "cus_1", "object": "customer"}))
    events().update(received_at=timezone.now() - timedelta(days=400))
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "WEBHOOK_PAYLOAD_RETENTION_DAYS": retention,
    }
    with pytest.raises(CommandError, match=f"at least one day.*got {re.escape(repr(retention))}"):
        run("escrow_purge_event_payloads", *dry_run)
    assert events().filter(payload__isnull=True).count() == 0


# --------------------------------------------------------------------------
# escrow_report and its admin page
# --------------------------------------------------------------------------


@pytest.fixture
def busy_marketplace(deliver: Any, make_payment: Any, flaky: list[int], sim_stripe: Any) -> Any:
    held = make_payment()
    deliver.platform(so.event("payment_intent.succeeded", intent_for(held, "succeeded")))
    failed = make_payment()
    deliver.platform(
        so.event(
            "payment_intent.payment_failed",
            intent_for(failed, "requires_payment_method", last_payment_error=so.card_error()),
        )
    )
    disputed = make_payment("held")
    deliver.platform(
        so.event(
            "charge.dispute.created",
            so.dispute(
                charge=disputed.payment.stripe_charge_id,
                amount=disputed.payment.amount,
            ),
        )
    )
    stuck = make_payment("releasing")
    swappable.load("EscrowPayment").objects.filter(pk=stuck.payment.pk).update(
        updated_at=timezone.now() - timedelta(hours=100)
    )
    deliver.platform(so.event(FLAKY, so.charge()))
    factories.make_account(owner_user=factories.make_user("late"), ready=False)
    return {"held": held, "failed": failed, "disputed": disputed, "stuck": stuck}


def test_report_json(busy_marketplace: Any) -> None:
    report = json.loads(run("escrow_report", "--format", "json"))
    payments = report["payments"]
    assert payments["total"] == 4
    assert payments["by_status"] == {"held": 1, "failed": 1, "disputed": 1, "releasing": 1}
    assert (payments["funded"], payments["failed"]) == (1, 1)
    assert payments["success_rate"] == 0.5
    assert payments["failed_attempts"] == 1
    assert report["open_disputes"]["count"] == 1
    assert report["stuck_payments"]["count"] == 1
    assert report["stuck_payments"]["items"][0]["payment"] == str(
        busy_marketplace["stuck"].payment.pk
    )
    assert report["webhook_events"]["failed"] == 1
    assert report["webhook_events"]["unresolved"][0]["type"] == FLAKY
    assert report["accounts_with_requirements_due"]["count"] == 1
    assert report["accounts_with_requirements_due"]["items"][0]["currently_due"] == [
        "external_account"
    ]


def test_report_funded_volume_counts_what_was_charged(make_payment: Any) -> None:
    # A manual-capture hold of 10,000 captured for 4,000 in the dashboard
    # charged the customer 4,000: the other 6,000 never left their card.
    make_payment(
        "released",
        strategy=MANUAL,
        amount_captured=4_000,
        amount_released=4_000,
        amount_transferred=3_000,
        held_at=timezone.now(),
    )
    make_payment("held", amount=2_500, platform_fee=250, held_at=timezone.now())
    report = json.loads(run("escrow_report", "--format", "json"))
    assert report["payments"]["funded"] == 2
    assert report["payments"]["funded_volume"] == {"usd": 6_500}
    assert "funded volume: usd: 6500" in run("escrow_report")


def test_report_text_and_check(busy_marketplace: Any) -> None:
    out = run("escrow_report")
    assert "Payments: 4" in out
    assert "success rate 50.0 %" in out
    assert "Open disputes: 1" in out
    assert "Stuck payments (held/releasing > 72 h): 1" in out
    assert "failed 1, deferred 0, unprocessed 0" in out
    with pytest.raises(CommandError, match="needs attention"):
        run("escrow_report", "--check")


def test_quiet_report_passes_the_check(db: Any) -> None:
    out = run("escrow_report", "--check", "--since", "1d")
    assert "Payments: 0" in out


def test_report_admin_page(busy_marketplace: Any, admin_client: Client) -> None:
    changelist = admin_client.get(reverse("admin:escrow_connect_webhookevent_changelist"))
    report_url = reverse("admin:escrow_connect_webhookevent_report")
    assert report_url in changelist.content.decode()
    # Opened long before the period, never resolved: listed all the same.
    refused = kit.make_transfer_incident(busy_marketplace["held"].payment, code="account_invalid")
    type(refused).objects.filter(pk=refused.pk).update(
        created_at=timezone.now() - timedelta(days=60)
    )

    page = admin_client.get(report_url, {"days": 30})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Open disputes (1)" in html
    assert "Incidents still open, any age (1; open longer than 72 hours: 1)" in html
    assert f"transfer incident {refused.pk}" in html
    assert "account_invalid" in html
    assert str(busy_marketplace["stuck"].payment.pk) in html
    assert FLAKY in html

    data = admin_client.get(report_url, {"format": "json"}).json()
    assert data["payments"]["total"] == 4


def test_report_admin_page_names_a_malformed_setting_not_a_500(
    admin_client: Client, settings: Any
) -> None:
    """STUCK_PAYMENT_HOURS as check E102 refuses (the server runs without
    the checks): the page says which setting to fix, the JSON too."""
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "STUCK_PAYMENT_HOURS": "72"}
    report_url = reverse("admin:escrow_connect_webhookevent_report")

    page = admin_client.get(report_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "ESCROW_CONNECT[&quot;STUCK_PAYMENT_HOURS&quot;] must be an int" in html
    assert "Open disputes" not in html

    data = admin_client.get(report_url, {"format": "json"})
    assert data.status_code == 503
    assert "STUCK_PAYMENT_HOURS" in data.json()["error"]


def test_report_admin_page_does_not_take_a_bug_for_a_bad_setting(
    admin_client: Client, monkeypatch: Any
) -> None:
    """Only reading the setting is caught: an error while building the
    report keeps its traceback, as in ``escrow_report``."""

    def broken(**kwargs: Any) -> Any:
        raise ValueError("a bug in a query")

    monkeypatch.setattr("django_escrow_connect.admin.build_report", broken)
    with pytest.raises(ValueError, match="a bug in a query"):
        admin_client.get(reverse("admin:escrow_connect_webhookevent_report"))


def test_report_admin_page_needs_staff(client: Client) -> None:
    user = factories.make_user("customer")
    client.force_login(user)
    response = client.get(reverse("admin:escrow_connect_webhookevent_report"))
    assert response.status_code == 302


# --------------------------------------------------------------------------
# Arguments out of range
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["escrow_replay_events", "--limit", "-1"],
        ["escrow_purge_event_payloads", "--days", "9999999999"],
        ["escrow_purge_event_payloads", "--days", "9999999999", "--dry-run"],
        ["escrow_fetch_missed_events", "--since", "99999999d", "--no-platform"],
        ["escrow_report", "--since", "99999999d"],
        ["escrow_replay_events", "--since", "99999999d"],
        # A LIMIT past a signed 64-bit integer (database, batch slicing).
        ["escrow_replay_events", "--limit", str(2**63)],
        ["escrow_requeue_stuck_events", "--limit", str(2**63)],
        ["escrow_audit", "--limit", str(2**63)],
        ["escrow_audit", "--batch-size", str(2**31)],  # PostgreSQL's FETCH: 32 bits
        # A NUL byte: PostgreSQL refuses it in any text (a DataError).
        ["escrow_replay_events", "--event", "evt_\x00"],
        ["escrow_replay_events", "--type", "charge.\x00", "--dry-run"],
        # Not an event's id or type as Stripe writes them: looked up for
        # nothing, or selecting nothing as if no event had failed.
        ["escrow_replay_events", "--event", "evt_"],
        ["escrow_replay_events", "--event", "ch_1Pgc76B7WZ01zgkWwyRHS12y"],
        ["escrow_replay_events", "--event", "evt_1Pgc76B7WZ01zgkWwyRHS12y "],
        ["escrow_replay_events", "--event", "evt_1" + "2" * 251],
        ["escrow_replay_events", "--type", "Charge.Refunded"],
        ["escrow_replay_events", "--type", "charge.refunded\n"],
        ["escrow_replay_events", "--type", "charge"],
        ["escrow_replay_events", "--type", ""],
        ["escrow_replay_events", "--type", "v2.core.account[requirements.updated"],
        ["escrow_replay_events", "--type", "a." + "b" * 127],
        # A date with an offset whose UTC falls before year 1 or after 9999.
        ["escrow_report", "--since", "0001-01-01T00:00:00+05:00"],
        ["escrow_replay_events", "--since", "9999-12-31T23:59:59-05:00"],
        ["escrow_audit", "--since", "9999-12-31T23:59:59-05:00"],
        # Refused before --event is looked up (it was read first).
        ["escrow_replay_events", "--event", "evt_1", "--since", "not a date"],
        # Sent to Stripe as the Stripe-Account header: refused before
        # --all-accounts' query too.
        ["escrow_fetch_missed_events", "--all-accounts", "--account", "acct_1\x00"],
        ["escrow_fetch_missed_events", "--all-accounts", "--account", ""],
        ["escrow_fetch_missed_events", "--all-accounts", "--account", "cus_1QzR8tQm5HwJ3uVe"],
        ["escrow_fetch_missed_events", "--all-accounts", "--account", "acct_"],
        ["escrow_fetch_missed_events", "--all-accounts", "--account", "acct_1QzR8tQm5HwJ3uVe\n"],
        ["escrow_fetch_missed_events", "--all-accounts", "--account", "acct_" + "1" * 251],
    ],
)
def test_an_argument_out_of_range_is_a_command_error_not_a_traceback(args: list[str]) -> None:
    """A negative ``--limit`` (queryset slicing), one past what a LIMIT (or
    a batch past what PostgreSQL's FETCH) takes, a NUL byte (PostgreSQL's
    DataError), and a period or a date beyond what a date can hold
    (``OverflowError``) crashed with a traceback; they are refused with the
    command's usual error (exit status 1) before any query."""
    with CaptureQueriesContext(connection) as queries, pytest.raises(CommandError):
        run(*args)
    assert [query["sql"] for query in queries] == []
