"""The configured gateway is checked against PaymentGateway at startup.

A custom gateway written for an older release (before ``list_accounts``, say)
is reported by ``manage.py check``, naming what it lacks, instead of failing
at the first call that needs it.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.test import override_settings

from django_escrow_connect.checks import check_gateway
from django_escrow_connect.gateway import BaseGateway
from django_escrow_connect.simulation import SimulatedGateway

HERE = __name__


class OldGateway(SimulatedGateway):
    """Written before list_accounts existed; create_login_link lost a parameter."""

    list_accounts = None  # type: ignore[assignment]

    def create_login_link(self) -> None:  # type: ignore[override]
        raise AssertionError("never called by the check")


class PartialGateway(BaseGateway):
    """Implements accounts only; every other method is BaseGateway's."""

    def _retrieve_account(self, account_id):
        raise AssertionError("never called by the check")

    def list_accounts(self, *, created_gte: datetime, **kwargs):
        raise AssertionError("never called by the check")


class NotAGateway:
    pass


def _check_with(gateway_path):
    with override_settings(ESCROW_CONNECT={**settings.ESCROW_CONNECT, "GATEWAY": gateway_path}):
        return check_gateway()


def test_the_package_gateways_pass():
    assert check_gateway() == []
    assert _check_with("django_escrow_connect.gateway.stripe_gateway.StripeGateway") == []
    assert _check_with("django_escrow_connect.simulation.SimulatedGateway") == []


def test_a_gateway_without_a_protocol_method_is_an_error_naming_it():
    errors = _check_with(f"{HERE}.OldGateway")
    missing = [e for e in errors if e.id == "escrow_connect.E041"]
    assert len(missing) == 1
    assert 'ESCROW_CONNECT["GATEWAY"]' in missing[0].msg
    assert "OldGateway" in missing[0].msg
    assert missing[0].msg.endswith("lacks methods of PaymentGateway: list_accounts.")
    assert "BaseGateway" in missing[0].hint


def test_a_method_missing_a_protocol_parameter_is_an_error_naming_it():
    errors = _check_with(f"{HERE}.OldGateway")
    [signature] = [e for e in errors if e.id == "escrow_connect.E042"]
    assert ".create_login_link does not accept the parameters account_id" in signature.msg


def test_an_unrelated_class_lacks_every_method():
    [error] = _check_with(f"{HERE}.NotAGateway")
    assert error.id == "escrow_connect.E041"
    for name in ("create_account", "list_accounts", "create_refund", "verify_webhook"):
        assert name in error.msg


def test_methods_left_to_base_gateway_are_a_warning_naming_them():
    errors = _check_with(f"{HERE}.PartialGateway")
    assert [e.id for e in errors] == ["escrow_connect.W042"]
    message = errors[0].msg
    assert "create_account," in message
    assert "verify_webhook" not in message  # BaseGateway verifies webhooks itself
    assert "retrieve_account" not in message  # its hook is implemented
    assert "list_accounts" not in message  # the public method is overridden (**kwargs)


def test_an_unimportable_gateway_is_left_to_the_import_check():
    assert _check_with(f"{HERE}.Missing") == []
