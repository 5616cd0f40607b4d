"""System checks of ACCOUNTS_API and THIN_WEBHOOK_SECRETS (E070-E073, W070-W071)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from django_escrow_connect.checks import check_deploy_settings, check_gateway, check_settings
from django_escrow_connect.gateway.basegateway import BaseGateway

HERE = __name__


class V1OnlyGateway(BaseGateway):
    """A gateway written before Accounts v2: every v1 method, none of v2's."""

    create_account_v2 = None  # type: ignore[assignment]
    retrieve_account_v2 = None  # type: ignore[assignment]


def settings_with(**changes):
    merged = {**settings.ESCROW_CONNECT, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        merged.pop(key)
    return override_settings(ESCROW_CONNECT=merged)


def ids(errors):
    return [e.id for e in errors]


@pytest.mark.parametrize("value", ["v3", "V2", "", 2])
def test_an_unknown_accounts_api_is_an_error(value):
    with settings_with(ACCOUNTS_API=value):
        found = [e for e in check_settings() if e.id == "escrow_connect.E070"]
    assert len(found) == 1
    assert 'ESCROW_CONNECT["ACCOUNTS_API"]' in found[0].msg


@pytest.mark.parametrize("value", ["v1", "v2"])
def test_both_accounts_apis_pass(value):
    with settings_with(ACCOUNTS_API=value):
        assert "escrow_connect.E070" not in ids(check_settings())


@pytest.mark.parametrize("value", ["whsec_x", ["whsec_x", ""], [None]])
def test_thin_secrets_must_be_a_list_of_strings(value):
    with settings_with(THIN_WEBHOOK_SECRETS=value):
        assert "escrow_connect.E072" in ids(check_settings())


def test_v2_without_a_thin_secret_warns_and_deploy_refuses():
    with settings_with(ACCOUNTS_API="v2", THIN_WEBHOOK_SECRETS=[]):
        assert "escrow_connect.W071" in ids(check_settings())
        assert "escrow_connect.E073" in ids(check_deploy_settings())
    with settings_with(ACCOUNTS_API="v1", THIN_WEBHOOK_SECRETS=[]):
        assert "escrow_connect.W071" not in ids(check_settings())
        assert "escrow_connect.E073" not in ids(check_deploy_settings())


def test_deploy_warns_until_the_accounts_api_is_chosen():
    with settings_with(ACCOUNTS_API=None):
        warned = [e for e in check_deploy_settings() if e.id == "escrow_connect.W070"]
        assert len(warned) == 1
        assert "v2" in warned[0].hint
        assert "escrow_connect.W070" not in ids(check_settings())
    with settings_with(ACCOUNTS_API="v1"):
        assert "escrow_connect.W070" not in ids(check_deploy_settings())


def test_v2_needs_a_gateway_with_the_accounts_v2_methods():
    with settings_with(ACCOUNTS_API="v2", GATEWAY=f"{HERE}.V1OnlyGateway"):
        [error] = [e for e in check_gateway() if e.id == "escrow_connect.E071"]
    assert "create_account_v2" in error.msg
    assert "retrieve_account_v2" in error.msg
    with settings_with(ACCOUNTS_API="v1", GATEWAY=f"{HERE}.V1OnlyGateway"):
        assert "escrow_connect.E071" not in ids(check_gateway())
    with settings_with(ACCOUNTS_API="v2"):
        assert "escrow_connect.E071" not in ids(check_gateway())
