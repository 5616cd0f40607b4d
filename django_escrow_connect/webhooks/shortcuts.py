"""A new event in one statement: its recorded state, its insert and its handler's change.

A delivery in sync mode first needs to know whether its event is recorded
(a duplicate is answered by that alone), then inserts it and runs its handler
in a transaction: five round trips to PostgreSQL for the commonest events
(read, ``BEGIN``, insert, the handler's ``UPDATE``, ``COMMIT``). When the
handler's common case is one conditional change (a
:class:`~..services.shortcut.Shortcut`: hold a payment, find or record a
charge, apply an ``account.updated`` snapshot), the read's miss is followed
by one autocommitted statement::

    WITH recorded AS (SELECT pk, status, type, account FROM event WHERE stripe_event_id = %s),
         <the handler's WITH items, each guarded by NOT EXISTS (SELECT 1 FROM recorded)>,
         inserted AS (INSERT INTO event (...) VALUES (..., CASE WHEN <applied>
                      THEN 'processed' ELSE 'received' END, ...)
                      ON CONFLICT (stripe_event_id) DO NOTHING RETURNING pk, status)
    SELECT inserted.*, recorded.*, <the handler's columns> FROM ...

What each delivery ends with:

- *new, applied*: the change and the event row (``processed``) committed
  together; the handler's after-commit part (log, notify) runs.
- *new, not applied* (the payment is not in the state the shortcut expects,
  does not exist yet, ...): the event is recorded ``received`` and nothing
  else changed; the pipeline then processes it as any recorded event (row
  locked, the full handler), which decides as it always did.
- *recorded before*: the guard kept the change from running and the insert
  met the unique id: nothing was written; the recorded state is answered as
  the separate read answered it (a duplicate, or a failed event's retry).
- *a concurrent first delivery*: both statements see no row; the handler's
  change waits for the other's row lock and then changes nothing (each
  shortcut's ``WHERE`` says why: a payment left the source states, a charge
  id is no longer blank, an account already holds exactly this event's
  data), and the insert waits and does nothing. No row and no insert: the
  state is read once more.

PostgreSQL only (data-modifying ``WITH``), and only where the event insert is
equivalent to ``save()`` (:func:`.pipeline.insert_statement_usable`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone

from .. import observability, swappable
from ..services.shortcut import Shortcut
from ..states import WebhookEventStatus as E
from .context import EventContext
from .handlers import note_payment
from .pipeline import (
    WEBHOOK_SPAN,
    Outcome,
    RecordedEvent,
    insert_statement_usable,
    log_settled,
    outcome_for,
    warn_if_other_api_version,
)
from .registry import shortcut_for

__all__ = ["GUARD", "Recorded", "plan", "process", "record"]

#: ANDed to every shortcut's ``WHERE``: the event is not recorded yet.
GUARD = "NOT EXISTS (SELECT 1 FROM recorded)"
#: What processing sets when the shortcut applied (``mark_processed``, one attempt).
SETTLED_WHEN_APPLIED = {"status": E.PROCESSED, "attempts": 1}


@dataclass(frozen=True)
class Recorded:
    """What the one statement did.

    ``inserted``: the event row is new (``applied`` says whether the shortcut
    did the handler's work, then ``values`` are its columns); otherwise
    ``recorded`` is the row found (None: a concurrent delivery's, not
    committed when the statement began: read it again).
    """

    inserted: bool
    applied: bool
    pk: Any
    recorded: RecordedEvent | None
    values: tuple[Any, ...]


def plan(endpoint: str, event: dict[str, Any]) -> Shortcut | None:
    """The shortcut for this verified event, or None (the usual path then runs)."""
    planner = shortcut_for(str(event.get("type") or ""), endpoint)
    if planner is None:
        return None
    model = swappable.load("WebhookEvent")
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql" or not insert_statement_usable(model, connection):
        return None
    return planner(event, GUARD)


def process(row: Any, shortcut: Shortcut, object_id: str) -> Outcome | RecordedEvent | None:
    """Record a new event with its handler's shortcut: the outcome when that settled it.

    Otherwise what the caller dispatches as any recorded event: the new row
    (``received``, the shortcut did not apply: the full handler runs next),
    the row recorded before, or None (a concurrent delivery's: read it again).
    """
    with observability.span(
        WEBHOOK_SPAN,
        **{
            "webhook.event_type": row.type,
            "webhook.event_id": row.stripe_event_id,
            "webhook.endpoint": row.endpoint,
        },
    ) as span:
        found = record(row, shortcut, object_id)
        if not found.inserted:
            settled = found.recorded is not None and not found.recorded.is_pending
            span.set_attributes(
                **{"webhook.outcome": "duplicate" if settled else "already_recorded"}
            )
            return found.recorded
        if not found.applied:
            span.set_attributes(**{"webhook.outcome": "recorded"})
            return RecordedEvent.inserted(row, found.pk, object_id)
        row.pk = found.pk
        row._state.adding = False
        row.mark_processed()
        row.attempts = 1
        warn_if_other_api_version(row)
        context = EventContext(event=row, payload=row.payload)
        note_payment(context, shortcut.finish(found.values))
        span.set_attributes(**{"webhook.outcome": str(E.PROCESSED)})
    log_settled(row, context)
    observability.record_webhook_event(row.type, str(E.PROCESSED))
    return outcome_for(E.PROCESSED, row.stripe_event_id)


def record(row: Any, shortcut: Shortcut | None, object_id: str) -> Recorded:
    """Run the one statement for an unsaved event ``row`` (see the module docstring).

    Without a shortcut it records the event (``received``) and reads its
    state in one statement: task mode's request. In autocommit (the webhook
    views) the statement is its own transaction; inside an atomic block it
    gets a savepoint, so a failure leaves the caller's transaction usable.
    """
    model = type(row)
    connection = connections[router.db_for_write(model)]
    parts = _parts(model, connection)
    params: list[Any] = [row.stripe_event_id]
    items = [f"recorded AS ({parts.state_sql})"]
    if shortcut is not None:
        items.append(shortcut.ctes)
        params.extend(shortcut.params)
    values = []
    processed_at = None
    for field in parts.fields:
        value = field.get_db_prep_save(field.pre_save(row, True), connection)
        if shortcut is not None and field.name in parts.settled:
            if field.name == "processed_at":
                processed_at = timezone.now()
                when_applied = field.get_db_prep_save(processed_at, connection)
            else:
                when_applied = field.get_db_prep_save(SETTLED_WHEN_APPLIED[field.name], connection)
            values.append(
                f"CASE WHEN {shortcut.applied} THEN CAST(%s AS {parts.casts[field.name]}) "
                f"ELSE CAST(%s AS {parts.casts[field.name]}) END"
            )
            params.extend([when_applied, value])
        else:
            values.append("%s")
            params.append(value)
    items.append(
        f"inserted AS ({parts.insert_sql_head} VALUES ({', '.join(values)}) "
        f"{parts.insert_sql_tail})"
    )
    joins = f" {shortcut.joins}" if shortcut is not None else ""
    columns = "".join(f", {column}" for column in shortcut.columns) if shortcut else ""
    # Identifiers are quoted model metadata or the shortcut's own SQL (built
    # the same way); every value is a parameter.
    sql = (
        f"WITH {', '.join(items)} SELECT inserted.*, recorded.*{columns} "  # noqa: S608
        f"FROM (SELECT 1) AS one LEFT JOIN inserted ON TRUE "
        f"LEFT JOIN recorded ON TRUE{joins}"
    )
    if connection.in_atomic_block:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(sql, params)
            result = cursor.fetchone()
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            result = cursor.fetchone()
    inserted_pk, inserted_status, pk, status, type_, account, *extra = result
    if inserted_pk is not None:
        pk = parts.convert_pk(inserted_pk, connection)
        applied = inserted_status == E.PROCESSED
        return Recorded(True, applied, pk, None, tuple(extra) if applied else ())
    if pk is None:
        return Recorded(False, False, None, None, ())
    return Recorded(
        False,
        False,
        parts.convert_pk(pk, connection),
        RecordedEvent(
            pk=parts.convert_pk(pk, connection),
            stripe_event_id=row.stripe_event_id,
            type=type_,
            account=account,
            status=status,
            object_id=object_id,
        ),
        (),
    )


@dataclass(frozen=True)
class _Parts:
    state_sql: str
    insert_sql_head: str
    insert_sql_tail: str
    fields: list[Any]
    #: The columns processing settles, cast to their type in the ``CASE``.
    settled: frozenset[str]
    casts: dict[str, str]
    converters: list[Any]
    pk_column: Any

    def convert_pk(self, value: Any, connection: Any) -> Any:
        for converter in self.converters:
            value = converter(value, self.pk_column, connection)
        return value


#: Per connection, per event model: the statement's fixed parts.
_PARTS: weakref.WeakKeyDictionary[Any, dict[Any, _Parts]] = weakref.WeakKeyDictionary()


def _parts(model: Any, connection: Any) -> _Parts:
    per_model = _PARTS.setdefault(connection, {})
    found = per_model.get(model)
    if found is None:
        opts = model._meta
        quote = connection.ops.quote_name
        # What Model._do_insert sends: every local concrete field but an
        # auto-incremented primary key (the database assigns it).
        fields = [f for f in opts.local_concrete_fields if f is not opts.auto_field]
        pk = quote(opts.pk.column)
        state_columns = ", ".join(
            quote(opts.get_field(name).column) for name in ("status", "type", "account")
        )
        event_id = quote(opts.get_field("stripe_event_id").column)
        settled = frozenset({"status", "attempts", "processed_at"})
        pk_column = opts.pk.get_col(opts.db_table)
        found = per_model[model] = _Parts(
            state_sql=(
                f"SELECT {pk}, {state_columns} FROM {quote(opts.db_table)} "  # noqa: S608
                f"WHERE {event_id} = %s"
            ),
            insert_sql_head=(
                f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)})"
            ),
            insert_sql_tail=(
                f"ON CONFLICT ({event_id}) DO NOTHING "
                f"RETURNING {pk}, {quote(opts.get_field('status').column)}"
            ),
            fields=fields,
            settled=settled,
            casts={name: opts.get_field(name).db_type(connection) for name in settled},
            converters=connection.ops.get_db_converters(pk_column)
            + opts.pk.get_db_converters(connection),
            pk_column=pk_column,
        )
    return found
