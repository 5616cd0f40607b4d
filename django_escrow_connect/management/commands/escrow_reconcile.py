"""``manage.py escrow_reconcile``: finish what crashes, timeouts and lost
webhooks left behind. Safe to run as often as you like (cron: every 10 min).

Prints one line per payment changed (or, with ``--dry-run``, that would be).
Exits with status 1 when an operation failed (e.g. Stripe unreachable).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...dates import check_period
from ...services.reconcile import DEFAULT_OLDER_THAN_MINUTES, reconcile
from ...webhooks.operations import retry_deferred_events


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
        if options["older_than"] < 0:
            raise CommandError("--older-than must be zero or more minutes.")
        try:
            check_period("--older-than", minutes=options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["payment"] is not None:
            try:
                options["payment"] = uuid.UUID(options["payment"])
            except ValueError:
                raise CommandError(
                    f"--payment {options['payment']!r} is not a payment id."
                ) from None
        changes = reconcile(
            dry_run=options["dry_run"],
            payment_id=options["payment"],
            older_than=timedelta(minutes=options["older_than"]),
        )
        if options["payment"] is None:
            # Webhooks sit above the services: the command composes both.
            changes += retry_deferred_events(dry_run=options["dry_run"])
        for change in changes:
            stream = self.stderr if change.error else self.stdout
            stream.write(str(change))
        if not changes:
            self.stdout.write("Nothing to reconcile.")
        if any(change.error for change in changes):
            raise CommandError("Some operations failed; see above. Run again later.")
