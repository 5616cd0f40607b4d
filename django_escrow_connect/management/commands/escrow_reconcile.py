"""``manage.py escrow_reconcile``: finish what crashes, timeouts and lost
webhooks left behind. Safe to run as often as you like (cron: every 10 min).

Prints one line per payment changed (or, with ``--dry-run``, that would be),
as it goes: an unexpected error that stops the run (its traceback, exit
status 1) leaves the changes printed before it done. Exits with status 1
when an operation failed (e.g. Stripe unreachable).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import check_minutes, check_payment_id
from ...services.reconcile import DEFAULT_OLDER_THAN_MINUTES, reconcile
from ...webhooks.operations import retry_deferred_events
from ..progress import Progress


class Command(BaseCommand):
    help = (
        "Reconcile escrow payments with Stripe: releases with an unknown outcome, "
        "payments still awaiting a PaymentIntent outcome, unconfirmed refunds, and "
        "deferred webhook events."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only report what would change.")
        parser.add_argument("--payment", metavar="ID", help="Only this payment (any age).")
        parser.add_argument(
            "--older-than",
            metavar="MINUTES",
            type=int,
            default=DEFAULT_OLDER_THAN_MINUTES,
            help="Only payments untouched for this many minutes "
            f"(default {DEFAULT_OLDER_THAN_MINUTES}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        minutes = check_minutes("--older-than", options["older_than"], minimum=0)
        payment_id = check_payment_id("--payment", options["payment"])
        # Each change is committed on its own: printed as it is made.
        progress = Progress(self, "changed")
        with progress.until_stopped():
            changes = reconcile(
                dry_run=options["dry_run"],
                payment_id=payment_id,
                older_than=timedelta(minutes=minutes),
                report=progress,
            )
            if payment_id is None:
                # Webhooks sit above the services: the command composes both.
                deferred = retry_deferred_events(dry_run=options["dry_run"])
                for change in deferred:
                    progress(change)
                changes = [*changes, *deferred]
        if not changes:
            self.stdout.write("Nothing to reconcile.")
        if any(change.error for change in changes):
            raise CommandError("Some operations failed; see above. Run again later.")
