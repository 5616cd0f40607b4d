"""Deprecated: the simulated Stripe moved to :mod:`django_escrow_connect.simulation`.

This module re-exports its names so existing imports and the old
``ESCROW_CONNECT["GATEWAY"]`` path
(``"django_escrow_connect.gateway.simulated.SimulatedGateway"``) keep
working; import from ``django_escrow_connect.simulation`` instead.
"""

from __future__ import annotations

import warnings

from ..simulation import *  # noqa: F403 - the whole public surface, re-exported
from ..simulation import __all__ as __all__
from ..simulation.objects import new_id  # noqa: F401
from ..simulation.rules import (  # noqa: F401 - names the old module also had
    ACCOUNT_LINK_TTL_SECONDS,
    ACCOUNT_SESSION_TTL_SECONDS,
    AUTHORIZATION_VALIDITY_SECONDS,
    DISPUTE_EVIDENCE_SECONDS,
    IDEMPOTENCY_KEY_TTL_SECONDS,
    MAX_AMOUNT,
    MINIMUM_CHARGE,
    SETTLEMENT_DELAY_SECONDS,
)
from ..simulation.store import IdempotencyRecord, InjectedFailure, StoredError  # noqa: F401

warnings.warn(
    "django_escrow_connect.gateway.simulated is deprecated; use django_escrow_connect.simulation",
    DeprecationWarning,
    stacklevel=2,
)
