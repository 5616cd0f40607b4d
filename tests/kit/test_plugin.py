"""The host's test kit (django_escrow_connect.pytest_plugin), used as a host would."""

from __future__ import annotations

from typing import Any

import pytest
from django.dispatch import receiver

from django_escrow_connect import signals, swappable
from django_escrow_connect.services.payments import release_payment
from tests import factories

pytestmark = pytest.mark.django_db


def test_the_plugin_defines_only_fixtures_nothing_autouse(request):
    plugin = request.config.pluginmanager.get_plugin("escrow_connect") or (
        request.config.pluginmanager.get_plugin("django_escrow_connect.pytest_plugin")
    )
    assert plugin is not None
    names = [name for name in dir(plugin) if name.startswith("escrow_")]
    assert names
    # A test that asks for no fixture of the kit gets none (nothing autouse),
    # and the plugin has no hook that could act on its own.
    assert not [name for name in request.fixturenames if name.startswith("escrow_")]
    assert not [name for name in dir(plugin) if name.startswith("pytest_")]


def test_escrow_stripe_switches_the_gateway_and_starts_empty(escrow_stripe, settings):
    from django_escrow_connect.conf import escrow_settings
    from django_escrow_connect.gateway import get_gateway
    from django_escrow_connect.simulation import SimulatedGateway

    assert isinstance(get_gateway(), SimulatedGateway)
    assert escrow_stripe.store.accounts == {}
    assert escrow_settings.WEBHOOK_SECRETS


def test_onboarded_account_is_verified_through_the_webhook(escrow_onboarded_account):
    doer = factories.make_user("doer")
    account = escrow_onboarded_account(owner_user=doer)
    assert account.status == "verified"
    assert account.can_transfer
    # The row was brought up to date by the account.updated webhook.
    events = swappable.load("WebhookEvent").objects.filter(type="account.updated")
    assert events.filter(status="processed", account=account.stripe_account_id).exists()


def test_onboarded_account_of_an_organization(escrow_onboarded_account):
    admin = factories.make_user("admin")
    org = factories.make_organization(admins=(admin,))
    account = escrow_onboarded_account(owner_organization=org)
    assert (account.owner_organization_id, account.business_type) == (org.pk, "company")
    assert account.can_transfer


def test_held_payment_release_signal_and_balanced_books(
    escrow_stripe, escrow_onboarded_account, escrow_held_payment, escrow_books_balanced
):
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    escrow_onboarded_account(owner_user=doer)
    task = factories.make_task(customer, payee_user=doer, amount=12_000)
    payment = escrow_held_payment(task, customer)
    assert (payment.status, payment.amount) == ("held", 12_000)

    released: list[Any] = []

    @receiver(signals.payment_released, weak=False)
    def on_released(sender: Any, payment: Any, **kwargs: Any) -> None:
        released.append(payment.pk)

    try:
        with escrow_stripe.events():
            release_payment(payment.pk, customer)
    finally:
        signals.payment_released.disconnect(on_released)

    payment.refresh_from_db()
    assert payment.status == "released"
    assert released == [payment.pk]
    assert escrow_books_balanced(allow_unsettled=True).divergences == []


def test_books_balanced_fails_when_the_rows_disagree_with_stripe(
    escrow_onboarded_account, escrow_held_payment, escrow_books_balanced
):
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    escrow_onboarded_account(owner_user=doer)
    payment = escrow_held_payment(factories.make_task(customer, payee_user=doer), customer)
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(amount_refunded=500)
    with pytest.raises(AssertionError, match="do not balance"):
        escrow_books_balanced(allow_unsettled=True)


def test_a_declined_card_is_reported_by_the_held_payment_factory(
    escrow_onboarded_account, escrow_held_payment
):
    customer, doer = factories.make_user("customer"), factories.make_user("doer")
    escrow_onboarded_account(owner_user=doer)
    with pytest.raises(AssertionError, match="not held"):
        escrow_held_payment(
            factories.make_task(customer, payee_user=doer), customer, card="declined"
        )


def test_deliver_hands_a_signed_event_to_the_receiver(escrow_deliver, escrow_onboarded_account):
    doer = factories.make_user("doer")
    account = escrow_onboarded_account(owner_user=doer)
    answer = escrow_deliver(
        {
            "id": "evt_kit_deauthorized",
            "object": "event",
            "type": "account.application.deauthorized",
            "account": account.stripe_account_id,
            "api_version": "2026-10-28.endive",
            "created": 2_000_000_000,
            "livemode": False,
            "data": {"object": {"id": "ca_kit", "object": "application"}},
        }
    )
    assert answer.status_code == 200
    account.refresh_from_db()
    assert account.status == "deauthorized"


def test_the_receiver_refusing_a_simulated_event_fails_the_test(
    escrow_stripe, escrow_onboarded_account, settings
):
    doer = factories.make_user("doer")
    account = escrow_onboarded_account(owner_user=doer)
    # The receiver now refuses every body as too large: Stripe's next event bounces.
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "WEBHOOK_MAX_BODY_BYTES": 10}
    with escrow_stripe.events():
        escrow_stripe.gateway.require_information(account.stripe_account_id)
    # What the fixture checks at teardown.
    assert escrow_stripe.undelivered
    escrow_stripe.store.undelivered.clear()
