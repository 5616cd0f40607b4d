"""Misconfiguration is reported by Django's system checks, naming the exact
setting to fix."""

from __future__ import annotations

import django
import pytest
from django.conf import settings
from django.core.checks import Error, run_checks
from django.test import override_settings

from django_escrow_connect.checks import (
    check_deploy_settings,
    check_host_models,
    check_settings,
)
from django_escrow_connect.conf import DEFAULTS, IMPORT_STRINGS, STRIPE_API_VERSION
from django_escrow_connect.money import InvalidAmount, validate_charge_amount


def settings_with(**changes):
    merged = {**settings.ESCROW_CONNECT, **changes}
    for key, value in list(merged.items()):
        if value is _DELETE:
            del merged[key]
    return override_settings(ESCROW_CONNECT=merged)


_DELETE = object()


def messages(errors):
    return [e.msg + " " + (e.hint or "") for e in errors]


def ids(errors):
    return {e.id for e in errors}


def test_the_test_settings_pass():
    assert check_settings() == []
    assert check_host_models() == []


@pytest.mark.parametrize(
    ("changes", "expected_id", "named"),
    [
        (
            {"STRIPE_SECRET_KEY": _DELETE},
            "escrow_connect.E012",
            'ESCROW_CONNECT["STRIPE_SECRET_KEY"]',
        ),
        (
            {"STRIPE_SECRET_KEY": "pk_test_oops"},
            "escrow_connect.E013",
            'ESCROW_CONNECT["STRIPE_SECRET_KEY"]',
        ),
        (
            {"STRIPE_PUBLISHABLE_KEY": "sk_test_oops"},
            "escrow_connect.E014",
            "STRIPE_PUBLISHABLE_KEY",
        ),
        ({"STRIPE_SECRET_KEY": "sk_live_x"}, "escrow_connect.E015", "STRIPE_PUBLISHABLE_KEY"),
        (
            {"WEBHOOK_SECRETS": "whsec_single"},
            "escrow_connect.E020",
            'ESCROW_CONNECT["WEBHOOK_SECRETS"]',
        ),
        (
            {"CONNECT_WEBHOOK_SECRETS": []},
            "escrow_connect.W021",
            'ESCROW_CONNECT["CONNECT_WEBHOOK_SECRETS"]',
        ),
        ({"WEBHOOK_SECRETS": [""]}, "escrow_connect.E022", "WEBHOOK_SECRETS"),
        ({"WEBHOOK_TOLERANCE_SECONDS": 0}, "escrow_connect.E023", "WEBHOOK_TOLERANCE_SECONDS"),
        ({"WEBHOOK_PROCESSING": "celery"}, "escrow_connect.E024", "WEBHOOK_PROCESSING"),
        (
            {"WEBHOOK_API_VERSION": "2024-06-20"},
            "escrow_connect.W025",
            'ESCROW_CONNECT["WEBHOOK_API_VERSION"]',
        ),
        ({"WEBHOOK_API_VERSION": 20241028}, "escrow_connect.E026", "WEBHOOK_API_VERSION"),
        ({"ESCROW_STRATEGY": "escrow"}, "escrow_connect.E030", "ESCROW_STRATEGY"),
        ({"FUND_NEXT_MILESTONE": "later"}, "escrow_connect.E100", "FUND_NEXT_MILESTONE"),
        ({"PLATFORM_FEE_BASIS_POINTS": 10.5}, "escrow_connect.E031", "PLATFORM_FEE_BASIS_POINTS"),
        ({"PLATFORM_FEE_BASIS_POINTS": 20000}, "escrow_connect.E031", "PLATFORM_FEE_BASIS_POINTS"),
        ({"PLATFORM_FEE_FIXED": {"usd": -1}}, "escrow_connect.E032", "PLATFORM_FEE_FIXED"),
        # Off the step Stripe takes: the default fee is rounded down past them.
        ({"PLATFORM_FEE_FIXED": {"ISK": 50}}, "escrow_connect.W032", "isk (50: ISK amounts"),
        ({"PLATFORM_FEE_FIXED": {"kwd": 5}}, "escrow_connect.W032", "kwd (5: KWD amounts"),
        ({"DEFAULT_CURRENCY": "dollars"}, "escrow_connect.E033", "DEFAULT_CURRENCY"),
        ({"AUTO_RELEASE_AFTER_DAYS": 0}, "escrow_connect.E034", "AUTO_RELEASE_AFTER_DAYS"),
        ({"CAPTURE_EXPIRY_ACTION": "pray"}, "escrow_connect.E035", "CAPTURE_EXPIRY_ACTION"),
        (
            {"WEBHOOK_PAYLOAD_RETENTION_DAYS": 0},
            "escrow_connect.E036",
            "WEBHOOK_PAYLOAD_RETENTION_DAYS",
        ),
        (
            {"WEBHOOK_PAYLOAD_RETENTION_DAYS": None},
            "escrow_connect.E036",
            "WEBHOOK_PAYLOAD_RETENTION_DAYS",
        ),
        ({"WEBHOOK_PAYLOAD_RETENTION_DAYS": 2.5}, "escrow_connect.E036", "whole number of days"),
        ({"IDEMPOTENCY_KEY_PREFIX": "a:b"}, "escrow_connect.E038", "IDEMPOTENCY_KEY_PREFIX"),
        ({"IDEMPOTENCY_KEY_PREFIX": ""}, "escrow_connect.E038", "IDEMPOTENCY_KEY_PREFIX"),
        ({"IDEMPOTENCY_KEY_PREFIX": "x" * 41}, "escrow_connect.E038", "IDEMPOTENCY_KEY_PREFIX"),
        (
            {"PLATFORM_FEE_POLICY": "nowhere.fee"},
            "escrow_connect.E040",
            'ESCROW_CONNECT["PLATFORM_FEE_POLICY"]',
        ),
        ({"DESTINATION_ON_BEHALF_OF": "yes"}, "escrow_connect.E039", "DESTINATION_ON_BEHALF_OF"),
        ({"DESTINATION_ON_BEHALF_OF": 1}, "escrow_connect.E039", "DESTINATION_ON_BEHALF_OF"),
        (
            {"DESTINATION_ON_BEHALF_OF": True},
            "escrow_connect.W039",
            "DESTINATION_ON_BEHALF_OF",
        ),
        ({"STRIPE_SECRETKEY": "typo"}, "escrow_connect.W010", "STRIPE_SECRETKEY"),
        ({"TIP_MAX_AMOUNT": 500}, "escrow_connect.E060", "TIP_MAX_AMOUNT"),
        ({"TIP_MAX_AMOUNT": {"USD": 500}}, "escrow_connect.E060", "TIP_MAX_AMOUNT"),
        ({"TIP_MAX_AMOUNT": {"usd": 0}}, "escrow_connect.E060", "TIP_MAX_AMOUNT"),
        ({"TIP_MAX_AMOUNT": {"usd": 5.0}}, "escrow_connect.E060", "TIP_MAX_AMOUNT"),
        ({"TIP_MAX_AMOUNT": {"usd": True}}, "escrow_connect.E060", "TIP_MAX_AMOUNT"),
        # Above Stripe's largest charge (8 digits of minor units).
        ({"TIP_MAX_AMOUNT": {"usd": 100_000_000}}, "escrow_connect.E060", "usd"),
        # Twelve digits in IDR.
        ({"TIP_MAX_AMOUNT": {"idr": 10**12}}, "escrow_connect.E060", "idr (at most 999999999999)"),
        # A tip must be on the step: the part of the bound off it is never allowed.
        ({"TIP_MAX_AMOUNT": {"isk": 1_050}}, "escrow_connect.W060", "isk (1050: ISK amounts"),
        ({"TIP_MAX_AMOUNT": {"kwd": 5_005}}, "escrow_connect.W060", "kwd (5005: KWD amounts"),
        ({"TIP_FEE": "nowhere.fee"}, "escrow_connect.E040", 'ESCROW_CONNECT["TIP_FEE"]'),
        ({"MIN_CHARGE_AMOUNTS": 70}, "escrow_connect.E063", "MIN_CHARGE_AMOUNTS"),
        ({"MIN_CHARGE_AMOUNTS": {"USD": 70}}, "escrow_connect.E063", "MIN_CHARGE_AMOUNTS"),
        ({"MIN_CHARGE_AMOUNTS": {"usd": 0}}, "escrow_connect.E063", "MIN_CHARGE_AMOUNTS"),
        ({"MIN_CHARGE_AMOUNTS": {"usd": 70.0}}, "escrow_connect.E063", "MIN_CHARGE_AMOUNTS"),
        ({"MIN_CHARGE_AMOUNTS": {"usd": True}}, "escrow_connect.E063", "MIN_CHARGE_AMOUNTS"),
        # Above Stripe's largest charge: every price and tip would be refused.
        ({"MIN_CHARGE_AMOUNTS": {"usd": 10**8}}, "escrow_connect.E063", "MIN_CHARGE_AMOUNTS"),
        # Every dotted-path setting, the hooks added after the first ones too.
        (
            {"REVERSAL_POLICY": "nowhere.policy"},
            "escrow_connect.E040",
            'ESCROW_CONNECT["REVERSAL_POLICY"]',
        ),
        (
            {"RECIPIENT_LANGUAGE": "nowhere.language"},
            "escrow_connect.E040",
            'ESCROW_CONNECT["RECIPIENT_LANGUAGE"]',
        ),
        (
            {"SIMULATED_EVENT_RECEIVER": "nowhere.receive"},
            "escrow_connect.E040",
            'ESCROW_CONNECT["SIMULATED_EVENT_RECEIVER"]',
        ),
        # A module that fails on import otherwise is reported too, not a traceback.
        (
            {"REVERSAL_POLICY": "tests.foundation.hook_that_raises.policy"},
            "escrow_connect.E040",
            "ImproperlyConfigured: this hook needs a setting of its own",
        ),
        ({"TIP_FEE": 5}, "escrow_connect.E061", "TIP_FEE"),
        # Read only where used: a Stripe call failing as if Stripe were
        # down, a 500, a traceback in a command, or a silently wrong value.
        ({"STRIPE_API_BASE": "localhost:12111"}, "escrow_connect.E016", "STRIPE_API_BASE"),
        ({"STRIPE_API_BASE": 12111}, "escrow_connect.E016", "STRIPE_API_BASE"),
        ({"STRIPE_API_BASE": "http://localhost:port"}, "escrow_connect.E016", "STRIPE_API_BASE"),
        # The client adds /v1 itself: every request would go to /v1/v1/...
        (
            {"STRIPE_API_BASE": "https://api.stripe.com/v1/"},
            "escrow_connect.E016",
            'Write "https://api.stripe.com" instead',
        ),
        ({"STRIPE_MAX_NETWORK_RETRIES": -1}, "escrow_connect.E017", "STRIPE_MAX_NETWORK_RETRIES"),
        ({"STRIPE_MAX_NETWORK_RETRIES": "2"}, "escrow_connect.E017", "STRIPE_MAX_NETWORK_RETRIES"),
        ({"STRIPE_MAX_NETWORK_RETRIES": True}, "escrow_connect.E017", "STRIPE_MAX_NETWORK_RETRIES"),
        ({"STRIPE_TIMEOUT": None}, "escrow_connect.E018", 'ESCROW_CONNECT["STRIPE_TIMEOUT"]'),
        ({"STRIPE_TIMEOUT": 0}, "escrow_connect.E018", "STRIPE_TIMEOUT"),
        ({"STRIPE_TIMEOUT": "30"}, "escrow_connect.E018", "STRIPE_TIMEOUT"),
        ({"STRIPE_TIMEOUT": [5, 30]}, "escrow_connect.E018", "STRIPE_TIMEOUT"),
        ({"STRIPE_TIMEOUT": (5, 0)}, "escrow_connect.E018", "STRIPE_TIMEOUT"),
        (
            {"MONEY_OPERATION_LEASE_SECONDS": -5},
            "escrow_connect.E019",
            'ESCROW_CONNECT["MONEY_OPERATION_LEASE_SECONDS"]',
        ),
        ({"MONEY_OPERATION_LEASE_SECONDS": "60"}, "escrow_connect.E019", "LEASE_SECONDS"),
        ({"MONEY_OPERATION_LEASE_SECONDS": True}, "escrow_connect.E019", "LEASE_SECONDS"),
        ({"WEBHOOK_MAX_BODY_BYTES": "512"}, "escrow_connect.E027", "WEBHOOK_MAX_BODY_BYTES"),
        ({"WEBHOOK_MAX_BODY_BYTES": 0}, "escrow_connect.E027", "WEBHOOK_MAX_BODY_BYTES"),
        ({"WEBHOOK_MAX_BODY_BYTES": 1.5}, "escrow_connect.E027", "WEBHOOK_MAX_BODY_BYTES"),
        (
            {"CAPTURE_EXPIRY_WARNING_HOURS": "48"},
            "escrow_connect.E101",
            'ESCROW_CONNECT["CAPTURE_EXPIRY_WARNING_HOURS"]',
        ),
        ({"CAPTURE_EXPIRY_WARNING_HOURS": 0}, "escrow_connect.E101", "WARNING_HOURS"),
        ({"CAPTURE_EXPIRY_WARNING_HOURS": True}, "escrow_connect.E101", "WARNING_HOURS"),
        # A card authorisation lasts 7 days: every hold would be about to lapse.
        ({"CAPTURE_EXPIRY_WARNING_HOURS": 168}, "escrow_connect.E101", "under 168 hours"),
        ({"CAPTURE_EXPIRY_WARNING_HOURS": 24 * 30}, "escrow_connect.E101", "under 168 hours"),
        ({"STUCK_PAYMENT_HOURS": "72"}, "escrow_connect.E102", "STUCK_PAYMENT_HOURS"),
        ({"STUCK_PAYMENT_HOURS": 0}, "escrow_connect.E102", "STUCK_PAYMENT_HOURS"),
        ({"STUCK_PAYMENT_HOURS": 0.5}, "escrow_connect.E102", "STUCK_PAYMENT_HOURS"),
        # No date is that long ago: the command's arithmetic overflowed.
        ({"STUCK_PAYMENT_HOURS": 10**12}, "escrow_connect.E102", "STUCK_PAYMENT_HOURS"),
        ({"AUTO_RELEASE_AFTER_DAYS": 10**10}, "escrow_connect.E034", "AUTO_RELEASE_AFTER_DAYS"),
        # Read as truth values: "False" would turn them on.
        ({"SAVE_PAYMENT_METHODS": "False"}, "escrow_connect.E062", "SAVE_PAYMENT_METHODS"),
        ({"SAVE_PAYMENT_METHODS": 1}, "escrow_connect.E062", "SAVE_PAYMENT_METHODS"),
        ({"OPENTELEMETRY": "false"}, "escrow_connect.E050", 'ESCROW_CONNECT["OPENTELEMETRY"]'),
        ({"DEFAULT_ACCOUNT_COUNTRY": "USA"}, "escrow_connect.E085", "DEFAULT_ACCOUNT_COUNTRY"),
        ({"DEFAULT_ACCOUNT_COUNTRY": ""}, "escrow_connect.E085", "DEFAULT_ACCOUNT_COUNTRY"),
        ({"DEFAULT_ACCOUNT_COUNTRY": None}, "escrow_connect.E085", "DEFAULT_ACCOUNT_COUNTRY"),
    ],
)
def test_misconfiguration_names_the_setting(changes, expected_id, named):
    with settings_with(**changes):
        errors = check_settings()
    matching = [e for e in errors if e.id == expected_id]
    assert matching, f"expected {expected_id}, got {ids(errors)}"
    assert any(named in m for m in messages(matching))


@pytest.mark.parametrize(
    "changes",
    [
        # Values the package's own settings, tests and example use.
        {"STRIPE_API_BASE": None},
        {"STRIPE_API_BASE": ""},
        {"STRIPE_API_BASE": "http://127.0.0.1:12111/"},
        {"STRIPE_API_BASE": "https://proxy.example/stripe"},  # the client's paths follow it
        {"STRIPE_MAX_NETWORK_RETRIES": 0},
        {"STRIPE_TIMEOUT": 0.3},
        {"STRIPE_TIMEOUT": (3.05, 27)},  # requests' (connect, read)
        {"MONEY_OPERATION_LEASE_SECONDS": 0},
        {"MONEY_OPERATION_LEASE_SECONDS": 90.5},
        {"WEBHOOK_MAX_BODY_BYTES": 10},
        {"CAPTURE_EXPIRY_WARNING_HOURS": 1.5},
        {"CAPTURE_EXPIRY_WARNING_HOURS": 167.5},
        {"STUCK_PAYMENT_HOURS": 24},
        {"SAVE_PAYMENT_METHODS": True},
        {"MIN_CHARGE_AMOUNTS": {"usd": 70, "huf": 20_000, "idr": 999_999_999_999}},
        {"DEFAULT_ACCOUNT_COUNTRY": "fr"},  # upper-cased where used
        {"ONBOARDING_RETURN_URL": "http://127.0.0.1:8000/onboarding/return/?via=stripe"},
        {"ONBOARDING_REFRESH_URL": None},  # as "": the package's own page
        {"OPENTELEMETRY": False},
    ],
)
def test_values_that_work_pass(changes):
    with settings_with(**changes):
        assert check_settings() == []


def test_a_malformed_value_of_every_key_is_reported():
    """settings.md: a malformed value of any key is reported by ``manage.py
    check``, naming the key; a dotted path by E040, every other key by its own
    check. A value no key accepts stands in for any malformed one."""
    unchecked = []
    for name in sorted(set(DEFAULTS) - IMPORT_STRINGS):
        with settings_with(**{name: object()}):
            errors = [e for e in check_settings() if e.is_serious()]
        if not any(f'ESCROW_CONNECT["{name}"]' in m for m in messages(errors)):
            unchecked.append(name)
    assert unchecked == []


@pytest.mark.parametrize("version", ["", STRIPE_API_VERSION])
def test_webhook_api_version_of_the_package_is_not_warned_about(version):
    with settings_with(WEBHOOK_API_VERSION=version):
        found = ids(check_settings())
    assert "escrow_connect.W025" not in found
    assert "escrow_connect.E026" not in found


@pytest.mark.parametrize(
    "simulated",
    [
        "django_escrow_connect.simulation.SimulatedGateway",
        # The path it had before it moved, still recognised.
        "django_escrow_connect.gateway.simulated.SimulatedGateway",
    ],
)
def test_simulated_gateway_is_refused_when_debug_is_off(simulated, monkeypatch):
    from django.core import mail

    # Outside a test run (no test environment, so no mail outbox): production.
    monkeypatch.delattr(mail, "outbox")
    with settings_with(GATEWAY=simulated), override_settings(DEBUG=False):
        assert "escrow_connect.E011" in ids(check_settings())
    with settings_with(GATEWAY=simulated), override_settings(DEBUG=True):
        assert "escrow_connect.E011" not in ids(check_settings())


def test_simulated_gateway_is_allowed_in_tests_with_debug_off():
    # pytest-django (like Django's test runner) set up the test environment.
    simulated = "django_escrow_connect.gateway.simulated.SimulatedGateway"
    with settings_with(GATEWAY=simulated), override_settings(DEBUG=False):
        assert "escrow_connect.E011" not in ids(check_settings())


def test_missing_task_model_setting_names_it():
    with override_settings(ESCROW_CONNECT_TASK_MODEL="escrow_connect.Task"):
        errors = check_host_models()
    assert [e.id for e in errors] == ["escrow_connect.E001"]
    assert "ESCROW_CONNECT_TASK_MODEL" in errors[0].msg
    assert isinstance(errors[0], Error)


@pytest.mark.parametrize("value", ["nowhere.Task", "not-a-label"])
def test_invalid_task_model_names_the_setting(value):
    with override_settings(ESCROW_CONNECT_TASK_MODEL=value):
        errors = check_host_models()
    assert [e.id for e in errors] == ["escrow_connect.E002"]
    assert "ESCROW_CONNECT_TASK_MODEL" in errors[0].msg


def test_invalid_organization_model_names_the_setting():
    with override_settings(ESCROW_CONNECT_ORGANIZATION_MODEL="nowhere.Org"):
        errors = check_host_models()
    assert [e.id for e in errors] == ["escrow_connect.E003"]
    assert "ESCROW_CONNECT_ORGANIZATION_MODEL" in errors[0].msg


def test_a_task_model_without_the_mixin_is_warned_about():
    with override_settings(ESCROW_CONNECT_TASK_MODEL=settings.AUTH_USER_MODEL):
        errors = check_host_models()
    assert [e.id for e in errors] == ["escrow_connect.W002"]


DJANGO_61 = django.VERSION >= (6, 1)


@pytest.mark.parametrize(
    ("mailer", "valid"),
    [
        (None, True),
        ("escrow", DJANGO_61),  # defined in tests/settings.py on Django 6.1+
        ("nowhere", False),
        ("", False),
        (["escrow"], False),
    ],
)
def test_email_mailer_must_name_a_mailers_alias(mailer, valid):
    with settings_with(EMAIL_MAILER=mailer):
        errors = [e for e in check_settings() if e.id == "escrow_connect.E037"]
    assert (errors == []) is valid
    if not valid:
        assert 'ESCROW_CONNECT["EMAIL_MAILER"]' in messages(errors)[0]


@pytest.mark.parametrize("prefix", ["escrow-connect", "staging", "acme.prod_2", "x" * 40])
def test_a_valid_idempotency_key_prefix_passes(prefix):
    with settings_with(IDEMPOTENCY_KEY_PREFIX=prefix):
        assert "escrow_connect.E038" not in ids(check_settings())


def test_first_install_without_webhook_secrets_only_warns():
    """settings.md: an empty secret list refuses that endpoint's events; a first
    install can still migrate (a warning), and ``check --deploy`` makes it an error."""
    from django.core.checks import Warning as CheckWarning

    with settings_with(WEBHOOK_SECRETS=[], CONNECT_WEBHOOK_SECRETS=[]):
        found = check_settings()
        deploy = check_deploy_settings()
    empty = [e for e in found if e.id == "escrow_connect.W021"]
    assert len(empty) == 2
    assert all(isinstance(e, CheckWarning) for e in empty)
    assert not [e for e in found if e.is_serious()]
    assert sorted(e.id for e in deploy if e.is_serious()) == ["escrow_connect.E021"] * 2


def test_empty_onboarding_urls_are_the_documented_default_not_a_warning():
    """settings.md: empty means the package's own pages; only ``--deploy`` mentions it."""
    with settings_with(ONBOARDING_RETURN_URL="", ONBOARDING_REFRESH_URL=""):
        assert "escrow_connect.W036" not in ids(check_settings())
        deploy = check_deploy_settings()
    w036 = [e for e in deploy if e.id == "escrow_connect.W036"]
    assert {m.split()[0] for m in messages(w036)} == {
        'ESCROW_CONNECT["ONBOARDING_RETURN_URL"]',
        'ESCROW_CONNECT["ONBOARDING_REFRESH_URL"]',
    }


def test_deploy_check_runs_only_with_deploy(capsys):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with settings_with(WEBHOOK_SECRETS=[]):
        call_command("check")  # a warning does not stop a first install
        with pytest.raises(SystemCheckError, match="E021"):
            call_command("check", "--deploy")


@pytest.mark.parametrize(
    "changes",
    [
        {"DESTINATION_ON_BEHALF_OF": False},
        {"DESTINATION_ON_BEHALF_OF": True, "ESCROW_STRATEGY": "manual_capture"},
    ],
)
def test_destination_on_behalf_of_with_manual_capture_passes(changes):
    with settings_with(**changes):
        found = ids(check_settings())
    assert "escrow_connect.E039" not in found
    assert "escrow_connect.W039" not in found


# --- embedded components and onboarding collection (E080-E084, W080) ----------


@pytest.mark.parametrize(
    ("changes", "expected_id", "named"),
    [
        ({"EMBEDDED_COMPONENTS": "payouts"}, "escrow_connect.E080", "EMBEDDED_COMPONENTS"),
        ({"EMBEDDED_COMPONENTS": ["payouts", "wallet"]}, "escrow_connect.E080", "wallet"),
        ({"EMBEDDED_COMPONENTS": ["payments"]}, "escrow_connect.E081", "payments"),
        (
            {"EMBEDDED_COMPONENTS": ["disputes_list"], "ESCROW_STRATEGY": "manual_capture"},
            "escrow_connect.E081",
            "DESTINATION_ON_BEHALF_OF",
        ),
        ({"EMBEDDED_COMPONENT_FEATURES": []}, "escrow_connect.E082", "EMBEDDED_COMPONENT_FEATURES"),
        (
            {"EMBEDDED_COMPONENT_FEATURES": {"wallet": {}}},
            "escrow_connect.E082",
            "'wallet'",
        ),
        (
            {"EMBEDDED_COMPONENT_FEATURES": {"payouts": {"instant_payouts": "yes"}}},
            "escrow_connect.E082",
            "True or False",
        ),
        (
            {"EMBEDDED_COMPONENT_FEATURES": {"documents": {"instant_payouts": False}}},
            "escrow_connect.E082",
            "instant_payouts",
        ),
        (
            {"EMBEDDED_COMPONENT_FEATURES": {"payments": {"refund_management": True}}},
            "escrow_connect.E083",
            "refund_management",
        ),
        (
            {
                "EMBEDDED_COMPONENT_FEATURES": {
                    "payouts": {"disable_stripe_user_authentication": True}
                }
            },
            "escrow_connect.E083",
            "requirement_collection",
        ),
        (
            {"EMBEDDED_COMPONENT_FEATURES": {"balances": {"external_account_collection": False}}},
            "escrow_connect.E083",
            "external account collection",
        ),
        (
            {"EMBEDDED_COMPONENT_FEATURES": {"payouts": {"instant_payouts": True}}},
            "escrow_connect.W080",
            "instant_payouts",
        ),
        ({"ONBOARDING_COLLECT": "everything"}, "escrow_connect.E084", "ONBOARDING_COLLECT"),
        (
            {"ONBOARDING_FUTURE_REQUIREMENTS": True},
            "escrow_connect.E084",
            "ONBOARDING_FUTURE_REQUIREMENTS",
        ),
        # Stripe refuses a relative URL; a non-string fails for an organization.
        (
            {"ONBOARDING_RETURN_URL": "/onboarding/return/"},
            "escrow_connect.E086",
            'ESCROW_CONNECT["ONBOARDING_RETURN_URL"]',
        ),
        ({"ONBOARDING_REFRESH_URL": 123}, "escrow_connect.E086", "ONBOARDING_REFRESH_URL"),
    ],
)
def test_embedded_component_misconfiguration_names_the_setting(changes, expected_id, named):
    with settings_with(**changes):
        errors = check_settings()
    matching = [e for e in errors if e.id == expected_id]
    assert matching, f"expected {expected_id}, got {ids(errors)}"
    assert any(named in m for m in messages(matching))


@pytest.mark.parametrize(
    "changes",
    [
        {
            "EMBEDDED_COMPONENTS": [
                "account_onboarding",
                "account_management",
                "notification_banner",
                "payouts",
                "balances",
                "documents",
            ],
            "EMBEDDED_COMPONENT_FEATURES": {"payouts": {"external_account_collection": True}},
            "ONBOARDING_COLLECT": "eventually_due",
            "ONBOARDING_FUTURE_REQUIREMENTS": "include",
        },
        {
            "EMBEDDED_COMPONENTS": ["payments", "disputes_list"],
            "ESCROW_STRATEGY": "manual_capture",
            "DESTINATION_ON_BEHALF_OF": True,
        },
    ],
)
def test_embedded_components_the_package_allows_pass(changes):
    with settings_with(**changes):
        found = ids(check_settings())
    assert not {i for i in found if i[-3:-1] == "08"}, found


def test_a_tip_bound_below_stripes_smallest_charge_is_a_warning():
    """Every tip in that currency would be refused (400 amount_too_small):
    tips silently off there. Named with its minimum; an entry at it passes."""
    with settings_with(TIP_MAX_AMOUNT={"usd": 49, "jpy": 10, "gbp": 30, "eur": 10_000}):
        found = [e for e in run_checks() if e.id == "escrow_connect.W063"]
    assert len(found) == 1, found
    assert "jpy (10 < 50, 50 JPY), usd (49 < 50, 0.50 USD)." in found[0].msg
    assert "gbp" not in found[0].msg
    assert "eur" not in found[0].msg


def test_a_tip_bound_that_rounds_below_the_minimum_is_a_warning():
    """Compared on the step, as tips are checked: a bound of 190 ISK allows
    at most 100 (W060), a minimum of 150 accepts at least 200 (W064), so
    every ISK tip is refused although 190 >= 150."""
    with settings_with(TIP_MAX_AMOUNT={"isk": 190}, MIN_CHARGE_AMOUNTS={"isk": 150}):
        found = [e for e in run_checks() if e.id == "escrow_connect.W063"]
        with pytest.raises(InvalidAmount):
            validate_charge_amount(100, "isk")  # the largest whole step under 190
        assert validate_charge_amount(200, "isk") == 200  # the smallest: above 190
    assert len(found) == 1, found
    assert "isk (190 < 200, 2.00 ISK)" in found[0].msg


def test_a_minimum_charge_off_its_currency_s_step_is_a_warning():
    """An entry is used as written, but a charge must be on the step: the
    smallest charge accepted is the entry rounded up, as the warning says.
    Entries on the step, and one E063 refuses (ignored), are not named."""
    minimums = {"isk": 150, "kwd": 505, "usd": 55, "jod": 1_000, "eur": 0}
    with settings_with(MIN_CHARGE_AMOUNTS=minimums):
        found = [e for e in run_checks() if e.id == "escrow_connect.W064"]
        for refused in (100, 190):
            with pytest.raises(InvalidAmount):
                validate_charge_amount(refused, "isk")
        assert validate_charge_amount(200, "isk") == 200
        with pytest.raises(InvalidAmount):
            validate_charge_amount(505, "kwd")
        assert validate_charge_amount(510, "kwd") == 510
    assert len(found) == 1, found
    assert "isk (150: ISK amounts must be whole units" in found[0].msg
    assert "the smallest charge accepted is 200, 2.00 ISK" in found[0].msg
    assert "kwd (505: KWD amounts must end in 0" in found[0].msg
    assert "the smallest charge accepted is 510, 0.510 KWD" in found[0].msg
    for on_step in ("usd", "jod", "eur"):
        assert on_step not in found[0].msg


def test_a_valid_tip_configuration_passes():
    tips = {"usd": 50, "jpy": 10_000, "eur": 99_999_999, "idr": 999_999_999_999}
    with settings_with(TIP_MAX_AMOUNT=tips):
        found = ids(check_settings())
    assert "escrow_connect.E060" not in found
    assert "escrow_connect.W063" not in found
    assert "escrow_connect.E061" not in found


@pytest.mark.parametrize(
    ("top_level", "key"),
    [
        ("ESCROW_STRATEGY", "ESCROW_STRATEGY"),
        ("PLATFORM_FEE_BASIS_POINTS", "PLATFORM_FEE_BASIS_POINTS"),
        ("STRIPE_PUBLISHABLE_KEY", "STRIPE_PUBLISHABLE_KEY"),
        ("ESCROW_CONNECT_WEBHOOK_SECRETS", "WEBHOOK_SECRETS"),
        ("ESCROW_CONNECT_ESCROW_STRATEGY", "ESCROW_STRATEGY"),
        ("ESCROW_CONNECT_STRATEGY", "ESCROW_STRATEGY"),
    ],
)
def test_a_package_setting_at_the_top_level_is_warned_about(top_level, key):
    """settings.md: the package reads only the ESCROW_CONNECT dict."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    with settings_with(**{key: _DELETE}), override_settings(**{top_level: "manual_capture"}):
        call_command("check", stdout=StringIO(), stderr=out)
    found = [line for line in out.getvalue().splitlines() if "escrow_connect.W011" in line]
    assert len(found) == 1, out.getvalue()
    assert f"{top_level} is set at the top level" in found[0]
    assert f'ESCROW_CONNECT["{key}"] keeps its default' in found[0]
    assert f'Move it into the ESCROW_CONNECT dict as "{key}"' in out.getvalue()


def test_a_top_level_setting_the_dict_sets_too_is_not_warned_about():
    """A host's own STRIPE_SECRET_KEY (for its own code) that the dict is given too."""
    key = settings.ESCROW_CONNECT["STRIPE_SECRET_KEY"]
    with override_settings(STRIPE_SECRET_KEY=key, ESCROW_CONNECT_STRIPE_SECRET_KEY=key):
        assert "escrow_connect.W011" not in ids(check_settings())


@pytest.mark.parametrize(
    ("key", "top_level"),
    [
        # Django's own setting, were a key of DEFAULTS ever named like one.
        ("TIME_ZONE", "TIME_ZONE"),
        # The package's real top-level settings (swapper's), were a key named
        # like their tail. tests/settings*.py set them.
        ("TASK_MODEL", "ESCROW_CONNECT_TASK_MODEL"),
        (
            "ESCROWPAYMENT_MODEL_MIGRATION_DEPENDENCY",
            "ESCROW_CONNECT_ESCROWPAYMENT_MODEL_MIGRATION_DEPENDENCY",
        ),
    ],
)
def test_django_and_model_settings_are_never_misplaced_package_settings(
    key, top_level, monkeypatch
):
    from django_escrow_connect.conf import DEFAULTS

    monkeypatch.setitem(DEFAULTS, key, None)
    with override_settings(**{top_level: getattr(settings, top_level, "0001_initial")}):
        found = check_settings()
    assert "escrow_connect.W011" not in ids(found), messages(found)
