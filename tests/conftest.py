"""Suite-wide hooks.

``@pytest.mark.postgres`` tests need PostgreSQL (row locks, real concurrency):
they are skipped, with the reason, when the suite runs on SQLite. Run them
with ``export "$(bash scripts/pg.sh start)"`` (sets ``DATABASE_URL``).
"""

from __future__ import annotations

from typing import Any

import pytest


def _historical_models_collect_no_transitions() -> None:
    """django-fsm-2 (4.2) connects a ``class_prepared`` receiver for every
    FSM field it meets, the migrations' historical models included (their
    module is ``__fake__``): rendering this package's migrations connects
    thousands, and every model rendered after them calls them all. Creating a
    test database took ~28 s, ~10 s without them; each pytest-xdist worker
    creates its own. A historical model has no transition methods (a
    migration keeps fields, not methods), so those receivers find nothing:
    leaving them out changes no schema and no behaviour. Tests only; the
    package does not patch a host's django-fsm.
    """
    import django_fsm
    from django.db.models.signals import class_prepared

    if getattr(django_fsm.FSMFieldMixin, "_escrow_tests_patched", False):
        return
    contribute = django_fsm.FSMFieldMixin.contribute_to_class

    def contribute_to_class(self: Any, cls: Any, name: str, *args: Any, **kwargs: Any) -> None:
        if cls.__module__ != "__fake__":
            contribute(self, cls, name, *args, **kwargs)
            return
        connect = class_prepared.connect
        class_prepared.connect = lambda *a, **k: None  # type: ignore[method-assign]
        try:
            contribute(self, cls, name, *args, **kwargs)
        finally:
            class_prepared.connect = connect  # type: ignore[method-assign]

    django_fsm.FSMFieldMixin.contribute_to_class = contribute_to_class  # type: ignore[method-assign]
    django_fsm.FSMFieldMixin._escrow_tests_patched = True  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    _historical_models_collect_no_transitions()
    config.addinivalue_line(
        "markers",
        "accounts_api(*apis): run an onboarding test only with these ACCOUNTS_API values "
        "(tests/onboarding/conftest.py runs it with both by default)",
    )
    # The host's test kit: loaded by its pytest11 entry point when the package
    # is installed from this checkout's metadata, by name otherwise.
    if not config.pluginmanager.hasplugin("escrow_connect"):
        config.pluginmanager.import_plugin("django_escrow_connect.pytest_plugin")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" in engine:
        return
    skip = pytest.mark.skip(
        reason=f"needs PostgreSQL (running on {engine.rsplit('.', 1)[-1]}); "
        'run with DATABASE_URL set, e.g. export "$(bash scripts/pg.sh start)"'
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def otel_providers() -> Any:
    """The process's OpenTelemetry SDK (set once: the globals cannot be replaced)."""
    pytest.importorskip("opentelemetry.sdk")
    from tests.otel import providers

    return providers()


@pytest.fixture
def otel(otel_providers: Any) -> Any:
    """In-memory spans (cleared for this test) and metrics; see :mod:`tests.otel`."""
    otel_providers.exporter.clear()
    return otel_providers
