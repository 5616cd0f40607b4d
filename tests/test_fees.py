"""Tests for django_escrow_connect.fees: the default policy and its validation."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from django_escrow_connect.fees import compute_platform_fee, compute_tip_fee, default_fee_policy
from django_escrow_connect.money import InvalidAmount, InvalidCurrency


def escrow(**values: Any) -> override_settings:
    """override_settings for the ESCROW_CONNECT dict."""
    return override_settings(ESCROW_CONNECT=values)


def reference_fee(amount: int, basis_points: int) -> int:
    """The percentage part computed independently, with Decimal ROUND_HALF_UP."""
    exact = Decimal(amount) * basis_points / 10000
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- basis points ------------------------------------------------------------


def test_default_settings_charge_ten_percent() -> None:
    with escrow():
        assert default_fee_policy(10000, "usd") == 1000


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [
        (4, 1000, 0),  # 0.4 rounds down
        (5, 1000, 1),  # 0.5 rounds up
        (15, 1000, 2),  # 1.5 rounds up
        (25, 1000, 3),  # 2.5 rounds up (banker's rounding would give 2)
        (100, 250, 3),  # 2.5 % of 100 = 2.5
        (20, 250, 1),  # 0.5
        (19, 250, 0),  # 0.475
        (1999, 290, 58),  # 57.971
        (10000, 0, 0),
        (10000, 10000, 10000),
        (1, 5000, 1),  # 0.5 of the smallest unit
    ],
)
def test_basis_points_round_half_up(amount: int, basis_points: int, expected: int) -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=basis_points):
        assert default_fee_policy(amount, "usd") == expected


@given(
    st.integers(min_value=0, max_value=10**15),
    st.integers(min_value=0, max_value=10000),
    st.sampled_from(["usd", "jpy", "eur"]),
)
def test_basis_points_match_decimal_half_up(amount: int, basis_points: int, currency: str) -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=basis_points):
        assert default_fee_policy(amount, currency) == reference_fee(amount, basis_points)


@pytest.mark.parametrize("basis_points", [-1, 10001, "1000", 12.5, True, None])
def test_invalid_basis_points_are_improperly_configured(basis_points: object) -> None:
    with (
        escrow(PLATFORM_FEE_BASIS_POINTS=basis_points),
        pytest.raises(ImproperlyConfigured, match="PLATFORM_FEE_BASIS_POINTS"),
    ):
        default_fee_policy(1000, "usd")


# --- fixed fees ----------------------------------------------------------------


def test_fixed_fee_applies_only_to_its_currency() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=290, PLATFORM_FEE_FIXED={"usd": 30, "jpy": 40}):
        assert default_fee_policy(1000, "usd") == 29 + 30
        assert default_fee_policy(1000, "jpy") == 29 + 40
        assert default_fee_policy(1000, "eur") == 29


def test_fixed_fee_keys_and_currency_argument_are_normalized() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=0, PLATFORM_FEE_FIXED={"USD": 30}):
        assert default_fee_policy(1000, "usd") == 30
        assert default_fee_policy(1000, " Usd ") == 30


def test_fixed_fee_without_percentage() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=0, PLATFORM_FEE_FIXED={"eur": 25}):
        assert default_fee_policy(5000, "eur") == 25


@pytest.mark.parametrize(
    "fixed",
    [
        {"usd": "30"},
        {"usd": 0.3},
        {"usd": True},
        {"dollars": 30},
        {"USD": 30, "usd": 40},
        [("usd", 30)],
    ],
)
def test_invalid_fixed_fees_are_improperly_configured(fixed: object) -> None:
    with (
        escrow(PLATFORM_FEE_FIXED=fixed),
        pytest.raises(ImproperlyConfigured, match="PLATFORM_FEE_FIXED"),
    ):
        default_fee_policy(1000, "usd")


# --- clamping ------------------------------------------------------------------


def test_fee_never_exceeds_amount() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=10000, PLATFORM_FEE_FIXED={"usd": 30}):
        assert default_fee_policy(1000, "usd") == 1000
    with escrow(PLATFORM_FEE_BASIS_POINTS=0, PLATFORM_FEE_FIXED={"usd": 30}):
        assert default_fee_policy(10, "usd") == 10
        assert default_fee_policy(0, "usd") == 0


def test_negative_fixed_fee_is_floored_at_zero() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=1000, PLATFORM_FEE_FIXED={"usd": -50}):
        assert default_fee_policy(1000, "usd") == 50
        assert default_fee_policy(100, "usd") == 0


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10000),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from(["usd", "jpy", "kwd", "bhd"]),
)
def test_fee_is_always_within_zero_and_amount(
    amount: int, basis_points: int, fixed: int, currency: str
) -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=basis_points, PLATFORM_FEE_FIXED={currency: fixed}):
        fee = default_fee_policy(amount, currency)
    assert 0 <= fee <= amount


@pytest.mark.parametrize("amount", [-1, True, 10.0, "1000"])
def test_default_policy_rejects_invalid_amounts(amount: object) -> None:
    with escrow(), pytest.raises(InvalidAmount):
        default_fee_policy(amount, "usd")  # type: ignore[arg-type]


def test_default_policy_rejects_invalid_currency() -> None:
    with escrow(), pytest.raises(InvalidCurrency):
        default_fee_policy(1000, "dollar")


# --- three-decimal currencies and ISK: the fee in the step Stripe accepts ------


@pytest.mark.parametrize(
    ("currency", "amount", "basis_points", "fixed", "expected"),
    [
        ("kwd", 1235, 1000, 0, 120),  # 123.5 -> 124 -> 120
        ("kwd", 1000, 1000, 5, 100),  # 100 + 5 -> 100
        ("kwd", 1000, 1000, 10, 110),
        ("kwd", 1235, 10000, 0, 1230),  # clamped to the amount, then down to ...0
        ("kwd", 9, 10000, 0, 0),
        ("isk", 123400, 700, 0, 8600),  # 7 % of 1,234 kr is 86.38 kr -> 86 kr
        ("isk", 10000, 1000, 50, 1000),  # 10 kr + 0.50 kr -> 10 kr
        ("isk", 10000, 1000, 150, 1100),  # 10 kr + 1.50 kr -> 11 kr
        ("isk", 150, 10000, 0, 100),  # clamped to the amount, then down to whole krónur
        ("isk", 99, 10000, 0, 0),
    ],
)
def test_fee_rounds_down_to_the_amount_step(
    currency: str, amount: int, basis_points: int, fixed: int, expected: int
) -> None:
    settings = {"PLATFORM_FEE_BASIS_POINTS": basis_points, "PLATFORM_FEE_FIXED": {currency: fixed}}
    with escrow(**settings):
        assert default_fee_policy(amount, currency) == expected


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10000),
    st.sampled_from(["bhd", "jod", "kwd", "omr", "tnd", "isk"]),
)
def test_fee_is_always_a_multiple_of_the_amount_step(
    amount: int, basis_points: int, currency: str
) -> None:
    step = 100 if currency == "isk" else 10  # whole krónur; three decimals end in 0
    with escrow(PLATFORM_FEE_BASIS_POINTS=basis_points):
        fee = default_fee_policy(amount, currency)
    assert fee % step == 0
    assert reference_fee(amount, basis_points) - step < fee <= reference_fee(amount, basis_points)


def test_two_decimal_fee_is_not_rounded_to_ten() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=1000):
        assert default_fee_policy(1235, "usd") == 124


# --- compute_platform_fee ------------------------------------------------------


def test_compute_platform_fee_uses_default_policy() -> None:
    with escrow(PLATFORM_FEE_BASIS_POINTS=500, PLATFORM_FEE_FIXED={"usd": 30}):
        assert compute_platform_fee(2000, "USD") == 130


def test_compute_platform_fee_accepts_dotted_path() -> None:
    with escrow(
        PLATFORM_FEE_POLICY="django_escrow_connect.fees.default_fee_policy",
        PLATFORM_FEE_BASIS_POINTS=2000,
    ):
        assert compute_platform_fee(1000, "usd") == 200


def test_custom_policy_is_called_with_normalized_currency() -> None:
    calls: list[tuple[int, str]] = []

    def flat_fee(amount: int, currency: str) -> int:
        calls.append((amount, currency))
        return 42

    with escrow(PLATFORM_FEE_POLICY=flat_fee):
        assert compute_platform_fee(1000, " EUR ") == 42
    assert calls == [(1000, "eur")]


def test_override_settings_change_is_picked_up() -> None:
    with escrow(PLATFORM_FEE_POLICY=lambda amount, currency: 1):
        assert compute_platform_fee(1000, "usd") == 1
    with escrow(PLATFORM_FEE_POLICY=lambda amount, currency: 2):
        assert compute_platform_fee(1000, "usd") == 2


@pytest.mark.parametrize(
    ("name", "policy", "amount", "currency", "message"),
    [
        ("PLATFORM_FEE_POLICY", lambda amount, currency: -1, 1000, "usd", "between 0"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: amount + 1, 1000, "usd", "between 0"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: True, 1000, "usd", "an int"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: 1.5, 1000, "usd", "an int"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: "5", 1000, "usd", "an int"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: None, 1000, "usd", "an int"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: Decimal(5), 1000, "usd", "an int"),
        ("PLATFORM_FEE_POLICY", lambda amount, currency: 125, 1000, "kwd", "must end in 0"),
        # 7 % of 1,234 kr is 86.38 kr: not an amount Stripe takes in ISK.
        ("PLATFORM_FEE_POLICY", lambda a, c: a * 7 // 100, 123400, "isk", "whole units"),
        ("TIP_FEE", lambda amount, currency: amount // 10, 1500, "isk", "whole units"),
    ],
)
def test_invalid_policy_result_is_improperly_configured(
    name: str, policy: Callable[[int, str], object], amount: int, currency: str, message: str
) -> None:
    compute = compute_tip_fee if name == "TIP_FEE" else compute_platform_fee
    with (
        escrow(**{name: policy}),
        pytest.raises(ImproperlyConfigured, match=rf'ESCROW_CONNECT\["{name}"\].*{message}'),
    ):
        compute(amount, currency)


@pytest.mark.parametrize("fee", [0, 500, 1000])
def test_policy_result_bounds_are_inclusive(fee: int) -> None:
    with escrow(PLATFORM_FEE_POLICY=lambda amount, currency: fee):
        assert compute_platform_fee(1000, "usd") == fee


def test_non_callable_policy_is_improperly_configured() -> None:
    with (
        escrow(PLATFORM_FEE_POLICY=10),
        pytest.raises(ImproperlyConfigured, match=r'ESCROW_CONNECT\["PLATFORM_FEE_POLICY"\]'),
    ):
        compute_platform_fee(1000, "usd")


@pytest.mark.parametrize("amount", [-1, True, 10.0])
def test_compute_platform_fee_rejects_invalid_amounts_before_calling_policy(amount: object) -> None:
    def policy(amount: int, currency: str) -> int:
        raise AssertionError("policy must not be called")

    with escrow(PLATFORM_FEE_POLICY=policy), pytest.raises(InvalidAmount):
        compute_platform_fee(amount, "usd")  # type: ignore[arg-type]
