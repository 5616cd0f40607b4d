"""Checks of the commands' arguments that argparse's types do not make.

A value out of range here failed later with a traceback, after the command
had begun reading: a count past what the database takes, a NUL byte
PostgreSQL refuses in any text it is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from django.core.management.base import CommandError

from ..dates import parse_since

__all__ = [
    "MAX_BATCH",
    "MAX_COUNT",
    "check_account_ids",
    "check_count",
    "check_since",
    "check_text",
]

#: The largest count a LIMIT takes (a signed 64-bit integer).
MAX_COUNT = 2**63 - 1
#: The largest batch PostgreSQL's FETCH takes (a server-side cursor reads
#: ``--batch-size`` rows at a time; its count is a signed 32-bit integer).
MAX_BATCH = 2**31 - 1
#: A connected account's id as Stripe writes it (``acct_1QzR8tQm5HwJ3uVe``),
#: no longer than the column that stores it.
_ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,250}", re.ASCII)


def check_count(option: str, value: int, *, minimum: int, maximum: int = MAX_COUNT) -> None:
    """Raise ``CommandError`` unless ``minimum <= value <= maximum``."""
    if value < minimum:
        more = "zero or more" if minimum == 0 else f"at least {minimum}"
        raise CommandError(f"{option} must be {more}.")
    if value > maximum:
        raise CommandError(f"{option} must be at most {maximum}.")


def check_text(option: str, values: Iterable[str]) -> None:
    """Raise ``CommandError`` when a value holds a NUL byte (no id or name does)."""
    for value in values:
        if "\x00" in value:
            raise CommandError(f"{option} {value!r} holds a NUL byte.")


def check_account_ids(option: str, values: Iterable[str]) -> None:
    """Raise ``CommandError`` unless every value is a connected account's id (``acct_...``).

    The value goes to Stripe as the ``Stripe-Account`` header: an empty one
    lists the platform's events as if they were the account's, and a NUL or
    a line break makes the HTTP client fail with a traceback.
    """
    for value in values:
        if not _ACCOUNT_ID.fullmatch(value):
            raise CommandError(
                f"{option} {value!r} is not a connected account's id (acct_ and letters "
                "and digits, as Stripe writes it)."
            )


def check_since(value: str | None) -> datetime | None:
    """A ``--since``/``--until`` value as a time (None if not given), or ``CommandError``.

    Read before the command's first query, like every other argument. An
    empty value is given, and refused like any other that is no time.
    """
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
