"""Connect events about connected accounts (they carry a top-level ``account``)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from django.db import router

from ... import swappable
from ...gateway.types import AccountSnapshot
from ...notifications import notify
from ...services import accounts
from ...services.common import account_model
from ...services.errors import UnknownObject
from ...services.shortcut import Shortcut
from ..context import EventContext, log_extra
from . import PARSE_ERRORS, snapshot

logger = logging.getLogger("django_escrow_connect.webhooks")


def _known(result: object, context: EventContext) -> None:
    if result is None:
        raise UnknownObject(f"No connected account {context.account} (yet).")
    context.connected_account = context.account


def account_updated(context: EventContext) -> None:
    """account.updated: the account's readiness, as of the event's creation."""
    result = accounts.apply_account_snapshot(
        snapshot(context, AccountSnapshot), as_of=context.created, reads=context.fetched
    )
    _known(result, context)


def application_deauthorized(context: EventContext) -> None:
    """The owner disconnected the platform: no new payments go to the account."""
    _known(accounts.deauthorize_account(context.account, as_of=context.created), context)


def application_authorized(context: EventContext) -> None:
    _known(accounts.reauthorize_account(context.account, as_of=context.created), context)


def capability_updated(context: EventContext) -> None:
    """capability.updated: e.g. ``transfers`` becoming active or inactive."""
    obj = context.object
    account_id = obj.get("account") if isinstance(obj.get("account"), str) else context.account
    result = accounts.apply_capability(
        str(account_id or ""),
        str(obj.get("id") or ""),
        str(obj.get("status") or ""),
        context.created,
        reads=context.fetched,
    )
    _known(result, context)


def refresh(context: EventContext) -> None:
    """person.* and account.external_account.*: re-read the account.

    These events cannot be ordered against ``account.updated``, so the
    account's requirements are fetched from Stripe instead of guessed; by the
    pipeline, with no transaction open (``reads``).
    """
    account = account_model().objects.filter(stripe_account_id=context.account).first()
    _known(account, context)
    if not context.fetched:  # once, not again when the handler runs with Stripe's answer
        logger.info(
            "%s: refreshing the connected account",
            context.type,
            extra=log_extra(context.event, object_id=str(context.object.get("id") or "")),
        )
    accounts.refresh_account(account, reads=context.fetched)


def external_account(context: EventContext) -> None:
    """account.external_account.created/updated/deleted: re-read the account,
    and send ``external_account_errored`` when a bank account became ``errored``.

    Stripe sets ``errored`` when a payout to the bank account failed (closed
    account, wrong number...): payouts stop until the owner replaces it.
    """
    refresh(context)
    obj = context.object
    if (
        context.type != "account.external_account.deleted"
        and obj.get("object") == "bank_account"
        and obj.get("status") == "errored"
        and (context.type.endswith(".created") or "status" in context.previous_attributes)
    ):
        account = account_model().objects.filter(stripe_account_id=context.account).first()
        logger.warning(
            "bank account errored: %s",
            obj.get("id") or "",
            extra=log_extra(context.event, object_id=str(obj.get("id") or "")),
        )
        notify("external_account_errored", account=account, external_account=obj)


# --- shortcut: the common case in the event's own statement (webhooks/shortcuts.py) ---


def account_updated_shortcut(payload: dict[str, Any], condition: str) -> Shortcut | None:
    """:func:`account_updated` when it applies the snapshot to a known account."""
    created = payload.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        return None  # ordered by when it is received: known only once recorded
    try:
        account = AccountSnapshot.from_dict(payload["data"]["object"])
        as_of = datetime.fromtimestamp(created, tz=timezone.utc)
    except PARSE_ERRORS:
        return None  # the handler reports it
    # One statement: the account and the event log in the same database.
    if router.db_for_write(account_model()) != router.db_for_write(swappable.load("WebhookEvent")):
        return None
    return accounts.account_snapshot_shortcut(account, as_of=as_of, condition=condition)
