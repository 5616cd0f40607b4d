"""``manage.py escrow_replay_events``: process recorded webhook events again.

By default every *failed* event is retried, but those whose object could not
be read (another API version, a value no column holds): the same body fails
every replay alike, so a scheduled run would fail for ever; they are counted
on one line, and replayed with ``--unreadable`` or by name once the package
or the endpoint is upgraded. ``--event evt_...`` replays the named events
whatever their state (handlers compare with the current state, so replaying
an event that was applied changes nothing); ``--type`` and ``--since``
narrow the selection; ``--status`` picks other states.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import check_count, check_event_ids, check_event_types, check_since
from ...states import WebhookEventStatus
from ...webhooks.operations import replay_events
from ...webhooks.pipeline import event_model, unreadable


class Command(BaseCommand):
    help = "Replay recorded Stripe webhook events (default: every failed event)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--event", action="append", default=[], metavar="EVT_ID", help="Replay this event."
        )
        parser.add_argument("--type", action="append", default=[], help="Only this event type.")
        parser.add_argument("--since", help="Only events received since (2026-11-01, 3d, 12h).")
        parser.add_argument(
            "--status",
            action="append",
            choices=list(WebhookEventStatus.values),
            help="Only events in this state (default: failed; with --event: any).",
        )
        parser.add_argument(
            "--unreadable",
            action="store_true",
            help="Also the failed events whose object could not be read (after an upgrade).",
        )
        parser.add_argument("--limit", type=int, default=1000, help="At most this many events.")
        parser.add_argument("--dry-run", action="store_true", help="Only list what would replay.")

    def handle(self, *args: Any, **options: Any) -> None:
        check_count("--limit", options["limit"], minimum=1)
        check_event_ids("--event", options["event"])
        check_event_types("--type", options["type"])
        # Every argument is checked before the first query: a bad --since
        # was refused only after --event had been looked up.
        since = check_since("--since", options["since"])
        events = event_model().objects.all()
        if options["event"]:
            events = events.filter(stripe_event_id__in=options["event"])
            missing = set(options["event"]) - set(events.values_list("stripe_event_id", flat=True))
            if missing:
                raise CommandError(f"Not in the event log: {', '.join(sorted(missing))}")
        statuses = options["status"] or ([] if options["event"] else [WebhookEventStatus.FAILED])
        if statuses:
            events = events.filter(status__in=statuses)
        if options["type"]:
            events = events.filter(type__in=options["type"])
        if since is not None:
            events = events.filter(received_at__gte=since)
        if not options["event"] and not options["unreadable"]:
            left_alone = unreadable(events).count()
            if left_alone:
                events = events.exclude(pk__in=unreadable(events).values("pk"))
                self.stdout.write(
                    f"{left_alone} failed event{'s' if left_alone != 1 else ''} whose object "
                    f"cannot be read {'are' if left_alone != 1 else 'is'} left alone (a replay "
                    "fails alike until an upgrade; then --unreadable)."
                )
        selected = list(
            events.order_by("received_at").values_list("pk", "stripe_event_id", "type", "status")[
                : options["limit"]
            ]
        )
        if not selected:
            self.stdout.write("No events to replay.")
            return
        if options["dry_run"]:
            for _, event_id, event_type, status in selected:
                self.stdout.write(f"would replay {event_id} {event_type} ({status})")
            return
        counts = replay_events(pk for pk, *_ in selected)
        summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        self.stdout.write(f"Replayed {len(selected)} events: {summary}.")
        if counts.get(WebhookEventStatus.FAILED):
            raise CommandError("Some events failed again; see the event log (last_error).")
