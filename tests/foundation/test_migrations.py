"""Migrations survive swapping: no missing migration under either settings
module, no host app label written into the library's migrations, and the
library can be migrated to zero and back."""

from __future__ import annotations

import importlib.util
import io
import pathlib

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command

import django_escrow_connect
from django_escrow_connect import swappable

MIGRATIONS = pathlib.Path(django_escrow_connect.__file__).parent / "migrations"


@pytest.mark.django_db
def test_no_missing_migrations():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    assert "No changes detected" in out.getvalue()


def test_rendering_the_migrations_leaves_no_transition_collectors(monkeypatch):
    """django-fsm-2's ``FSMField`` connects a ``class_prepared`` receiver per
    field it meets and never disconnects it; migrations render historical
    models over and over, and each model rendered later called them all (a
    fresh ``migrate`` took 2.2-2.4x as long). The migrations'
    ``HistoricalFSMField`` disconnects it on historical models: none of this
    package's is left connected, and a data migration still reads their
    (empty) transitions as before.
    """
    from django.db.migrations.loader import MigrationLoader
    from django.db.models.signals import class_prepared

    connected = []
    connect = class_prepared.connect

    def spy(receiver, *args, **kwargs):
        connected.append(receiver)  # a strong reference: none dies unseen
        return connect(receiver, *args, **kwargs)

    monkeypatch.setattr(class_prepared, "connect", spy)
    state = MigrationLoader(None, ignore_no_migrations=True).project_state()
    models = state.apps.get_models()  # rendered: every field contributed
    collectors = [r for r in connected if getattr(r, "__name__", "") == "_collect_transitions"]
    # This package's historical models (a host's own migrations, as
    # tests/testapp's, may keep django_fsm.FSMField: it works as before).
    historical = [
        r
        for r in collectors
        if r.__self__.model.__module__ == "__fake__"
        and r.__self__.model._meta.app_label == "escrow_connect"
    ]
    assert len(historical) >= 10, f"{len(historical)} historical FSM fields rendered"
    left = [r for r in historical if class_prepared.disconnect(r)]
    assert left == [], f"{len(left)} of {len(historical)} receivers left connected"
    assert any(m._meta.app_label == "escrow_connect" for m in models)
    # What the receiver would have recorded: no transitions (a RunPython may ask).
    for receiver in historical:
        field = receiver.__self__
        instance = field.model()
        assert list(getattr(instance, f"get_all_{field.name}_transitions")()) == []
        assert list(getattr(instance, f"get_available_{field.name}_transitions")()) == []


def test_library_migrations_name_no_host_app():
    for path in MIGRATIONS.glob("0*.py"):
        source = path.read_text()
        for label in ("testapp", "swappedapp"):
            assert label not in source, f"{path.name} names {label}"
        assert "settings.ESCROW_CONNECT_" not in source, f"{path.name}: use swapper"


@pytest.mark.django_db(transaction=True)
def test_migrate_to_zero_and_back():
    out = io.StringIO()
    call_command("migrate", "escrow_connect", "zero", stdout=out, verbosity=1)
    assert "Unapplying escrow_connect.0001_initial" in out.getvalue()
    call_command("migrate", stdout=out, verbosity=1)
    assert "Applying escrow_connect.0001_initial" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_0014_gives_the_tip_disputes_recorded_before_it_their_tip():
    """Before 0014 a tip's dispute was told apart by its charge id only; the
    data migration sets ``tip`` on those rows, and only on those."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from django_escrow_connect import factories as escrow_factories
    from tests import factories

    before = [("escrow_connect", "0013_captured_amount")]
    MigrationExecutor(connection).migrate(before)
    old_apps = MigrationExecutor(connection).loader.project_state(before).apps
    OldDispute = old_apps.get_model("escrow_connect", "Dispute")
    # The tip as it was then (later migrations add columns to its table).
    Tip = old_apps.get_model("escrow_connect", "EscrowTip")

    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    payments = [
        escrow_factories.make_payment(
            factories.make_task(customer, payee_user=doer), status="released"
        )
        for _ in range(2)
    ]
    tips = [
        Tip.objects.create(
            payment_id=payment.pk,
            payer_id=customer.pk,
            amount=500,
            currency="usd",
            stripe_payment_intent_id=f"pi_tip_{n}",
            stripe_charge_id=f"ch_tip_{n}",
            intent_idempotency_key=f"tip-key-{n}",
        )
        for n, payment in enumerate(payments)
    ]

    def dispute(dispute_id: str, payment: object, charge: str) -> None:
        OldDispute.objects.create(
            payment_id=payment.pk,  # type: ignore[attr-defined]
            stripe_dispute_id=dispute_id,
            stripe_charge_id=charge,
            amount=500,
            currency="usd",
            status="needs_response",
        )

    dispute("du_own", payments[0], payments[0].stripe_charge_id)
    dispute("du_tip_0", payments[0], "ch_tip_0")
    dispute("du_tip_1", payments[1], "ch_tip_1")
    # The charge of another payment's tip: not a tip of this payment.
    dispute("du_elsewhere", payments[0], "ch_tip_1")

    try:
        MigrationExecutor(connection).migrate([("escrow_connect", "0014_dispute_tip")])
        tip_of = dict(swappable.load("Dispute").objects.values_list("stripe_dispute_id", "tip_id"))
    finally:
        # Back to the latest migrations: a later migration's columns must
        # exist for the tests that run after this one (they share the database).
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert tip_of == {
        "du_own": None,
        "du_tip_0": tips[0].pk,
        "du_tip_1": tips[1].pk,
        "du_elsewhere": None,
    }


def test_foreign_keys_point_at_the_models_in_use():
    Payment = swappable.load("EscrowPayment")
    Task = swappable.load("Task")
    Organization = swappable.load("Organization")
    assert Payment._meta.get_field("task").related_model is Task
    assert Payment._meta.get_field("payee_organization").related_model is Organization
    for name in (
        "Transfer",
        "TransferReversal",
        "Refund",
        "Dispute",
        "PaymentIncident",
        "TransferIncident",
    ):
        assert swappable.load(name)._meta.get_field("payment").related_model is Payment
    # Reverse accessors are on the swapped-in model.
    assert hasattr(Payment, "transfers")
    assert hasattr(Payment, "refunds")
    assert hasattr(Task, "escrow_payments")


def test_swapped_payment_model_is_the_hosts():
    Payment = swappable.load("EscrowPayment")
    if settings.ESCROW_TEST_HOST == "swappedapp":
        assert Payment._meta.label == "swappedapp.TrackedEscrowPayment"
        assert not apps.get_model("escrow_connect", "EscrowPayment")._meta.managed or (
            apps.get_model("escrow_connect", "EscrowPayment")._meta.swapped
        )
    else:
        assert Payment._meta.label == "escrow_connect.EscrowPayment"


def _swapperize():
    path = pathlib.Path(__file__).parents[2] / "scripts" / "swapperize_migration.py"
    spec = importlib.util.spec_from_file_location("swapperize_migration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.swapperize


#: What makemigrations writes under tests.settings for a change that touches
#: the task and the payment (shape of a generated migration).
GENERATED = """\
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('escrow_connect', '0004_radar'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        migrations.swappable_dependency(settings.ESCROW_CONNECT_ESCROWPAYMENT_MODEL),
        ('testapp', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='refund',
            name='task',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, to='testapp.task'),
        ),
        migrations.AddField(
            model_name='refund',
            name='payment_copy',
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                to=settings.ESCROW_CONNECT_ESCROWPAYMENT_MODEL,
            ),
        ),
    ]
"""


def test_swapperize_keeps_dependencies_and_replaces_host_references():
    source = _swapperize()(GENERATED)
    compile(source, "generated.py", "exec")
    dependencies = source.split("dependencies = [", 1)[1].split("]\n", 1)[0]
    assert [line.strip() for line in dependencies.strip().splitlines()] == [
        "('escrow_connect', '0004_radar'),",
        "migrations.swappable_dependency(settings.AUTH_USER_MODEL),",
        'swappable.dependency("EscrowPayment"),',
        'swappable.dependency("Task"),',
    ]
    assert "testapp" not in source
    assert "settings.ESCROW_CONNECT_" not in source
    assert 'to=swapper.get_model_name("escrow_connect", "Task")' in source
    assert 'to=swapper.get_model_name("escrow_connect", "EscrowPayment")' in source
    assert "import swapper\n" in source
    assert "from django_escrow_connect import swappable\n" in source


def test_swapperize_leaves_the_library_migrations_as_they_are():
    swapperize = _swapperize()
    for path in sorted(MIGRATIONS.glob("0*.py")):
        source = path.read_text()
        assert swapperize(source) == source, path.name


def test_library_migrations_depend_on_host_models_through_the_setting():
    # swapper.dependency(...) without a version would ignore
    # ESCROW_CONNECT_<MODEL>_MODEL_MIGRATION_DEPENDENCY.
    for path in MIGRATIONS.glob("0*.py"):
        assert "swapper.dependency(" not in path.read_text(), path.name
