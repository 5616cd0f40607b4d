"""Names of the swappable models, resolved through swapper.

The library never writes a host app label: every foreign key and migration
dependency goes through these helpers, which read the top-level
``ESCROW_CONNECT_<MODEL>_MODEL`` settings.
"""

from __future__ import annotations

from typing import Any

import swapper

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
    "Transfer",
    "TransferReversal",
    "Refund",
    "Dispute",
    "PaymentIncident",
    "TransferIncident",
    "WebhookEvent",
    "MoneyOperation",
)


def setting_name(model: str) -> str:
    """``ESCROW_CONNECT_<MODEL>_MODEL``: the setting that names ``model``."""
    return str(swapper.swappable_setting(APP_LABEL, model))


def model_name(model: str) -> str:
    """The ``app_label.Model`` string a foreign key should point to."""
    return str(swapper.get_model_name(APP_LABEL, model))


def dependency(model: str) -> tuple[str, str]:
    """The migration dependency for ``model`` (its app's first migration), for host migrations."""
    app_label, migration = swapper.dependency(APP_LABEL, model)
    return str(app_label), str(migration)


def load(model: str) -> Any:
    """The model class in use for ``model`` (the host's, if swapped)."""
    return swapper.load_model(APP_LABEL, model)
