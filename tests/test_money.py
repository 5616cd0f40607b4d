"""Tests for django_escrow_connect.money: exact conversion, validation, display."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_escrow_connect.money import (
    MAX_MINOR_AMOUNT,
    THREE_DECIMAL_CURRENCIES,
    ZERO_DECIMAL_CURRENCIES,
    CurrencyMismatch,
    InvalidAmount,
    InvalidCurrency,
    Money,
    amount_step,
    currency_exponent,
    format_money,
    from_minor_units,
    normalize_currency,
    to_minor_units,
    validate_minor_amount,
)

TWO_DECIMAL_SAMPLE = ["usd", "eur", "gbp", "chf", "isk", "huf", "twd"]

zero_decimal = st.sampled_from(sorted(ZERO_DECIMAL_CURRENCIES))
two_decimal = st.sampled_from(TWO_DECIMAL_SAMPLE)
three_decimal = st.sampled_from(sorted(THREE_DECIMAL_CURRENCIES))
any_currency = st.one_of(zero_decimal, two_decimal, three_decimal)
minor_amounts = st.integers(min_value=-MAX_MINOR_AMOUNT, max_value=MAX_MINOR_AMOUNT)


@st.composite
def currency_and_exact_decimal(draw: st.DrawFn) -> tuple[str, Decimal]:
    """A currency and a Decimal with exactly as many places as it allows."""
    currency = draw(any_currency)
    places = currency_exponent(currency)
    minor = draw(st.integers(min_value=-(10**15), max_value=10**15))
    return currency, Decimal(minor).scaleb(-places)


# --- currency tables and codes ----------------------------------------------


def test_zero_decimal_currencies_match_stripe_list() -> None:
    expected = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    expected |= {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
    assert frozenset(expected) == ZERO_DECIMAL_CURRENCIES


def test_three_decimal_currencies_match_stripe_list() -> None:
    assert frozenset({"bhd", "jod", "kwd", "omr", "tnd"}) == THREE_DECIMAL_CURRENCIES


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("usd", 2),
        ("eur", 2),
        ("jpy", 0),
        ("ugx", 0),
        ("kwd", 3),
        ("tnd", 3),
        # Stripe's special cases keep two decimals in the API.
        ("isk", 2),
        ("huf", 2),
        ("twd", 2),
        # Not in any list: Stripe's "two-decimal unless noted".
        ("xyz", 2),
        ("JPY", 0),
    ],
)
def test_currency_exponent(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


def test_amount_step_is_the_multiple_stripe_requires() -> None:
    # Three-decimal amounts end in 0; ISK amounts are whole krónur (two
    # decimals in the API, but Stripe refuses fractions); the rest any unit.
    steps = {code: amount_step(code) for code in ("usd", "jpy", "huf", "kwd", "tnd", "isk", "ISK")}
    assert steps == {
        "usd": 1, "jpy": 1, "huf": 1, "kwd": 10, "tnd": 10, "isk": 100, "ISK": 100
    }  # fmt: skip


@pytest.mark.parametrize(("raw", "expected"), [("usd", "usd"), ("USD", "usd"), (" Eur\n", "eur")])
def test_normalize_currency_strips_and_lowercases(raw: str, expected: str) -> None:
    assert normalize_currency(raw) == expected


@pytest.mark.parametrize("raw", ["", "us", "usdd", "us1", "u d", "usd\nx", "€ur", "ÜSD", "12$"])
def test_normalize_currency_rejects_malformed_codes(raw: str) -> None:
    with pytest.raises(InvalidCurrency):
        normalize_currency(raw)


def test_invalid_currency_is_a_value_error() -> None:
    assert issubclass(InvalidCurrency, ValueError)


@pytest.mark.parametrize("raw", [None, 840, b"usd"])
def test_normalize_currency_rejects_non_strings(raw: object) -> None:
    with pytest.raises(TypeError):
        normalize_currency(raw)  # type: ignore[arg-type]


# --- to_minor_units ------------------------------------------------------------


def test_float_truncation_trap_is_avoided() -> None:
    # int(0.29 * 100) == 28 is the classic bug; the string path must give 29.
    assert to_minor_units("0.29", "usd") == 29
    assert to_minor_units(Decimal("0.29"), "usd") == 29


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12.34", "usd", 1234),
        ("12.3", "usd", 1230),
        ("12.340", "usd", 1234),
        (12, "usd", 1200),
        ("500", "jpy", 500),
        ("500.00", "jpy", 500),
        (Decimal("1.23"), "kwd", 1230),
        ("1.235", "kwd", 1235),
        ("-4.50", "eur", -450),
        ("0", "usd", 0),
        ("-0.00", "usd", 0),
        ("1E+2", "usd", 10000),
        (" 7.5 ", "usd", 750),
        (Decimal("0E-40"), "jpy", 0),
    ],
)
def test_to_minor_units_examples(amount: Decimal | int | str, currency: str, expected: int) -> None:
    assert to_minor_units(amount, currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("0.001", "usd"),
        ("12.345", "eur"),
        ("1.5", "jpy"),
        ("1.2345", "kwd"),
        ("1e-999999999", "usd"),
    ],
)
def test_to_minor_units_rejects_over_precise_examples(amount: str, currency: str) -> None:
    with pytest.raises(InvalidAmount, match="decimal place"):
        to_minor_units(amount, currency)


@pytest.mark.parametrize("amount", ["NaN", "sNaN", "Infinity", "-Infinity", Decimal("NaN")])
def test_to_minor_units_rejects_non_finite(amount: str | Decimal) -> None:
    with pytest.raises(InvalidAmount):
        to_minor_units(amount, "usd")


@pytest.mark.parametrize("amount", ["", "abc", "1,000.00", "$5", "1.2.3"])
def test_to_minor_units_rejects_unparseable_strings(amount: str) -> None:
    with pytest.raises(InvalidAmount):
        to_minor_units(amount, "usd")


@pytest.mark.parametrize("amount", [True, False, None, [1], 1 + 0j])
def test_to_minor_units_rejects_other_types(amount: object) -> None:
    with pytest.raises(TypeError):
        to_minor_units(amount, "usd")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "amount", ["1e999999999", "92233720368547758.08", str(MAX_MINOR_AMOUNT + 1)]
)
def test_to_minor_units_rejects_amounts_too_large(amount: str) -> None:
    with pytest.raises(InvalidAmount, match="too large"):
        to_minor_units(amount, "usd" if "." in amount else "jpy")


def test_to_minor_units_accepts_the_largest_amount() -> None:
    assert to_minor_units(str(MAX_MINOR_AMOUNT), "jpy") == MAX_MINOR_AMOUNT
    assert to_minor_units("-92233720368547758.07", "usd") == -MAX_MINOR_AMOUNT


def test_to_minor_units_rejects_invalid_currency() -> None:
    with pytest.raises(InvalidCurrency):
        to_minor_units("1.00", "dollars")


@given(st.floats(allow_nan=True, allow_infinity=True), any_currency)
def test_floats_are_always_rejected(amount: float, currency: str) -> None:
    with pytest.raises(TypeError, match="float"):
        to_minor_units(amount, currency)  # type: ignore[arg-type]


@given(
    any_currency,
    st.integers(min_value=-(10**15), max_value=10**15),
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=1, max_value=5),
)
def test_over_precise_decimals_are_always_rejected(
    currency: str, minor: int, last_digit: int, extra_places: int
) -> None:
    # minor units followed by `extra_places` more digits, the last one non-zero.
    places = currency_exponent(currency) + extra_places
    value = Decimal(minor * 10**extra_places + last_digit).scaleb(-places)
    with pytest.raises(InvalidAmount):
        to_minor_units(value, currency)
    with pytest.raises(InvalidAmount):
        to_minor_units(str(value), currency)


# --- from_minor_units and round trips -----------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1234, "usd", "12.34"),
        (5, "usd", "0.05"),
        (-450, "eur", "-4.50"),
        (0, "usd", "0.00"),
        (500, "jpy", "500"),
        (1230, "kwd", "1.230"),
        (100, "isk", "1.00"),
    ],
)
def test_from_minor_units_examples(amount: int, currency: str, expected: str) -> None:
    result = from_minor_units(amount, currency)
    # str() compares the exponent too: 12.00 must not come back as 12.
    assert str(result) == expected


@pytest.mark.parametrize("amount", [12.0, True, "100", Decimal(100), None])
def test_from_minor_units_rejects_non_int(amount: object) -> None:
    with pytest.raises(TypeError):
        from_minor_units(amount, "usd")  # type: ignore[arg-type]


def test_from_minor_units_is_exact_beyond_decimal_context_precision() -> None:
    amount = 10**40 + 1  # 41 digits; the default context has 28
    assert from_minor_units(amount, "usd") == Decimal("100000000000000000000000000000000000000.01")


@given(currency_and_exact_decimal())
def test_decimal_round_trip(case: tuple[str, Decimal]) -> None:
    currency, value = case
    result = from_minor_units(to_minor_units(value, currency), currency)
    assert result == value
    assert result.as_tuple().exponent == -currency_exponent(currency)


@given(currency_and_exact_decimal())
def test_string_round_trip(case: tuple[str, Decimal]) -> None:
    currency, value = case
    assert from_minor_units(to_minor_units(str(value), currency), currency) == value


@given(minor_amounts, any_currency)
def test_minor_units_round_trip(amount: int, currency: str) -> None:
    assert to_minor_units(from_minor_units(amount, currency), currency) == amount


@given(minor_amounts, any_currency)
def test_minor_units_round_trip_through_string(amount: int, currency: str) -> None:
    assert to_minor_units(str(from_minor_units(amount, currency)), currency) == amount


@given(st.integers(min_value=-(10**12), max_value=10**12), zero_decimal, three_decimal)
def test_exponent_scales_the_value(amount: int, zero: str, three: str) -> None:
    assert from_minor_units(amount, zero) == Decimal(amount)
    assert from_minor_units(amount, three) * 1000 == Decimal(amount)
    assert from_minor_units(amount, "usd") * 100 == Decimal(amount)


# --- validate_minor_amount ---------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(0, "usd"), (1, "usd"), (1, "jpy"), (1230, "kwd"), (10, "bhd"), (500, "isk"), (1, "huf")],
)
def test_validate_minor_amount_accepts(amount: int, currency: str) -> None:
    assert validate_minor_amount(amount, currency) == amount


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (-1, "usd", "negative"),
        (1235, "kwd", "end in 0"),
        (1, "omr", "end in 0"),
        (1235, "KWD", "end in 0"),
        (550, "isk", "whole units"),
        (550, "isk", "Round to 500 or 600"),
        (True, "usd", "int"),
        (10.0, "usd", "int"),
        ("10", "usd", "int"),
        (Decimal(10), "usd", "int"),
    ],
)
def test_validate_minor_amount_rejects(amount: object, currency: str, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        validate_minor_amount(amount, currency)  # type: ignore[arg-type]


def test_to_minor_units_does_not_apply_the_ends_in_zero_rule() -> None:
    # Callers decide when an amount is a charge amount.
    assert to_minor_units("-1.235", "kwd") == -1235


# --- format_money ------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1234, "usd", "12.34 USD"),
        (5, "usd", "0.05 USD"),
        (0, "eur", "0.00 EUR"),
        (123456789, "usd", "1,234,567.89 USD"),
        (1000, "jpy", "1,000 JPY"),
        (999, "jpy", "999 JPY"),
        (1234567, "kwd", "1,234.567 KWD"),
        (-1234, "usd", "-12.34 USD"),
        (-5, "usd", "-0.05 USD"),
        (-1000000, "jpy", "-1,000,000 JPY"),
        (100, "ISK", "1.00 ISK"),
    ],
)
def test_format_money(amount: int, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


def test_format_money_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        format_money(12.34, "usd")  # type: ignore[arg-type]


# --- Money -------------------------------------------------------------------


def test_money_normalizes_currency() -> None:
    assert Money(100, " USD ").currency == "usd"
    assert Money(100, "USD") == Money(100, "usd")
    assert hash(Money(100, "USD")) == hash(Money(100, "usd"))


@pytest.mark.parametrize("amount", [True, 1.5, "100", Decimal(100)])
def test_money_rejects_non_int_amounts(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "usd")  # type: ignore[arg-type]


def test_money_rejects_invalid_currency() -> None:
    with pytest.raises(InvalidCurrency):
        Money(100, "us")


def test_money_is_immutable() -> None:
    money = Money(100, "usd")
    with pytest.raises(AttributeError):
        money.amount = 200  # type: ignore[misc]


def test_money_str() -> None:
    assert str(Money(123456, "usd")) == "1,234.56 USD"
    assert str(Money(-5, "jpy")) == "-5 JPY"


def test_money_decimal_conversions() -> None:
    assert Money.from_decimal("0.29", "usd") == Money(29, "usd")
    assert Money.from_decimal(Decimal("1.5"), "kwd") == Money(1500, "kwd")
    assert Money(1500, "kwd").to_decimal() == Decimal("1.500")
    with pytest.raises(InvalidAmount):
        Money.from_decimal("1.5", "jpy")


def test_money_zero() -> None:
    assert Money.zero("EUR") == Money(0, "eur")


def test_money_add_and_subtract_same_currency() -> None:
    assert Money(150, "usd") + Money(75, "usd") == Money(225, "usd")
    assert Money(150, "usd") - Money(200, "usd") == Money(-50, "usd")
    assert sum([Money(1, "jpy"), Money(2, "jpy")], Money.zero("jpy")) == Money(3, "jpy")


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_money_arithmetic_across_currencies_raises(operation: str) -> None:
    usd, eur = Money(100, "usd"), Money(100, "eur")
    with pytest.raises(CurrencyMismatch, match=r"EUR and USD|USD and EUR"):
        usd + eur if operation == "add" else usd - eur


@pytest.mark.parametrize("other", [1, Decimal(1), "1"])
def test_money_arithmetic_with_non_money_raises_type_error(other: object) -> None:
    with pytest.raises(TypeError):
        Money(100, "usd") + other  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(100, "usd") - other  # type: ignore[operator]


@given(minor_amounts, minor_amounts, any_currency)
def test_money_add_then_subtract_is_identity(a: int, b: int, currency: str) -> None:
    assert (Money(a, currency) + Money(b, currency)) - Money(b, currency) == Money(a, currency)


def run_without_django_settings(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter without DJANGO_SETTINGS_MODULE; it must succeed."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize(
    "setup",
    ["", "from django.conf import settings; settings.configure()\n"],
    ids=["no settings", "apps not loaded"],
)
def test_validate_minor_amount_works_where_django_is_not_set_up(setup: str) -> None:
    """Its messages are translated where Django's translations work; a script
    using this module without settings (or before the apps are loaded) still
    gets an InvalidAmount, in English, not ImproperlyConfigured."""
    script = (
        f"{setup}from django_escrow_connect.money import InvalidAmount, validate_minor_amount\n"
        "try:\n    validate_minor_amount(1235, 'kwd')\n"
        "except InvalidAmount as exc:\n    print(exc)\n"
    )
    result = run_without_django_settings(script)
    assert result.stdout.startswith("KWD amounts must end in 0 (Stripe requires"), result.stdout


def test_terms_a_script_makes_before_the_apps_are_loaded_are_refused_in_english() -> None:
    """``EscrowTerms`` words its refusals with the same guarded translation:
    terms made before the apps are loaded are an InvalidTerms (still an
    InvalidCurrency for a malformed code), not AppRegistryNotReady."""
    script = (
        "from django.conf import settings; settings.configure()\n"
        "from django_escrow_connect.money import InvalidCurrency\n"
        "from django_escrow_connect.terms import EscrowTerms, InvalidTerms\n"
        "for amount, currency in ((0, 'usd'), (1000, 'u$d')):\n"
        "    try:\n"
        "        EscrowTerms(payer=None, payee_user=object(), amount=amount, currency=currency)\n"
        "    except InvalidTerms as exc:\n"
        "        print(isinstance(exc, InvalidCurrency), exc)\n"
    )
    result = run_without_django_settings(script)
    assert result.stdout.splitlines() == [
        "False The amount must be positive, got 0.",
        "True Invalid currency code 'u$d': expected three letters.",
    ]
