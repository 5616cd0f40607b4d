"""Thin (v2) events about connected accounts: a signal to read the account again.

A thin event carries no snapshot, only its type and the related object's id.
Every handled type is processed the same way: the account is fetched from
Stripe once for the event (:meth:`EventContext.fetch_once`: by the pipeline,
with no transaction open), through the API that created it, and applied like
any read (:func:`accounts.apply_fetched_account`):
the latest read wins, so duplicates and any delivery order end in Stripe's
current state. A failed fetch raises, and the event fails and is retried like
any processing failure.
"""

from __future__ import annotations

import logging

from ...services import accounts
from ...services.common import account_model
from ...services.errors import UnknownObject
from ..context import EventContext, IgnoreEvent, log_extra

logger = logging.getLogger("django_escrow_connect.webhooks")

__all__ = ["account_changed"]

#: The related object type of the account events.
ACCOUNT_OBJECT = "v2.core.account"


def account_changed(context: EventContext) -> None:
    """``v2.core.account[requirements].updated``, capability status changes, closure."""
    related = context.payload.get("related_object")
    if not isinstance(related, dict) or related.get("type") != ACCOUNT_OBJECT:
        raise IgnoreEvent(f"{context.type} names no {ACCOUNT_OBJECT}.")
    account_id = context.related_object_id
    account = account_model().objects.filter(stripe_account_id=account_id).first()
    if account is None:
        raise UnknownObject(f"No connected account {account_id} (yet).")
    context.connected_account = account_id
    if account.is_deauthorized:
        # The platform cannot read a disconnected (or closed) account any more.
        raise IgnoreEvent(f"Connected account {account_id} is deauthorized.")
    stamp, snapshot = context.fetch_once(account_id, lambda: accounts.fetch_account(account))
    logger.info(
        "%s: connected account read again",
        context.type,
        extra=log_extra(context.event, object_id=account_id),
    )
    accounts.apply_fetched_account(snapshot, fetched_at=stamp)
