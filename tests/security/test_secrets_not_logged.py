"""Secrets never reach the logs: the Stripe secret key, the webhook signing
secrets, and the client secrets handed to the browser (PaymentIntent,
AccountSession). A whole payment's life and the onboarding calls run with
every logger at DEBUG; no captured record may contain any of them."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings as django_settings

from tests.payments.conftest import Marketplace


def test_no_secret_in_any_log_record(market: Marketplace, sim_stripe: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    configured = django_settings.ESCROW_CONNECT
    secrets = {
        configured["STRIPE_SECRET_KEY"],
        *configured.get("WEBHOOK_SECRETS", ()),
        *configured.get("CONNECT_WEBHOOK_SECRETS", ()),
    }

    created = market.create(market.task())
    assert created.status_code == 201
    secrets.add(created.json()["client_secret"])
    payment = market.pay(created.json()["payment_id"])
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 200
    refund = market.post(market.doer, "payment-refund", {"amount": 1_000}, payment_id=payment.pk)
    assert refund.status_code == 200, refund.content
    session = market.post(market.doer, "stripe-account-session")
    assert session.status_code == 200, session.content
    secrets.add(session.json()["client_secret"])
    declined = market.create(market.task())
    secrets.add(declined.json()["client_secret"])
    market.pay(declined.json()["payment_id"], card="declined")

    assert caplog.records, "nothing was logged: the test would prove nothing"
    text = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    leaked = sorted(secret for secret in secrets if secret and secret in text)
    assert leaked == []
