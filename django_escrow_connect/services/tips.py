"""Tips: the customer adds money on a released payment, for the payee(s).

A tip is charged on a PaymentIntent of its own (never added to the escrowed
payment: its amount, refunds and books stay what they were) and, once Stripe
says it succeeded, transferred to each recipient with ``source_transaction``
= the tip's charge, less the ``TIP_FEE`` policy (none by default).

Both Stripe calls are money operations of the payment's journal
(:mod:`.operations`), kinds ``tip_intent`` and ``tip_transfer``: the key and
request are committed first, Stripe is called with no transaction open, the
outcome is committed after. The journal's rule holds: a payment has at most
one unresolved operation, so a tip waits for (or settles) whatever else is
in flight on its payment, and the other way round.

When the payment saved the payer's card with their consent
(:mod:`.saved_methods`), the tip's PaymentIntent is charged on it at once,
off-session (``customer``, ``payment_method``, ``off_session``,
``confirm``). Otherwise, or when Stripe needs the customer after all
(``authentication_required``, a decline: the error carries the
PaymentIntent it made), the ``client_secret`` goes back to the browser,
which confirms that PaymentIntent like the payment itself (3-D Secure
included).

Whatever happens, the rows converge on Stripe's facts: ``payment_intent.*``
events carrying ``escrow_tip_id`` and ``transfer.*`` events of tip transfers
update the tip, never the payment's state; ``escrow_reconcile`` finishes a
tip whose call or transfer a crash interrupted.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import permissions
from ..exceptions import GatewayError
from ..fees import compute_tip_fee
from ..gateway.types import PaymentIntentSnapshot
from ..money import (
    InvalidAmount,
    format_money,
    max_charge_amount,
    min_charge_amount,
    validate_minor_amount,
)
from ..states import IncidentKind, MoneyOperationKind, TipStatus, TipTransferStatus
from ..states import MoneyOperationStatus as OS
from ..states import PaymentStatus as S
from . import errors, operations, outcomes, radar_holds, tip_outcomes, tip_refunds
from .changes import Change, failed_change
from .common import account_model, gateway, idempotency_key, lock_payment, translate
from .radar_holds import FREEZE_CODES
from .tip_outcomes import (
    charged_off_session,
    log_tip,
    mark_transferred_if_done,
    parse_uuid,
    tip_intent_request,
    tip_model,
    tip_recipients,
    tip_transfer_model,
    tip_transfer_request,
)

__all__ = [
    "TIPPABLE_PAYMENT_STATES",
    "TipStart",
    "create_tip",
    "max_tip_amount",
    "retry_tip_transfer",
    "tip_recipients",
    "transfer_tip",
]

logger = logging.getLogger("django_escrow_connect.payments")

K = MoneyOperationKind
T = TipStatus

#: The payment states a tip may be added in: the doer has been paid. (A
#: partial release, when the package has one, belongs here too.)
TIPPABLE_PAYMENT_STATES: tuple[str, ...] = (S.RELEASED, S.PARTIALLY_RELEASED, S.PARTIALLY_REFUNDED)

#: A tip awaiting its payment, processing or failed is looked up by
#: ``escrow_reconcile`` for this long after it last changed (as long as a
#: payment awaiting its PaymentIntent's outcome,
#: ``reconcile.STALE_INTENT_MAX_AGE``); older ones are abandoned and only
#: looked at with ``payment_id``: a customer who never pays would otherwise
#: cost a Stripe request on every run, for ever.
TIP_LOOKUP_MAX_AGE = timedelta(days=30)

#: How many unresolved operations one tip request settles before giving up.
_MAX_STEPS = 6


@dataclass(frozen=True)
class TipStart:
    """A new tip and what the customer's browser needs to pay it: never stored."""

    tip: Any
    #: The PaymentIntent's client secret, for the customer to confirm the tip;
    #: None when it was charged off-session.
    client_secret: str | None
    #: Who confirms the tip's PaymentIntent: ``"off_session"`` (charged on the
    #: saved card, nothing for the browser to do) or ``"customer"``.
    confirmation: str = "customer"


def max_tip_amount(currency: str) -> int | None:
    """The largest tip in ``currency`` (minor units), or None: no tips in it.

    Never more than Stripe charges in one payment (``max_charge_amount``): an
    entry above it is ``E060``, and should the check be silenced a larger tip
    is still refused here (a 400), not by Stripe after the tip is recorded.
    """
    from ..conf import escrow_settings

    table = escrow_settings.TIP_MAX_AMOUNT or {}
    value = table.get(currency.lower()) if isinstance(table, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return min(int(value), max_charge_amount(currency))


# --------------------------------------------------------------------------
# Adding a tip
# --------------------------------------------------------------------------


def create_tip(payment_id: Any, user: Any, amount: Any, *, request_key: str = "") -> TipStart:
    """The payer adds a tip of ``amount`` minor units to a released payment.

    Several tips per payment are allowed, each on its own PaymentIntent. The
    tip and its PaymentIntent operation are committed before Stripe is
    called; the answer's client secret is returned for the customer to
    confirm the tip, and ``payment_intent.succeeded`` then transfers it.

    The same request again (same payer, same amount) while that tip's
    PaymentIntent operation is unresolved finishes it with its key and
    answers that tip: it never makes a second one. An off-session charge
    whose answer is unknown is answered with the tip as it stands (not a
    503), so nobody is invited to add it again.

    ``request_key``: the client's ``Idempotency-Key``, committed on the tip's
    PaymentIntent operation. The same key again from the same payer on this
    payment never adds a second tip, whenever it comes: it finishes that
    tip's call if it is unresolved and answers that tip (400
    ``idempotency_key_reused`` with another amount). With a key, an
    unresolved tip of the same amount without it is another request's.
    """
    for _step in range(_MAX_STEPS):
        retried = None
        answered = None
        with transaction.atomic():
            payment = lock_payment(payment_id)
            if payment.payer_id != getattr(user, "pk", None):
                raise errors.Forbidden(_("Only the customer who paid can add a tip."))
            earlier = operations.request_operations(payment, user, request_key)
            if earlier:
                _require_same_tip(earlier, amount)
            pending = operations.unresolved_operation(payment)
            if not request_key:
                if pending is None:
                    tip, operation = _begin_tip(payment, user, amount)
                else:
                    retried = _unanswered_tip(pending, user, amount)
            elif operations.is_request_operation(pending, user, request_key):
                retried = _unanswered_tip(pending, user, amount)
            elif earlier and not _never_made(earlier[-1]):
                answered = earlier[-1]
            elif pending is None:
                tip, operation = _begin_tip(payment, user, amount, request_key)
        if answered is not None:
            return _tip_answered_again(answered)
        if retried is not None:
            # The same request again while the first one's answer is unknown
            # (a timeout, a crash; the answer said retrying is safe): it
            # finishes that tip with its own key. A second tip would charge
            # a saved card twice.
            try:
                outcomes.drive(pending, wanted=True)
            except (errors.OperationPending, errors.OperationInFlight):
                # Stripe's answer unknown, or not concluded within the call's
                # lease: the tip exists and converges by itself.
                if not charged_off_session(pending):
                    raise
                return _charge_pending(retried.pk)
            start = _answer_again(retried.pk, pending)
            if start is not None:
                return start
            continue  # Stripe never made it: this request adds the tip.
        if pending is not None:
            # Something else is in flight on the payment: settle it first (a
            # tip creation of another amount, left by a crash, included).
            outcomes.drive(pending, wanted=False)
            continue
        outcome = operations.send(operation)
        try:
            outcomes.apply_outcome(operation, outcome)
        except errors.OperationPending:
            if not charged_off_session(operation):
                raise  # nothing can be charged without the customer: retrying is safe
            return _charge_pending(tip.pk)
        tip.refresh_from_db()
        log_tip(tip, "tip created")
        if tip.status == T.PAID:
            # Stripe answered that it charged the tip already: transfer it now.
            _transfer_after_commit(tip.pk)
            tip.refresh_from_db()
        return _start(tip, operation, outcome)
    raise errors.OperationInFlight(
        _("The payment kept changing while this request ran; try again.")
    )


def _charge_pending(tip_pk: Any) -> TipStart:
    """The answer while Stripe's answer to an off-session charge is unknown.

    The saved card may have been charged. A 503 would invite the customer to
    add the tip again, a second charge; the tip exists and converges on its
    own (its webhook, the same request again, ``escrow_reconcile``: the same
    key).
    """
    tip = tip_model().objects.get(pk=tip_pk)
    log_tip(tip, "tip created, Stripe's answer pending")
    return TipStart(tip=tip, client_secret=None, confirmation="off_session")


#: The states of a tip the saved card was charged for (or is being charged for).
_CHARGED = (T.PAID, T.PROCESSING, T.TRANSFERRED, T.TRANSFER_FAILED)


def _start(tip: Any, operation: Any, outcome: Any) -> TipStart:
    """The answer: nothing for the browser when the saved card paid the tip."""
    intent = outcome.result if outcome.error is None else outcome.error.payment_intent
    if charged_off_session(operation) and tip.status in _CHARGED:
        return TipStart(tip=tip, client_secret=None, confirmation="off_session")
    # Charged off-session and refused (the error carries the PaymentIntent),
    # or never off-session: the customer confirms this PaymentIntent.
    return TipStart(tip=tip, client_secret=getattr(intent, "client_secret", None))


def _unanswered_tip(pending: Any, user: Any, amount: Any) -> Any:
    """The tip ``pending`` creates when it is this request's: same payer, same amount.

    Called with the payment locked. None when ``pending`` is anything else.
    """
    if pending.kind != K.TIP_INTENT or pending.amount != amount:
        return None
    tip = tip_model().objects.filter(intent_idempotency_key=pending.idempotency_key).first()
    if tip is None or tip.payer_id != getattr(user, "pk", None):
        return None
    return tip


def _answer_again(tip_pk: Any, operation: Any) -> TipStart | None:
    """The answer the first request would have given, now that its call is settled.

    None when Stripe never made the PaymentIntent (the tip was given up).
    A read at Stripe gives the client secret back when the customer
    confirms the tip; no transaction is open.
    """
    tip = tip_model().objects.get(pk=tip_pk)
    if tip.status == T.CANCELED:
        return None
    log_tip(tip, "tip creation answered again")
    if tip.status == T.PAID:
        _transfer_after_commit(tip.pk)
        tip.refresh_from_db()
    if charged_off_session(operation) and tip.status in _CHARGED:
        return TipStart(tip=tip, client_secret=None, confirmation="off_session")
    if not tip.stripe_payment_intent_id:
        raise errors.OperationInFlight()
    try:
        intent = gateway().retrieve_payment_intent(tip.stripe_payment_intent_id)
    except GatewayError as exc:
        raise translate(exc, _("create the tip")) from exc
    return TipStart(tip=tip, client_secret=intent.client_secret)


def _require_same_tip(earlier: list[Any], amount: Any) -> None:
    """Refuse an ``Idempotency-Key`` already used for another request (nothing written)."""
    if any(op.kind != K.TIP_INTENT or op.amount != amount for op in earlier):
        raise errors.IdempotencyKeyReused()


def _never_made(operation: Any) -> bool:
    """Stripe never made the tip's PaymentIntent: the request was not carried out.

    As without a key, the same request then adds the tip (nothing was charged).
    """
    return bool(operation.status == OS.FAILED and operation.error_code == "not_made")


def _tip_answered_again(operation: Any) -> TipStart:
    """The answer to a keyed request whose tip call is settled: that tip again.

    Stripe's refusal is answered again as the first request was; a tip
    canceled since (its PaymentIntent was) is answered as it stands, with
    nothing to confirm.
    """
    fresh = operations.operation_model().objects.get(pk=operation.pk)
    tip = tip_model().objects.filter(intent_idempotency_key=fresh.idempotency_key).first()
    if fresh.status == OS.FAILED or tip is None:
        raise tip_outcomes.tip_refusal(
            GatewayError(fresh.error_message, code=fresh.error_code or None)
        )
    if tip.status == T.CANCELED:
        return TipStart(tip=tip, client_secret=None)
    start = _answer_again(tip.pk, fresh)
    if start is None:
        # Canceled in the meantime (its PaymentIntent's event): as it stands.
        return TipStart(tip=tip_model().objects.get(pk=tip.pk), client_secret=None)
    return start


def _begin_tip(payment: Any, user: Any, amount: Any, request_key: str = "") -> tuple[Any, Any]:
    if payment.status not in TIPPABLE_PAYMENT_STATES:
        raise errors.TransitionNotAllowed(
            _("A tip can be added only once the payment is released."), code="not_tippable"
        )
    limit = max_tip_amount(payment.currency)
    if limit is None:
        raise errors.InvalidInput(
            _("Tips are not available for payments in this currency."), code="tips_unavailable"
        )
    try:
        validate_minor_amount(amount, payment.currency)
    except (InvalidAmount, TypeError) as exc:
        raise errors.InvalidInput(str(exc), code="invalid_amount") from exc
    minimum = min_charge_amount(payment.currency)
    if amount < minimum:
        # A tip is a charge of its own: below Stripe's smallest charge it
        # would be journaled and then refused by Stripe.
        raise errors.InvalidInput(
            _("A tip must be at least %(minimum)s (minor units), %(money)s: Stripe's minimum.")
            % {"minimum": minimum, "money": format_money(minimum, payment.currency)},
            code="amount_too_small",
        )
    if amount > limit:
        raise errors.InvalidInput(
            _("A tip must be between %(minimum)s and %(limit)s (minor units).")
            % {"minimum": minimum, "limit": limit},
            code="invalid_amount",
        )
    Tip = tip_model()
    tip = Tip(
        payment=payment,
        payer=user,
        amount=amount,
        currency=payment.currency,
        platform_fee=compute_tip_fee(amount, payment.currency),
    )
    _require_recipients_ready(tip)
    tip.intent_idempotency_key = idempotency_key("tip", tip.pk, "intent", 0)
    tip.save(force_insert=True)
    operation = operations.begin(
        payment,
        K.TIP_INTENT,
        tip_intent_request(tip),
        amount=amount,
        user=user,
        key=tip.intent_idempotency_key,
        attempt=0,
        request_key=request_key,
    )
    return tip, operation


def _require_recipients_ready(tip: Any) -> None:
    """Refuse a tip (nothing written, nothing charged) that could not be transferred.

    The customer's card is charged before the transfer is sent: a recipient
    whose account Stripe would refuse (deauthorized since the release, or
    its ``transfers`` capability no longer active) would leave the tip on
    the platform. Checked like a release checks its payees.
    """
    destinations = {destination for destination, _amount in tip_recipients(tip)}
    ready = {
        account.stripe_account_id
        for account in account_model().objects.filter(stripe_account_id__in=destinations)
        if account.can_transfer
    }
    if destinations - ready:
        raise errors.AccountNotReady(
            _("Every payee's connected account must be able to receive transfers.")
        )


def transfer_held_tips_on_commit(payment: Any) -> None:
    """Once the commit is done, send the payment's tips its dispute or Radar held.

    Called when the payment's own dispute is decided for the platform (won,
    an inquiry closed, an appeal won), and when its last hold closes
    (:func:`transfer_held_tips_once_unheld`: Stripe closing a Radar hold,
    staff resolving a ``charge_disputed`` one; ``escrow_reconcile`` sends
    those its lift releases itself, :func:`tips_unheld`): a tip paid
    meanwhile waited ``paid``
    for it, and now goes to the doer as it would have. A tip still held (its own charge
    disputed, another hold open) stays ``paid``; a refused transfer waits
    for staff.

    Each tip's charge is read from Stripe first (:func:`_require_not_refunded`
    with ``read``): while it waited, the tip may have been refunded in the
    Dashboard (Stripe often closes a hold *because* of a refund: a warning is
    no longer actionable once its charge is fully refunded, a review closes
    ``refunded``) and the refund's events may come late, after this one.
    """
    held = tip_model().objects.filter(payment=payment, status=T.PAID)
    for tip_pk in held.values_list("pk", flat=True):
        transaction.on_commit(functools.partial(_transfer_after_commit, tip_pk, read_charge=True))


def transfer_held_tips_once_unheld(payment: Any) -> int:
    """A hold of ``payment`` was just closed (payment locked): once no hold is
    left open and no dispute of the payment stands open or lost, send the
    tips it held on commit (:func:`transfer_held_tips_on_commit`).

    Run when Stripe closes the payment's last Radar hold (:mod:`.radar`), and
    when its last ``charge_disputed`` hold is lifted: by staff (the admin's
    *Resolve*), by a tip's own dispute recorded (:mod:`.disputes`);
    ``escrow_reconcile``'s lift sends them itself (:func:`tips_unheld`). A dispute
    still freezing the payment keeps them: its close sends them. Returns how
    many ``paid`` tips were queued (0 when still held): queued, not sent,
    each is checked after the commit (a tip whose own charge is disputed, or
    found refunded, is not sent).
    """
    held = tips_unheld(payment)
    for tip_pk in held:
        # As transfer_held_tips_on_commit, on the tips just read.
        transaction.on_commit(functools.partial(_transfer_after_commit, tip_pk, read_charge=True))
    return len(held)


def tips_unheld(payment: Any) -> list[Any]:
    """The ``paid`` tips of ``payment`` a just-closed hold kept (payment locked), by age.

    None while another hold is open or a dispute of the payment stands open
    or lost: what closes it sends them. ``escrow_reconcile`` sends these
    itself once its lift commits (:func:`send_paid_tip`), so that a tip its
    transfer failed for is reported as failing in that run, not only logged.
    """
    if radar_holds.open_holds(payment).exists() or payment.frozen_by_dispute:
        return []
    paid = tip_model().objects.filter(payment=payment, status=T.PAID).order_by("created_at")
    return list(paid.values_list("pk", flat=True))


def transfer_tip_on_commit(tip: Any) -> None:
    """Once the commit is done, send ``tip`` if it is ``paid``.

    Called when a dispute of the tip's own charge is decided for the
    platform (won, an inquiry closed): the tip waited ``paid`` for it. The
    transfer runs after the event's commit, with no transaction open; still
    held otherwise (its payment's dispute, Radar), it stays ``paid``. Its
    charge is read first, as for :func:`transfer_held_tips_on_commit`: it may
    have been refunded while it waited, its events not here yet.
    """
    if tip.status == T.PAID:
        transaction.on_commit(functools.partial(_transfer_after_commit, tip.pk, read_charge=True))


def _transfer_after_commit(tip_pk: Any, *, read_charge: bool = False) -> None:
    """Transfer a tip that has just been paid (or held until now); a failure is left for a retry.

    Runs after the commit that recorded the payment (no transaction open).
    ``read_charge``: for a tip that waited (a Radar hold, a dispute), its
    charge is read from Stripe first and a refund found there recorded, so a
    tip refunded meanwhile is not sent. A crash or an error here (Stripe not
    readable included) leaves the tip ``paid`` (or its transfer operation
    pending): ``escrow_reconcile`` transfers it.
    """
    try:
        transfer_tip(tip_pk, read_charge=read_charge)
    except errors.ServiceError as exc:
        logger.warning(
            "tip transfer not done now: %s",
            exc.message,
            extra={"tip_id": str(tip_pk), "code": exc.code},
        )


# --------------------------------------------------------------------------
# Transferring a paid tip
# --------------------------------------------------------------------------


def transfer_tip(tip_id: Any, *, read_charge: bool = False) -> Any:
    """Send a paid tip to its recipients, one transfer each; return the tip.

    Each transfer is a journaled money operation with its own key
    (``tip:<id>:transfer-<account>:<attempt>``); a recipient is never paid
    twice (a unique index on the live transfer per recipient, and the key).
    A tip that is not ``paid`` is returned unchanged. Raises
    :class:`~.errors.TransitionNotAllowed` before a new transfer while a
    dispute of the tip's charge, or its payment's, is open or lost, and when
    the tip's charge was refunded at Stripe (recorded by its events; with
    ``read_charge``, or after its payment's dispute was lost, the charge is
    read first and its refunds recorded).
    """
    _require_not_refunded(tip_id, read=read_charge)
    return _transfer(tip_id)


def _transfer(tip_id: Any, *, decided_by: Any = None) -> Any:
    """:func:`transfer_tip`'s phases; ``decided_by``: the staff user who sends it anyway."""
    payment_id = tip_model().objects.values_list("payment_id", flat=True).get(pk=tip_id)
    for _step in range(_MAX_STEPS + len(_recipients_of(tip_id))):
        with transaction.atomic():
            payment = lock_payment(payment_id)
            tip = tip_model().objects.select_for_update().get(pk=tip_id)
            if tip.status != T.PAID:
                return tip
            pending = operations.unresolved_operation(payment)
            if pending is None:
                operation = _begin_next_transfer(payment, tip, decided_by=decided_by)
                if operation is None:
                    return tip_model().objects.get(pk=tip_id)
            else:
                mine = tip.transfers.filter(idempotency_key=pending.idempotency_key).exists()
        if pending is None:
            outcomes.execute(operation)
        else:
            # Another tip's transfer (or a refund) is finished first: its
            # refusal is its own, and this tip's transfer goes on.
            outcomes.drive(
                pending,
                wanted=pending.kind == K.TIP_TRANSFER,
                for_another=not mine,
                pays_out=True,
            )
    raise errors.OperationInFlight(
        _("The payment kept changing while this request ran; try again.")
    )


def _require_charge_kept(tip: Any, *, decided_by: Any = None, quiet: bool = False) -> None:
    """Refuse to send a tip whose charge, or its payment's, is disputed (open, or lost).

    A chargeback takes the tip's amount from the platform's balance while it
    is open, and for good when lost; an inquiry takes nothing yet but may
    become one. A transfer now could pay the doer money the customer is
    getting back. The payment's own dispute holds its tips too: the bank
    disputes the work (or the card) the tip is for. Like a payment's
    release, the tip waits for the dispute to be decided for the platform
    (docs/tips.md). Once the payment's dispute is decided lost (no appeal
    under way) nothing is left to wait for: staff (``decided_by``) may send
    the tip anyway, a decision that is logged. A transfer already begun is
    held the same way by :func:`.outcomes.drive`.
    """
    if tip_outcomes.dispute_waiting(tip) is not None:
        raise errors.TransitionNotAllowed(
            _("A dispute of the tip's charge waits to be recorded; its transfer waits for it.")
        )
    if tip_outcomes.tip_charge_disputed(tip):
        raise errors.TransitionNotAllowed(
            _("The tip's charge is disputed; its transfer is frozen.")
        )
    payment = tip.payment
    _require_no_radar_hold(payment)
    if payment.status not in tip_outcomes.payment_frozen_states():
        return
    if not tip_outcomes.payment_dispute_decided_lost(payment):
        raise errors.TransitionNotAllowed(
            _("The payment's charge is disputed; its tips' transfers wait until it is decided.")
        )
    if decided_by is None:
        raise errors.TransitionNotAllowed(
            _("The payment's dispute was lost; only staff can send its tips (retry-transfer).")
        )
    if quiet:
        return
    log_tip(
        tip,
        "tip sent by staff (%s) although its payment's dispute was lost",
        getattr(decided_by, "pk", decided_by),
        level=logging.WARNING,
    )


def _require_no_radar_hold(payment: Any) -> None:
    """Refuse a tip's transfer while Stripe Radar holds its payment (:mod:`.radar`).

    An early fraud warning (or a review) says the card may not be the
    customer's: the tip is on that card (off-session, the same one) and for
    that work, and a chargeback may follow. Like the payment's release, its
    tips wait until Stripe closes the hold; staff's decision after a lost
    dispute does not lift it. The 409's code is the release's.
    """
    hold = radar_hold(payment)
    if hold is None:
        return
    if hold.kind == IncidentKind.CHARGE_DISPUTED:
        # Stripe refused an operation saying the charge is disputed, before
        # the dispute was recorded: the tip waits as for the dispute itself.
        raise errors.TransitionNotAllowed(
            _(
                "Stripe refused an operation of the payment because its charge is disputed; "
                "its tips' transfers wait until the dispute is recorded."
            ),
            code=FREEZE_CODES[hold.kind],
        )
    raise errors.TransitionNotAllowed(
        _("Stripe Radar holds the payment; its tips' transfers wait until Stripe closes it."),
        code=FREEZE_CODES[hold.kind],
    )


def radar_hold(payment: Any) -> Any:
    """The payment's oldest open hold (a Radar review, an early fraud warning,
    Stripe's ``charge_disputed`` refusal), or None.

    Its tips wait while it is open, as its release does; a hold of a tip's
    own charge is the payment's too.
    """
    return radar_holds.open_holds(payment).order_by("created_at").first()


def _require_not_refunded(tip_id: Any, *, decided_by: Any = None, read: bool = False) -> None:
    """Refuse to send a tip whose charge was refunded at Stripe (in full or in part).

    A refund made in the Stripe Dashboard is recorded on the tip by its
    events (:mod:`.tip_refunds`); a tip recorded refunded is never sent.
    When those events may have been lost, the charge is read from Stripe
    first (with no transaction open) and its refunds recorded the same way:
    always when ``read`` (``escrow_reconcile``, staff's retry), and for the
    tips of a payment whose own dispute was lost (the platform may have
    refunded them meanwhile, and an appeal won later would send them).
    """
    tip = tip_model().objects.select_related("payment").get(pk=tip_id)
    if tip.status not in (T.PAID, T.TRANSFER_FAILED):
        return
    tip_refunds.require_not_refunded(tip)
    if not tip.stripe_charge_id:
        return
    lost = tip_outcomes.payment_dispute_was_lost(tip.payment)
    if not (read or lost):
        return
    # The database's refusals first (the same again under the lock): Stripe
    # is read only when a transfer would otherwise go out, so a refused retry
    # answers its 409 even while Stripe is unreachable. Raised, not skipped,
    # after a lost dispute: a refusal that cleared before the lock (an appeal
    # won meanwhile) must not let a refunded tip go out unread. Otherwise the
    # tip is held by a dispute of its own charge (or a dispute event): no new
    # transfer goes out, and the transfer's phases answer as they would.
    try:
        _require_charge_kept(tip, decided_by=decided_by, quiet=True)
    except errors.TransitionNotAllowed:
        if lost:
            raise
        return
    tip = tip_refunds.catch_up(tip.pk)
    if tip.amount_refunded:
        log_tip(
            tip,
            "tip not transferred: %s of its charge was refunded at Stripe",
            tip.amount_refunded,
            level=logging.WARNING,
        )
    tip_refunds.require_not_refunded(tip)


def _recipients_of(tip_id: Any) -> list[tuple[str, int]]:
    return tip_recipients(tip_model().objects.select_related("payment").get(pk=tip_id))


def _begin_next_transfer(payment: Any, tip: Any, *, decided_by: Any = None) -> Any:
    """Phase 1 of the next recipient's transfer; None (tip transferred) when none is left."""
    for destination, amount in tip_recipients(tip):
        done = tip.transfers.filter(
            destination_account_id=destination,
            status__in=[TipTransferStatus.PENDING, TipTransferStatus.CREATED],
        )
        if done.exists():
            continue
        _require_charge_kept(tip, decided_by=decided_by)
        tip_refunds.require_not_refunded(tip)
        if not tip.stripe_charge_id:
            raise errors.Conflict(
                _("The tip's charge is not known yet; try again shortly."), code="charge_pending"
            )
        attempt = tip.transfers.filter(destination_account_id=destination).count()
        key = idempotency_key("tip", tip.pk, f"transfer-{destination}", attempt)
        decision = _staff_decision(payment, decided_by)
        operation = operations.begin(
            payment,
            K.TIP_TRANSFER,
            tip_transfer_request(tip, destination, amount, key),
            amount=amount,
            key=key,
            attempt=attempt,
            user=decided_by if decision else None,
            follow_up=decision,
        )
        tip_transfer_model().objects.create(
            tip=tip,
            destination_account_id=destination,
            amount=amount,
            currency=tip.currency,
            idempotency_key=key,
        )
        return operation
    mark_transferred_if_done(tip)
    return None


def _staff_decision(payment: Any, decided_by: Any) -> dict[str, Any] | None:
    """What a tip transfer's operation commits of staff's decision to send it after a loss.

    Only when the decision is what lets the transfer go: the payment's own
    dispute decided lost (:func:`_require_charge_kept`). Stored on the
    operation (``follow_up``; ``requested_by`` is the staff user), so that
    whoever finishes it (the request, ``escrow_reconcile``) sends it with
    its key rather than only looking it up (:func:`.tip_outcomes.transfer_frozen_by_dispute`),
    and the journal shows who decided, and when.
    """
    if decided_by is None or not tip_outcomes.payment_dispute_decided_lost(payment):
        return None
    return {
        operations.AFTER_LOSS: True,
        # As text: a user's primary key may be a UUID (JSON has none).
        "decided_by": str(getattr(decided_by, "pk", decided_by)),
        "decided_at": timezone.now().isoformat(),
    }


def retry_tip_transfer(tip_id: Any, user: Any = None, *, system: bool = False) -> Any:
    """Send a tip whose transfer Stripe refused again (staff, or ``system``).

    Refused (:class:`~.errors.TransitionNotAllowed`, the tip unchanged) while a
    dispute of the tip's charge is open or lost, while its payment's dispute
    is open (or under appeal), and when the tip's charge was refunded at
    Stripe. Once its payment's dispute is decided lost, staff's request
    sends a ``paid`` (or ``transfer_failed``) tip anyway: their decision,
    logged.
    """
    if not system and not permissions.is_platform_staff(user):
        raise errors.Forbidden(_("Only platform staff can retry a tip transfer."))
    found = tip_model().objects.filter(pk=parse_uuid(tip_id)).values_list("pk", flat=True)
    if not found:
        raise errors.NotFound(_("No such tip."))
    # Staff's request is their decision to send a tip its payment's lost
    # dispute holds; the system's retry decides nothing.
    decided_by = None if system else user
    # Stripe is read before anything is locked: a refund whose events were
    # lost is recorded, and the tip not sent.
    _require_not_refunded(found[0], decided_by=decided_by, read=True)
    with transaction.atomic():
        tip = tip_model().objects.get(pk=found[0])
        lock_payment(tip.payment_id)
        tip = tip_model().objects.select_for_update().get(pk=tip.pk)
        tip_refunds.require_not_refunded(tip)
        if tip.status == T.TRANSFER_FAILED:
            # Before the tip leaves transfer_failed: a refusal writes nothing.
            _require_charge_kept(tip, decided_by=decided_by)
            tip_refunds.require_not_refunded(tip)
            tip.retry_transfer()
            tip.save()
        elif tip.status != T.PAID:
            raise errors.TransitionNotAllowed(
                _("Only a paid tip whose transfer failed can be retried.")
            )
    return _transfer(tip.pk, decided_by=decided_by)


# --------------------------------------------------------------------------
# escrow_reconcile: tips a crash or a lost event left behind
# --------------------------------------------------------------------------


def reconcile_tips(
    *,
    dry_run: bool = False,
    payment_id: Any = None,
    cutoff: Any = None,
    changes: list[Any] | None = None,
) -> list[Any]:
    """Transfer paid tips whose transfer never ran; catch up with tip PaymentIntents.

    A tip left ``paid`` (a crash after the payment was recorded, before or
    during the transfer, or an operation in the way) is transferred: the
    journal has already settled its unresolved operation, so the same key
    is not sent twice. A tip still awaiting its payment, or failed (the
    customer may pay it again), that changed within
    :data:`TIP_LOOKUP_MAX_AGE` is looked up (a lost
    ``payment_intent.succeeded``). Refused transfers
    (``transfer_failed``) wait for staff (``retry-transfer``), like a
    refused release.

    Each change is appended to ``changes`` (returned; a new list if None)
    as soon as it is made: :func:`.reconcile.reconcile` passes its
    ``ChangeLog``, which reports it at once, so an error that stops the run
    at a later tip does not hide a tip transferred before it.
    """
    tips = tip_model().objects.all()
    if payment_id is not None:
        tips = tips.filter(payment_id=payment_id)
    elif cutoff is not None:
        tips = tips.filter(updated_at__lte=cutoff)
    if changes is None:
        changes = []
    # A failed tip can still be paid: the customer may confirm the same
    # PaymentIntent again (no new request reaches the app), and that
    # success's event can be lost too. Abandoned ones (a tip never paid
    # stays ``awaiting_payment``) are left alone.
    waiting = tips.filter(status__in=[T.AWAITING_PAYMENT, T.PROCESSING, T.FAILED]).exclude(
        stripe_payment_intent_id=""
    )
    if payment_id is None:
        waiting = waiting.filter(updated_at__gte=timezone.now() - TIP_LOOKUP_MAX_AGE)
    for tip in waiting.order_by("created_at"):
        if dry_run:
            changes.append(Change(str(tip.payment_id), "would look up tip", str(tip.pk)))
            continue
        try:
            snapshot = gateway().retrieve_payment_intent(tip.stripe_payment_intent_id)
        except GatewayError as exc:
            changes.append(failed_change(tip.payment_id, f"look up tip {tip.pk}", exc))
            continue
        after = apply_tip_payment_intent(snapshot)
        if after is not None and after.status != tip.status:
            changes.append(
                Change(str(tip.payment_id), f"tip {tip.pk}: {tip.status} -> {after.status}")
            )
    # A tip its payment's lost dispute holds waits for staff to decide: listed
    # on every run (not an error), not skipped silently.
    lost = tips.filter(status=T.PAID, payment__status=S.DISPUTE_LOST).select_related("payment")
    for tip in lost.order_by("created_at"):
        if tip_outcomes.payment_dispute_decided_lost(tip.payment):
            if not dry_run and _refunded_meanwhile(tip, changes):
                continue
            hold = radar_hold(tip.payment)
            if hold is not None:
                # Staff's decision does not lift a Radar hold: retry-transfer
                # answers 409 (the hold's code) until Stripe closes it. Not
                # "staff decide" now: what they can do meanwhile is refund.
                changes.append(
                    Change(
                        str(tip.payment_id),
                        f"tip {tip.pk} held: the payment's dispute was lost and Stripe "
                        f"Radar's {hold.kind} {hold.stripe_object_id} is open",
                        "it waits for Stripe to close it: retry-transfer answers 409 until "
                        "then, staff decide after; refunding its charge needs no wait",
                    )
                )
                continue
            changes.append(
                Change(
                    str(tip.payment_id),
                    f"tip {tip.pk} held: the payment's dispute was lost",
                    "staff decide: retry-transfer sends it unless its charge was refunded",
                )
            )
    # A tip whose charge is disputed waits for the dispute (and is not
    # reported as failing on every run meanwhile).
    paid = tips.filter(status=T.PAID).exclude(pk__in=tip_outcomes.disputed_tips())
    for tip in paid.select_related("payment").order_by("created_at"):
        hold = radar_hold(tip.payment)
        if hold is not None and hold.kind == IncidentKind.CHARGE_DISPUTED:
            # Stripe said the charge is disputed; reconcile's own check of
            # the charge (services/reconcile.py) lifts the hold or lists it.
            changes.append(
                Change(
                    str(tip.payment_id),
                    f"tip {tip.pk} held: Stripe refused an operation, charge "
                    f"{hold.stripe_object_id or '?'} is disputed",
                    "sent once the hold is lifted",
                )
            )
            continue
        if hold is not None:
            # Sent when Stripe closes the hold (services/radar.py); listed on
            # every run meanwhile, not reported as failing.
            changes.append(
                Change(
                    str(tip.payment_id),
                    f"tip {tip.pk} held: Stripe Radar's {hold.kind} {hold.stripe_object_id} "
                    "is open",
                    "sent when Stripe closes it",
                )
            )
            continue
        pending_event = tip_outcomes.dispute_waiting(tip)
        if pending_event is not None:
            # Recorded by the retry of deferred events, then held by it; a
            # failed event is retried by Stripe and replay. Listed on every
            # run, not skipped silently: an event that keeps failing holds
            # the tip until someone fixes it (escrow_replay_events).
            changes.append(
                Change(
                    str(tip.payment_id),
                    f"tip {tip.pk} held: dispute event {pending_event.stripe_event_id} is "
                    f"{pending_event.status}",
                )
            )
            continue
        if dry_run:
            changes.append(Change(str(tip.payment_id), "would transfer tip", str(tip.pk)))
            continue
        send_paid_tip(tip.pk, tip.payment_id, changes)
    return changes


def send_paid_tip(tip_pk: Any, payment_id: Any, changes: list[Any]) -> None:
    """Transfer one ``paid`` tip now (no transaction open) and report what became of it.

    For ``escrow_reconcile``: its tips step, and its lift of a payment's last
    ``charge_disputed`` hold. The charge is read first: a refund whose
    events were lost is recorded, and the tip is not sent. A tip found held
    (its own dispute recorded, its charge refunded after a transfer was
    sent) is listed, not failing: staff decide. Any other refusal, Stripe
    unreachable or an answer lost, is a failure of the run.
    """
    try:
        after = transfer_tip(tip_pk, read_charge=True)
    except errors.TransitionNotAllowed as exc:
        if tip_model().objects.filter(pk=tip_pk, status=T.REFUNDED).exists():
            changes.append(Change(str(payment_id), f"tip {tip_pk}: paid -> refunded"))
            return
        changes.append(Change(str(payment_id), f"tip {tip_pk} held", exc.message))
        return
    except errors.ServiceError as exc:
        changes.append(failed_change(payment_id, f"transfer tip {tip_pk}", exc))
        return
    changes.append(Change(str(payment_id), f"tip {tip_pk}: paid -> {after.status}"))


def _refunded_meanwhile(tip: Any, changes: list[Any]) -> bool:
    """Whether the platform refunded a tip its payment's lost dispute held (read at Stripe).

    Refunding it in the Dashboard is one of staff's two decisions; when its
    events were lost, the charge read here records it, and the tip is no
    longer listed as held. False (listed as held) when it was not refunded,
    or Stripe could not be read (then also listed as failing).
    """
    try:
        after = tip_refunds.catch_up(tip.pk)
    except errors.ServiceError as exc:
        changes.append(failed_change(tip.payment_id, f"read tip {tip.pk}'s charge", exc))
        return False
    if after.status != T.REFUNDED:
        return False
    changes.append(Change(str(tip.payment_id), f"tip {tip.pk}: paid -> refunded"))
    return True


def apply_tip_payment_intent(snapshot: PaymentIntentSnapshot, *, event_id: str = "") -> Any:
    """A ``payment_intent.*`` event of a tip (:func:`.tip_outcomes.apply_tip_payment_intent`),
    and the transfer of a tip it found paid, once the event's transaction commits.

    Scheduling the transfer again for a tip already being transferred is
    harmless: :func:`transfer_tip` finishes the journal's operation with its
    own key and never begins a second transfer to the same recipient.
    """
    tip = tip_outcomes.apply_tip_payment_intent(snapshot, event_id=event_id)
    if tip is not None and tip.status == T.PAID:
        tip_pk = tip.pk
        transaction.on_commit(lambda: _transfer_after_commit(tip_pk))
    return tip
