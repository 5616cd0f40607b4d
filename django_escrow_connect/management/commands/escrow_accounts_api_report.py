"""``manage.py escrow_accounts_api_report``: which accounts are v1 or v2, and what switching means.

Reads only the database (no Stripe call). Each connected account is read,
linked and updated through the Stripe Accounts API it was created with
(its ``accounts_api`` column); ``ACCOUNTS_API`` decides the API of accounts
created from now on. The text states what Stripe documents about using the
two APIs side by side; see docs/onboarding.md, "Accounts v1 or v2".
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count

from ... import swappable
from ...conf import ACCOUNTS_V2, escrow_settings
from ...gateway import get_gateway
from ...states import AccountsApi

#: What Stripe documents about v1 and v2 accounts side by side, and what the
#: package does with it (docs/onboarding.md says the same at more length).
SWITCHING = """\
What switching ACCOUNTS_API means
- It decides the API of accounts created from now on. Every existing account
  keeps the API it was created with: the package reads it, links it and
  follows its events as before. Nothing is migrated, nothing is re-onboarded.
- Stripe: a v2 account's id can be passed to v1 endpoints (transfers, login
  links, account sessions); the answer is shaped as a v1 account. Payments
  and releases work the same for both kinds.
- Stripe: existing v1 accounts can be used with the Accounts v2 API without
  changing them (a new v1 account may take up to 10 minutes before v2
  endpoints accept it; Stripe sends v2.core.account.created when it is ready).
  The package still reads v1 accounts through v1.
- Accounts v2 changes arrive only as thin events: with v2 accounts, create
  the event destination and set THIN_WEBHOOK_SECRETS (docs/webhooks.md,
  "Thin events"). v1 accounts keep using the Connect endpoint.
- Switching back to v1 later is possible the same way: accounts already
  created with v2 stay v2."""


class Command(BaseCommand):
    help = "Report which connected accounts use Accounts v1 or v2, and what switching means."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--list", action="store_true", help="Also list every account with its API and state."
        )
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = swappable.load("ConnectedAccount")._default_manager
        counts = {api: 0 for api in AccountsApi.values}
        for row in accounts.values("accounts_api").annotate(n=Count("pk")):
            counts[row["accounts_api"]] = row["n"]
        not_created = accounts.filter(stripe_account_id="").count()
        setting = str(escrow_settings.ACCOUNTS_API)
        listed = []
        if options["list"]:
            listed = [
                {
                    "stripe_account_id": account.stripe_account_id,
                    "accounts_api": account.accounts_api,
                    "status": account.status,
                    "owner": (
                        f"user:{account.owner_user_id}"
                        if account.owner_user_id is not None
                        else f"organization:{account.owner_organization_id}"
                    ),
                }
                for account in accounts.order_by("created_at")
            ]
        if options["json"]:
            report = {
                "accounts_api_setting": setting,
                "accounts": counts,
                "not_created_at_stripe": not_created,
                "listed": listed,
            }
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
            return
        self.stdout.write(
            f"ACCOUNTS_API = {setting!r}: new connected accounts are created with "
            f"Accounts {setting}."
        )
        for api in AccountsApi.values:
            self.stdout.write(f"  Accounts {api}: {counts[api]} accounts")
        if not_created:
            self.stdout.write(
                f"  ({not_created} of them not created at Stripe yet: they will be created "
                "with the API recorded on the row)"
            )
        if counts[AccountsApi.V2] or setting == ACCOUNTS_V2:
            self.stdout.write(f"  {_thin_secrets_line()}")
        for row in listed:
            self.stdout.write(
                f"  {row['stripe_account_id'] or '(not created)'}  {row['accounts_api']}  "
                f"{row['status']}  {row['owner']}"
            )
        self.stdout.write("")
        self.stdout.write(SWITCHING)


def _thin_secrets_line() -> str:
    """Whether the thin-event endpoint v2 accounts report to can verify its events."""
    if escrow_settings.THIN_WEBHOOK_SECRETS:
        return "THIN_WEBHOOK_SECRETS is set (v2 accounts need it)."
    # The simulated gateway signs its thin events with its own secret, as
    # the receiver knows (``verifies_without_configured_secrets``): telling a
    # developer the setting is missing would send them after a key they do
    # not need.
    if getattr(get_gateway(), "verifies_without_configured_secrets", False) is True:
        return (
            "THIN_WEBHOOK_SECRETS is not set; not needed with this gateway, which signs "
            "its own thin events (set it before going live: v2 accounts need it)."
        )
    return "THIN_WEBHOOK_SECRETS is NOT set (v2 accounts need it)."
