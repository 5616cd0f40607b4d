"""The package's one module for money.

Every amount in this package is an ``int`` in the currency's *minor unit*
(cents for USD, yen for JPY, fils for KWD) together with a lowercase ISO 4217
code, because that is exactly what Stripe's API sends and expects. Keeping
amounts as integers end to end means there is no float anywhere that could
turn 0.29 USD into 28 cents (``int(0.29 * 100) == 28``), and no rounding that
nobody asked for.

Conversions to and from human-facing decimal amounts happen only here, and
they are exact: a value that cannot be represented in the currency's minor
unit is rejected, never rounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from django.apps import apps
from django.conf import settings
from django.utils.translation import gettext

from .conf import escrow_settings

__all__ = [
    "MAX_CHARGE_AMOUNT",
    "MAX_CHARGE_AMOUNTS",
    "MAX_MINOR_AMOUNT",
    "MIN_CHARGE_AMOUNTS",
    "THREE_DECIMAL_CURRENCIES",
    "WHOLE_UNIT_CHARGE_CURRENCIES",
    "ZERO_DECIMAL_CURRENCIES",
    "CurrencyMismatch",
    "InvalidAmount",
    "InvalidCurrency",
    "Money",
    "amount_step",
    "amount_step_rule",
    "currency_exponent",
    "format_money",
    "from_minor_units",
    "max_charge_amount",
    "min_charge_amount",
    "normalize_currency",
    "to_minor_units",
    "validate_charge_amount",
    "validate_minor_amount",
]

# Stripe, "Supported currencies": every currency is two-decimal unless listed
# below. These lists follow Stripe's API representation, which is what matters
# for the integers we send, not ISO 4217's exponent table (they differ).
#
#: Currencies whose API amount *is* the major unit (500 means ¥500).
ZERO_DECIMAL_CURRENCIES: Final[frozenset[str]] = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)

#: Currencies with three decimals (1000 means 1 KWD). Stripe additionally
#: requires the last digit of a charge amount to be 0; see
#: :func:`validate_minor_amount`.
THREE_DECIMAL_CURRENCIES: Final[frozenset[str]] = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

# Special cases Stripe documents ("Supported currencies", section "Special
# cases"), and what this module does about them:
#
# * ISK: Stripe says ISK has "become effectively zero-decimal", yet it remains
#   a *two-decimal* currency in the API for backwards compatibility (an ISK
#   amount of 100 is 1 króna) and charges/refunds must be divisible by 100.
#   We keep exponent 2 - the exponent must match what the API means by the
#   integer, or every ISK amount would be off by a factor of 100 - and
#   enforce the whole-króna rule in validate_minor_amount (see
#   WHOLE_UNIT_CHARGE_CURRENCIES).
# * HUF and TWD: two-decimal for charges (exponent 2 here), but Stripe treats
#   them as zero-decimal for *payouts*: a manual payout amount must be
#   divisible by 100. This package never creates payouts, so nothing enforces
#   that here; code that adds manual payouts must.
# * UGX: in Stripe's zero-decimal list, so exponent 0 here (500 means
#   UGX 500), which is how the charge API counts it. Stripe's special-cases
#   section also mentions UGX (legacy two-decimal handling in some flows,
#   notably payouts); re-check that entry before adding UGX payouts.
#
# Any code not listed above gets exponent 2, matching Stripe's "two-decimal
# unless otherwise noted". Whether Stripe supports a currency at all is left
# to Stripe: the list changes, and an outdated local allow-list would only
# reject valid payments.

#: Currencies whose charge amounts must be whole major units even though the
#: API represents them with two decimals (Stripe rejects fractional ISK with
#: ``invalid_charge_amount_no_decimal_compatible``).
WHOLE_UNIT_CHARGE_CURRENCIES: Final[frozenset[str]] = frozenset({"isk"})

#: Largest magnitude :func:`to_minor_units` accepts: the range of a signed
#: 64-bit integer, i.e. of Django's ``BigIntegerField``. The bound also stops a
#: hostile string such as ``"1e999999999"`` from building a gigantic integer.
MAX_MINOR_AMOUNT: Final[int] = 2**63 - 1

#: Largest charge amount Stripe accepts in most currencies: eight digits of
#: minor units ("Supported currencies", minimum and maximum charge amounts:
#: 99999999 is $999,999.99). The currencies that allow more are in
#: :data:`MAX_CHARGE_AMOUNTS`; :func:`max_charge_amount` gives a currency's
#: bound. Validate user-entered prices against it before they are stored, so
#: they fail as a 400, not later at Stripe.
MAX_CHARGE_AMOUNT: Final[int] = 99_999_999

#: The currencies whose largest charge is not :data:`MAX_CHARGE_AMOUNT`, in
#: their minor units: Stripe takes "up to twelve digits for IDR"
#: (999999999999 is Rp 9,999,999,999.99), where eight would stop at
#: Rp 999,999.99, a price IDR marketplaces routinely exceed.
MAX_CHARGE_AMOUNTS: Final[Mapping[str, int]] = MappingProxyType({"idr": 999_999_999_999})

#: Smallest charge Stripe accepts, per currency, in its minor units: Stripe's
#: table "Minimum and maximum charge amounts"
#: (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
#:
#: What the table means: Stripe's minimum is set in the *settlement* currency,
#: the settlement merchant's, and a charge in another currency must still
#: reach it once converted ("Amount must convert to at least ..."). Every
#: charge this package makes is created on the platform's account; it settles
#: in the platform's currency, except a destination charge with
#: ``DESTINATION_ON_BEHALF_OF``: ``on_behalf_of`` makes the connected account
#: the settlement merchant, so it settles in that account's currency and that
#: currency's minimum applies. An entry here is the minimum of a charge in
#: that currency settled in that same currency; a charge presented in one
#: currency and settled in another can be refused by Stripe above it, at the
#: day's rate, which no fixed table can know.
#: Currencies Stripe lists no minimum for are absent (any positive amount).
#: Checked before anything is recorded (:func:`validate_charge_amount`), so a
#: tip or a price below it is a 4xx, not a journaled call Stripe refuses. The
#: host's ``MIN_CHARGE_AMOUNTS`` setting replaces an entry where its charges
#: settle in another currency (:func:`min_charge_amount`); what Stripe still
#: refuses is answered as this check's refusal (docs/payments.md).
MIN_CHARGE_AMOUNTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "usd": 50,
        "aed": 200,
        "aud": 50,
        "bgn": 100,
        "brl": 50,
        "cad": 50,
        "chf": 50,
        "czk": 1500,
        "dkk": 250,
        "eur": 50,
        "gbp": 30,
        "hkd": 400,
        "huf": 17500,
        "inr": 50,
        "jpy": 50,
        "mxn": 1000,
        "myr": 200,
        "nok": 300,
        "nzd": 50,
        "pln": 200,
        "ron": 200,
        "sek": 300,
        "sgd": 50,
        "thb": 1000,
    }
)

_CURRENCY_RE: Final = re.compile(r"[a-z]{3}")


def gettext_noop(message: str) -> str:
    """Mark ``message`` for ``makemessages`` only. Django's own reads the
    settings, and this module must import without them (scripts, settings
    files): only :func:`_` below translates, when it can."""
    return message


# The rules of amount_step() in words: marked for translation here, said in
# English by amount_step_rule() (system checks, settings errors) and in the
# request's language by validate_minor_amount(), whose messages reach clients.
_ENDS_IN_ZERO: Final = gettext_noop(
    "%(currency)s amounts must end in 0 (Stripe requires the last of the three decimals to be zero)"
)
_WHOLE_UNITS: Final = gettext_noop(
    "%(currency)s amounts must be whole units (divisible by %(step)s in minor units, "
    "Stripe no longer accepts fractional %(currency)s)"
)


def _(message: str) -> str:
    """``gettext(message)``, or ``message`` where Django's translations are not
    set up (a script using this module without settings, an import-time
    call): a bad amount must stay an :class:`InvalidAmount` there, not turn
    into ``ImproperlyConfigured`` or ``AppRegistryNotReady``."""
    if not (settings.configured and apps.ready):
        return message
    return gettext(message)


class InvalidCurrency(ValueError):
    """A currency code is not three ASCII letters."""


class InvalidAmount(ValueError):
    """An amount cannot be represented exactly, or is not allowed where used."""


class CurrencyMismatch(ValueError):
    """Arithmetic was attempted between amounts in different currencies."""


def normalize_currency(code: str) -> str:
    """Return ``code`` stripped and lowercased, or raise :class:`InvalidCurrency`.

    Stripe requires lowercase codes and returns them lowercase, so storing and
    comparing the lowercase form avoids ``"USD" != "usd"`` bugs. Only the
    shape is checked (three ASCII letters), not membership in Stripe's list.
    """
    if not isinstance(code, str):
        raise TypeError(f"Currency code must be a str, not {type(code).__name__}.")
    normalized = code.strip().lower()
    if not _CURRENCY_RE.fullmatch(normalized):
        raise InvalidCurrency(f"Invalid currency code {code!r}: expected three letters.")
    return normalized


def currency_exponent(currency: str) -> int:
    """Return how many decimal places the currency's API amounts carry (0, 2 or 3).

    This is Stripe's exponent, not ISO 4217's: ``isk`` is 2 here because
    Stripe's API still counts ISK in hundredths (see the module comments).
    """
    code = normalize_currency(currency)
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def amount_step(currency: str) -> int:
    """The step (in minor units) every amount Stripe receives in ``currency``
    must be a multiple of: 10 for three-decimal currencies (Stripe requires
    their last digit to be 0), 100 for ISK (whole krónur, see
    :data:`WHOLE_UNIT_CHARGE_CURRENCIES`), 1 for every other.

    The one definition of that rule: :func:`validate_minor_amount` checks
    client amounts against it, and the amounts computed here (a split's
    shares, a fee, a reversal's part of a refund) are divided, rounded and
    checked in it, so each one Stripe receives is one it accepts.
    """
    code = normalize_currency(currency)
    if code in THREE_DECIMAL_CURRENCIES:
        return 10
    if code in WHOLE_UNIT_CHARGE_CURRENCIES:
        return 100
    return 1


def amount_step_rule(currency: str) -> str:
    """The rule :func:`amount_step` stands for, in words, for error messages:
    ``"KWD amounts must end in 0 (...)"``; empty for a step of 1."""
    return _step_rule(currency, translate=False)


def _step_rule(currency: str, *, translate: bool) -> str:
    code = normalize_currency(currency)
    step = amount_step(code)
    if step == 1:
        return ""
    rule = _ENDS_IN_ZERO if code in THREE_DECIMAL_CURRENCIES else _WHOLE_UNITS
    if translate:
        rule = _(rule)
    return rule % {"currency": code.upper(), "step": step}


def to_minor_units(amount: Decimal | int | str, currency: str) -> int:
    """Convert a major-unit amount (``Decimal("12.34")``) to minor units (``1234``).

    The conversion is exact: an amount with more precision than the currency
    allows (``"0.001"`` USD, ``"1.5"`` JPY) raises :class:`InvalidAmount`
    instead of being rounded, because silently rounding money hides bugs and
    loses (or invents) cents. Trailing zeros are fine (``"1.50"``,
    ``"12.000"`` JPY).

    ``float`` (and ``bool``) raise :class:`TypeError`: a float has usually lost
    the intended value before it gets here (``0.29`` is stored as
    ``0.28999...``). Pass a ``str`` or ``Decimal`` instead. Any sign is
    accepted; use :func:`validate_minor_amount` for charge amounts.
    """
    exponent = currency_exponent(currency)
    value = _to_decimal(amount)
    if not value.is_finite():
        raise InvalidAmount(f"Amount must be a finite number, not {amount!r}.")
    if value.is_zero():
        return 0
    if value.adjusted() + exponent >= 19:  # at least 10**19 minor units
        raise InvalidAmount(f"Amount {amount!r} is too large.")

    sign, digits, digits_exponent = value.as_tuple()
    coefficient_text = "".join(map(str, digits))
    trailing_zeros = len(coefficient_text) - len(coefficient_text.rstrip("0"))
    # value == coefficient * 10**digits_exponent; in minor units the power is
    # shifted by the currency's exponent. digits_exponent is an int: finite.
    shift = int(digits_exponent) + exponent
    # Only trailing zeros may be dropped; checking this before dividing also
    # keeps 10**-shift small for inputs like "1e-999999999".
    if shift + trailing_zeros < 0:
        raise InvalidAmount(
            f"Amount {amount!r} has more than {exponent} decimal place(s), the precision "
            f"of {normalize_currency(currency).upper()}; round it explicitly first."
        )
    coefficient = int(coefficient_text)
    minor: int = coefficient * 10**shift if shift >= 0 else coefficient // 10**-shift
    if minor > MAX_MINOR_AMOUNT:
        raise InvalidAmount(f"Amount {amount!r} is too large.")
    return -minor if sign else minor


def _to_decimal(amount: Decimal | int | str) -> Decimal:
    """Turn an accepted input type into a Decimal, refusing floats and bools."""
    # bool is a subclass of int: True must not silently mean 1 cent or 1 yen.
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int, str)):
        raise TypeError(
            f"Amount must be a Decimal, int or str, not {type(amount).__name__}; "
            "floats cannot represent most decimal amounts exactly."
        )
    if isinstance(amount, Decimal):
        return amount
    if isinstance(amount, int):
        return Decimal(amount)
    try:
        return Decimal(amount.strip())
    except ArithmeticError:  # decimal.InvalidOperation
        raise InvalidAmount(f"Not a decimal number: {amount!r}.") from None


def from_minor_units(amount: int, currency: str) -> Decimal:
    """Convert minor units (``1234``) to a major-unit Decimal (``Decimal("12.34")``).

    The result always carries exactly the currency's number of decimal places
    (``Decimal("12.00")``, ``Decimal("1.230")`` KWD, ``Decimal("500")`` JPY), so
    it serialises and displays consistently. It is built from the integer's
    digits, so it is exact for any size, independent of the Decimal context.
    """
    _require_int(amount)
    exponent = currency_exponent(currency)
    digits = tuple(int(digit) for digit in str(abs(amount)))
    return Decimal((1 if amount < 0 else 0, digits, -exponent))


def format_money(amount: int, currency: str) -> str:
    """Format minor units for logs, admin and e-mails: ``"1,234.56 USD"``.

    Deliberately locale-free (comma thousands separator, dot decimal point,
    uppercase ISO code after the number): the output is the same on every
    server and in every test, and cannot be confused between currencies the
    way a bare ``$`` can. Negative amounts get a leading ``-``. Use Django's
    localisation or Babel for customer-facing, localised display.
    """
    _require_int(amount)
    exponent = currency_exponent(currency)
    whole, fraction = divmod(abs(amount), 10**exponent)
    text = f"{whole:,}"
    if exponent:
        text += "." + str(fraction).zfill(exponent)
    sign = "-" if amount < 0 else ""
    return f"{sign}{text} {normalize_currency(currency).upper()}"


def validate_minor_amount(amount: int, currency: str) -> int:
    """Check that ``amount`` is acceptable as a Stripe charge amount; return it.

    Rejects, with :class:`InvalidAmount`:

    * anything but an ``int`` (``bool`` included), so a float or a string
      never reaches the API;
    * negative amounts (refunds and reversals are separate operations with
      positive amounts);
    * three-decimal amounts whose last digit is not 0, which Stripe refuses
      for compatibility with its payment partners;
    * ISK amounts that are not whole krónur (divisible by 100), which Stripe
      refuses since card networks stopped accepting fractional ISK.

    Zero is allowed; Stripe's per-currency minimum charge is not checked
    here (refunds and transfers have none): :func:`validate_charge_amount`
    checks a charge's.
    """
    # The messages reach API clients (a refund's, a release's, a tip's
    # amount; a price in a task's terms): in the request's language.
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount(
            _("Amount must be an int in minor units, not %(type)s (%(amount)s).")
            % {"type": type(amount).__name__, "amount": repr(amount)}
        )
    code = normalize_currency(currency)
    if amount < 0:
        raise InvalidAmount(_("Amount must not be negative, got %(amount)d.") % {"amount": amount})
    step = amount_step(code)
    if amount % step:
        below = amount - amount % step
        raise InvalidAmount(
            _("%(rule)s; got %(amount)d. Round to %(below)d or %(above)d.")
            % {
                "rule": _step_rule(code, translate=True),
                "amount": amount,
                "below": below,
                "above": below + step,
            }
        )
    return amount


def min_charge_amount(currency: str) -> int:
    """The smallest charge Stripe accepts in ``currency`` (minor units): the
    host's ``MIN_CHARGE_AMOUNTS`` setting's entry, else its
    :data:`MIN_CHARGE_AMOUNTS` entry, or 1 for a currency without one."""
    code = normalize_currency(currency)
    configured = _configured_minimum(code)
    return configured if configured is not None else MIN_CHARGE_AMOUNTS.get(code, 1)


def _configured_minimum(code: str) -> int | None:
    """The ``MIN_CHARGE_AMOUNTS`` setting's entry for ``code``, if ``E063`` accepts it.

    The host knows what this table cannot: the minimum Stripe applies in the
    currency its charges settle in. An entry ``manage.py check`` refuses
    (``E063``: not a positive int, or above Stripe's largest charge, which
    would refuse every charge in the currency) is ignored should the project
    run anyway: Stripe's table stands for that currency (Stripe still has the
    last word, a refusal answered as such).
    """
    table = escrow_settings.raw("MIN_CHARGE_AMOUNTS")
    entry = table.get(code) if isinstance(table, Mapping) else None
    if isinstance(entry, bool) or not isinstance(entry, int):
        return None
    if not 1 <= entry <= max_charge_amount(code):
        return None
    return entry


def max_charge_amount(currency: str) -> int:
    """The largest charge Stripe accepts in ``currency`` (minor units): its
    :data:`MAX_CHARGE_AMOUNTS` entry, or :data:`MAX_CHARGE_AMOUNT`."""
    return MAX_CHARGE_AMOUNTS.get(normalize_currency(currency), MAX_CHARGE_AMOUNT)


def validate_charge_amount(amount: int, currency: str) -> int:
    """Check that Stripe can charge ``amount`` in one payment; return it.

    :func:`validate_minor_amount`'s rules, and the amount between the
    currency's minimum (:func:`min_charge_amount`) and maximum
    (:func:`max_charge_amount`), both included: what a PaymentIntent is
    created with (a payment's price, a milestone funded on its own, a tip).
    Raises :class:`InvalidAmount`, in the request's language.
    """
    validate_minor_amount(amount, currency)
    minimum = min_charge_amount(currency)
    if amount < minimum:
        raise InvalidAmount(
            _("The amount must be at least %(minimum)s, Stripe's smallest charge; got %(amount)s.")
            % {"minimum": format_money(minimum, currency), "amount": format_money(amount, currency)}
        )
    maximum = max_charge_amount(currency)
    if amount > maximum:
        raise InvalidAmount(
            _("The amount must be at most %(maximum)s, Stripe's largest charge; got %(amount)s.")
            % {
                "maximum": format_money(maximum, currency),
                "amount": format_money(amount, currency),
            }
        )
    return amount


def _require_int(amount: object) -> None:
    """Raise TypeError unless ``amount`` is an int (and not a bool)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(
            f"Minor-unit amount must be an int, not {type(amount).__name__} ({amount!r})."
        )


@dataclass(frozen=True)
class Money:
    """An amount in minor units with its currency, immutable and hashable.

    A value object for code that passes amounts around: it keeps the currency
    attached to the number, so adding USD cents to JPY cannot happen silently
    (:class:`CurrencyMismatch`). Models still store the two fields separately.
    """

    amount: int
    currency: str

    def __post_init__(self) -> None:
        """Validate the amount type and normalise the currency code."""
        _require_int(self.amount)
        # frozen=True forbids normal assignment; this runs once, at construction.
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def from_decimal(cls, amount: Decimal | int | str, currency: str) -> Money:
        """Build from a major-unit amount, exactly (see :func:`to_minor_units`)."""
        return cls(to_minor_units(amount, currency), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Return zero in ``currency``: the start value for summing amounts."""
        return cls(0, currency)

    def to_decimal(self) -> Decimal:
        """Return the major-unit Decimal (see :func:`from_minor_units`)."""
        return from_minor_units(self.amount, self.currency)

    def __str__(self) -> str:
        """Locale-free display, e.g. ``"12.34 USD"`` (see :func:`format_money`)."""
        return format_money(self.amount, self.currency)

    def __add__(self, other: object) -> Money:
        """Add two amounts in the same currency."""
        if not isinstance(other, Money):
            return NotImplemented
        self._check_same_currency(other, "add")
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: object) -> Money:
        """Subtract an amount in the same currency (the result may be negative)."""
        if not isinstance(other, Money):
            return NotImplemented
        self._check_same_currency(other, "subtract")
        return Money(self.amount - other.amount, self.currency)

    def _check_same_currency(self, other: Money, verb: str) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(
                f"Cannot {verb} {other.currency.upper()} and {self.currency.upper()} amounts."
            )
