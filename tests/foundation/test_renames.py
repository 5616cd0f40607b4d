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
