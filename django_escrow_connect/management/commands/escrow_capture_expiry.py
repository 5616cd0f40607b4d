"""``manage.py escrow_capture_expiry``: manual-capture holds close to Stripe's
``capture_before`` deadline (after which Stripe voids the authorisation).

Lists and logs every hold expiring within ``CAPTURE_EXPIRY_WARNING_HOURS``;
then, by ``CAPTURE_EXPIRY_ACTION`` (or ``--action``), only warns, releases
(captures) or cancels (voids) them. Run it at least daily. Prints one line
per hold as it goes: an unexpected error that stops the run (its traceback,
exit status 1) leaves the captures and voids printed before it done.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import escrow_settings
from ...services.schedules import CAPTURE_EXPIRY_ACTIONS, capture_expiry, capture_expiry_action
from ..progress import Progress


class Command(BaseCommand):
    help = "Warn about, release or cancel manual-capture holds close to capture_before."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--action",
            choices=CAPTURE_EXPIRY_ACTIONS,
            help="Override CAPTURE_EXPIRY_ACTION for this run.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only report what would change.")

    def handle(self, *args: Any, **options: Any) -> None:
        # The settings alone are read under the try (E035, E101, when checks
        # were skipped): a ValueError from a release, a cancel or a sync
        # during the run is a bug, to be seen with its traceback.
        try:
            capture_expiry_action(options["action"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        # Each capture or void is committed on its own: printed as it is made.
        progress = Progress(self, "changed")
        with progress.until_stopped():
            changes = capture_expiry(
                action=options["action"], dry_run=options["dry_run"], report=progress
            )
        hours = escrow_settings.CAPTURE_EXPIRY_WARNING_HOURS
        if not changes:
            self.stdout.write(f"No manual-capture hold expires within {hours} hours.")
            return
        if any(change.error for change in changes):
            raise CommandError("Some holds could not be handled; see above.")
