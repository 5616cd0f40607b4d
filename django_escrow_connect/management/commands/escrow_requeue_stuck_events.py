"""``manage.py escrow_requeue_stuck_events``: enqueue again the webhook events
a worker never took (``WEBHOOK_PROCESSING = "task"``).

An event still ``received`` ``--older-than`` minutes (default
``WEBHOOK_REQUEUE_AFTER_MINUTES``, 15) after it arrived lost its queue
message; it is enqueued again. The worker processes an event once however
many tasks name it, so one merely waiting in a long queue is safe to
enqueue twice. Run it every 10 minutes. In sync mode it does nothing and
says so, without reading ``WEBHOOK_REQUEUE_AFTER_MINUTES`` (as its task).

Each event is printed as it is enqueued again (``evt_...: re-enqueued``),
then the count: an error that stops the run (the broker gone: its
traceback, exit status 1) leaves the events printed before it enqueued,
and how many above the traceback.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import check_count, check_minutes
from ...conf import SETTING_NAME, escrow_settings
from ...webhooks.operations import requeue_after_minutes, requeue_stuck_events
from ..progress import Progress


class Command(BaseCommand):
    help = "Enqueue again the webhook events still 'received' after a while (task mode)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="MINUTES",
            help="Minutes since arrival (default: WEBHOOK_REQUEUE_AFTER_MINUTES, 15).",
        )
        parser.add_argument(
            "--limit", type=int, default=1000, help="At most this many events (oldest first)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only list them.")

    def handle(self, *args: Any, **options: Any) -> None:
        minutes = options["older_than"]
        # The setting only in task mode, as requeue_stuck_events_task reads
        # it: a sync-mode host never uses it, and its run does nothing and
        # says so (it was a CommandError naming a setting of no use there,
        # with call_command or --skip-checks, while the task said disabled).
        if minutes is None and escrow_settings.WEBHOOK_PROCESSING == "task":
            try:
                minutes = requeue_after_minutes()
            except ValueError as exc:  # the setting, when checks were skipped (E115)
                raise CommandError(str(exc)) from None
        elif minutes is not None:
            minutes = check_minutes("--older-than", minutes, minimum=1)
        check_count("--limit", options["limit"], minimum=1)
        # Each event is enqueued on its own: printed as it is.
        progress = Progress(self, "re-enqueued", counted=len)
        with progress.until_stopped():
            ids = requeue_stuck_events(
                None if minutes is None else timedelta(minutes=minutes),
                limit=options["limit"],
                dry_run=options["dry_run"],
                report=progress,
            )
        if ids is None:
            self.stdout.write(
                f'{SETTING_NAME}["WEBHOOK_PROCESSING"] is not "task": each request processes '
                "its own event; nothing done."
            )
            return
        if not ids:
            self.stdout.write(f"No webhook event is still received after {minutes} minutes.")
            return
        if not options["dry_run"]:  # each one was printed as it was enqueued
            self.stdout.write(
                f"Re-enqueued {len(ids)} events received more than {minutes} minutes ago."
            )
            return
        self.stdout.write(
            f"Would re-enqueue {len(ids)} events received more than {minutes} minutes ago:"
        )
        for stripe_event_id in ids:
            self.stdout.write(f"  {stripe_event_id}")
