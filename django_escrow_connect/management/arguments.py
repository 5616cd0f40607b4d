"""Checks of the commands' arguments that argparse's types do not make.

A value out of range here failed later with a traceback, after the command
had begun reading: a count past what the database takes, a NUL byte
PostgreSQL refuses in any text it is sent. An id or a type is checked
against the shape Stripe gives it, before the first query.
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
    "check_event_ids",
    "check_event_types",
    "check_since",
]

#: The largest count a LIMIT takes (a signed 64-bit integer).
MAX_COUNT = 2**63 - 1
#: The largest batch PostgreSQL's FETCH takes (a server-side cursor reads
#: ``--batch-size`` rows at a time; its count is a signed 32-bit integer).
MAX_BATCH = 2**31 - 1
#: A connected account's id as Stripe writes it (``acct_1QzR8tQm5HwJ3uVe``),
#: no longer than the column that stores it.
_ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,250}", re.ASCII)
#: An event's id as Stripe writes it: ``evt_1Pgc76B7WZ01zgkWwyRHS12y``, and
#: a v2 (thin) event's ``evt_test_65R9...``; no longer than its column.
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,251}", re.ASCII)
#: An event type as Stripe writes it: lowercase dotted words
#: (``charge.dispute.closed``), a v2 type's with a bracketed part
#: (``v2.core.account[configuration.recipient].capability_status_updated``).
_TYPE_WORD = r"[a-z0-9_]+(?:\[[a-z0-9_]+(?:\.[a-z0-9_]+)*\])?"
_EVENT_TYPE = re.compile(rf"{_TYPE_WORD}(?:\.{_TYPE_WORD})+", re.ASCII)
#: The longest event type the event log stores (the receiver refuses longer).
_MAX_EVENT_TYPE = 128


def check_count(option: str, value: int, *, minimum: int, maximum: int = MAX_COUNT) -> None:
    """Raise ``CommandError`` unless ``minimum <= value <= maximum``."""
    if value < minimum:
        more = "zero or more" if minimum == 0 else f"at least {minimum}"
        raise CommandError(f"{option} must be {more}.")
    if value > maximum:
        raise CommandError(f"{option} must be at most {maximum}.")


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


def check_event_ids(option: str, values: Iterable[str]) -> None:
    """Raise ``CommandError`` unless every value is an event's id (``evt_...``).

    Anything else is in no event log: it was looked up (a NUL byte was
    PostgreSQL's DataError) only to be reported missing.
    """
    for value in values:
        if not _EVENT_ID.fullmatch(value):
            raise CommandError(
                f"{option} {value!r} is not an event's id (evt_ and letters, digits and "
                "underscores, as Stripe writes it)."
            )


def check_event_types(option: str, values: Iterable[str]) -> None:
    """Raise ``CommandError`` unless every value is shaped like a Stripe event type.

    A misspelt type (``Charge.Refunded``, a stray space) selected nothing
    and the command said "No events to replay.", as if none had failed.
    """
    for value in values:
        if len(value) > _MAX_EVENT_TYPE or not _EVENT_TYPE.fullmatch(value):
            raise CommandError(
                f"{option} {value!r} is not an event type (lowercase words joined by dots, "
                "as Stripe writes them: charge.dispute.closed, v2.core.account.closed)."
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
