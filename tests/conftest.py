"""Suite-wide hooks.

``@pytest.mark.postgres`` tests need PostgreSQL (row locks, real concurrency):
they are skipped, with the reason, when the suite runs on SQLite. Run them
with ``export "$(bash scripts/pg.sh start)"`` (sets ``DATABASE_URL``).
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
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
