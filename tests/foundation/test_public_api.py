"""docs/public-api.md lists exactly what the package's public modules export.

The public surface is each module in :data:`PUBLIC_MODULES` and its
``__all__``. The page's reference part (between the ``BEGIN``/``END`` markers)
is generated from the code; a name added to or removed from an ``__all__``
without regenerating the page fails here. Regenerate with
``python tests/foundation/test_public_api.py --write``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "public-api.md"
BEGIN = "<!-- BEGIN GENERATED: public API (tests/foundation/test_public_api.py) -->"
END = "<!-- END GENERATED: public API -->"

P = "django_escrow_connect"
#: What hosts may import, and what each module is for. Anything not here (or
#: not in its module's ``__all__``) is internal and may change in any release.
PUBLIC_MODULES: dict[str, str] = {
    P + ".base.models": "Abstract models to subclass when swapping a model.",
    P + ".swappable": "Resolve the configured (possibly swapped) models.",
    P + ".migration_operations": "Migration operations that move a field's index without a "
    "rebuild.",
    P + ".migration_fields": "The status field for migration files (a faster `migrate`).",
    P + ".terms": "What a task is paid for: the terms hook's return type.",
    P + ".fees": "The platform fee policy.",
    P + ".money": "Amounts in minor units and currency codes.",
    P + ".states": "State names of every state machine (stored values).",
    P + ".permissions": "Who may act on a payment; the default hooks.",
    P + ".conf": "The package's settings, read through `escrow_settings`.",
    P + ".signals": "Business-event signals, sent on commit.",
    P + ".exceptions": "Errors raised by gateways and webhook verification.",
    P + ".observability": "OpenTelemetry spans, counters and the metrics snapshot.",
    P + ".services.payments": "Payment use cases: create, release, refund, cancel, retry.",
    P + ".services.releases": "Releases in parts: milestones, amounts, split payouts.",
    P + ".services.tips": "Tips on released payments: add, transfer, retry (docs/tips.md).",
    P + ".services.saved_methods": "Saved cards for off-session tips: consent, Customer, "
    "withdrawal.",
    P + ".services.accounts": "Connected-account use cases: onboarding and status.",
    P + ".embedded": "Connect embedded components: which are offered, with which features.",
    P + ".services.errors": "Errors the services raise (each maps to one API answer).",
    P + ".services.reconcile": "Converge local state on Stripe's facts (`escrow_reconcile`).",
    P + ".services.schedules": "Scheduled jobs for held money: capture expiry, auto release.",
    P + ".services.audit": "Audit the books against Stripe.",
    P + ".services.audit_tasks": "The audit as a Django task.",
    P + ".webhooks.tasks": "Webhook processing as Django tasks.",
    P + ".tasks": "The periodic jobs as Django tasks (reconcile, audit, purge...).",
    P + ".contrib.celery": "A `django.tasks` backend that runs tasks on Celery.",
    P + ".notifications.backends": "Notification backends to subclass or configure.",
    P + ".gateway": "The gateway protocol and the configured gateway.",
    P + ".gateway.types": "What gateways return (snapshots) and accept.",
    P + ".simulation": "The simulated Stripe, for development and tests.",
    P + ".gateway.conformance": "The test kit a custom gateway runs (docs/gateways.md).",
    P + ".api.errors": "The API's error format, for host views that share it.",
    P + ".admin": "The admin classes, to register a swapped model with (docs/admin.md).",
    P + ".testing": "Assertions for host test suites.",
    P + ".pytest_plugin": "The pytest plugin: `escrow_*` fixtures (docs/testing.md).",
    P + ".factories": "Rows of the package's models for tests, without Stripe.",
}


def _kind(value: object) -> str:
    from django.dispatch import Signal

    if isinstance(value, Signal):
        return "signal"
    if typing.get_origin(value) is not None or type(value).__module__ == "typing":
        return "type"
    if inspect.isclass(value):
        if issubclass(value, BaseException):
            return "exception"
        return "class"
    if callable(value):
        return "function"
    return "constant"


def _summary(value: object) -> str:
    if _kind(value) == "type":
        return f"`{value}`".replace("typing.", "").replace("collections.abc.", "")
    if _kind(value) in ("constant", "signal"):
        return ""
    own = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__  # type: ignore[attr-defined]
    doc = inspect.cleandoc(own or "")
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    return first.replace("|", "\\|")


def exports(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise AssertionError(f"{module_name} is public but has no __all__")
    return list(names)


def render() -> str:
    parts = [BEGIN, ""]
    for module_name, purpose in PUBLIC_MODULES.items():
        module = importlib.import_module(module_name)
        parts += [
            f"### `{module_name}`",
            "",
            purpose,
            "",
            "| name | kind | summary |",
            "|---|---|---|",
        ]
        for name in sorted(exports(module_name), key=str.lower):
            value = getattr(module, name)
            parts.append(f"| `{name}` | {_kind(value)} | {_summary(value)} |")
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def generated_part(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_every_exported_name_exists(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in exports(module_name) if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what it does not define: {missing}"
    assert len(set(exports(module_name))) == len(exports(module_name)), "duplicate in __all__"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_every_exported_class_and_function_says_what_it_is(module_name):
    module = importlib.import_module(module_name)
    undocumented = [
        name
        for name in exports(module_name)
        if _kind(getattr(module, name)) in ("class", "exception", "function")
        and not _summary(getattr(module, name))
    ]
    assert not undocumented, f"{module_name}: public names without a docstring: {undocumented}"


def test_page_matches_the_code():
    assert generated_part(PAGE.read_text()) == render(), (
        "docs/public-api.md is stale: run python tests/foundation/test_public_api.py --write"
    )


def test_the_generated_part_can_fail():
    """A name missing from the page is noticed (the check is not vacuous)."""
    stale = PAGE.read_text().replace("| `release_payment` |", "| `release_everything` |")
    assert generated_part(stale) != render()


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import django

    sys.path.insert(0, str(ROOT))
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    text = PAGE.read_text()
    new = text.replace(generated_part(text), render())
    if "--write" in sys.argv:
        PAGE.write_text(new)
    else:
        sys.stdout.write(render() + "\n")
