"""Names renamed for clarity keep working for one release, with a warning."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("django_escrow_connect.exceptions", "AuthenticationFailed", "GatewayAuthenticationFailed"),
        ("django_escrow_connect.exceptions", "PermissionDenied", "GatewayPermissionDenied"),
    ],
)
def test_an_old_name_warns_and_is_the_new_one(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=new):
        value = getattr(mod, old)
    assert value is getattr(mod, new)
    assert old not in mod.__all__


def test_an_unknown_name_is_still_an_attribute_error():
    mod = importlib.import_module("django_escrow_connect.exceptions")
    with pytest.raises(AttributeError):
        mod.NoSuchThing  # noqa: B018


def test_the_old_stripe_gateway_module_warns_and_gives_the_same_class():
    import sys

    from django_escrow_connect.gateway.stripe_gateway import StripeGateway

    sys.modules.pop("django_escrow_connect.gateway.stripe", None)
    with pytest.warns(DeprecationWarning, match="stripe_gateway"):
        old = importlib.import_module("django_escrow_connect.gateway.stripe")
    assert old.StripeGateway is StripeGateway


def test_the_gateway_business_type_has_one_name_and_the_stored_values():
    import typing

    from django_escrow_connect.gateway.types import AccountBusinessType
    from django_escrow_connect.states import BusinessType

    assert set(typing.get_args(AccountBusinessType)) == set(BusinessType.values)
    mod = importlib.import_module("django_escrow_connect.gateway.types")
    with pytest.warns(DeprecationWarning, match="AccountBusinessType"):
        assert mod.BusinessType is AccountBusinessType
