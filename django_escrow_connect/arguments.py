"""Checks of the commands' and the periodic tasks' arguments, one per argument.

A value out of range here failed later with a traceback, after the command
had begun reading: a count past what the database takes, a NUL byte
PostgreSQL refuses in any text it is sent. An id or a type is checked
against the shape Stripe gives it, before the first query.

A command's argparse types its options; a task's arguments come from a
scheduler's configuration or a queue message as they were written, so the
type is checked here too (``"60"`` or ``True`` for a count). Each check
raises :class:`InvalidArgument` naming the argument (``--limit`` for a
command, ``limit`` for a task): a ``CommandError`` for the command, which
:func:`task_arguments` turns into the task's ``PeriodicJobFailed``. Its own
module, below the services, because ``audit_books_task`` checks its
arguments too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, overload

from django.core.management.base import CommandError

from .dates import check_period, parse_since
from .exceptions import PeriodicJobFailed

__all__ = [
    "MAX_BATCH",
    "MAX_COUNT",
    "InvalidArgument",
    "check_account_ids",
    "check_count",
    "check_days",
    "check_event_ids",
    "check_event_types",
    "check_flag",
    "check_minutes",
    "check_payment_id",
    "check_since",
    "task_arguments",
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


class InvalidArgument(CommandError):
    """An argument no check here accepts; the message names it and what was expected."""


@contextmanager
def task_arguments(job: str, summary: dict[str, Any]) -> Iterator[None]:
    """Check a task's arguments within: :class:`InvalidArgument` becomes the
    :class:`~django_escrow_connect.exceptions.PeriodicJobFailed` every task
    fails with (``summary``, the task's empty summary, with the message as
    its error), raised before the task's first query or Stripe call."""
    try:
        yield
    except InvalidArgument as exc:
        raise PeriodicJobFailed(f"{job}: {exc}", {**summary, "errors": [str(exc)]}) from None


def check_count(option: str, value: Any, *, minimum: int, maximum: int = MAX_COUNT) -> None:
    """Raise :class:`InvalidArgument` unless ``value`` is a whole number
    (an int, not a bool) and ``minimum <= value <= maximum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{option} must be a whole number, not {value!r}.")
    if value < minimum:
        more = "zero or more" if minimum == 0 else f"at least {minimum}"
        raise InvalidArgument(f"{option} must be {more}.")
    if value > maximum:
        raise InvalidArgument(f"{option} must be at most {maximum}.")


def check_minutes(option: str, value: Any, *, minimum: int) -> int:
    """A number of minutes to look back (``--older-than``): a whole number of
    at least ``minimum`` that is not longer ago than any date, or :class:`InvalidArgument`."""
    check_count(option, value, minimum=minimum)
    try:
        check_period(option, minutes=value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return int(value)


def check_days(option: str, value: Any) -> int:
    """A retention in days (``--days``): a whole number of at least 1 that is
    not longer ago than any date, or :class:`InvalidArgument`."""
    check_count(option, value, minimum=1)
    try:
        check_period(option, days=value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return int(value)


def check_flag(option: str, value: Any) -> bool:
    """``value`` if it is True or False, or :class:`InvalidArgument` (``"false"`` is no flag)."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{option} must be True or False, not {value!r}.")
    return value


def check_payment_id(option: str, value: Any) -> uuid.UUID | None:
    """A payment's id (a UUID) as given (None if not given), or :class:`InvalidArgument`."""
    if value is None or isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgument(f"{option} {value!r} is not a payment id.")


def check_account_ids(option: str, values: Iterable[str]) -> None:
    """Raise :class:`InvalidArgument` unless every value is a connected account's id (``acct_...``).

    The value goes to Stripe as the ``Stripe-Account`` header: an empty one
    lists the platform's events as if they were the account's, and a NUL or
    a line break makes the HTTP client fail with a traceback.
    """
    for value in values:
        if not _ACCOUNT_ID.fullmatch(value):
            raise InvalidArgument(
                f"{option} {value!r} is not a connected account's id (acct_ and letters "
                "and digits, as Stripe writes it)."
            )


def check_event_ids(option: str, values: Iterable[str]) -> None:
    """Raise :class:`InvalidArgument` unless every value is an event's id (``evt_...``).

    Anything else is in no event log: it was looked up (a NUL byte was
    PostgreSQL's DataError) only to be reported missing.
    """
    for value in values:
        if not _EVENT_ID.fullmatch(value):
            raise InvalidArgument(
                f"{option} {value!r} is not an event's id (evt_ and letters, digits and "
                "underscores, as Stripe writes it)."
            )


def check_event_types(option: str, values: Iterable[str]) -> None:
    """Raise :class:`InvalidArgument` unless every value is shaped like a Stripe event type.

    A misspelt type (``Charge.Refunded``, a stray space) selected nothing
    and the command said "No events to replay.", as if none had failed.
    """
    for value in values:
        if len(value) > _MAX_EVENT_TYPE or not _EVENT_TYPE.fullmatch(value):
            raise InvalidArgument(
                f"{option} {value!r} is not an event type (lowercase words joined by dots, "
                "as Stripe writes them: charge.dispute.closed, v2.core.account.closed)."
            )


@overload
def check_since(option: str, value: Any, *, required: Literal[True]) -> datetime: ...


@overload
def check_since(option: str, value: Any, *, required: bool = False) -> datetime | None: ...


def check_since(option: str, value: Any, *, required: bool = False) -> datetime | None:
    """A ``--since``/``--until`` value as a time (None if not given and not
    ``required``), or :class:`InvalidArgument` naming ``option``.

    Read before the command's first query, like every other argument. An
    empty value is given, and refused like any other that is no time.
    """
    if value is None:
        if required:
            raise InvalidArgument(f"{option} is required.")
        return None
    if not isinstance(value, str):
        raise InvalidArgument(
            f"{option} must be a date, a datetime or a duration like 3d/12h as text, not {value!r}."
        )
    try:
        return parse_since(value)
    except ValueError as exc:
        raise InvalidArgument(f"{option}: {exc}") from None
