"""``manage.py escrow_audit``: compare the app's books with Stripe's, per payment.

For every payment that reached Stripe: the PaymentIntent and its charge
(captured, refunded, currency, a destination charge's application fee), the
transfers of its ``transfer_group`` (count, amounts, reversals, destination)
and its refunds, against the payment's rows and totals. Prints each
divergence (payment id, what, the app's amount, Stripe's amount, currency),
the payments whose money is in flight (unsettled: not compared), and those
Stripe could not be asked about; ``--json`` prints the same as JSON.

Exit status (raised as ``CommandError``, as Django commands do): 0 when the
books agree, 1 when they disagree, 2 when they agree as far as they were
read but some payments could not be audited (Stripe unreachable).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...arguments import MAX_BATCH, check_count, check_payment_id, check_since
from ...services.audit import DEFAULT_BATCH_SIZE, audit_books, render_text

#: Exit status when divergences were found.
EXIT_DIVERGENT = 1
#: Exit status when no divergence was found but some payments could not be audited.
EXIT_INCOMPLETE = 2


class Command(BaseCommand):
    help = (
        "Audit the books: compare each payment's captured, refunded, transferred and "
        "reversed amounts (and a destination charge's fee) with Stripe's. Exits 1 when "
        "they disagree."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--payment-id", metavar="ID", help="Only this payment.")
        parser.add_argument(
            "--since",
            help="Only payments updated since then (2026-11-01, an ISO time, or 7d, 12h, 30m).",
        )
        parser.add_argument(
            "--limit", type=int, metavar="N", help="Audit at most N payments (oldest change first)."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"Payments read from the database per query (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        payment_id = check_payment_id("--payment-id", options["payment_id"])
        since = check_since("--since", options["since"])
        if options["limit"] is not None:
            check_count("--limit", options["limit"], minimum=0)
        check_count("--batch-size", options["batch_size"], minimum=1, maximum=MAX_BATCH)
        result = audit_books(
            payment_id=payment_id,
            since=since,
            limit=options["limit"],
            batch_size=options["batch_size"],
        )
        if options["json"]:
            self.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        else:
            self.stdout.write(render_text(result))
        if result.divergences:
            raise CommandError(
                f"The books disagree with Stripe: {len(result.divergences)} divergence(s).",
                returncode=EXIT_DIVERGENT,
            )
        if result.errors:
            raise CommandError(
                f"{len(result.errors)} payment(s) could not be audited; run again later.",
                returncode=EXIT_INCOMPLETE,
            )
