"""BaseGateway: the shared argument checks run before a subclass's hook, and a
hook a subclass does not implement fails clearly."""

from __future__ import annotations

import inspect
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from django_escrow_connect.exceptions import SignatureVerificationFailed
from django_escrow_connect.gateway import BaseGateway, PaymentGateway
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.gateway.stripe_gateway import StripeGateway
from django_escrow_connect.gateway.types import AccountSnapshot


class AccountsOnly(BaseGateway):
    """Implements two hooks and records what they were given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _create_account(self, **kwargs: Any) -> AccountSnapshot:
        self.calls.append(("create_account", kwargs))
        return AccountSnapshot(id="acct_1")

    def _retrieve_account(self, account_id: str) -> AccountSnapshot:
        self.calls.append(("retrieve_account", {"account_id": account_id}))
        return AccountSnapshot(id=account_id)


def create_account(gateway: BaseGateway, **changes: Any) -> AccountSnapshot:
    arguments: dict[str, Any] = {
        "idempotency_key": "escrow-connect:account:1",
        "country": "US",
        "email": None,
        "business_type": None,
        "metadata": {},
        **changes,
    }
    return gateway.create_account(**arguments)


def protocol_methods(cls: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(getattr(cls, name)).parameters)
        for name, member in vars(PaymentGateway).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def test_base_gateway_has_every_protocol_method_with_its_parameters():
    assert protocol_methods(BaseGateway) == protocol_methods(PaymentGateway)
    assert isinstance(AccountsOnly(), PaymentGateway)
    assert issubclass(StripeGateway, BaseGateway)


def test_the_hook_gets_the_checked_arguments():
    gateway = AccountsOnly()
    account = create_account(gateway, capabilities=["transfers", "transfers", "card_payments"])
    assert account.id == "acct_1"
    [(name, received)] = gateway.calls
    assert name == "create_account"
    assert received["capabilities"] == ("transfers", "card_payments")
    assert received["idempotency_key"] == "escrow-connect:account:1"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"idempotency_key": ""}, ValueError),
        ({"idempotency_key": "k" * 256}, ValueError),
        ({"capabilities": "transfers"}, TypeError),
        ({"capabilities": []}, ValueError),
        ({"service_agreement": "partial"}, ValueError),
    ],
)
def test_a_bad_argument_never_reaches_the_hook(changes, error):
    gateway = AccountsOnly()
    with pytest.raises(error):
        create_account(gateway, **changes)
    with pytest.raises(ValueError, match="account_id"):
        gateway.retrieve_account(" ")
    assert gateway.calls == []


def test_an_unimplemented_hook_names_the_gateway_and_the_method():
    gateway = AccountsOnly()
    with pytest.raises(
        NotImplementedError, match=r"^AccountsOnly does not implement create_refund$"
    ):
        gateway.create_refund(
            idempotency_key="escrow-connect:refund:1",
            payment_intent="pi_1",
            amount=None,
            metadata={},
        )
    with pytest.raises(NotImplementedError, match="does not implement list_accounts"):
        gateway.list_accounts(created_gte=datetime.now(timezone.utc))
    with pytest.raises(NotImplementedError, match="does not implement list_payment_intents"):
        gateway.list_payment_intents(customer="cus_1", created_gte=datetime.now(timezone.utc))


def test_webhooks_are_verified_by_the_base_class():
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "account.updated"}).encode()
    header = sign_webhook_payload(payload, "whsec_1")
    gateway = AccountsOnly()
    assert gateway.verify_webhook(payload, header, ["whsec_1"], 300)["id"] == "evt_1"
    with pytest.raises(SignatureVerificationFailed):
        gateway.verify_webhook(payload, header, ["whsec_2"], 300)


def test_a_subclass_checks_each_signature_its_own_way():
    class RefusesEverySignature(AccountsOnly):
        def _webhook_signature_matches(self, payload, header, secret, tolerance):
            return False

    payload = json.dumps({"id": "evt_1", "object": "event", "type": "account.updated"}).encode()
    with pytest.raises(SignatureVerificationFailed):
        RefusesEverySignature().verify_webhook(
            payload, sign_webhook_payload(payload, "whsec_1"), ["whsec_1"], 300
        )
