"""``manage.py escrow_purge_event_payloads``: drop old webhook payloads.

Nulls the payload of processed and ignored events received more than
``WEBHOOK_PAYLOAD_RETENTION_DAYS`` ago (or ``--days``). The rows stay, so a
late duplicate delivery is still refused. Failed and pending events keep
their payload until they are dealt with. Run it daily.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import check_days
from ...webhooks.operations import purge_payloads, purgeable_events, retention_days


class Command(BaseCommand):
    help = "Null the payload of settled webhook events older than the retention period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            help="Retention in days (default: ESCROW_CONNECT['WEBHOOK_PAYLOAD_RETENTION_DAYS']).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["days"] is not None:
            # Named as the other commands name theirs (argparse typed it).
            check_days("--days", options["days"])
        try:
            # A whole number of days (the setting may be a string such as
            # "30" once checks were skipped), converted in one place only.
            days = retention_days(options["days"])
        except ValueError as exc:  # the setting, when checks were skipped; --days out of range
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            count = purgeable_events(days).count()
            self.stdout.write(f"Would purge the payload of {_older_than(count, days)}.")
            return
        count = purge_payloads(days)
        self.stdout.write(f"Purged the payload of {_older_than(count, days)}.")


def _older_than(count: int, days: int) -> str:
    """``1 event older than 1 day``: operators read (and grep) the command's English output."""
    events = "event" if count == 1 else "events"
    return f"{count} {events} older than {days} {'day' if days == 1 else 'days'}"
