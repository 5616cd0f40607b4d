"""Process recorded webhook events: lock, dispatch, settle.

An event row moves ``received -> processed | ignored | deferred | failed``:

- ``processed``: its handler ran and committed;
- ``ignored``: nothing handles this type on this endpoint, or the handler
  found that the object is not one of this app's (:class:`IgnoreEvent`);
- ``deferred``: the handler raised
  :class:`~django_escrow_connect.services.errors.UnknownObject` (the event
  raced ahead of the row it is about); :func:`process_deferred` retries it;
- ``failed``: any other exception. The handler's writes are rolled back, the
  error and the attempt count are kept, ``webhook_processing_failed`` is
  sent, and the HTTP answer is 500 so that Stripe delivers it again.

A handler that needs an answer from Stripe raises
:class:`~django_escrow_connect.services.errors.ReadFirst` instead of asking
under its row locks: the transaction rolls back, the read is made with no
transaction open (:func:`make_read`; a failed read fails the event, nothing
written) and the handler runs again in a new transaction with the answer in
``EventContext.fetched``, checking its rows again. Only events that need a
read take this second round.

A new delivery processed in the request (``WEBHOOK_PROCESSING="sync"``)
takes :func:`process_new`: the event row is inserted, already settled, in
the same transaction as the handler's writes, so the insert is the only
query the pipeline adds (the row's unique Stripe id is the lock: a
concurrent delivery's insert waits for this transaction, then fails as a
duplicate). Everything else (queued events, retries of failed ones,
deferred ones, replays) takes :func:`process_event`, which locks the row.

Query budget (``tests/webhooks/test_query_budget.py``, ``docs/performance.md``):
the receiver reads whether the event is recorded (1 statement, no
transaction: all a duplicate costs), then a new event costs 1 query here
(:func:`insert_new`) plus its handler's own.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.db.models import signals
from django.utils import timezone

from .. import observability, swappable
from ..base.models.webhooks import AbstractWebhookEvent
from ..conf import STRIPE_API_VERSION
from ..notifications import notify
from ..services.errors import ReadFirst, UnknownObject
from ..states import UNREADABLE_EVENT_ERROR_PREFIX
from ..states import WebhookEventStatus as E
from .context import EventContext, IgnoreEvent, PayloadPurged, UnparseableEvent, log_extra
from .registry import handler_for

logger = logging.getLogger("django_escrow_connect.webhooks")

#: States a delivery (or a worker) may pick an event up from. A failed event
#: is processed again when Stripe redelivers it: that is what the 500 is for.
PENDING = (E.RECEIVED, E.FAILED)
#: A deferred event waits for :func:`process_deferred`; after this long the
#: object it names is not coming and the event is ignored.
DEFERRED_MAX_AGE = timedelta(days=7)
#: How many deferred events one :func:`process_deferred` run retries at most,
#: and how long it may start new ones: a run's work is bounded, and the
#: round robin brings every deferred event its turn within a few runs.
DEFERRED_BATCH = 500
DEFERRED_TIME_BUDGET = timedelta(minutes=2)
#: The columns processing changes (the payload is never written back).
SETTLED_FIELDS = ["status", "attempts", "last_error", "processed_at"]
#: How much of an error message the event row keeps.
ERROR_MAX_CHARS = 2000
#: ``save`` of the package's event model (a host's override takes the ORM path).
_BASE_SAVE = AbstractWebhookEvent.save
#: The span around one event's processing (see docs/observability.md).
WEBHOOK_SPAN = "escrow_connect.webhook"


@dataclass(frozen=True)
class Outcome:
    """What happened to one delivery, and the HTTP status Stripe should see.

    ``status`` is ``rejected`` (verification failed; nothing stored),
    ``skipped`` (verified but not for this installation: a test-mode event on
    a live Connect endpoint; answered 200, nothing stored), ``duplicate``
    (already handled, or being handled by a concurrent delivery), ``queued``
    (handed to a task worker), or the event's new state: ``processed``,
    ``ignored``, ``deferred``, ``failed``.
    """

    status_code: int
    status: str
    reason: str = ""
    event_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True)
class RecordedEvent:
    """The few columns of a just-recorded event the pipeline needs."""

    pk: Any
    stripe_event_id: str
    type: str
    account: str
    status: str
    object_id: str = ""

    @property
    def is_pending(self) -> bool:
        """Whether processing may pick it up (:data:`PENDING`)."""
        return self.status in PENDING

    @classmethod
    def inserted(cls, row: Any, pk: Any, object_id: str = "") -> RecordedEvent:
        """The event row an insert just made (``received``), from the unsaved ``row``."""
        return cls(
            pk=pk,
            stripe_event_id=row.stripe_event_id,
            type=row.type,
            account=row.account,
            status=E.RECEIVED,
            object_id=object_id or row.object_id,
        )


def event_model() -> Any:
    return swappable.load("WebhookEvent")


def warn_if_other_api_version(event: Any) -> None:
    """Log a warning when the event was rendered at another API version than the pinned one.

    Called once per event, when it is first processed (a new delivery, a
    queued event, or one that ``escrow_fetch_missed_events`` recorded: the
    Events API renders each event at its creation-time version).
    """
    version = str(getattr(event, "api_version", "") or "")
    if not version or version == STRIPE_API_VERSION:
        return
    logger.warning(
        "webhook event at API version %s; the package reads %s",
        version,
        STRIPE_API_VERSION,
        extra=log_extra(event, event_api_version=version, expected_api_version=STRIPE_API_VERSION),
    )


# --------------------------------------------------------------------------
# From a delivery to an outcome
# --------------------------------------------------------------------------


class HandlerFailed(Exception):
    """:func:`process_new`'s handler raised; its writes and the event row were rolled back."""

    def __init__(self, error: Exception, context: EventContext | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.context = context


def process_new(event: Any) -> Outcome | None:
    """Insert a new event and handle it: :func:`_process_new`, traced and counted."""
    with observability.span(
        WEBHOOK_SPAN,
        **{
            "webhook.event_type": event.type,
            "webhook.event_id": event.stripe_event_id,
            "webhook.endpoint": event.endpoint,
        },
    ) as span:
        try:
            outcome = _process_new(event)
        except HandlerFailed:
            # Rolled back: the caller records and settles it (and counts it).
            span.set_attributes(**{"webhook.outcome": "failed"})
            raise
        if outcome is None:  # already recorded: the caller goes on, and counts
            span.set_attributes(**{"webhook.outcome": "already_recorded"})
            return None
        span.set_attributes(**{"webhook.outcome": outcome.status})
    observability.record_webhook_event(event.type, outcome.status)
    return outcome


def _process_new(event: Any) -> Outcome | None:
    """Insert a new event (an unsaved row) and handle it in one transaction.

    The row is inserted already marked ``processed`` (or ``ignored`` when no
    handler takes its type): nobody can see it before the transaction
    commits, and if the handler raises, the row goes with the rest of the
    rollback. Returns ``None`` when the event is already recorded (the caller
    then treats it as a duplicate, or retries a failed one with
    :func:`process_event`). Raises :class:`HandlerFailed` after a rollback:
    the caller records the event again and settles the failure with
    :func:`settle_failure`.
    """

    handler = handler_for(event.type, event.endpoint)
    context: EventContext | None = None
    if handler is None:
        event.mark_ignored(f"No handler for {event.type} on the {event.endpoint} endpoint.")
    else:
        event.mark_processed()
        context = EventContext(event=event, payload=event.payload)
    event.attempts = 1
    first_round = True
    while True:
        try:
            with transaction.atomic():
                if not insert_new(event):
                    # The unique Stripe id exists: nothing was written, nothing else ran.
                    return None
                if first_round:
                    warn_if_other_api_version(event)
                if handler is not None and context is not None:
                    handler(context)
        except ReadFirst as needed:
            # Rolled back, the event row too: Stripe is asked with no
            # transaction open, then the event is inserted and handled again.
            _forget_insert(event)
            first_round = False
            try:
                make_read(context.fetched if context else {}, needed)
            except Exception as exc:  # a failed read fails the event, as a handler error
                raise HandlerFailed(exc, context) from exc
            continue
        except Exception as exc:  # every failure is recorded by the caller; none is lost
            raise HandlerFailed(exc, context) from exc
        break
    log_settled(event, context)
    return outcome_for(str(event.status), event.stripe_event_id)


def _forget_insert(event: Any) -> None:
    """Make ``event`` unsaved again after its insert was rolled back."""
    if event._meta.auto_field is not None:
        event.pk = None
    event._state.adding = True


#: How many reads from Stripe (:class:`ReadFirst`) one processing of an event
#: may make: each answer is kept for the processing, so a handler needs one per
#: object it reads; more means a handler that keeps asking.
MAX_READS = 4


def make_read(reads: dict[str, Any], needed: ReadFirst) -> None:
    """Make the read a handler asked for (:class:`ReadFirst`) and keep its answer in ``reads``.

    Called with no transaction open (the handler's was rolled back): no row
    lock is held while Stripe answers, and a Stripe error is the event's
    failure, with nothing written. The handler then runs again in a new
    transaction, finds the answer in ``EventContext.fetched`` and applies it
    after checking its row again under the lock.
    """
    if needed.key in reads or len(reads) >= MAX_READS:
        # Asking again for an answer it has (or without end) would never finish.
        raise RuntimeError(f"The handler asked Stripe once too often ({needed.key}).")
    reads[needed.key] = needed.read()


def insert_new(event: Any) -> bool:
    """Insert an unsaved event row; False (nothing written) if its Stripe id is recorded.

    One ``INSERT ... ON CONFLICT (stripe_event_id) DO NOTHING RETURNING pk``,
    built once per model (:func:`_insert_statement`): a conflict is an answer,
    not an error to roll back, and the ORM's per-call compilation of the
    insert is skipped. A concurrent insert of the same id waits for the other
    transaction and then does nothing, as the unique index makes the ORM's
    insert fail. Where that is not equivalent to ``save()`` (a host listens
    to ``pre_save``/``post_save`` for its event model or overrides ``save``,
    or the database cannot return from an insert) it is ``save()``.
    """
    model = type(event)
    connection = connections[router.db_for_write(model)]
    statement = _insert_statement(model, connection)
    if statement is None:
        try:
            event.save(force_insert=True, using=connection.alias)
        except IntegrityError:
            # save() marked the caller's transaction for rollback: leaving it
            # rolls back, and nothing else ran.
            return False
        return True
    sql, fields, converters, pk_column = statement
    params = [field.get_db_prep_save(field.pre_save(event, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    pk = row[0]
    for converter in converters:
        pk = converter(pk, pk_column, connection)
    event.pk = pk
    event._state.adding = False
    event._state.db = connection.alias
    # django-fsm's ConcurrentTransitionMixin: a later save() compares with this.
    update_initial_state = getattr(event, "_update_initial_state", None)
    if update_initial_state is not None:
        update_initial_state()
    return True


#: Per connection, per event model: :func:`insert_new`'s statement (None: use save()).
_INSERTS: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def insert_statement_usable(model: Any, connection: Any) -> bool:
    """Whether an insert built from ``model``'s metadata is equivalent to ``save()``.

    Checked on every call: listeners come and go.
    """
    return (
        connection.vendor in ("postgresql", "sqlite")
        and connection.features.can_return_columns_from_insert
        and not signals.pre_save.has_listeners(model)
        and not signals.post_save.has_listeners(model)
        and model.save is _BASE_SAVE
    )


def _insert_statement(model: Any, connection: Any) -> tuple[str, list[Any], list[Any], Any] | None:
    if not insert_statement_usable(model, connection):
        return None
    per_model = _INSERTS.setdefault(connection, {})
    found = per_model.get(model)
    if found is None:
        opts = model._meta
        quote = connection.ops.quote_name
        # What Model._do_insert sends: every local concrete field but an
        # auto-incremented primary key (the database assigns it).
        fields = [f for f in opts.local_concrete_fields if f is not opts.auto_field]
        sql = (
            f"INSERT INTO {quote(opts.db_table)} "  # noqa: S608
            f"({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) "
            f"ON CONFLICT ({quote(opts.get_field('stripe_event_id').column)}) DO NOTHING "
            f"RETURNING {quote(opts.pk.column)}"
        )
        pk_column = opts.pk.get_col(opts.db_table)
        converters = connection.ops.get_db_converters(pk_column) + opts.pk.get_db_converters(
            connection
        )
        found = per_model[model] = (sql, fields, converters, pk_column)
    return found


def settle_failure(row: RecordedEvent, failed: HandlerFailed) -> Outcome:
    """Record why :func:`process_new`'s handler did not finish, on the re-recorded row."""
    if not row.is_pending:  # a concurrent delivery handled it after the rollback
        outcome = outcome_for(None, row.stripe_event_id)
    else:
        status = _settle_failure(row.pk, failed.error, failed.context)
        if status == E.FAILED and isinstance(failed.error, UnparseableEvent):
            # Recorded as failed, but the same body delivered again cannot help.
            outcome = Outcome(200, str(status), str(failed.error), row.stripe_event_id)
        else:
            outcome = outcome_for(status, row.stripe_event_id)
    observability.record_webhook_event(row.type, outcome.status)
    return outcome


def log_settled(event: Any, context: EventContext | None) -> None:
    logger.info(
        "webhook %s",
        event.status,
        extra=log_extra(
            event,
            webhook_status=event.status,
            payment_id=context.payment_id if context else "",
            connected_account=(context and context.connected_account) or event.account or "",
        ),
    )


def outcome_for(status: str | None, event_id: str) -> Outcome:
    if status is None:
        return Outcome(200, "duplicate", "Handled by another delivery.", event_id)
    if status == E.FAILED:
        return Outcome(500, "failed", "Processing failed; deliver again later.", event_id)
    return Outcome(200, str(status), "", event_id)


# --------------------------------------------------------------------------
# Processing one event
# --------------------------------------------------------------------------


def process_event(pk: Any, *, statuses: tuple[str, ...] = PENDING) -> str | None:
    """Lock the event, run its handler, settle its state. Returns the new state.

    ``None`` means another worker holds the row or it is not in ``statuses``
    any more (it was handled meanwhile): nothing was done.
    """
    with observability.span(WEBHOOK_SPAN) as span:
        seen: dict[str, str] = {}
        status = _process_event(pk, statuses, seen)
        outcome = status or "duplicate"
        span.set_attributes(**seen, **{"webhook.outcome": outcome})
        if status == E.FAILED:
            span.set_error("failed")
    observability.record_webhook_event(seen.get("webhook.event_type"), outcome)
    return status


def _process_event(pk: Any, statuses: tuple[str, ...], seen: dict[str, str]) -> str | None:
    """:func:`process_event`'s work; ``seen`` receives the event's type and id for the span."""
    Event = event_model()
    context: EventContext | None = None
    # Answers to the handler's reads (ReadFirst), kept across its rounds.
    reads: dict[str, Any] = {}
    while True:
        try:
            with transaction.atomic():
                event = (
                    Event.objects.select_for_update(skip_locked=True)
                    .filter(pk=pk, status__in=statuses)
                    .first()
                )
                if event is None:
                    return None
                seen["webhook.event_type"] = event.type
                seen["webhook.event_id"] = event.stripe_event_id
                seen["webhook.endpoint"] = event.endpoint
                if event.attempts == 0 and not reads:
                    warn_if_other_api_version(event)
                handler = handler_for(event.type, event.endpoint)
                if handler is None:
                    event.mark_ignored(
                        f"No handler for {event.type} on the {event.endpoint} endpoint."
                    )
                else:
                    if event.payload is None:
                        raise PayloadPurged("The payload was purged; fetch the event from Stripe.")
                    context = EventContext(event=event, payload=event.payload, fetched=reads)
                    handler(context)
                    event.mark_processed()
                event.attempts += 1
                event.save(update_fields=SETTLED_FIELDS)
        except ReadFirst as needed:
            # Rolled back, and the event row unlocked: Stripe is asked with no
            # transaction open, then the event is locked (if still pending:
            # another worker may have taken it meanwhile) and handled again.
            try:
                make_read(reads, needed)
            except Exception as exc:  # a failed read fails the event, as a handler error
                return _settle_failure(pk, exc, context)
            continue
        except Exception as exc:  # every failure is recorded; none is lost
            return _settle_failure(pk, exc, context)
        break
    log_settled(event, context)
    return str(event.status)


def unreadable(events: Any) -> Any:
    """The failed ``events`` whose object could not be read (:class:`UnparseableEvent`)."""
    return events.filter(status=E.FAILED, last_error__startswith=UNREADABLE_EVENT_ERROR_PREFIX)


def _settle_failure(pk: Any, exc: Exception, context: EventContext | None) -> str | None:
    """Record why the handler did not finish; its writes were rolled back."""
    Event = event_model()
    with transaction.atomic():
        event = Event.objects.select_for_update().filter(pk=pk).first()
        if event is None or event.status not in (*PENDING, E.DEFERRED):
            return None
        event.attempts += 1
        message = (str(exc) or type(exc).__name__)[:ERROR_MAX_CHARS]
        extra = log_extra(
            event,
            payment_id=context.payment_id if context else "",
            connected_account=(context and context.connected_account) or event.account or "",
            attempts=event.attempts,
        )
        if isinstance(exc, IgnoreEvent):
            event.mark_ignored(message)
            logger.info(
                "webhook ignored: %s", message, extra={**extra, "webhook_status": "ignored"}
            )
        elif isinstance(exc, UnknownObject):
            event.mark_deferred(message)
            logger.info(
                "webhook deferred: %s", message, extra={**extra, "webhook_status": "deferred"}
            )
        else:
            # The class name first: UNREADABLE_EVENT_ERROR_PREFIX finds the
            # events no replay can help.
            error = f"{type(exc).__name__}: {message}"[:ERROR_MAX_CHARS]
            event.mark_failed(error)
            logger.error(
                "webhook processing failed",
                exc_info=exc,
                extra={**extra, "webhook_status": "failed"},
            )
            notify("webhook_processing_failed", event=event, error=error)
        event.save(update_fields=SETTLED_FIELDS)
    return str(event.status)


# --------------------------------------------------------------------------
# Operators and the reconcile command
# --------------------------------------------------------------------------


def process_deferred(
    limit: int = DEFERRED_BATCH, *, time_budget: timedelta = DEFERRED_TIME_BUDGET
) -> dict[str, int]:
    """Retry deferred events, the least tried first; give up on those past their age.

    Every retry of an event that stays deferred counts an attempt, so the
    order (attempts, then arrival) is a round robin: events about objects
    that never come (a dispute on a charge that is no escrow payment's, an
    account this platform does not manage) go behind those tried less often,
    and an event deferred since the last run is retried in this one however
    many old ones wait. One run tries at most ``limit`` events and starts
    none after ``time_budget``; the rest keep their place (they were tried
    least) for the next run and are counted as ``postponed``.

    Returns how many ended in each state. The reconcile command calls this.
    """
    Event = event_model()
    cutoff = timezone.now() - DEFERRED_MAX_AGE
    pks = list(
        Event.objects.filter(status=E.DEFERRED)
        .order_by("attempts", "received_at", "pk")
        .values_list("pk", "received_at")[:limit]
    )
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + time_budget.total_seconds()
    for done, (pk, received_at) in enumerate(pks):
        if time.monotonic() >= deadline:
            counts["postponed"] += len(pks) - done
            logger.warning(
                "deferred events: time budget of %s s spent; %d left for the next run",
                time_budget.total_seconds(),
                len(pks) - done,
            )
            break
        status = process_event(pk, statuses=(E.DEFERRED,))
        if status == E.DEFERRED and received_at < cutoff:
            status = _give_up(pk)
        counts[status or "skipped"] += 1
    return dict(counts)


def _give_up(pk: Any) -> str | None:
    Event = event_model()
    with transaction.atomic():
        event = Event.objects.select_for_update().filter(pk=pk, status=E.DEFERRED).first()
        if event is None:
            return None
        reason = f"Gave up after {DEFERRED_MAX_AGE.days} days: {event.last_error}"
        event.mark_ignored(reason[:ERROR_MAX_CHARS])
        event.save(update_fields=SETTLED_FIELDS)
        logger.warning(
            "webhook deferred too long; ignored", extra=log_extra(event, webhook_status="ignored")
        )
    return str(event.status)


def replay(pk: Any) -> str | None:
    """Process one event again, whatever state it is in (operator action).

    Handlers compare with the current state, so replaying an event that was
    already applied changes nothing.
    """
    Event = event_model()
    with transaction.atomic():
        event = Event.objects.select_for_update().filter(pk=pk).first()
        if event is None:
            return None
        if event.status in (E.PROCESSED, E.IGNORED):
            event.reset_for_replay()
            event.save(update_fields=["status"])
    return process_event(pk, statuses=(*PENDING, E.DEFERRED))
