"""The gateway conformance kit, run against the simulated gateway, and shown to fail.

``GatewayConformance`` is what a custom gateway's own suite runs; here it
proves the simulated gateway conforms, and that each kind of broken gateway
fails the kit test about it (so the kit is not a set of tests that cannot
fail).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from django_escrow_connect.gateway.conformance import AccountsV2Conformance, GatewayConformance
from django_escrow_connect.simulation import (
    CARDS,
    EventCollector,
    SimulatedGateway,
    SimulatedStripe,
    set_event_sink,
)


@pytest.fixture(autouse=True)
def collected_events() -> Iterator[EventCollector]:
    collector = EventCollector()
    previous = set_event_sink(collector)
    yield collector
    set_event_sink(previous)


class SimulatedConformance(GatewayConformance):
    gateway_class: type[SimulatedGateway] = SimulatedGateway

    def make_gateway(self) -> SimulatedGateway:
        return self.gateway_class(SimulatedStripe())

    def complete_onboarding(self, gateway: Any, account_id: str) -> None:
        gateway.complete_onboarding(account_id)

    def pay(self, gateway: Any, payment_intent_id: str) -> None:
        gateway.confirm_payment_intent(payment_intent_id, CARDS["success"].number)

    def provider_call_count(self, gateway: Any) -> int:
        return int(gateway.store.call_count())


class TestSimulatedGatewayConforms(SimulatedConformance):
    """Collected by pytest: every kit test against the simulated gateway."""


class TestSimulatedGatewayConformsWithAccountsV2(AccountsV2Conformance):
    """The Accounts v2 kit against the simulated gateway (v1 tests included)."""

    def make_gateway(self) -> SimulatedGateway:
        return SimulatedGateway(SimulatedStripe())

    def complete_onboarding(self, gateway: Any, account_id: str) -> None:
        gateway.complete_onboarding(account_id)

    def pay(self, gateway: Any, payment_intent_id: str) -> None:
        gateway.confirm_payment_intent(payment_intent_id, CARDS["success"].number)

    def provider_call_count(self, gateway: Any) -> int:
        return int(gateway.store.call_count())


def test_a_v1_only_gateway_fails_the_v2_kit_clearly() -> None:
    class V1Only(SimulatedConformance):
        gateway_class = type(
            "V1OnlyGateway",
            (SimulatedGateway,),
            {"create_account_v2": None},
        )

    kit = type("Kit", (AccountsV2Conformance, V1Only), {})()
    with pytest.raises(AssertionError, match="lacks the AccountsV2Gateway methods"):
        kit.test_v2_account_reaches_transfers_after_onboarding()


KIT_TESTS = sorted(name for name in dir(GatewayConformance) if name.startswith("test_"))


def test_the_kit_covers_every_area():
    assert len(KIT_TESTS) >= 12


# --- broken gateways fail the kit -----------------------------------------------------


class InventsIdempotencyKeys(SimulatedGateway):
    """Fills in a blank key instead of refusing it (a retry then pays twice)."""

    def create_payment_intent(self, *, idempotency_key: str, **kwargs: Any) -> Any:
        if not idempotency_key or not str(idempotency_key).strip():
            idempotency_key = uuid.uuid4().hex
        return super().create_payment_intent(idempotency_key=idempotency_key, **kwargs)


class IgnoresIdempotencyKeys(SimulatedGateway):
    """Sends each request with a fresh key: a repeated request creates a second object."""

    def create_payment_intent(self, *, idempotency_key: str, **kwargs: Any) -> Any:
        return super().create_payment_intent(
            idempotency_key=f"{idempotency_key}-{uuid.uuid4().hex}", **kwargs
        )


class ChecksAmountsLate(SimulatedGateway):
    """Sends a request (logged by the simulated Stripe) before refusing the amount."""

    def create_transfer(self, **kwargs: Any) -> Any:
        self.store.calls.append(("create_transfer", {}))
        return super().create_transfer(**kwargs)


class AcceptsBoolAmounts(SimulatedGateway):
    def create_payment_intent(self, *, amount: Any, **kwargs: Any) -> Any:
        return super().create_payment_intent(amount=int(amount), **kwargs)


class ReturnsDicts(SimulatedGateway):
    """Hands back the provider's JSON instead of a snapshot."""

    def retrieve_account(self, account_id: str) -> Any:
        return dataclasses.asdict(super().retrieve_account(account_id))


class LeaksProviderErrors(SimulatedGateway):
    """Lets a provider-specific exception escape instead of a GatewayError."""

    def retrieve_transfer(self, transfer_id: str) -> Any:
        raise KeyError(transfer_id)


class OlderOnboardingSignatures(SimulatedGateway):
    """Written before account links took collection options."""

    def create_account_link(  # type: ignore[override]
        self, *, account_id: str, link_type: Any, refresh_url: str, return_url: str
    ) -> Any:
        return super().create_account_link(
            account_id=account_id,
            link_type=link_type,
            refresh_url=refresh_url,
            return_url=return_url,
        )


class TrustsWebhooks(SimulatedGateway):
    """Parses the body without checking its signature."""

    def verify_webhook(self, payload: bytes, *args: Any) -> Any:
        return json.loads(payload)


@pytest.mark.parametrize(
    ("gateway_class", "kit_test", "complaint"),
    [
        (
            InventsIdempotencyKeys,
            "test_every_idempotent_call_refuses_a_bad_idempotency_key",
            "create_payment_intent(idempotency_key='')",
        ),
        (
            IgnoresIdempotencyKeys,
            "test_create_payment_intent_answers_a_repeated_key_with_the_same_intent",
            "with the same key created",
        ),
        (
            ChecksAmountsLate,
            "test_amounts_must_be_positive_integers_in_minor_units",
            "only after a request reached the provider",
        ),
        (
            AcceptsBoolAmounts,
            "test_amounts_must_be_positive_integers_in_minor_units",
            "create_payment_intent(amount=True)",
        ),
        (
            ReturnsDicts,
            "test_create_account_answers_a_repeated_key_with_the_same_account",
            "retrieve_account returned dict, not AccountSnapshot",
        ),
        (LeaksProviderErrors, "test_a_missing_object_is_resource_missing", "KeyError"),
        (
            OlderOnboardingSignatures,
            "test_onboarding_links_and_sessions",
            "create_account_link(collect=..., future_requirements=...) failed",
        ),
        (
            TrustsWebhooks,
            "test_verify_webhook_accepts_a_signed_event_and_refuses_anything_else",
            "verify_webhook of a tampered body",
        ),
    ],
)
def test_a_broken_gateway_fails_the_kit_test_about_it(gateway_class, kit_test, complaint):
    kit = type("Kit", (SimulatedConformance,), {"gateway_class": gateway_class})()
    with pytest.raises(AssertionError) as failure:
        getattr(kit, kit_test)()
    assert complaint in str(failure.value)
    # The same kit test passes against the unbroken gateway.
    getattr(SimulatedConformance(), kit_test)()


def test_the_kit_asks_for_its_hooks():
    with pytest.raises(NotImplementedError, match="make_gateway"):
        GatewayConformance().gateway  # noqa: B018
