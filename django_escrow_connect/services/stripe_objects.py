"""Apply what Stripe reports about a payment's money after the charge: transfers and
their reversals, refunds (including those made in the Stripe dashboard), charges,
and payouts of connected accounts.

Webhook handlers call these appliers with the snapshot an event carries. Each
applier locks the payment row, compares Stripe's state with the stored one and
changes only what moved forward, so a replayed, duplicated or out-of-order
event changes nothing it should not. An object that names no known payment
raises :class:`~.errors.UnknownObject` (the event is deferred and retried)
when it looks like one of ours (our metadata or transfer group), otherwise the
caller ignores it.
"""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace
from typing import Any

from django.db import connections, router
from django.db.models import signals
from django.utils import timezone
from django_fsm import can_proceed

from ..gateway.types import ChargeSnapshot, PayoutSnapshot, RefundSnapshot, TransferSnapshot
from ..notifications import notify
from ..states import (
    UNRESOLVED_OPERATION_STATES,
    EscrowStrategy,
    IncidentKind,
    MoneyOperationKind,
    RefundStatus,
    TransferStatus,
)
from ..states import PaymentStatus as S
from . import errors, outcomes
from .books import (
    application_fee_refunded,
    doer_share_reversed,
    is_gross_transfer,
    refunds_uncaptured_money,
    reversal_target,
    taken_back_by_refunds,
)
from .common import (
    account_model,
    gateway,
    lock_payment_for,
    model,
    payment_model,
    read_first,
)
from .operations import is_other_installation
from .shortcut import Shortcut
from .task_status import sync_task_status

logger = logging.getLogger("django_escrow_connect.services")

#: Refund states whose amount is counted in ``payment.amount_refunded``.
COUNTED_REFUND_STATES = frozenset(
    {RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED}
)


def _log(message: str, *args: Any, payment: Any = None, event_id: str = "", **extra: Any) -> None:
    level = extra.pop("level", logging.INFO)
    logger.log(
        level,
        message,
        *args,
        extra={
            "stripe_event_id": event_id,
            "payment_id": str(payment.pk) if payment is not None else "",
            "connected_account": getattr(payment, "destination_account_id", "") or "",
            **extra,
        },
    )


# --------------------------------------------------------------------------
# Finding the payment an object belongs to
# --------------------------------------------------------------------------


def pending_operation_for(payment: Any, kind: str, metadata: dict[str, str], amount: int) -> Any:
    """The payment's unresolved operation that made this Stripe object, or None.

    Matched by the ``escrow_operation`` key the object's metadata carries; an
    object made before the key existed is matched by kind and amount. A
    refund so matched must carry the payment's ``escrow_payment_id``, as the
    refunds 0.1 sent do (and as their lookup requires, :func:`.outcomes._match`):
    a refund made in the Stripe Dashboard carries none, and its webhook was
    taken for a 0.1 refund of the same amount waiting to be looked up.
    """
    key = metadata.get("escrow_operation")
    candidates = payment.operations.filter(kind=kind, status__in=UNRESOLVED_OPERATION_STATES)
    if key:
        return candidates.filter(idempotency_key=key).first()
    if kind == MoneyOperationKind.REFUND and metadata.get("escrow_payment_id") != str(payment.pk):
        return None
    return candidates.filter(amount=amount).first()


def looks_like_ours(metadata: dict[str, str] | None, transfer_group: str | None = None) -> bool:
    """Whether an object was created by this app (so a missing row is only late)."""
    return bool((metadata or {}).get("escrow_payment_id")) or bool(
        transfer_group and transfer_group.startswith("escrow_")
    )


def require_funded(payment: Any, what: str) -> None:
    """Defer an event about money that, locally, has not arrived yet.

    A payment that can still become held (``mark_held``) has no money yet: an
    event about its refund or dispute arrived before the one that said it was
    paid, and waits for it. Failed too: after a decline the customer may pay
    again, and that charge's events can arrive before
    ``payment_intent.succeeded`` makes the payment held.
    """
    if can_proceed(payment.mark_held):
        raise errors.UnknownObject(f"{what} arrived before the payment was held; retried later.")


def _require_payment(payment: Any, what: str, ours: bool) -> Any:
    if payment is not None:
        return payment
    if ours:
        raise errors.UnknownObject(f"No payment for {what} (yet).")
    return None


# --------------------------------------------------------------------------
# Charges
# --------------------------------------------------------------------------


def apply_charge(snapshot: ChargeSnapshot, *, event_id: str = "") -> Any:
    """Remember the charge id (and a manual-capture deadline) on its payment.

    Returns the payment, or None when the charge is not an escrow payment's.
    """
    payment = lock_payment_for(payment_intent=snapshot.payment_intent, charge=snapshot.id)
    if payment is None:
        return None
    changed = []
    if not payment.stripe_charge_id:
        payment.stripe_charge_id = snapshot.id
        changed.append("stripe_charge_id")
    if (
        payment.is_manual_capture
        and snapshot.capture_before is not None
        and payment.capture_before != snapshot.capture_before
        and payment.status in (S.AWAITING_PAYMENT, S.PROCESSING, S.HELD)
    ):
        payment.capture_before = snapshot.capture_before
        changed.append("capture_before")
    if changed:
        payment.save(update_fields=[*changed, "updated_at"])
        _log("charge recorded on payment", payment=payment, event_id=event_id)
    return payment


def charge_shortcut(snapshot: ChargeSnapshot, *, condition: str) -> Shortcut | None:
    """:func:`apply_charge`'s common cases as ``WITH`` items (PostgreSQL).

    The payment with this PaymentIntent either has this charge already (the
    PaymentIntent's event recorded it: nothing to write, no lock needed) or
    no charge yet (the charge's event came first: the id is written, under
    the ``UPDATE``'s row lock). Applied in those two cases when no capture
    deadline can change (not manual capture, or no deadline in the charge);
    otherwise the handler runs as usual.
    """
    Payment = payment_model()
    connection = connections[router.db_for_write(Payment)]
    if connection.vendor != "postgresql" or not snapshot.payment_intent:
        return None
    if signals.pre_save.has_listeners(Payment) or signals.post_save.has_listeners(Payment):
        return None  # the write must be save()'s
    opts = Payment._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return str(quote(opts.get_field(name).column))

    pk, charge, destination = (
        quote(opts.pk.column),
        column("stripe_charge_id"),
        column("destination_account_id"),
    )
    conditions = [condition, f"{column('stripe_payment_intent_id')} = %s"]
    params: list[Any] = [snapshot.payment_intent]
    if snapshot.capture_before is not None:
        conditions.append(f"{column('strategy')} <> %s")
        params.append(EscrowStrategy.MANUAL_CAPTURE)
    where = " AND ".join(conditions)
    table = quote(opts.db_table)
    updated_at = opts.get_field("updated_at")
    # Identifiers are quoted model metadata, values are parameters. Both
    # items read the same snapshot: at most one of them has the payment.
    ctes = (
        f"known_charge AS (SELECT {pk}, {destination} FROM {table} "  # noqa: S608
        f"WHERE {where} AND {charge} = %s LIMIT 1), "
        f"charge_set AS (UPDATE {table} SET {charge} = %s, {column('updated_at')} = %s "
        f"WHERE {where} AND {charge} = '' RETURNING {pk}, {destination})"
    )
    params = [
        *params,
        snapshot.id,
        snapshot.id,
        updated_at.get_db_prep_save(timezone.now(), connection),
        *params,
    ]

    def finish(values: tuple[Any, ...]) -> Any:
        known_pk, known_destination, set_pk, set_destination = values
        # For the pipeline's log line; nothing to notify.
        if set_pk is not None:
            found = SimpleNamespace(pk=set_pk, destination_account_id=set_destination)
            _log("charge recorded on payment", payment=found)
            return found
        return SimpleNamespace(pk=known_pk, destination_account_id=known_destination)

    return Shortcut(
        ctes=ctes,
        params=params,
        applied="(EXISTS (SELECT 1 FROM known_charge) OR EXISTS (SELECT 1 FROM charge_set))",
        joins="LEFT JOIN known_charge ON TRUE LEFT JOIN charge_set ON TRUE",
        columns=[
            f"known_charge.{pk}",
            f"known_charge.{destination}",
            f"charge_set.{pk}",
            f"charge_set.{destination}",
        ],
        finish=finish,
    )


def apply_charge_refunded(
    snapshot: ChargeSnapshot, *, reads: dict[str, Any], event_id: str = ""
) -> Any:
    """``charge.refunded``: the charge's running refund total.

    Refunds are not embedded in the charge (API version 2026-10-28), so when
    Stripe's total is ahead of what the refund events told us, the charge's
    refunds are listed once and applied one by one. The list is not asked
    for under the payment's lock: the first attempt raises
    :class:`~.errors.ReadFirst`, the webhook pipeline lists the refunds with
    no transaction open and runs the handler again, which compares the totals
    again (refund events may have caught up meanwhile) before applying the
    list (``reads``, see :func:`~.common.read_first`).
    """
    payment = lock_payment_for(payment_intent=snapshot.payment_intent, charge=snapshot.id)
    if payment is None:
        return None
    if snapshot.amount_refunded <= payment.amount_refunded:
        return payment
    intent = payment.stripe_payment_intent_id
    if not intent:
        return payment
    refunds = read_first(reads, f"refunds:{intent}", functools.partial(_list_refunds, intent))
    for refund in refunds:
        _apply_refund_locked(payment, refund, event_id=event_id)
    return payment


def _list_refunds(payment_intent: str) -> list[RefundSnapshot]:
    return list(gateway().list_refunds(payment_intent=payment_intent))


# --------------------------------------------------------------------------
# Refunds
# --------------------------------------------------------------------------


def apply_refund(snapshot: RefundSnapshot, *, event_id: str = "") -> Any:
    """``refund.created|updated|failed``: keep the Refund row and the payment in step.

    A refund made in the Stripe dashboard becomes a Refund row; the app's own
    refund whose answer was lost waits (deferred) for the app's retry to
    confirm it; a refund that fails gives its amount back to the payment,
    records an incident and sends ``refund_failed``.
    """
    if is_other_installation(snapshot.metadata):
        return None
    payment = lock_payment_for(
        payment_intent=snapshot.payment_intent,
        charge=snapshot.charge,
        payment_id=snapshot.metadata.get("escrow_payment_id"),
    )
    if _require_payment(payment, f"refund {snapshot.id}", looks_like_ours(snapshot.metadata)):
        return _apply_refund_locked(payment, snapshot, event_id=event_id)
    return None


def _apply_refund_locked(payment: Any, snapshot: RefundSnapshot, *, event_id: str) -> Any:
    Refund = model("Refund")
    refund = Refund.objects.filter(stripe_refund_id=snapshot.id).first()
    if refund is None:
        operation = pending_operation_for(
            payment, MoneyOperationKind.REFUND, snapshot.metadata, snapshot.amount
        )
        if operation is not None:
            # The app's own refund, whose answer has not been committed yet
            # (or was lost in a crash): this event completes it.
            return outcomes.refund_made(payment, operation, snapshot, event_id=event_id)
        if (
            snapshot.metadata.get("escrow_payment_id")
            and payment.refunds.filter(stripe_refund_id="", status=RefundStatus.PENDING).exists()
        ):
            # The app sent this refund and never learned the answer (timeout).
            # Its retry, with the same idempotency key, confirms and counts
            # it (escrow_reconcile or the user); taking it over here would
            # make that retry send a second refund.
            raise errors.UnknownObject(
                f"Refund {snapshot.id} is the app's own and not confirmed yet; "
                "escrow_reconcile finishes it."
            )
        require_funded(payment, f"Refund {snapshot.id}")
        return _record_outside_refund(payment, snapshot, event_id=event_id)

    stripe_status = snapshot.status or RefundStatus.PENDING
    was_counted = refund.status in COUNTED_REFUND_STATES
    if stripe_status not in RefundStatus.values or not _moves_forward(refund.status, stripe_status):
        # Same state, or an older event arriving late: nothing to do.
        return refund
    if not can_proceed(refund.apply_stripe_status):
        return refund
    # A refund of an uncaptured authorisation is never counted (see
    # _record_outside_refund): its changes give back nothing. Stripe's
    # reason decides, not the row's (a local reason is free text).
    uncaptured = refunds_uncaptured_money(snapshot.reason)
    if not uncaptured and was_counted != (stripe_status in COUNTED_REFUND_STATES):
        require_release_settled(payment, f"Refund {snapshot.id}")
    refund.apply_stripe_status(stripe_status, snapshot.failure_reason or "")
    refund.save()
    now_counted = refund.status in COUNTED_REFUND_STATES
    if uncaptured:
        return refund
    if was_counted and not now_counted:
        _refund_failed(payment, refund, event_id=event_id)
    elif now_counted and not was_counted:
        _count_refund(payment, refund, event_id=event_id)
    return refund


def require_release_settled(payment: Any, what: str) -> None:
    """Defer a refund's change to the books while the payment's release is unconfirmed.

    Whether a refund takes held money or money released to the doer depends
    on whether the transfer in flight was made. Its outcome (the retry, its
    webhook, ``escrow_reconcile``) comes first; the deferred event is then
    applied to a payment that is held or released (frozen by a dispute
    that opened meanwhile, or not).
    """
    if payment.settled_status == S.RELEASING:
        raise errors.UnknownObject(
            f"{what} changes a payment whose release is not confirmed yet; "
            "retried once the release is settled."
        )


#: A refund's states in the order Stripe moves through them; failed and
#: canceled are final, and succeeded can still turn into failed.
_REFUND_RANK: dict[str, int] = {
    RefundStatus.PENDING: 0,
    RefundStatus.REQUIRES_ACTION: 0,
    RefundStatus.SUCCEEDED: 1,
    RefundStatus.FAILED: 2,
    RefundStatus.CANCELED: 2,
}


def _moves_forward(current: str, reported: str) -> bool:
    if current == reported:
        return False
    if _REFUND_RANK.get(current) == _REFUND_RANK.get(reported) == 0:
        return True  # pending <-> requires_action
    return _REFUND_RANK.get(reported, -1) > _REFUND_RANK.get(current, 2)


def _record_outside_refund(payment: Any, snapshot: RefundSnapshot, *, event_id: str) -> Any:
    """A refund the app did not make (e.g. in the Stripe dashboard)."""
    status = snapshot.status if snapshot.status in RefundStatus.values else RefundStatus.PENDING
    if status in COUNTED_REFUND_STATES and not refunds_uncaptured_money(snapshot.reason):
        require_release_settled(payment, f"Refund {snapshot.id}")
    refund = model("Refund").objects.create(
        payment=payment,
        stripe_refund_id=snapshot.id,
        idempotency_key=f"stripe:{snapshot.id}",
        amount=snapshot.amount,
        currency=snapshot.currency,
        status=status,
        reason=(snapshot.reason or "")[:64],
        failure_reason=(snapshot.failure_reason or "")[:255],
    )
    _log(
        "refund made outside the app recorded: %s",
        snapshot.id,
        payment=payment,
        event_id=event_id,
        level=logging.WARNING,
    )
    if refund.status in COUNTED_REFUND_STATES:
        # Before API 2025-03-31 a capture for less made a Refund of the
        # uncaptured rest (Stripe's own reason marks it), which was never
        # charged: whatever its amount, and whether or not the capture is
        # booked yet, it gives back nothing the books count. Any other
        # refund counts within what was charged.
        fits = payment.amount_refunded + refund.amount <= payment.amount_charged
        if refunds_uncaptured_money(snapshot.reason):
            _log(
                "refund of an uncaptured authorisation recorded, not counted: %s",
                snapshot.id,
                payment=payment,
                event_id=event_id,
            )
        elif not (fits and _count_refund(payment, refund, event_id=event_id)):
            _log(
                "refund not applied to a %s payment",
                payment.status,
                payment=payment,
                event_id=event_id,
                level=logging.WARNING,
            )
    return refund


def _count_refund(payment: Any, refund: Any, *, event_id: str) -> bool:
    """Count ``refund`` in the payment's books, whatever its state; False if it cannot be."""
    if not outcomes.record_refund(payment, refund.amount):
        return False
    outcomes.mark_refunded_milestones(payment)
    payment.save()
    sync_task_status(payment)
    _log("payment refunded: %s", refund.amount, payment=payment, event_id=event_id)
    notify("payment_refunded", payment=payment, refund=refund)
    return True


def _refund_failed(payment: Any, refund: Any, *, event_id: str) -> None:
    if can_proceed(payment.refund_failed):
        payment.refund_failed(refund.amount)
        payment.save()
        sync_task_status(payment)
    model("PaymentIncident").objects.create(
        payment=payment,
        kind=IncidentKind.REFUND_FAILED,
        code=refund.failure_reason[:255],
        message=f"Refund {refund.stripe_refund_id} of {refund.amount} {refund.currency} "
        f"ended {refund.status}.",
        stripe_event_id=event_id,
        stripe_payment_intent_id=payment.stripe_payment_intent_id,
    )
    _log(
        "refund failed: %s",
        refund.failure_reason or refund.status,
        payment=payment,
        event_id=event_id,
        level=logging.WARNING,
    )
    notify("refund_failed", payment=payment, refund=refund)


# --------------------------------------------------------------------------
# Transfers
# --------------------------------------------------------------------------


def apply_transfer(snapshot: TransferSnapshot, *, event_id: str = "") -> Any:
    """``transfer.created|updated|reversed``: record the transfer and its reversals.

    - A transfer Stripe made itself (destination charge, manual capture) is
      recorded by its ``transfer_group`` (or source charge).
    - A transfer the app sent but whose answer was lost completes the release.
    - A reversal the app did not make becomes a TRANSFER_REVERSED incident,
      and the reversed totals follow Stripe's.
    - A transfer made outside the app on top of the payment's own (one live
      transfer per payment) is logged and left to ``escrow_audit``
      (``transfer_unknown_to_app``); the payment is returned, not a Transfer.
    """
    Transfer = model("Transfer")
    known_payment = (
        Transfer.objects.filter(stripe_transfer_id=snapshot.id)
        .values_list("payment_id", flat=True)
        .first()
    )
    payment = lock_payment_for(
        payment_id=known_payment,
        transfer_group=snapshot.transfer_group,
        charge=snapshot.source_transaction,
    )
    if known_payment is None and is_other_installation(snapshot.metadata):
        return None
    ours = looks_like_ours(snapshot.metadata, snapshot.transfer_group)
    if _require_payment(payment, f"transfer {snapshot.id}", ours) is None:
        return None
    # Read under the payment's lock: a reversal the app is making right now
    # has committed its totals by then.
    transfer = Transfer.objects.filter(stripe_transfer_id=snapshot.id).first()
    if transfer is None:
        operation = pending_operation_for(
            payment, MoneyOperationKind.TRANSFER, snapshot.metadata, snapshot.amount
        )
        if operation is not None:
            # The release's own transfer, whose answer was not committed yet
            # (or was lost): this event finishes the release, whether the
            # payment is still held or already releasing.
            transfer = outcomes.transfer_made(payment, operation, snapshot, event_id=event_id)
        if transfer is None:
            transfer = _match_or_record_transfer(payment, snapshot, event_id=event_id)
        if transfer is None:
            # Made outside the app on top of the payment's own transfer:
            # processed (the payment's), left out of the books.
            return payment
    for reversal in snapshot.reversals:
        operation = pending_operation_for(
            payment, MoneyOperationKind.REVERSAL, reversal.metadata, reversal.amount
        )
        if operation is not None and reversal.metadata.get("escrow_operation"):
            # The app's own reversal (a refund after release) whose answer
            # was not committed yet: not a reversal "outside the app".
            outcomes.reversal_made(payment, operation, reversal, event_id=event_id)
            transfer.refresh_from_db()
    if snapshot.amount_reversed > transfer.amount_reversed:
        _apply_reversals(payment, transfer, snapshot, event_id=event_id)
    return transfer


def _match_or_record_transfer(payment: Any, snapshot: TransferSnapshot, *, event_id: str) -> Any:
    release_id = (snapshot.metadata or {}).get("escrow_release_id")
    if release_id:
        # One payee's transfer of a payment released in parts: its own row
        # (by release and payee), never another payee's of the same amount.
        split = payment.transfers.filter(
            status=TransferStatus.PENDING,
            release_id=_int_or_none(release_id),
            payee_id=_int_or_none((snapshot.metadata or {}).get("escrow_payee")),
        ).first()
        if split is not None and split.amount == snapshot.amount:
            return outcomes.split_transfer_made(payment, split, snapshot, event_id=event_id)
    pending = payment.transfers.filter(status=TransferStatus.PENDING, release__isnull=True).first()
    if pending is not None and pending.amount == snapshot.amount:
        pending.mark_created(snapshot.id)
        pending.save()
        if payment.settled_status == S.RELEASING and outcomes.record_release(
            payment, amount_transferred=pending.amount
        ):
            # The app's transfer call timed out; Stripe made the transfer
            # (recorded during a dispute that opened meanwhile too).
            payment.save()
            sync_task_status(payment)
            _log("release confirmed by webhook", payment=payment, event_id=event_id)
            notify("payment_released", payment=payment, transfer=pending)
        return pending
    live = payment.transfers.filter(release__isnull=True).exclude(status=TransferStatus.FAILED)
    if live.exists():
        # A transfer made outside the app (the Stripe dashboard) in the
        # payment's transfer group, on top of the payment's own: not escrow
        # money, and a payment paid to one payee has one live transfer (a
        # constraint). Left out of the books, logged; escrow_audit reports it
        # (transfer_unknown_to_app) for staff to settle with the doer.
        _log(
            "transfer made outside the app left out of the books: %s (%s %s)",
            snapshot.id,
            snapshot.amount,
            snapshot.currency,
            payment=payment,
            event_id=event_id,
            level=logging.WARNING,
        )
        return None
    transfer = model("Transfer").objects.create(
        payment=payment,
        stripe_transfer_id=snapshot.id,
        idempotency_key=f"stripe:{snapshot.id}",
        amount=snapshot.amount,
        currency=snapshot.currency,
        destination_account_id=snapshot.destination or payment.destination_account_id,
        source_transaction=snapshot.source_transaction or "",
        status=TransferStatus.CREATED,
    )
    _log("transfer recorded: %s", snapshot.id, payment=payment, event_id=event_id)
    return transfer


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _apply_reversals(
    payment: Any, transfer: Any, snapshot: TransferSnapshot, *, event_id: str
) -> None:
    if not can_proceed(transfer.apply_reversed_total):
        return
    delta = snapshot.amount_reversed - transfer.amount_reversed
    transfer.apply_reversed_total(snapshot.amount_reversed)
    transfer.save()
    if is_gross_transfer(payment, transfer.amount):
        # A destination charge's transfer is the whole charge: the doer's
        # part of the reversal is net of the application fee Stripe returned.
        share = doer_share_reversed(payment, transfer.amount, transfer.amount_reversed)
        payment.amount_reversed = max(
            payment.amount_reversed, min(share, payment.amount_transferred)
        )
    else:
        room = payment.amount_transferred - payment.amount_reversed
        payment.amount_reversed += max(0, min(delta, room))
    payment.save(update_fields=["amount_reversed", "updated_at"])
    if _reversed_by_refunds(payment, transfer.amount, snapshot.amount_reversed):
        _log("transfer reversed by a refund: %s", delta, payment=payment, event_id=event_id)
        return
    incident = model("TransferIncident").objects.create(
        payment=payment,
        kind=IncidentKind.TRANSFER_REVERSED,
        message=f"Transfer {snapshot.id} reversed by {delta} {snapshot.currency} "
        "outside the app (total reversed: "
        f"{snapshot.amount_reversed}).",
        stripe_event_id=event_id,
        stripe_transfer_id=snapshot.id,
        destination_account_id=transfer.destination_account_id,
        amount=delta,
        currency=snapshot.currency,
    )
    _log(
        "transfer reversed outside the app: %s",
        delta,
        payment=payment,
        event_id=event_id,
        incident_id=str(incident.pk),
        level=logging.WARNING,
    )


def _reversed_by_refunds(payment: Any, transferred: int, total_reversed: int) -> bool:
    """Whether a destination charge's own refunds account for ``total_reversed``.

    With manual capture (a destination charge) the app refunds with
    ``reverse_transfer=true``: Stripe reverses the transfer (``transferred``,
    the whole charge) in proportion to the refund, which is not a reversal
    "outside the app". Stripe's rounding may differ from ours by one minor
    unit per refund.
    """
    if not payment.is_manual_capture:
        return False
    refunds = payment.refunds.filter(status__in=COUNTED_REFUND_STATES).count()
    # A refund that failed after Stripe made it left its reversal made.
    target = reversal_target(payment, taken_back_by_refunds(payment), transferred)
    return bool(total_reversed <= target + refunds)


# --------------------------------------------------------------------------
# Application fees of destination charges
# --------------------------------------------------------------------------


def apply_application_fee(fee: dict[str, Any], *, event_id: str = "") -> Any:
    """``application_fee.created|refunded``: a destination charge's fee, checked.

    Stripe takes the fee back from the connected account when it transfers a
    destination charge, and returns it in proportion with refunds made with
    ``refund_application_fee``. The payment's books already count both (the
    doer's share, see :func:`~.payments.doer_share_reversed`); the event is
    compared with them and a difference is logged (``escrow_audit`` reports
    it as ``application_fee``). Returns the payment, or None when the charge
    is not an escrow payment's.
    """
    charge = fee.get("charge")
    charge_id = charge.get("id") if isinstance(charge, dict) else charge
    if not isinstance(charge_id, str) or not charge_id:
        return None
    payment = lock_payment_for(charge=charge_id)
    if payment is None or not payment.is_manual_capture:
        return None
    amount = int(fee.get("amount") or 0)
    refunded = int(fee.get("amount_refunded") or 0)
    expected = application_fee_refunded(payment)
    refunds = payment.refunds.filter(status__in=COUNTED_REFUND_STATES).count()
    if amount != payment.platform_fee or abs(refunded - expected) > refunds:
        _log(
            "application fee %s: %s (refunded %s); the app counts %s (refunded %s)",
            fee.get("id"),
            amount,
            refunded,
            payment.platform_fee,
            expected,
            payment=payment,
            event_id=event_id,
            level=logging.WARNING,
        )
    else:
        _log(
            "application fee %s in step: %s (refunded %s)",
            fee.get("id"),
            amount,
            refunded,
            payment=payment,
            event_id=event_id,
        )
    return payment


# --------------------------------------------------------------------------
# Payouts of connected accounts
# --------------------------------------------------------------------------


def apply_payout(snapshot: PayoutSnapshot, *, account_id: str, event_id: str = "") -> Any:
    """``payout.failed`` / ``.paid`` / ``.canceled`` / ``.updated`` on a connected account.

    A payout whose status is ``failed`` (from ``payout.failed`` or a
    ``payout.updated`` carrying it) records a PAYOUT_FAILED incident (on the
    payment that most recently paid the account, as incidents belong to a payment) and
    sends ``payout_failed``, once per payout (the incident is how a second
    event about it is recognised). Any other status (paid,
    canceled, in_transit, pending) is only logged; a canceled payout leaves
    the money in the account's balance, so it is logged as a warning.
    """
    account = account_model().objects.filter(stripe_account_id=account_id).first()
    if account is None:
        raise errors.UnknownObject(f"No connected account {account_id} (yet).")
    extra = {"connected_account": account_id, "payout_id": snapshot.id}
    if snapshot.status != "failed":
        logger.log(
            logging.WARNING if snapshot.status == "canceled" else logging.INFO,
            "payout %s: %s %s",
            snapshot.status,
            snapshot.amount,
            snapshot.currency,
            extra={"stripe_event_id": event_id, "payment_id": "", **extra},
        )
        return account
    # Stripe sends payout.updated and payout.failed together: the account's
    # row lock makes the second wait for the first's incident, which it then
    # sees (once per payout, also with concurrent deliveries or workers).
    account = account_model().objects.select_for_update().get(pk=account.pk)
    Incident = model("TransferIncident")
    if Incident.objects.filter(
        kind=IncidentKind.PAYOUT_FAILED, stripe_payout_id=snapshot.id
    ).exists():
        return account
    payment = _latest_payment_to(account_id)
    if payment is not None:
        Incident.objects.create(
            payment=payment,
            kind=IncidentKind.PAYOUT_FAILED,
            code=(snapshot.failure_code or "")[:255],
            message=snapshot.failure_message or "",
            stripe_event_id=event_id,
            stripe_payout_id=snapshot.id,
            destination_account_id=account_id,
            amount=snapshot.amount,
            currency=snapshot.currency,
        )
    logger.warning(
        "payout failed: %s",
        snapshot.failure_code or "unknown",
        extra={
            "stripe_event_id": event_id,
            "payment_id": str(payment.pk) if payment is not None else "",
            **extra,
        },
    )
    notify("payout_failed", account=account, payout=snapshot)
    return account


def _latest_payment_to(account_id: str) -> Any:
    """The payment that most recently paid ``account_id``, or None if none did.

    Money reaches an account by a transfer (a release of separate charges,
    any payee of a split: ``Transfer`` rows, sent) or by a manual-capture
    payment's destination charge (released: ``released_at``, the account its
    destination). The newer of the two; a payment that never paid the
    account (canceled, still held) is not one. Two queries of one row each.
    """
    sent = (
        model("Transfer")
        .objects.filter(destination_account_id=account_id, status=TransferStatus.CREATED)
        .order_by("-created_at")
        .values_list("created_at", "payment_id")
        .first()
    )
    released = (
        payment_model()
        .objects.filter(destination_account_id=account_id, released_at__isnull=False)
        .order_by("-released_at")
        .values_list("released_at", "pk")
        .first()
    )
    found = [row for row in (sent, released) if row is not None]
    if not found:
        return None
    _when, payment_id = max(found, key=lambda row: row[0])
    return payment_model().objects.get(pk=payment_id)
