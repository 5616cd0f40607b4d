"""A failed payout's two events, delivered at the same time, record one incident.

Stripe sends ``payout.updated`` (to ``failed``) and ``payout.failed`` together;
two web workers (or task workers) may process them at once. Without a lock
both saw no incident yet, and each recorded one and sent ``payout_failed``.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import receiver
from tests.reliability.conftest import run_concurrently
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import CONNECT_SECRET

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def receive(evt: dict[str, Any]) -> Any:
    payload = so.encode(evt)
    return receiver.receive(
        WebhookEndpoint.CONNECT, payload, sign_webhook_payload(payload, CONNECT_SECRET)
    )


@pytest.mark.parametrize("iteration", range(3))  # a race proves more when repeated
def test_both_events_of_a_failed_payout_at_once_record_one_incident(
    make_payment: Any, sim_stripe: Any, sent: Any, iteration: int
) -> None:
    scene = make_payment("released", amount_transferred=9_000)
    kit.make_transfer(scene.payment)
    acct = scene.account.stripe_account_id
    payout = so.payout(status="failed", failure_code="account_closed")

    outcomes = run_concurrently(
        lambda: receive(so.event("payout.updated", payout, account=acct)),
        lambda: receive(so.event("payout.failed", payout, account=acct)),
    )

    assert [getattr(o, "status", o) for o in outcomes] == ["processed", "processed"]
    assert swappable.load("TransferIncident").objects.filter(kind="payout_failed").count() == 1
    assert len(sent.of("payout_failed")) == 1
