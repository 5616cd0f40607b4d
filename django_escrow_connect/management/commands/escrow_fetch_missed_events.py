"""``manage.py escrow_fetch_missed_events``: catch up with events that never arrived.

Lists the handled event types from Stripe's Events API (which reaches back 30
days) and records and processes every event the log does not have yet, for
the platform and, with ``--account`` or ``--all-accounts``, for connected
accounts, and thin events from the v2 Events API when Accounts v2 is in use
(or with ``--thin-events``). Safe to run often: known events cost two queries
and do nothing. Known failed events are left to ``escrow_replay_events``,
counted on one informational line per source (those whose object cannot be
read apart: no replay helps them until an upgrade). When a page of a source
cannot be listed, the events read before it are recorded all the same and
the run fails, asking for a run with the same ``--since``.

Each event recorded or processed now is printed as it is
(``evt_...: received -> processed (charge.refunded, platform)``; a failed
one on stderr), before the summary of each source: an unexpected error that
stops the run (its traceback, exit status 1) leaves those events recorded,
their lines printed and how many above the traceback.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import check_account_ids, check_since
from ...webhooks.operations import FetchResult, connected_account_ids, fetch_missed_events
from ..progress import Progress


class Command(BaseCommand):
    help = "Record and process Stripe events the webhook endpoints never received."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", default="3d", help="Events created since (2026-11-01, 3d, 12h; max 30d)."
        )
        parser.add_argument(
            "--account",
            action="append",
            default=[],
            metavar="ACCT_ID",
            help="Also this connected account's events (Connect endpoint).",
        )
        parser.add_argument(
            "--all-accounts",
            action="store_true",
            help="Also every connected account's events (one API listing each).",
        )
        parser.add_argument(
            "--no-platform", action="store_true", help="Skip the platform's own events."
        )
        thin = parser.add_mutually_exclusive_group()
        thin.add_argument(
            "--thin-events",
            dest="thin",
            action="store_const",
            const=True,
            default=None,
            help="Also list thin (v2) events (default: when Accounts v2 is in use).",
        )
        thin.add_argument(
            "--no-thin-events",
            dest="thin",
            action="store_const",
            const=False,
            help="Skip thin (v2) events.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since = check_since("--since", options["since"], required=True)
        check_account_ids("--account", options["account"])
        accounts = list(options["account"])
        if options["all_accounts"]:
            accounts += connected_account_ids()
        # Each event is committed on its own: printed as it is recorded.
        progress = Progress(self, "events recorded or processed", counted=len)
        with progress.until_stopped():
            results = fetch_missed_events(
                since,
                accounts=list(dict.fromkeys(accounts)),
                include_platform=not options["no_platform"],
                include_thin=options["thin"],
                report=progress,
            )
        failed = 0
        unreachable = 0
        for result in results:
            if result.error:
                self.stderr.write(f"{result.source}: Stripe could not list events: {result.error}")
                unreachable += 1
                if not result.outcomes:  # nothing was read before the failure
                    continue
            outcomes = ", ".join(f"{n} {status}" for status, n in sorted(result.outcomes.items()))
            self.stdout.write(
                f"{result.source}: {result.seen} events, {result.recorded} new"
                + (f" ({outcomes})" if outcomes else "")
                + (", read before its listing failed" if result.error else "")
            )
            if result.left_alone:
                self.stdout.write(f"{result.source}: {_left_alone(result)}")
            failed += result.outcomes.get("failed", 0)
        if failed or unreachable:
            message = (
                f"{failed} events failed processing, {unreachable} sources could not be "
                "listed; see above and the event log."
            )
            if unreachable:
                # The events read before a page failed are recorded; the rest
                # (older events of the types listed so far, and every event of
                # the types a later listing of that source would have asked
                # for) were not read, so the same period has to be asked for
                # again, not one from now.
                message += (
                    " A source that could not be listed has only the events read before the "
                    "failure recorded, not the rest: run it again with the same --since once "
                    "the cause above is fixed, within the 30 days Stripe lists (the events "
                    "recorded now are then known and change nothing)."
                )
            raise CommandError(message)


def _left_alone(result: FetchResult) -> str:
    """The informational line on the known failed events a run left as they are."""
    known = len(result.left_alone)
    line = (
        f"{known} known failed event{'s' if known != 1 else ''} left alone "
        "(escrow_replay_events retries failed events"
    )
    if result.unreadable:
        line += (
            f"; {result.unreadable} whose object cannot be read fail"
            f"{'s' if result.unreadable == 1 else ''} alike until an upgrade, "
            "then escrow_replay_events --unreadable"
        )
    return line + ")."
