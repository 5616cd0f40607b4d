"""A host whose task model arrives after its app's first migration names that
migration in ESCROW_CONNECT_TASK_MODEL_MIGRATION_DEPENDENCY; the library's
migrations then wait for it, and the system checks catch a wrong name.

(scripts/check-package.sh migrates such a host from an empty database.)"""

from __future__ import annotations

import importlib
import io
import pathlib

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_escrow_connect import swappable
from django_escrow_connect.checks import check_migration_dependencies

TASK_SETTING = "ESCROW_CONNECT_TASK_MODEL_MIGRATION_DEPENDENCY"
#: tests/foundation/later_task_migrations: 0001 has another model, 0002 the task.
LATER_TASK = {"testapp": "tests.foundation.later_task_migrations"}

pytestmark = pytest.mark.skipif(
    settings.ESCROW_TEST_HOST != "testapp", reason="uses the testapp host's migrations"
)


def ids(errors):
    return [e.id for e in errors]


def test_the_setting_names_the_dependency():
    assert swappable.migration_dependency_setting("Task") == TASK_SETTING
    assert swappable.dependency("Task") == ("testapp", "__first__")
    with override_settings(**{TASK_SETTING: "0001_initial"}):
        assert swappable.dependency("Task") == ("testapp", "0001_initial")


def test_the_setting_is_ignored_for_a_model_that_is_not_swapped():
    name = "ESCROW_CONNECT_ESCROWPAYMENT_MODEL_MIGRATION_DEPENDENCY"
    with override_settings(**{name: "0002_payment"}):
        assert swappable.dependency("EscrowPayment") == ("escrow_connect", "__first__")
        errors = check_migration_dependencies()
    assert ids(errors) == ["escrow_connect.W004"]
    assert name in errors[0].msg


def test_the_first_migration_waits_for_the_named_migration():
    module = importlib.import_module("django_escrow_connect.migrations.0001_initial")
    try:
        with override_settings(**{TASK_SETTING: "0001_initial"}):
            importlib.reload(module)
            assert ("testapp", "0001_initial") in module.Migration.dependencies
    finally:
        importlib.reload(module)
    assert ("testapp", "__first__") in module.Migration.dependencies


def test_the_test_settings_pass():
    assert check_migration_dependencies() == []


def test_naming_the_migration_that_creates_the_task_passes():
    with override_settings(**{TASK_SETTING: "0001_initial"}):
        assert check_migration_dependencies() == []
    with override_settings(MIGRATION_MODULES=LATER_TASK, **{TASK_SETTING: "0002_task"}):
        assert check_migration_dependencies() == []


@pytest.mark.parametrize("value", ["0009_nowhere", "", 3, ("testapp", "0001_initial")])
def test_a_name_that_is_not_a_migration_of_the_app_is_an_error(value):
    with override_settings(**{TASK_SETTING: value}):
        errors = check_migration_dependencies()
    assert ids(errors) == ["escrow_connect.E004"]
    assert TASK_SETTING in errors[0].msg


def test_a_migration_before_the_task_exists_is_an_error():
    with override_settings(MIGRATION_MODULES=LATER_TASK, **{TASK_SETTING: "0001_initial"}):
        errors = check_migration_dependencies()
    assert ids(errors) == ["escrow_connect.E004"]
    assert "0002_task" in errors[0].hint


def test_a_task_created_after_the_first_migration_is_warned_about_until_named():
    with override_settings(MIGRATION_MODULES=LATER_TASK):
        errors = check_migration_dependencies()
    assert ids(errors) == ["escrow_connect.W005"]
    assert f'{TASK_SETTING} = "0002_task"' in errors[0].hint


def test_every_migration_dependency_setting_is_documented():
    text = (pathlib.Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    for model in swappable.MIGRATION_DEPENDENCY_MODELS:
        assert f"`{swappable.migration_dependency_setting(model)}`" in text


def test_nothing_to_check_when_the_packages_migrations_are_disabled():
    disabled = {"escrow_connect": None, "testapp": None}
    with override_settings(MIGRATION_MODULES=disabled, **{TASK_SETTING: "0002_task"}):
        assert check_migration_dependencies() == []


@pytest.mark.django_db
def test_migrate_before_makemigrations_names_the_command_to_run():
    # README/installation: a host that runs migrate right after startapp got
    # Django's "Dependency on app with no migrations: testapp" traceback.
    empty = {"testapp": "tests.foundation.empty_task_migrations"}
    with override_settings(MIGRATION_MODULES=empty):
        with pytest.raises(SystemCheckError) as raised:
            call_command("migrate", skip_checks=False, verbosity=0)
        message = str(raised.value)
        assert "escrow_connect.E005" in message
        assert "makemigrations testapp" in message
        # makemigrations and a plain check, which come first, are not stopped.
        call_command("check", stdout=io.StringIO())
        call_command(
            "makemigrations", "testapp", dry_run=True, skip_checks=False, stdout=io.StringIO()
        )
