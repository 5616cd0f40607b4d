"""The commands' ``--limit`` and ``--batch-size``: a count the database can take.

A database's LIMIT (and Python's slicing of a query into batches) takes at
most a signed 64-bit integer: a larger number was an ``IntegrityError`` or a
``ValueError`` with a traceback, after the command had begun reading.
"""

from __future__ import annotations

from django.core.management.base import CommandError

__all__ = ["MAX_COUNT", "check_count"]

#: The largest count a LIMIT takes (a signed 64-bit integer).
MAX_COUNT = 2**63 - 1


def check_count(option: str, value: int, *, minimum: int) -> None:
    """Raise ``CommandError`` unless ``minimum <= value <= MAX_COUNT``."""
    if value < minimum:
        more = "zero or more" if minimum == 0 else f"at least {minimum}"
        raise CommandError(f"{option} must be {more}.")
    if value > MAX_COUNT:
        raise CommandError(f"{option} must be at most {MAX_COUNT}.")
