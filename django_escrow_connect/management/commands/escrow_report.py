"""``manage.py escrow_report``: payments, transfers, disputes and webhooks at a glance.

Counts payments by state with success and failure rates, transfers by
status and incidents for the period (``--since``, default the last 7 days),
and lists what needs an operator whatever its age: open disputes, payments
held or releasing longer than ``STUCK_PAYMENT_HOURS``, failed, deferred and
unprocessed webhook events, connected accounts with requirements due, and
incidents still open (those opened in the period are counted apart).
``--format json`` for machines; ``--check`` exits 1 when something needs
attention (for a cron job that alerts), an incident once it is open longer
than ``STUCK_PAYMENT_HOURS``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import check_since
from ...services.report import build_report, needs_attention, render_text, stuck_payment_hours


class Command(BaseCommand):
    help = "Report escrow payments, transfers, disputes, stuck payments and webhook health."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", default="7d", help="Period start (2026-11-01, 7d, 24h).")
        parser.add_argument("--until", help="Period end (default: now).")
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 when something needs attention.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since = check_since("--since", options["since"])
        until = check_since("--until", options["until"])
        if since is None:
            raise CommandError("--since is required.")
        if until is not None and until <= since:
            raise CommandError("--until must be after --since.")
        # The setting alone is read under the try (E102, when checks were
        # skipped): a ValueError while building the report is a bug.
        try:
            stuck_payment_hours()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        report = build_report(since=since, until=until)
        if options["format"] == "json":
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        else:
            self.stdout.write(render_text(report))
        if options["check"] and needs_attention(report):
            raise CommandError("Something needs attention (see the report).")
