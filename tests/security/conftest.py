"""Security suites: the payment suite's simulated Stripe and marketplace, plus
the one person it lacks, an admin of *another* organization.

The fixtures are imported from ``tests/payments/conftest.py`` (not copied):
every test here runs against the same SimulatedGateway, people and helpers.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from tests import factories
from tests.payments.conftest import Marketplace, market, sim_stripe  # noqa: F401 (fixtures)


@pytest.fixture
def other_org_admin(market: Marketplace) -> Any:  # noqa: F811
    """Admin of an organization that is not the payee."""
    admin = factories.make_user("otheradmin")
    factories.make_organization(admins=(admin,))
    return admin


def snapshot() -> dict[str, Any]:
    """Every row a request could change, in a comparable form."""

    def rows(model: str, *fields: str) -> list[tuple[Any, ...]]:
        return list(swappable.load(model).objects.order_by("pk").values_list("pk", *fields))

    return {
        "payments": rows(
            "EscrowPayment",
            "status",
            "amount",
            "currency",
            "amount_refunded",
            "amount_transferred",
            "amount_reversed",
            "amount_released",
            "stripe_payment_intent_id",
            "updated_at",
        ),
        "transfers": rows("Transfer", "status", "amount", "amount_reversed"),
        "milestones": rows("EscrowMilestone", "status", "delivered_at", "released_at"),
        "releases": rows("EscrowRelease", "status", "amount"),
        "refunds": rows("Refund", "status", "amount"),
        "accounts": rows("ConnectedAccount", "stripe_account_id", "status", "updated_at"),
        "events": rows("WebhookEvent", "status"),
        "tips": rows("EscrowTip", "status", "amount", "stripe_payment_intent_id"),
        "tip_transfers": rows("EscrowTipTransfer", "status", "amount"),
    }
