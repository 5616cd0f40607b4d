"""Names of the swappable models, resolved through swapper.

The library never writes a host app label: every foreign key and migration
dependency goes through these helpers, which read the top-level
``ESCROW_CONNECT_<MODEL>_MODEL`` settings (and, for the migration a dependency
points at, ``ESCROW_CONNECT_<MODEL>_MODEL_MIGRATION_DEPENDENCY``).
"""

from __future__ import annotations

from typing import Any

import swapper
from django.conf import settings
from django.core.signals import setting_changed

__all__ = [
    "HOST_MODELS",
    "LIBRARY_MODELS",
    "dependency",
    "load",
    "model_name",
    "setting_name",
]

APP_LABEL = "escrow_connect"

#: Models the host supplies. The task model is required; the organization
#: model is optional (unset: a placeholder model nothing writes to).
HOST_MODELS = ("Task", "Organization")
#: The library's own models, each an abstract base plus a swappable default.
LIBRARY_MODELS = (
    "ConnectedAccount",
    "EscrowPayment",
    "EscrowMilestone",
    "EscrowPayee",
    "EscrowRelease",
    "Transfer",
    "TransferReversal",
    "Refund",
    "Dispute",
    "PaymentIncident",
    "TransferIncident",
    "WebhookEvent",
    "MoneyOperation",
    "StaffAction",
    "EscrowTip",
    "EscrowTipTransfer",
)

#: The models the library's migrations depend on (``dependency(...)``): each
#: can name the migration that creates it, see :func:`dependency`.
MIGRATION_DEPENDENCY_MODELS = ("Task", "Organization", "EscrowPayment")


def setting_name(model: str) -> str:
    """``ESCROW_CONNECT_<MODEL>_MODEL``: the setting that names ``model``."""
    return str(swapper.swappable_setting(APP_LABEL, model))


def model_name(model: str) -> str:
    """The ``app_label.Model`` string a foreign key should point to."""
    return str(swapper.get_model_name(APP_LABEL, model))


def migration_dependency_setting(model: str) -> str:
    """``ESCROW_CONNECT_<MODEL>_MODEL_MIGRATION_DEPENDENCY``: the migration of the
    model's app that the library's migrations wait for."""
    return f"{setting_name(model)}_MIGRATION_DEPENDENCY"


def dependency(model: str) -> tuple[str, str]:
    """The migration dependency on the model in use for ``model``.

    swapper's default is the first migration of the model's app, which is
    wrong for a host whose model arrives in a later migration: a fresh
    database then cannot resolve the library's foreign keys. Such a host names
    that migration in ``ESCROW_CONNECT_<MODEL>_MODEL_MIGRATION_DEPENDENCY``.
    The setting is ignored while the model is the library's own (there is no
    host migration to wait for); a system check reports that and any name
    that is not a migration of the model's app.
    """
    version = getattr(settings, migration_dependency_setting(model), None)
    if not swapper.is_swapped(APP_LABEL, model) or not isinstance(version, str):
        version = None
    app_label, migration = swapper.dependency(APP_LABEL, model, version=version)
    return str(app_label), str(migration)


def load(model: str) -> Any:
    """The model class in use for ``model`` (the host's, if swapped)."""
    found = _LOADED.get(model)
    if found is None:
        # Looked up on every webhook event and request: swapper reads the
        # settings and the app registry each time; the answer only changes
        # with the settings (override_settings in tests: _forget).
        found = _LOADED[model] = swapper.load_model(APP_LABEL, model)
    return found


_LOADED: dict[str, Any] = {}


def _forget(**kwargs: Any) -> None:
    _LOADED.clear()


setting_changed.connect(_forget)
