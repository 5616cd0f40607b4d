"""System checks: every misconfiguration names the exact setting to fix."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

import django
from django.apps import apps
from django.conf import global_settings, settings
from django.core.checks import Error, Tags, Warning, register
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import CreateModel, RenameModel

from . import embedded
from .base.models import EscrowTaskMixin
from .conf import (
    ACCOUNTS_APIS,
    ACCOUNTS_V2,
    DEFAULTS,
    ESCROW_STRATEGIES,
    FUND_NEXT_MILESTONE_RULES,
    IMPORT_STRINGS,
    MANUAL_CAPTURE,
    SETTING_NAME,
    STRIPE_API_VERSION,
    escrow_settings,
)
from .dates import period_setting
from .gateway.base import AccountsV2Gateway, PaymentGateway
from .gateway.basegateway import BaseGateway
from .money import (
    amount_step,
    amount_step_rule,
    format_money,
    max_charge_amount,
    min_charge_amount,
    normalize_currency,
)
from .services.payment_intents import MANUAL_CAPTURE_WINDOW
from .services.schedules import CAPTURE_EXPIRY_ACTIONS
from .swappable import (
    APP_LABEL,
    HOST_MODELS,
    LIBRARY_MODELS,
    MIGRATION_DEPENDENCY_MODELS,
    migration_dependency_setting,
    setting_name,
)
from .swappable import model_name as swapped_model_name

SIMULATED_GATEWAY = "django_escrow_connect.simulation.SimulatedGateway"
#: The simulated gateway's paths: its home, and the deprecated one it had before.
SIMULATED_GATEWAYS = (SIMULATED_GATEWAY, "django_escrow_connect.gateway.simulated.SimulatedGateway")
_WEBHOOK_SECRET_HINT = (
    "Add the endpoint's signing secret (whsec_...) from the Stripe dashboard or `stripe listen`."
)


def _key(name: str) -> str:
    return f'{SETTING_NAME}["{name}"]'


@register(Tags.models)
def check_host_models(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    task_setting = setting_name("Task")
    task_model = getattr(settings, task_setting, "escrow_connect.Task")
    if task_model == "escrow_connect.Task":
        errors.append(
            Error(
                f"{task_setting} is not set.",
                hint=f'Add {task_setting} = "yourapp.Task" to your settings, naming the '
                "model your customers pay for, before the first migrate.",
                id="escrow_connect.E001",
            )
        )
    else:
        errors.extend(_check_model_setting(task_setting, task_model, "E002"))
        if not errors:
            model = apps.get_model(task_model)
            if not issubclass(model, EscrowTaskMixin):
                errors.append(
                    Warning(
                        f"{task_model} (named by {task_setting}) does not inherit "
                        "EscrowTaskMixin, so its payment_status is not kept in step.",
                        hint="Add django_escrow_connect.base.models.EscrowTaskMixin to its bases.",
                        id="escrow_connect.W002",
                    )
                )
    org_setting = setting_name("Organization")
    org_model = getattr(settings, org_setting, "escrow_connect.Organization")
    if org_model != "escrow_connect.Organization":
        errors.extend(_check_model_setting(org_setting, org_model, "E003"))
    return errors


def _check_model_setting(name: str, value: Any, code: str) -> list[Any]:
    if not isinstance(value, str) or value.count(".") != 1:
        return [
            Error(
                f"{name} must be 'app_label.ModelName', not {value!r}.",
                id=f"escrow_connect.{code}",
            )
        ]
    try:
        apps.get_model(value)
    except (LookupError, ValueError):
        return [
            Error(
                f"{name} refers to {value!r}, which is not an installed model.",
                hint=f"Fix {name} or add the app that defines it to INSTALLED_APPS.",
                id=f"escrow_connect.{code}",
            )
        ]
    return []


@register(Tags.models)
def check_migration_dependencies(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The library's migrations wait for the migration that creates each host model.

    By default that is the first migration of the model's app; a host whose
    model arrives later names the right one in
    ``ESCROW_CONNECT_<MODEL>_MODEL_MIGRATION_DEPENDENCY``. Reads the migration
    files only (no database, no graph: a wrong name would make building the
    graph fail before this check could explain why).
    """
    errors: list[Any] = []
    disk: dict[tuple[str, str], Any] | None = None
    for model_name in MIGRATION_DEPENDENCY_MODELS:
        name = migration_dependency_setting(model_name)
        version = getattr(settings, name, None)
        label = swapped_model_name(model_name)
        if label == f"{APP_LABEL}.{model_name}":
            if version is not None:
                errors.append(
                    Warning(
                        f"{name} is set, but {setting_name(model_name)} names no model "
                        "of yours, so nothing waits for that migration.",
                        hint=f"Remove {name}, or set {setting_name(model_name)} too.",
                        id="escrow_connect.W004",
                    )
                )
            continue
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            continue  # E002/E003 name the model setting itself.
        if version is not None and (not isinstance(version, str) or not version):
            errors.append(
                Error(
                    f"{name} must be the name of a migration of the app "
                    f"{model._meta.app_label!r}, such as '0002_task', not {version!r}.",
                    id="escrow_connect.E004",
                )
            )
            continue
        if disk is None:
            disk, _ = _disk_migrations()
            if disk is None:
                return errors
        errors.extend(_check_dependency_creates(name, model, version, disk))
    return errors


def _disk_migrations() -> tuple[dict[tuple[str, str], Any] | None, set[str]]:
    """The migration files on disk and the apps that have a migrations package.

    None when the package's own migrations are disabled (MIGRATION_MODULES, as
    test settings often do): the tables are then made from the models, in no
    order, so no dependency matters.
    """
    loader = MigrationLoader(None, load=False)
    loader.load_disk()
    if not any(key[0] == APP_LABEL for key in loader.disk_migrations):
        return None, set()
    return loader.disk_migrations, set(loader.migrated_apps)


# Tagged "database" so that only migrate (and `check --database`) runs it:
# there an app without migrations is about to fail, while makemigrations,
# which creates them, must not be stopped by the same error. Django 6.1 hands
# every check all the databases, so `databases` alone no longer tells migrate
# from a plain check; Django 5.2 and 6.0 run database checks always, with
# databases=None unless a database was asked for.
@register(Tags.database)
def check_host_apps_have_migrations(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """Before migrate: the escrow_connect migrations wait for each host app's first one.

    An app with a migrations package but no migration in it (``startapp``,
    then ``migrate`` without ``makemigrations``) makes Django stop with
    *Dependency on app with no migrations*, which does not say what to run.
    """
    if not databases:
        return []
    disk, migrated_apps = _disk_migrations()
    if disk is None:
        return []
    errors: list[Any] = []
    reported: set[str] = set()  # one error per app, not per model
    for model_name in MIGRATION_DEPENDENCY_MODELS:
        label = swapped_model_name(model_name)
        if label == f"{APP_LABEL}.{model_name}":
            continue
        if getattr(settings, migration_dependency_setting(model_name), None) is not None:
            continue  # check_migration_dependencies judges a named migration.
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            continue  # E002/E003 name the model setting itself.
        app_label = model._meta.app_label
        if app_label in reported or app_label not in migrated_apps:
            continue
        if any(key[0] == app_label for key in disk):
            continue
        reported.add(app_label)
        errors.append(
            Error(
                f"{model._meta.label} has no migration yet, and the escrow_connect "
                f"migrations wait for the first migration of {app_label!r}.",
                hint=f"Run `python manage.py makemigrations {app_label}` first, then migrate.",
                id="escrow_connect.E005",
            )
        )
    return errors


def _check_dependency_creates(
    name: str, model: Any, version: str | None, disk: dict[tuple[str, str], Any]
) -> list[Any]:
    app_label = model._meta.app_label
    own = {key[1]: migration for key, migration in disk.items() if key[0] == app_label}
    if not own:
        # The host has not run makemigrations for its app yet (E005 stops
        # migrate until it has).
        if version is None:
            return []
        return [
            Error(
                f"{name} names {app_label}.{version}, but {app_label} has no migrations.",
                hint=f"Run makemigrations {app_label} before setting {name}.",
                id="escrow_connect.E004",
            )
        ]
    creators = sorted(n for n, migration in own.items() if _creates(migration, model))
    if version is None:
        # What swapper's "__first__" resolves to: the app's root migration.
        first = sorted(n for n, m in own.items() if all(d[0] != app_label for d in _deps(m)))
        if not creators or _created_by(first[0], model, own):
            return []
        return [
            Warning(
                f"{model._meta.label} is created in {app_label}.{creators[0]}, not in its "
                f"app's first migration, which is what the escrow_connect migrations wait "
                "for: migrating an empty database fails.",
                hint=f'Set {name} = "{creators[0]}".',
                id="escrow_connect.W005",
            )
        ]
    if version not in own:
        return [
            Error(
                f"{name} names {app_label}.{version}, which is not a migration.",
                hint=f"The migrations of {app_label} are: {', '.join(sorted(own))}.",
                id="escrow_connect.E004",
            )
        ]
    if not _created_by(version, model, own):
        return [
            Error(
                f"{name} names {app_label}.{version}, but {model._meta.label} does not exist "
                "yet after it.",
                hint=(
                    f'Set it to "{creators[0]}", the migration that creates it.'
                    if creators
                    else f"Run makemigrations {app_label}."
                ),
                id="escrow_connect.E004",
            )
        ]
    return []


def _deps(migration: Any) -> list[tuple[str, str]]:
    return list(getattr(migration, "dependencies", ()))


def _creates(migration: Any, model: Any) -> bool:
    wanted = model._meta.model_name
    for operation in migration.operations:
        if isinstance(operation, CreateModel) and operation.name_lower == wanted:
            return True
        if isinstance(operation, RenameModel) and operation.new_name_lower == wanted:
            return True
    return False


def _created_by(version: str, model: Any, own: dict[str, Any]) -> bool:
    """Whether ``model`` exists once ``version`` (and what it needs of its app) ran."""
    app_label = model._meta.app_label
    seen: set[str] = set()
    todo = [version]
    while todo:
        current = todo.pop()
        if current in seen or current not in own:
            continue
        seen.add(current)
        if _creates(own[current], model):
            return True
        todo.extend(dep[1] for dep in _deps(own[current]) if dep[0] == app_label)
    return False


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    raw = escrow_settings.raw
    user = getattr(settings, SETTING_NAME, None)
    if user is not None and not isinstance(user, dict):
        return [Error(f"{SETTING_NAME} must be a dict.", id="escrow_connect.E010")]
    for unknown in escrow_settings.unknown_keys():
        errors.append(
            Warning(
                f"{_key(unknown)} is not a setting of django-escrow-connect.",
                hint="Check the spelling against docs/settings.md.",
                id="escrow_connect.W010",
            )
        )
    errors.extend(_check_misplaced_settings(user or {}))

    gateway = raw("GATEWAY")
    simulated = gateway in SIMULATED_GATEWAYS
    if simulated and not settings.DEBUG and not _in_test_environment():
        errors.append(
            Error(
                "The simulated gateway moves no real money and is for development only.",
                hint=f"Set {_key('GATEWAY')} to the Stripe gateway (the default) "
                "when DEBUG is off.",
                id="escrow_connect.E011",
            )
        )
    secret = raw("STRIPE_SECRET_KEY")
    if not simulated:
        if not secret:
            errors.append(
                Error(
                    f"{_key('STRIPE_SECRET_KEY')} is not set.",
                    hint="Add your Stripe secret key (sk_test_... or sk_live_..., or a "
                    "restricted rk_ key) from the environment.",
                    id="escrow_connect.E012",
                )
            )
        elif not isinstance(secret, str) or not secret.startswith(("sk_", "rk_")):
            errors.append(
                Error(
                    f"{_key('STRIPE_SECRET_KEY')} does not look like a Stripe secret key.",
                    hint="It starts with sk_ or rk_; a pk_ key is the publishable key.",
                    id="escrow_connect.E013",
                )
            )
    publishable = raw("STRIPE_PUBLISHABLE_KEY")
    if publishable and not str(publishable).startswith("pk_"):
        errors.append(
            Error(
                f"{_key('STRIPE_PUBLISHABLE_KEY')} must start with pk_.",
                id="escrow_connect.E014",
            )
        )
    both_keys = isinstance(secret, str) and isinstance(publishable, str) and secret and publishable
    if both_keys and ("_live_" in secret) != ("_live_" in publishable):
        errors.append(
            Error(
                f"{_key('STRIPE_SECRET_KEY')} and {_key('STRIPE_PUBLISHABLE_KEY')} "
                "are from different modes (live and test).",
                id="escrow_connect.E015",
            )
        )
    errors.extend(_check_stripe_transport(raw))

    accounts_api = raw("ACCOUNTS_API")
    if accounts_api not in ACCOUNTS_APIS:
        errors.append(
            Error(
                f'{_key("ACCOUNTS_API")} is {accounts_api!r}; it must be "v1" or "v2".',
                hint="v1 creates connected accounts with /v1/accounts (every release so far); "
                "v2 with /v2/core/accounts, as Stripe advises new platforms. See "
                "docs/onboarding.md, 'Accounts v1 or v2'.",
                id="escrow_connect.E070",
            )
        )
    thin_secrets = raw("THIN_WEBHOOK_SECRETS")
    if isinstance(thin_secrets, str) or not isinstance(thin_secrets, (list, tuple)):
        errors.append(
            Error(
                f"{_key('THIN_WEBHOOK_SECRETS')} must be a list of signing secrets (for rotation).",
                hint=f'Write {_key("THIN_WEBHOOK_SECRETS")} = ["whsec_..."].',
                id="escrow_connect.E072",
            )
        )
    elif any(not isinstance(s, str) or not s for s in thin_secrets):
        errors.append(
            Error(
                f"{_key('THIN_WEBHOOK_SECRETS')} must hold non-empty strings.",
                id="escrow_connect.E072",
            )
        )
    elif accounts_api == ACCOUNTS_V2 and not thin_secrets and not simulated:
        errors.append(
            Warning(
                f'{_key("ACCOUNTS_API")} is "v2" but {_key("THIN_WEBHOOK_SECRETS")} is '
                "empty: Accounts v2 changes arrive only as thin events, which are refused "
                "(HTTP 400) until it is set, so accounts are updated only when read.",
                hint="Create an event destination with thin payloads for the v2 account events "
                "(docs/webhooks.md, 'Thin events') and add its signing secret.",
                id="escrow_connect.W071",
            )
        )

    for name in ("WEBHOOK_SECRETS", "CONNECT_WEBHOOK_SECRETS"):
        value = raw(name)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            errors.append(
                Error(
                    f"{_key(name)} must be a list of signing secrets (for rotation).",
                    hint=f'Write {_key(name)} = ["whsec_..."].',
                    id="escrow_connect.E020",
                )
            )
        elif not value and not simulated:
            # A first install migrates before Stripe is set up: a warning here,
            # an error under `check --deploy` (check_deploy_settings).
            errors.append(
                Warning(
                    f"{_key(name)} is empty, so every event to that endpoint is refused "
                    "(HTTP 400) until it is set.",
                    hint=_WEBHOOK_SECRET_HINT,
                    id="escrow_connect.W021",
                )
            )
        elif any(not isinstance(s, str) or not s for s in value):
            errors.append(
                Error(f"{_key(name)} must hold non-empty strings.", id="escrow_connect.E022")
            )

    api_version = raw("WEBHOOK_API_VERSION")
    if not isinstance(api_version, str):
        errors.append(
            Error(
                f"{_key('WEBHOOK_API_VERSION')} must be a Stripe API version string "
                f'such as "{STRIPE_API_VERSION}", or empty.',
                id="escrow_connect.E026",
            )
        )
    elif api_version and api_version != STRIPE_API_VERSION:
        errors.append(
            Warning(
                f"{_key('WEBHOOK_API_VERSION')} says your webhook endpoints send events at "
                f"API version {api_version}; this package reads {STRIPE_API_VERSION}.",
                hint="Events of another version are processed, with a warning logged for "
                "each, and fields that changed shape may be missing. Upgrade each endpoint's "
                "API version in the Stripe dashboard (docs/webhooks.md, 'API versions'), "
                "then remove the setting.",
                id="escrow_connect.W025",
            )
        )

    tolerance = raw("WEBHOOK_TOLERANCE_SECONDS")
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or tolerance <= 0:
        errors.append(
            Error(
                f"{_key('WEBHOOK_TOLERANCE_SECONDS')} must be a positive number of seconds.",
                hint="0 would disable replay protection; Stripe's default is 300.",
                id="escrow_connect.E023",
            )
        )
    max_body = raw("WEBHOOK_MAX_BODY_BYTES")
    if not _is_int(max_body) or max_body < 1:
        errors.append(
            Error(
                f"{_key('WEBHOOK_MAX_BODY_BYTES')} must be a positive int (bytes).",
                hint="Stripe's events are a few KiB; the default is 524288 (512 KiB).",
                id="escrow_connect.E027",
            )
        )
    if raw("WEBHOOK_PROCESSING") not in ("sync", "task"):
        errors.append(
            Error(
                f"{_key('WEBHOOK_PROCESSING')} must be 'sync' or 'task'.",
                id="escrow_connect.E024",
            )
        )
    attempts = raw("WEBHOOK_TASK_MAX_ATTEMPTS")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        errors.append(
            Error(
                f"{_key('WEBHOOK_TASK_MAX_ATTEMPTS')} must be an int of at least 1 "
                "(1: no retry by the task worker).",
                id="escrow_connect.E095",
            )
        )
    delay = raw("WEBHOOK_TASK_RETRY_DELAY")
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
        errors.append(
            Error(
                f"{_key('WEBHOOK_TASK_RETRY_DELAY')} must be a number of seconds, 0 or more.",
                id="escrow_connect.E096",
            )
        )
    if _period_refused("WEBHOOK_REQUEUE_AFTER_MINUTES", "minutes", "E115"):
        errors.append(
            Error(
                f"{_key('WEBHOOK_REQUEUE_AFTER_MINUTES')} must be an int of at least 1 "
                "(minutes), and not so large that no date is that long ago.",
                hint="Longer than your task queue's usual wait; 15 by default.",
                id="escrow_connect.E115",
            )
        )
    if raw("FUND_NEXT_MILESTONE") not in FUND_NEXT_MILESTONE_RULES:
        errors.append(
            Error(
                f"{_key('FUND_NEXT_MILESTONE')} must be one of "
                f"{', '.join(FUND_NEXT_MILESTONE_RULES)}.",
                id="escrow_connect.E100",
            )
        )
    if raw("ESCROW_STRATEGY") not in ESCROW_STRATEGIES:
        errors.append(
            Error(
                f"{_key('ESCROW_STRATEGY')} must be one of {', '.join(ESCROW_STRATEGIES)}.",
                id="escrow_connect.E030",
            )
        )
    bp = raw("PLATFORM_FEE_BASIS_POINTS")
    if not isinstance(bp, int) or isinstance(bp, bool) or not 0 <= bp <= 10000:
        errors.append(
            Error(
                f"{_key('PLATFORM_FEE_BASIS_POINTS')} must be an int from 0 to 10000 "
                "(1000 = 10 %).",
                id="escrow_connect.E031",
            )
        )
    fixed = raw("PLATFORM_FEE_FIXED")
    if not isinstance(fixed, dict) or any(
        not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in fixed.values()
    ):
        errors.append(
            Error(
                f"{_key('PLATFORM_FEE_FIXED')} must map currency codes to non-negative "
                "ints in minor units.",
                id="escrow_connect.E032",
            )
        )
    else:
        errors.extend(_off_step("PLATFORM_FEE_FIXED", fixed, "escrow_connect.W032"))
    try:
        normalize_currency(raw("DEFAULT_CURRENCY"))
    except (ValueError, TypeError, AttributeError):
        errors.append(
            Error(
                f"{_key('DEFAULT_CURRENCY')} must be a three-letter ISO currency code.",
                id="escrow_connect.E033",
            )
        )
    if raw("AUTO_RELEASE_AFTER_DAYS") is not None and _period_refused(
        "AUTO_RELEASE_AFTER_DAYS", "days", "E034"
    ):
        errors.append(
            Error(
                f"{_key('AUTO_RELEASE_AFTER_DAYS')} must be None or a positive int, and not "
                "so large that no date is that long ago.",
                id="escrow_connect.E034",
            )
        )
    retention = raw("WEBHOOK_PAYLOAD_RETENTION_DAYS")
    if not isinstance(retention, int) or isinstance(retention, bool) or retention < 1:
        # Below a day the purge would strip payloads of events just processed
        # (the command, the task and purge_payloads refuse it at run time).
        errors.append(
            Error(
                f"{_key('WEBHOOK_PAYLOAD_RETENTION_DAYS')} must be a whole number of days, "
                "an int of at least 1 (not a fraction such as 2.5).",
                id="escrow_connect.E036",
            )
        )
    if raw("CAPTURE_EXPIRY_ACTION") not in CAPTURE_EXPIRY_ACTIONS:
        errors.append(
            Error(
                f"{_key('CAPTURE_EXPIRY_ACTION')} must be 'warn', 'release' or 'cancel'.",
                id="escrow_connect.E035",
            )
        )
    errors.extend(_check_report_horizons(raw))
    on_behalf_of = raw("DESTINATION_ON_BEHALF_OF")
    if not isinstance(on_behalf_of, bool):
        errors.append(
            Error(
                f"{_key('DESTINATION_ON_BEHALF_OF')} must be True or False.",
                id="escrow_connect.E039",
            )
        )
    elif on_behalf_of and raw("ESCROW_STRATEGY") != MANUAL_CAPTURE:
        errors.append(
            Warning(
                f"{_key('DESTINATION_ON_BEHALF_OF')} is on but ESCROW_STRATEGY is not "
                f"{MANUAL_CAPTURE!r}; it only applies to destination charges and is ignored.",
                hint="Remove it, or use the manual_capture strategy.",
                id="escrow_connect.W039",
            )
        )
    errors.extend(_check_min_charge_amounts(raw("MIN_CHARGE_AMOUNTS")))
    errors.extend(_minimums_off_step(raw("MIN_CHARGE_AMOUNTS")))
    errors.extend(_check_tips(raw("TIP_MAX_AMOUNT")))
    if not isinstance(raw("SAVE_PAYMENT_METHODS"), bool):
        # Read as a truth value: "False" or "no" would let payers save cards.
        errors.append(
            Error(
                f"{_key('SAVE_PAYMENT_METHODS')} must be True or False.",
                id="escrow_connect.E062",
            )
        )
    errors.extend(_check_email_mailer(raw("EMAIL_MAILER")))
    errors.extend(_check_onboarding_urls(raw))
    errors.extend(_check_onboarding_collection(raw))
    country = raw("DEFAULT_ACCOUNT_COUNTRY")
    if not isinstance(country, str) or not re.fullmatch(r"[A-Za-z]{2}", country):
        errors.append(
            Error(
                f"{_key('DEFAULT_ACCOUNT_COUNTRY')} must be a two-letter ISO 3166-1 country "
                f'code such as "US", not {country!r}.',
                hint="Creating a connected account for an owner without a country of their "
                "own fails otherwise.",
                id="escrow_connect.E085",
            )
        )
    if not isinstance(raw("OPENTELEMETRY"), bool):
        # Read as a truth value: "false" would leave telemetry on.
        errors.append(
            Error(f"{_key('OPENTELEMETRY')} must be True or False.", id="escrow_connect.E050")
        )
    errors.extend(_check_embedded_components(raw))
    prefix = raw("IDEMPOTENCY_KEY_PREFIX")
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", prefix):
        errors.append(
            Error(
                f"{_key('IDEMPOTENCY_KEY_PREFIX')} must be 1-40 letters, digits, '.', '_' "
                "or '-' (no ':'), starting with a letter or digit.",
                id="escrow_connect.E038",
            )
        )

    # Every dotted-path setting, from the list conf imports by: a hand-kept
    # list here missed the hooks added later (REVERSAL_POLICY,
    # RECIPIENT_LANGUAGE), whose typo then surfaced only when first used.
    for name in sorted(IMPORT_STRINGS):
        try:
            getattr(escrow_settings, name)
        except Exception as exc:  # a host module may fail otherwise: report it, do not crash
            reason = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
            errors.append(
                Error(
                    f"{_key(name)} cannot be imported: {reason}",
                    hint="Give a dotted path to an importable object.",
                    id="escrow_connect.E040",
                )
            )
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _period_refused(name: str, unit: str, check: str) -> bool:
    """Whether the period setting ``name`` is refused by :func:`~.dates.period_setting`,
    the rule the commands apply at run time (a whole number of ``unit``, at
    least 1, not so long that no date is that long ago)."""
    try:
        period_setting(name, unit, check)
    except ValueError:
        return True
    return False


def _is_number(value: Any) -> bool:
    """An int or a finite float: what ``timedelta`` and the HTTP client take as seconds."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_stripe_transport(raw: Any) -> list[Any]:
    """STRIPE_API_BASE (E016), STRIPE_MAX_NETWORK_RETRIES (E017), STRIPE_TIMEOUT (E018)
    and MONEY_OPERATION_LEASE_SECONDS (E019).

    A wrong value here does not fail at startup: every Stripe call would fail
    as if Stripe were unreachable, or the lease of a money call would be
    wrong (or raise), so these are reported before the first call.
    """
    errors: list[Any] = _check_api_base(raw("STRIPE_API_BASE"))
    retries = raw("STRIPE_MAX_NETWORK_RETRIES")
    if not _is_int(retries) or retries < 0:
        errors.append(
            Error(
                f"{_key('STRIPE_MAX_NETWORK_RETRIES')} must be an int, 0 or more.",
                hint="0: no retry by the Stripe client; the default is 2.",
                id="escrow_connect.E017",
            )
        )
    timeout = raw("STRIPE_TIMEOUT")
    # requests takes one number for both, or a (connect, read) tuple; a list
    # is refused at the first call, and None (no timeout) leaves the money
    # operations' lease without a bound.
    parts = timeout if isinstance(timeout, tuple) and len(timeout) == 2 else (timeout,)
    if not all(_is_number(part) and part > 0 for part in parts):
        errors.append(
            Error(
                f"{_key('STRIPE_TIMEOUT')} must be a positive number of seconds, or a "
                "(connect, read) tuple of two.",
                hint="For example 30 (the default) or (3.05, 30).",
                id="escrow_connect.E018",
            )
        )
    lease = raw("MONEY_OPERATION_LEASE_SECONDS")
    if lease is not None and (not _is_number(lease) or lease < 0):
        errors.append(
            Error(
                f"{_key('MONEY_OPERATION_LEASE_SECONDS')} must be None or a number of "
                "seconds, 0 or more.",
                hint="None derives it from STRIPE_TIMEOUT and STRIPE_MAX_NETWORK_RETRIES.",
                id="escrow_connect.E019",
            )
        )
    return errors


def _check_api_base(base: Any) -> list[Any]:
    """None or "": Stripe's own address; else the http(s) address the client's paths follow."""
    if base is None or base == "":
        return []
    parts = _http_url(base)
    if parts is None or parts.query or parts.fragment:
        return [
            Error(
                f"{_key('STRIPE_API_BASE')} must be None or an http(s) URL such as "
                f'"http://localhost:12111", not {base!r}.',
                id="escrow_connect.E016",
            )
        ]
    if re.search(r"/v[12]/*$", parts.path):
        # The client appends /v1/... (and /v2/...) itself: the request would
        # go to /v1/v1/..., which Stripe and stripe-mock answer with 404.
        return [
            Error(
                f"{_key('STRIPE_API_BASE')} ends with an API version path ({parts.path}); "
                "the Stripe client adds /v1 or /v2 to every request itself.",
                hint=f'Write "{parts.scheme}://{parts.netloc}" instead.',
                id="escrow_connect.E016",
            )
        ]
    return []


def _http_url(value: Any) -> SplitResult | None:
    """``value`` split into its parts if it is an absolute http(s) URL, else None."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts


def _check_report_horizons(raw: Any) -> list[Any]:
    """CAPTURE_EXPIRY_WARNING_HOURS (E101) and STUCK_PAYMENT_HOURS (E102)."""
    errors: list[Any] = []
    warning_hours = raw("CAPTURE_EXPIRY_WARNING_HOURS")
    lifetime_hours = int(MANUAL_CAPTURE_WINDOW.total_seconds() // 3600)
    if not _is_number(warning_hours) or warning_hours <= 0:
        # 0 or less: a hold is only found once it has lapsed, so it is never
        # warned about, released or cancelled in time.
        errors.append(
            Error(
                f"{_key('CAPTURE_EXPIRY_WARNING_HOURS')} must be a positive number of hours.",
                hint="Longer than the interval escrow_capture_expiry runs at; 48 by default.",
                id="escrow_connect.E101",
            )
        )
    elif warning_hours >= lifetime_hours:
        # Every hold lapses within the window from the moment it is authorised:
        # each would be reported (or released or cancelled) on the next run.
        # The package never asks Stripe for extended authorisations.
        errors.append(
            Error(
                f"{_key('CAPTURE_EXPIRY_WARNING_HOURS')} must be under {lifetime_hours} hours: "
                "a card authorisation for manual capture lapses "
                f"{MANUAL_CAPTURE_WINDOW.days} days after it is made, so every held payment "
                "would be about to lapse at once.",
                hint="Longer than the interval escrow_capture_expiry runs at; 48 by default.",
                id="escrow_connect.E101",
            )
        )
    if _period_refused("STUCK_PAYMENT_HOURS", "hours", "E102"):
        errors.append(
            Error(
                f"{_key('STUCK_PAYMENT_HOURS')} must be an int of at least 1 (hours), and not "
                "so large that no date is that long ago.",
                id="escrow_connect.E102",
            )
        )
    return errors


def _check_onboarding_urls(raw: Any) -> list[Any]:
    """ONBOARDING_RETURN_URL and ONBOARDING_REFRESH_URL (E086)."""
    errors: list[Any] = []
    for name in ("ONBOARDING_RETURN_URL", "ONBOARDING_REFRESH_URL"):
        url = raw(name)
        if url not in ("", None) and _http_url(url) is None:
            # Sent to Stripe as it is (organization_id added to its query):
            # Stripe refuses a relative URL, and a non-string fails here.
            # None, like "", means the package's own page (read as falsy).
            errors.append(
                Error(
                    f"{_key(name)} must be empty (the package's own page) or an absolute "
                    f"http(s) URL, not {url!r}.",
                    hint="For example https://marketplace.example/onboarding/return/.",
                    id="escrow_connect.E086",
                )
            )
    return errors


def _check_onboarding_collection(raw: Any) -> list[Any]:
    errors: list[Any] = []
    if raw("ONBOARDING_COLLECT") not in ("currently_due", "eventually_due"):
        errors.append(
            Error(
                f"{_key('ONBOARDING_COLLECT')} must be 'currently_due' or 'eventually_due'.",
                hint="'eventually_due' asks for everything Stripe will need up front, so "
                "doers are not sent back to onboarding as more becomes due.",
                id="escrow_connect.E084",
            )
        )
    if raw("ONBOARDING_FUTURE_REQUIREMENTS") not in ("include", "omit"):
        errors.append(
            Error(
                f"{_key('ONBOARDING_FUTURE_REQUIREMENTS')} must be 'include' or 'omit'.",
                id="escrow_connect.E084",
            )
        )
    return errors


def _check_embedded_components(raw: Any) -> list[Any]:
    """EMBEDDED_COMPONENTS and EMBEDDED_COMPONENT_FEATURES (docs/onboarding.md)."""
    errors: list[Any] = []
    known = ", ".join(embedded.COMPONENT_FEATURES)
    names = raw("EMBEDDED_COMPONENTS")
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        errors.append(
            Error(
                f"{_key('EMBEDDED_COMPONENTS')} must be a list of embedded component names.",
                hint=f'Write {_key("EMBEDDED_COMPONENTS")} = ["account_onboarding"]; '
                f"known: {known}.",
                id="escrow_connect.E080",
            )
        )
        names = []
    else:
        unknown = [n for n in names if n not in embedded.COMPONENT_FEATURES]
        if unknown:
            errors.append(
                Error(
                    f"{_key('EMBEDDED_COMPONENTS')} names components this package does not "
                    f"offer: {', '.join(map(str, unknown))}.",
                    hint=f"Known: {known} (Stripe's names).",
                    id="escrow_connect.E080",
                )
            )
    charge_components = [n for n in names if n in embedded.CHARGE_COMPONENTS]
    on_behalf_of = raw("DESTINATION_ON_BEHALF_OF") is True
    if charge_components and not embedded.charge_components_allowed(
        raw("ESCROW_STRATEGY"), on_behalf_of
    ):
        errors.append(
            Error(
                f"{_key('EMBEDDED_COMPONENTS')} enables {', '.join(charge_components)}, "
                "which list the connected account's own charges and disputes; with "
                f"{_key('ESCROW_STRATEGY')} = {raw('ESCROW_STRATEGY')!r}"
                + ("" if on_behalf_of else " and no DESTINATION_ON_BEHALF_OF")
                + " the customer's charge and its disputes are the platform's, so the doer "
                "would see only bare transfers.",
                hint="Remove them, or use the manual_capture strategy with "
                "DESTINATION_ON_BEHALF_OF = True (destination charges on behalf of the doer). "
                "The API refuses them with 400 component_not_enabled until then.",
                id="escrow_connect.E081",
            )
        )
    features = raw("EMBEDDED_COMPONENT_FEATURES")
    if not isinstance(features, dict):
        errors.append(
            Error(
                f"{_key('EMBEDDED_COMPONENT_FEATURES')} must be a dict "
                "{component: {feature: True/False}}.",
                id="escrow_connect.E082",
            )
        )
        return errors
    for component, chosen in features.items():
        allowed = embedded.COMPONENT_FEATURES.get(component)
        if allowed is None:
            errors.append(
                Error(
                    f"{_key('EMBEDDED_COMPONENT_FEATURES')} has features for {component!r}, "
                    "which is not an embedded component this package offers.",
                    hint=f"Known: {known}.",
                    id="escrow_connect.E082",
                )
            )
            continue
        if not isinstance(chosen, dict) or any(not isinstance(v, bool) for v in chosen.values()):
            errors.append(
                Error(
                    f"{_key('EMBEDDED_COMPONENT_FEATURES')}[{component!r}] must map feature "
                    "names to True or False.",
                    id="escrow_connect.E082",
                )
            )
            continue
        unknown_features = sorted(set(chosen) - allowed)
        if unknown_features:
            errors.append(
                Error(
                    f"{_key('EMBEDDED_COMPONENT_FEATURES')}[{component!r}] names features "
                    f"Stripe does not have for it: {', '.join(unknown_features)}.",
                    hint=f"Its features: {', '.join(sorted(allowed)) or 'none'}.",
                    id="escrow_connect.E082",
                )
            )
        errors.extend(_check_component_features(component, chosen))
    return errors


def _check_component_features(component: str, chosen: dict[str, bool]) -> list[Any]:
    errors: list[Any] = []
    key = f"{_key('EMBEDDED_COMPONENT_FEATURES')}[{component!r}]"
    escrow_owned = sorted(f for f in embedded.ESCROW_OWNED_FEATURES if chosen.get(f) is True)
    if escrow_owned:
        errors.append(
            Error(
                f"{key} turns on {', '.join(escrow_owned)}: the doer could refund, capture "
                "or settle a dispute of an escrowed payment outside the package, and the "
                "payment's state and books would no longer match Stripe.",
                hint="Leave them off; refunds, release and disputes go through the package's "
                "services (docs/payments.md).",
                id="escrow_connect.E083",
            )
        )
    if chosen.get("disable_stripe_user_authentication") is True or (
        chosen.get("external_account_collection") is False
    ):
        errors.append(
            Error(
                f"{key} disables Stripe user authentication or external account collection; "
                "Stripe allows that only for accounts whose requirements the platform "
                "collects, and the package's accounts leave that to Stripe "
                "(controller.requirement_collection = stripe).",
                hint="Remove disable_stripe_user_authentication and "
                "external_account_collection: Stripe refuses the session otherwise.",
                id="escrow_connect.E083",
            )
        )
    early = sorted(
        f for f in ("instant_payouts", "standard_payouts", "edit_payout_schedule") if chosen.get(f)
    )
    if early:
        errors.append(
            Warning(
                f"{key} turns on {', '.join(early)}: the doer can move money out of the "
                "connected account before its schedule. The platform is liable for the "
                "account's negative balance, and refunding a released payment needs a "
                "transfer reversal, which fails once the money was paid out.",
                hint="Keep them off unless you accept recovering such refunds yourself; "
                "silence with SILENCED_SYSTEM_CHECKS = ['escrow_connect.W080'].",
                id="escrow_connect.W080",
            )
        )
    return errors


@register()
def check_task_backend(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Task mode retries a failed event later: the task backend must be able to defer."""
    raw = escrow_settings.raw
    attempts = raw("WEBHOOK_TASK_MAX_ATTEMPTS")
    if raw("WEBHOOK_PROCESSING") != "task" or not isinstance(attempts, int) or attempts < 2:
        return []
    try:
        from .webhooks.tasks import process_webhook_event
    except ImportError:  # no tasks framework: dispatch raises ImproperlyConfigured
        return []
    try:
        backend = process_webhook_event.get_backend()
    except Exception as exc:  # any misconfigured TASKS is the host's to fix
        return [
            Warning(
                f"The task backend for webhook processing cannot be loaded: {exc}",
                hint="Check the TASKS setting.",
                id="escrow_connect.W096",
            )
        ]
    if getattr(backend, "supports_defer", False):
        return []
    return [
        Warning(
            f"{_key('WEBHOOK_TASK_MAX_ATTEMPTS')} is {attempts}, but the task backend "
            f"{type(backend).__name__} cannot defer a task: a failed event is not retried "
            "by the worker and stays failed until escrow_replay_events (Stripe does not "
            "redeliver it: the request already answered 200).",
            hint="Use a backend that supports run_after (django-tasks-db, "
            "django_escrow_connect.contrib.celery.CeleryBackend), or set "
            f"{_key('WEBHOOK_TASK_MAX_ATTEMPTS')} to 1 to silence this.",
            id="escrow_connect.W095",
        )
    ]


def _check_min_charge_amounts(minimums: Any) -> list[Any]:
    """MIN_CHARGE_AMOUNTS (E063): per currency, a positive int up to Stripe's largest charge.

    An entry above the largest charge would refuse every price and tip in
    that currency; a malformed one would be ignored at run time (Stripe's
    table applies), which is not what the host wrote.
    """
    valid = isinstance(minimums, dict) and all(
        isinstance(code, str)
        and re.fullmatch(r"[a-z]{3}", code)
        and isinstance(minimum, int)
        and not isinstance(minimum, bool)
        and 1 <= minimum <= max_charge_amount(code)
        for code, minimum in minimums.items()
    )
    if valid:
        return []
    return [
        Error(
            f"{_key('MIN_CHARGE_AMOUNTS')} must map lowercase currency codes to the smallest "
            "charge in that currency's minor units: a positive int, at most Stripe's largest "
            "charge (money.max_charge_amount).",
            hint='For example {"usd": 70} when USD charges settle in another currency; '
            "{} keeps Stripe's table (money.MIN_CHARGE_AMOUNTS).",
            id="escrow_connect.E063",
        )
    ]


def _minimums_off_step(minimums: Any) -> list[Any]:
    """W064: a MIN_CHARGE_AMOUNTS entry off its currency's ``amount_step``.

    The entry is used as written (``money.min_charge_amount``), but every
    charge must also be on the step (``validate_minor_amount``), so the
    smallest charge accepted is the entry rounded up to the step: ``{"isk":
    150}`` accepts ISK 2 and more, not 1.50. Only the entries the run time
    reads are looked at; ``E063`` names the others, which it ignores.
    """
    if not isinstance(minimums, dict):
        return []
    off = []
    for code, minimum in sorted(minimums.items(), key=lambda item: str(item[0])):
        if not (isinstance(code, str) and re.fullmatch(r"[a-z]{3}", code)):
            continue
        if isinstance(minimum, bool) or not isinstance(minimum, int):
            continue
        if not 1 <= minimum <= max_charge_amount(code):
            continue
        smallest = _up_to_step(minimum, code)
        if smallest == minimum:
            continue
        if smallest > max_charge_amount(code):
            accepted = "no amount on the step is within Stripe's largest charge: none is accepted"
        else:
            accepted = f"the smallest charge accepted is {smallest}, {format_money(smallest, code)}"
        off.append(f"{code} ({minimum}: {amount_step_rule(code)}; {accepted})")
    if not off:
        return []
    return [
        Warning(
            f"{_key('MIN_CHARGE_AMOUNTS')} has minimums off their currency's step: "
            f"{'; '.join(off)}.",
            hint="Every charge must be on the step, so such a minimum is in effect rounded up "
            "to it (a refusal below it still names the entry): give it in whole steps "
            "(money.amount_step).",
            id="escrow_connect.W064",
        )
    ]


def _check_tips(limits: Any) -> list[Any]:
    """TIP_MAX_AMOUNT (E060, W060, W063) and a TIP_FEE that is not a callable (E061)."""
    found: list[Any] = []
    valid = isinstance(limits, dict) and all(
        isinstance(code, str)
        and re.fullmatch(r"[a-z]{3}", code)
        and isinstance(bound, int)
        and not isinstance(bound, bool)
        and bound >= 1
        for code, bound in limits.items()
    )
    if not valid:
        found.append(
            Error(
                f"{_key('TIP_MAX_AMOUNT')} must map lowercase currency codes to the largest "
                "tip in that currency's minor units (a positive int).",
                hint='For example {"usd": 10000}; {} turns tips off.',
                id="escrow_connect.E060",
            )
        )
    else:
        # A tip is charged on its own PaymentIntent: a bound above what Stripe
        # charges would let tips through that Stripe then refuses.
        too_large = [
            f"{code} (at most {max_charge_amount(code)})"
            for code, bound in sorted(limits.items())
            if bound > max_charge_amount(code)
        ]
        if too_large:
            found.append(
                Error(
                    f"{_key('TIP_MAX_AMOUNT')} allows more than Stripe charges in one "
                    f"payment (minor units) for: {', '.join(too_large)}.",
                    hint="Lower those entries to Stripe's largest charge or less.",
                    id="escrow_connect.E060",
                )
            )
        found.extend(_off_step("TIP_MAX_AMOUNT", limits, "escrow_connect.W060"))
        found.extend(_tips_below_minimum(limits))
    try:
        fee = escrow_settings.TIP_FEE
    except ImportError:
        return found  # E040 names the path that cannot be imported.
    if not callable(fee):
        found.append(
            Error(
                f"{_key('TIP_FEE')} must be a callable (amount, currency) -> int.",
                id="escrow_connect.E061",
            )
        )
    return found


def _tips_below_minimum(limits: dict[str, int]) -> list[Any]:
    """W063: a tip bound below Stripe's smallest charge in its currency.

    A warning, not an error: the setting is well formed, but every tip in
    that currency is then refused (below the minimum ``amount_too_small``,
    above the bound ``invalid_amount``), tips silently off there, which is
    unlikely to be what an entry meant.
    """
    # Compared as the runtime applies them: a tip must be on the currency's
    # step, so the largest allowed is the bound rounded down to it and the
    # smallest chargeable is the minimum rounded up to it (W060, W064).
    minimums = {code: _up_to_step(min_charge_amount(code), code) for code in limits}
    below = [
        f"{code} ({bound} < {minimums[code]}, {format_money(minimums[code], code)})"
        for code, bound in sorted(limits.items())
        if bound - bound % amount_step(code) < minimums[code]
    ]
    if not below:
        return []
    return [
        Warning(
            f"{_key('TIP_MAX_AMOUNT')} is below Stripe's smallest charge for: "
            f"{', '.join(below)}. Every tip in those currencies is refused "
            "(400 amount_too_small below the minimum, invalid_amount above the bound): "
            "tips are off there.",
            hint="Raise those entries to at least Stripe's minimum, or remove them "
            "to turn tips off in that currency on purpose (400 tips_unavailable).",
            id="escrow_connect.W063",
        )
    ]


def _up_to_step(amount: int, code: str) -> int:
    step = amount_step(code)
    return -(-amount // step) * step


def _off_step(name: str, table: dict[Any, int], check_id: str) -> list[Any]:
    """A warning for a per-currency amount off the currency's ``amount_step``.

    A warning, not an error: nothing off the step reaches Stripe (the default
    fee is rounded down to the step, and a tip must be on it however large
    the bound), but the part off the step is silently never charged or
    allowed, which is unlikely to be what the setting meant.
    """
    off = []
    for key, value in table.items():
        try:
            code = normalize_currency(key)
        except (TypeError, ValueError):
            continue  # E032 / E060 name a bad code.
        if value % amount_step(code):
            off.append(f"{code} ({value}: {amount_step_rule(code)})")
    if not off:
        return []
    return [
        Warning(
            f"{_key(name)} has amounts Stripe does not take in their currency: "
            f"{'; '.join(sorted(off))}.",
            hint="The part off the step is never charged (a fixed fee) or allowed (a tip "
            "bound): give those entries in whole steps (money.amount_step).",
            id=check_id,
        )
    ]


def _check_email_mailer(alias: Any) -> list[Any]:
    if alias is None:
        return []
    if not isinstance(alias, str) or not alias:
        return [
            Error(
                f"{_key('EMAIL_MAILER')} must be a MAILERS alias or None.", id="escrow_connect.E037"
            )
        ]
    if django.VERSION < (6, 1):
        return [
            Error(
                f"{_key('EMAIL_MAILER')} needs Django 6.1 or later (settings.MAILERS).",
                hint="Remove it; EmailBackend then uses the default email backend.",
                id="escrow_connect.E037",
            )
        ]
    mailers = getattr(settings, "MAILERS", None)
    if not isinstance(mailers, dict) or alias not in mailers:
        return [
            Error(
                f"{_key('EMAIL_MAILER')} is {alias!r}, which settings.MAILERS does not define.",
                id="escrow_connect.E037",
            )
        ]
    return []


def _protocol_parameters() -> dict[str, list[str]]:
    """Each method of PaymentGateway and the names of its parameters (``self`` left out)."""
    return {
        name: [p for p in inspect.signature(member).parameters if p != "self"]
        for name, member in sorted(vars(PaymentGateway).items())
        if not name.startswith("_") and inspect.isfunction(member)
    }


@register()
def check_gateway(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The configured gateway implements every method of PaymentGateway.

    A gateway written against an older release lacks the methods added since
    (``list_accounts``, say); this finds it at startup instead of at the first
    call that needs the method, possibly halfway through moving money.
    """
    try:
        gateway = escrow_settings.GATEWAY
    except ImportError:
        return []  # E040 reports it.
    label = getattr(gateway, "__qualname__", repr(gateway))
    expected = _protocol_parameters()
    absent = [name for name in expected if not callable(getattr(gateway, name, None))]
    errors: list[Any] = []
    if absent:
        errors.append(
            Error(
                f"{_key('GATEWAY')} ({label}) lacks methods of PaymentGateway: "
                f"{', '.join(absent)}.",
                hint="Subclass django_escrow_connect.gateway.BaseGateway: it has every method "
                "and leaves one hook per method to your class (docs/gateways.md).",
                id="escrow_connect.E041",
            )
        )
    for name, wanted in expected.items():
        if name in absent:
            continue
        try:
            parameters = inspect.signature(getattr(gateway, name)).parameters
        except (TypeError, ValueError):
            continue  # Nothing to compare (a builtin): the conformance kit has to tell.
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        missing = [p for p in wanted if p not in parameters]
        if missing:
            errors.append(
                Error(
                    f"{_key('GATEWAY')} ({label}).{name} does not accept the parameters "
                    f"{', '.join(missing)} of PaymentGateway.{name}.",
                    hint="Give the method PaymentGateway's signature; services pass these "
                    "by keyword.",
                    id="escrow_connect.E042",
                )
            )
    if escrow_settings.raw("ACCOUNTS_API") == ACCOUNTS_V2:
        lacking = [
            name
            for name in sorted(vars(AccountsV2Gateway))
            if not name.startswith("_")
            and inspect.isfunction(vars(AccountsV2Gateway)[name])
            and not callable(getattr(gateway, name, None))
        ]
        if lacking:
            errors.append(
                Error(
                    f'{_key("ACCOUNTS_API")} is "v2" but {_key("GATEWAY")} ({label}) lacks '
                    f"the Accounts v2 methods: {', '.join(lacking)}.",
                    hint="Subclass django_escrow_connect.gateway.BaseGateway and implement "
                    'their hooks, or keep ACCOUNTS_API = "v1".',
                    id="escrow_connect.E071",
                )
            )
    if isinstance(gateway, type) and issubclass(gateway, BaseGateway):
        # A hook left to BaseGateway raises NotImplementedError when called:
        # fine for a method the host never uses, so a warning, not an error.
        unimplemented = [
            name
            for name in expected
            if hasattr(BaseGateway, f"_{name}")
            and getattr(gateway, name) is getattr(BaseGateway, name)
            and getattr(gateway, f"_{name}") is getattr(BaseGateway, f"_{name}")
        ]
        if unimplemented:
            errors.append(
                Warning(
                    f"{_key('GATEWAY')} ({label}) leaves these methods to BaseGateway, "
                    f"which raises NotImplementedError: {', '.join(unimplemented)}.",
                    hint="Implement the _<method> hook of each, or silence this check with "
                    "SILENCED_SYSTEM_CHECKS if your marketplace never needs them.",
                    id="escrow_connect.W042",
                )
            )
    return errors


def _package_top_level_settings() -> frozenset[str]:
    """The package's top-level ``ESCROW_CONNECT_*`` settings: what swapper reads
    while Django loads models, before the dict could be (``ESCROW_CONNECT_<MODEL>_MODEL``,
    and ``..._MODEL_MIGRATION_DEPENDENCY``)."""
    models = (*HOST_MODELS, *LIBRARY_MODELS)
    return frozenset(
        {
            *(setting_name(model) for model in models),
            *(migration_dependency_setting(model) for model in MIGRATION_DEPENDENCY_MODELS),
        }
    )


def _misplaced_key(name: str) -> str | None:
    """The ``ESCROW_CONNECT`` key a top-level setting ``name`` was meant to be, if any.

    ``ESCROW_STRATEGY`` itself, or the key behind the package's prefix:
    ``ESCROW_CONNECT_ESCROW_STRATEGY``, and ``ESCROW_CONNECT_STRATEGY``
    (the prefix already says "escrow"; no other key starts with ``ESCROW_``).
    """
    if name in DEFAULTS:
        return name
    prefix = f"{SETTING_NAME}_"
    if not name.startswith(prefix) or name in _package_top_level_settings():
        return None
    rest = name.removeprefix(prefix)
    for key in (rest, f"ESCROW_{rest}"):
        if key in DEFAULTS:
            return key
    return None


def _check_misplaced_settings(user: dict[str, Any]) -> list[Any]:
    """W011: a package setting written at the top level of settings.py.

    The package reads only the ``ESCROW_CONNECT`` dict, so such a setting
    would leave the key at its default without a word. Not reported: Django's
    own settings (no key of DEFAULTS is one today; a future Django setting of
    the same name is Django's), and a key the dict sets as well (the host
    configured it where it is read; the top-level one is the host's own, or
    another app's, such as a STRIPE_SECRET_KEY read by its own code).
    """
    django_settings = set(dir(global_settings))
    found: list[Any] = []
    for name in sorted(dir(settings)):
        if not name.isupper() or name in django_settings:
            continue
        key = _misplaced_key(name)
        if key is None or key in user:
            continue
        hint = f'Move it into the {SETTING_NAME} dict as "{key}".'
        if name == key:
            hint += f" If another app reads the top-level {name}, set it in {SETTING_NAME} too."
        found.append(
            Warning(
                f"{name} is set at the top level of your settings, where "
                f"django-escrow-connect does not read it: {_key(key)} keeps its default.",
                hint=hint,
                id="escrow_connect.W011",
            )
        )
    return found


def _in_test_environment() -> bool:
    """Whether Django's test environment is set up (a test run, never a server).

    ``setup_test_environment()`` (Django's test runner, and pytest-django for
    every session) gives ``django.core.mail`` its ``outbox``; a process serving
    requests never has one. Tests run with ``DEBUG = False`` by default, so
    without this the simulated gateway could not be used in a host's tests.
    """
    from django.core import mail

    return hasattr(mail, "outbox")


@register(Tags.security, deploy=True)
def check_deploy_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """What must be set before going live: run by ``manage.py check --deploy`` only."""
    raw = escrow_settings.raw
    if raw("GATEWAY") in SIMULATED_GATEWAYS:
        return []
    errors: list[Any] = []
    for name in ("WEBHOOK_SECRETS", "CONNECT_WEBHOOK_SECRETS"):
        value = raw(name)
        if isinstance(value, (list, tuple)) and not value:
            errors.append(
                Error(
                    f"{_key(name)} is empty, so every event to that endpoint is refused.",
                    hint=_WEBHOOK_SECRET_HINT,
                    id="escrow_connect.E021",
                )
            )
    if raw("ACCOUNTS_API") == ACCOUNTS_V2 and raw("THIN_WEBHOOK_SECRETS") == []:
        errors.append(
            Error(
                f"{_key('THIN_WEBHOOK_SECRETS')} is empty, so no Accounts v2 change reaches "
                "the package (thin events are refused).",
                hint="Create the event destination (docs/webhooks.md, 'Thin events') and add "
                "its signing secret.",
                id="escrow_connect.E073",
            )
        )
    user_settings = getattr(settings, SETTING_NAME, None) or {}
    if "ACCOUNTS_API" not in user_settings:
        errors.append(
            Warning(
                f"{_key('ACCOUNTS_API')} is not set: new connected accounts are created with "
                "Accounts v1 (the default, so existing installations do not change).",
                hint="Stripe advises Accounts v2 for new Connect platforms: a new installation "
                'sets ACCOUNTS_API = "v2"; an existing one sets "v1" explicitly (or "v2" '
                "after reading docs/onboarding.md, 'Accounts v1 or v2').",
                id="escrow_connect.W070",
            )
        )
    for name in ("ONBOARDING_RETURN_URL", "ONBOARDING_REFRESH_URL"):
        if not raw(name):
            errors.append(
                Warning(
                    f"{_key(name)} is not set; onboarding links use the package's own page, "
                    "built from the request's host and scheme.",
                    hint="Live-mode account links need https URLs: set "
                    "SECURE_PROXY_SSL_HEADER behind a TLS proxy, or set this to an absolute "
                    "https URL of your site. Silence with SILENCED_SYSTEM_CHECKS when the "
                    "package's page is what you want.",
                    id="escrow_connect.W036",
                )
            )
    if raw("ORGANIZATION_ADMIN_PREDICATE") != DEFAULTS["ORGANIZATION_ADMIN_PREDICATE"] and not raw(
        "ADMINISTERED_ORGANIZATIONS"
    ):
        errors.append(
            Warning(
                f"{_key('ORGANIZATION_ADMIN_PREDICATE')} is set but "
                f"{_key('ADMINISTERED_ORGANIZATIONS')} is not: a payment whose payee is an "
                "organization is read first and checked afterwards, so a request for it takes "
                "measurably longer than one for a payment paid to a person, or for none "
                "(a timing side channel on payment ids).",
                hint="Point ADMINISTERED_ORGANIZATIONS at a callable (user) -> QuerySet of the "
                "organizations the user administers (the predicate's rule in SQL); payment "
                "lookups then take one scoped query. See docs/security.md.",
                id="escrow_connect.W041",
            )
        )
    return errors
