"""Reading the ``--since``/``--until`` arguments of the management commands and tasks,
and the settings that give them a period (``period_setting``).

Its own module because commands, tasks and services all read them, and none of
those layers should import another's module just for this.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from .conf import SETTING_NAME, escrow_settings

__all__ = ["check_period", "parse_since", "period_setting"]

_RELATIVE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``2026-11-01``, ``2026-11-01T12:00:00+00:00``, or relative: ``3d``, ``12h``, ``30m``."""
    now = now or timezone.now()
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        try:
            delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount)}.get(
                unit, timedelta(minutes=amount)
            )
            return now - delta
        except OverflowError:
            # Callers turn a ValueError into their usual error (a command's
            # CommandError); an OverflowError would be a traceback.
            raise ValueError(f"Out of range (no date is that long ago): {value!r}") from None
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(f"Not a date, a datetime or a duration like 3d/12h: {value!r}")
        parsed = datetime(day.year, day.month, day.day)
    try:
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
        # The database stores UTC: a time whose UTC is before year 1 or after
        # 9999 (0001-01-01T00:00+05:00) would be an OverflowError there.
        parsed.astimezone(dt_timezone.utc)
    except OverflowError:
        raise ValueError(
            f"Out of range (not a date in years 1 to 9999 in UTC): {value!r}"
        ) from None
    return parsed


def check_period(what: str, **period: int) -> None:
    """Raise ValueError when ``timedelta(**period)`` ago is before any date.

    For the commands' ``--days`` and ``--older-than``: ``OverflowError`` would
    otherwise be a traceback, from the timedelta or from the subtraction.
    """
    try:
        timezone.now() - timedelta(**period)
    except OverflowError:
        raise ValueError(f"{what} is out of range (no date is that long ago).") from None


def period_setting(name: str, unit: str, check: str) -> int:
    """``ESCROW_CONNECT[name]``, a whole number of ``unit`` (days, hours,
    minutes) of at least 1, or ValueError naming the setting and its check.

    The system check reports a bad value, but ``call_command`` (a host's
    scheduler), ``--skip-checks`` and the periodic tasks run without the
    checks: int() or timedelta() made a bare traceback of ``"abc"`` or None,
    and a threshold nobody wrote of ``1.5`` or ``"15"``.
    """
    value = escrow_settings.raw(name)
    key = f'{SETTING_NAME}["{name}"]'
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{key} must be an int of at least 1 ({unit}), not {value!r} (system check {check})."
        )
    check_period(key, **{unit: value})
    return value
