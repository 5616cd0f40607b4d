"""DESTINATION_ON_BEHALF_OF: manual-capture destination charges with the doer as
settlement merchant (``on_behalf_of``), which Stripe requires when the doer's
account is in another region than the platform."""

from __future__ import annotations

from typing import Any

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.simulation import SimulatedGateway

from .conftest import configure, money_calls


def intent_of(sim_stripe: Any, response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.content
    payment = swappable.load("EscrowPayment").objects.get(pk=response.json()["payment_id"])
    return sim_stripe.payment_intents[payment.stripe_payment_intent_id]


def move_doer_to(market: Any, country: str) -> str:
    """The doer's account is (onboarded) in ``country`` instead (a full account)."""
    gateway = SimulatedGateway()
    account = gateway.create_account(
        idempotency_key=f"doer-in-{country}",
        country=country,
        email=None,
        business_type="individual",
        metadata={},
    )
    gateway.complete_onboarding(account.id)
    swappable.load("ConnectedAccount").objects.filter(pk=market.doer_account.pk).update(
        stripe_account_id=account.id, country=country
    )
    return account.id


def test_off_by_default(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)

    intent = intent_of(sim_stripe, market.create(market.task()))

    assert intent["on_behalf_of"] is None
    assert intent["transfer_data"]["destination"] == market.doer_account.stripe_account_id


def test_manual_capture_makes_the_doer_the_settlement_merchant(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, DESTINATION_ON_BEHALF_OF=True)

    response = market.create(market.task())
    intent = intent_of(sim_stripe, response)

    doer = market.doer_account.stripe_account_id
    assert intent["on_behalf_of"] == doer
    assert intent["transfer_data"]["destination"] == doer
    (request,) = [kw for name, kw in sim_stripe.calls if name == "create_payment_intent"]
    assert request["on_behalf_of"] == doer
    payment = market.pay(response.json()["payment_id"])
    assert payment.status == "held"
    released = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert released.status_code == 200, released.content
    assert market.payment(payment.pk).status == "released"


def test_a_doer_in_another_region_needs_on_behalf_of(market, sim_stripe, settings):
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE)
    doer = move_doer_to(market, "GB")

    refused = market.create(market.task())

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "provider_error"
    assert "on_behalf_of" in refused.json()["error"]["message"]
    assert sim_stripe.payment_intents == {}

    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, DESTINATION_ON_BEHALF_OF=True)
    response = market.create(market.task())

    assert intent_of(sim_stripe, response)["on_behalf_of"] == doer
    payment = market.pay(response.json()["payment_id"])
    assert market.post(market.customer, "payment-confirm", payment_id=payment.pk).status_code == 200
    assert market.payment(payment.pk).status == "released"


def test_ignored_with_separate_charges_and_transfers(market, sim_stripe, settings):
    configure(
        settings, ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS, DESTINATION_ON_BEHALF_OF=True
    )

    intent = intent_of(sim_stripe, market.create(market.task()))

    assert intent["on_behalf_of"] is None
    assert intent["transfer_data"] is None
    assert "create_transfer" not in money_calls(sim_stripe)
