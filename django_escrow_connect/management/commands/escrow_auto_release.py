"""``manage.py escrow_auto_release``: release payments held longer than
``AUTO_RELEASE_AFTER_DAYS`` (a system release: no customer confirmation).

With the setting at None (the default) it does nothing and says so.
Disputed payments are never released. Prints one line per payment as it
goes: an unexpected error that stops the run (its traceback, exit status
1) leaves the releases printed before it done.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import SETTING_NAME
from ...services.schedules import auto_release, auto_release_after_days
from ..progress import Progress


class Command(BaseCommand):
    help = "Release escrow payments held longer than AUTO_RELEASE_AFTER_DAYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only report what would be released."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The setting alone is read under the try (E034, when checks were
        # skipped): a ValueError from a release during the run is a bug, to be
        # seen with its traceback, not a message blaming the setting.
        try:
            auto_release_after_days()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        # Each release is committed on its own: print it as it is made, and
        # before an error's traceback say how far the run got, so nobody
        # releases those payments by hand again.
        progress = Progress(self, "released")
        with progress.until_stopped():
            changes = auto_release(dry_run=options["dry_run"], report=progress)
        if changes is None:
            self.stdout.write(
                f'Automatic release is off ({SETTING_NAME}["AUTO_RELEASE_AFTER_DAYS"] is None); '
                "nothing done."
            )
            return
        if not changes:
            self.stdout.write("No payment is due for automatic release.")
            return
        if any(change.error for change in changes):
            raise CommandError("Some payments could not be released; see above.")
