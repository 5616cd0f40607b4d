"""seed_demo, demo_flow, the settings' two modes, migrations, the simulated state file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings

from django_escrow_connect import simulation, swappable
from django_escrow_connect.simulation import simulated_stripe
from marketplace import services
from marketplace.models import Task, TaskStatus, User
from marketplace.simulated_state import SimulatedStateFile

EXAMPLE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_creates_every_state_once() -> None:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    counts = (User.objects.count(), Task.objects.count())
    statuses = set(Task.objects.values_list("status", flat=True))

    call_command("seed_demo", stdout=io.StringIO())

    assert (User.objects.count(), Task.objects.count()) == counts
    assert statuses == {
        TaskStatus.CREATED,
        TaskStatus.BIDDING,
        TaskStatus.BID_ACCEPTED,
        TaskStatus.IN_PROGRESS,
        TaskStatus.COMPLETED,
    }
    Account = swappable.load("ConnectedAccount")
    assert sorted(Account.objects.values_list("status", flat=True)) == ["verified"] * 3
    assert "Demo data ready" in out.getvalue()
    # The milestone task: paid, three milestones held, split between a team of two.
    shop = Task.objects.get(title="Build a small online shop")
    assert shop.status == TaskStatus.IN_PROGRESS
    payment = services.current_payment(shop)
    assert [(m.name, m.amount, m.status) for m in payment.milestones.order_by("position")] == [
        ("Design", 6000, "held"),
        ("Build", 9000, "held"),
        ("Launch", 5000, "held"),
    ]
    assert sorted(p.basis_points for p in payment.payees.all()) == [4000, 6000]


def test_demo_flow_runs_every_scenario() -> None:
    out = io.StringIO()
    call_command("demo_flow", stdout=out)
    text = out.getvalue()
    assert "checks passed" in text
    for step in (
        "declined",
        "dispute won",
        "transfer failed: still held",
        "cancelled, money refunded",
    ):
        assert step in text


def test_demo_flow_fails_loudly_when_something_is_off(monkeypatch: Any) -> None:
    from marketplace import services

    # A release that silently does nothing must be caught by the smoke test.
    monkeypatch.setattr(services, "complete_task", lambda task_id, user: None)
    with pytest.raises(CommandError, match="demo_flow FAILED"):
        call_command("demo_flow", "--only", "happy_path", stdout=io.StringIO())


def test_the_package_refuses_the_simulated_gateway_without_debug(monkeypatch: Any) -> None:
    from django.core import mail

    # The check allows the simulated gateway inside a test run (Django's test
    # environment gives mail an outbox); a server process has none.
    monkeypatch.delattr(mail, "outbox")
    with override_settings(DEBUG=False):
        ids = {message.id for message in run_checks()}
    assert "escrow_connect.E011" in ids
    with override_settings(DEBUG=True):
        assert "escrow_connect.E011" not in {message.id for message in run_checks()}


def test_the_first_migration_references_no_escrow_model() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    first = loader.disk_migrations[("marketplace", "0001_initial")]
    assert not [dep for dep in first.dependencies if dep[0] == "escrow_connect"]
    second = loader.disk_migrations[("marketplace", "0002_notification_payment")]
    assert ("escrow_connect", "__first__") in second.dependencies
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def _settings_of(env: dict[str, str]) -> str:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SIMULATED_STRIPE, s.ESCROW_CONNECT.get('GATEWAY', 'stripe'), "
        "s.ESCROW_CONNECT['WEBHOOK_SECRETS'], s.DATABASES['default']['ENGINE'])"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "example_project.settings", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() + result.stderr[-500:]


def test_settings_choose_the_mode_from_the_environment(tmp_path: Path) -> None:
    simulated = _settings_of({"DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3"})
    assert simulated.startswith("True django_escrow_connect.simulation.SimulatedGateway")
    assert "whsec_example_marketplace_simulated_platform" in simulated
    assert "sqlite3" in simulated

    test_mode = _settings_of(
        {
            "STRIPE_SECRET_KEY": "sk_test_abc",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_abc",
            "STRIPE_WEBHOOK_SECRET": "whsec_one,whsec_two",
            "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/example",
        }
    )
    assert test_mode.startswith("False stripe ['whsec_one', 'whsec_two']")
    assert "postgresql" in test_mode

    assert "refuses live Stripe keys" in _settings_of({"STRIPE_SECRET_KEY": "sk_live_abc"})


def test_the_simulated_stripe_survives_a_restart_through_its_state_file(
    tmp_path: Path, people: Any
) -> None:
    state = SimulatedStateFile(tmp_path / "state.sqlite3")
    with state.session():
        pass  # saves what the fixtures created (two verified accounts)
    accounts = set(simulated_stripe.accounts)
    assert len(accounts) == 2

    simulated_stripe.reset()  # a new process starts with an empty store
    other_process = SimulatedStateFile(tmp_path / "state.sqlite3")
    with other_process.session():
        assert set(simulated_stripe.accounts) == accounts
        assert simulated_stripe.undelivered == []

    # The file holds the package's public dump_state(), as JSON (no pickled privates).
    with contextlib.closing(sqlite3.connect(tmp_path / "state.sqlite3")) as db:
        (saved,) = db.execute("SELECT data FROM simulated_stripe_state").fetchone()
    assert json.loads(saved) == simulation.dump_state()
