"""The ESCROW_CONNECT settings object: defaults, lazy imports, reload."""

from __future__ import annotations

import pathlib

import pytest
from django.conf import settings
from django.test import override_settings

from django_escrow_connect.conf import DEFAULTS, EscrowSettings, escrow_settings
from django_escrow_connect.fees import default_fee_policy


def test_defaults_apply_to_unset_keys():
    assert escrow_settings.ESCROW_STRATEGY == "separate_charges_and_transfers"
    assert escrow_settings.DEFAULT_CURRENCY == "usd"
    assert escrow_settings.WEBHOOK_TOLERANCE_SECONDS == 300


def test_user_values_override_defaults():
    assert settings.ESCROW_CONNECT["STRIPE_SECRET_KEY"] == escrow_settings.STRIPE_SECRET_KEY


def test_import_strings_are_imported_lazily():
    assert escrow_settings.PLATFORM_FEE_POLICY is default_fee_policy
    assert (
        escrow_settings.raw("PLATFORM_FEE_POLICY")
        == "django_escrow_connect.fees.default_fee_policy"
    )


def test_override_settings_reloads_the_object():
    assert escrow_settings.PLATFORM_FEE_BASIS_POINTS == 1000
    with override_settings(
        ESCROW_CONNECT={**settings.ESCROW_CONNECT, "PLATFORM_FEE_BASIS_POINTS": 250}
    ):
        assert escrow_settings.PLATFORM_FEE_BASIS_POINTS == 250
    assert escrow_settings.PLATFORM_FEE_BASIS_POINTS == 1000


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError):
        escrow_settings.NOT_A_SETTING  # noqa: B018


def test_a_bad_import_string_names_the_setting():
    custom = EscrowSettings({"PLATFORM_FEE_POLICY": "nowhere.nothing"})
    with pytest.raises(ImportError, match="PLATFORM_FEE_POLICY"):
        custom.PLATFORM_FEE_POLICY  # noqa: B018


def test_every_default_is_documented():
    text = (pathlib.Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    missing = [name for name in DEFAULTS if f"`{name}`" not in text]
    assert not missing, f"undocumented settings: {missing}"


def test_every_swappable_model_setting_is_documented():
    from django_escrow_connect.swappable import HOST_MODELS, LIBRARY_MODELS, setting_name

    text = (pathlib.Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    missing = [
        setting_name(model)
        for model in (*HOST_MODELS, *LIBRARY_MODELS)
        if f"`{setting_name(model)}`" not in text
    ]
    assert not missing, f"undocumented model settings: {missing}"
