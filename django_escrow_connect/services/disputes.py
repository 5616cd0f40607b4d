"""Apply what Stripe reports about disputes (chargebacks and inquiries).

For separate charges and transfers and for destination charges the platform
is debited the disputed amount and the fee, so a dispute freezes the payment:
:meth:`open_dispute` moves it to ``disputed`` (release refuses while any
dispute is open), and the outcome moves it on: won (or an inquiry closed)
back to where it was, lost to ``dispute_lost``.

Appeals (API version ``2026-10-28.endive``): a lost dispute may be appealed
(``appeal_needs_response``, ``appeal_under_review``), which opens it again
while the payment stays ``dispute_lost``. An appeal won returns the payment
to where it was before the dispute (``win_appeal``), so it can be released
again; an appeal lost is final.

Events come in any order and more than once. A dispute's state only moves
forward (needs response, under review, closed; then appeal, appeal under
review, closed again), and a decided dispute is final, so an old
``charge.dispute.updated`` arriving after ``charge.dispute.closed`` changes
nothing. Whether a ``lost`` that arrives during an appeal is the first loss
delivered late or the appeal's outcome is told by the event's time against
the appeal's start (``appealed_at``).

A dispute's ``amount`` is Stripe's latest figure, whatever its state: the
issuer may change it while the dispute runs (part of the order disputed,
currency conversion). Within one state, events are ordered by their time
against the dispute's events already processed, so an old
``charge.dispute.updated`` delivered late never puts an older amount back.
The payment's ``amount_disputed`` follows its own charge's disputes while
one freezes it, at most what was charged (the database keeps it within the
payment's amount; what Stripe debited beyond it is on the Dispute row).

A tip's charge (docs/tips.md) is disputed the same way, and Stripe debits
the platform for it too. Its Dispute row belongs to the tip's payment and
names the tip (``tip``; ``released_when_opened`` lists what the tip had
sent), follows the same forward-only rules and freezes the payment's
release while open, but never moves the payment's state: the payment's own
charge is not disputed. It sends ``tip_dispute_opened`` and
``tip_dispute_closed`` instead.

An event after which a dispute stands open or lost lifts a
``charge_disputed`` hold of its charge (Stripe refused an operation saying
the charge is disputed before the dispute was recorded,
:mod:`.radar_holds`): the dispute governs from then on. One closed in the
platform's favour lifts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django_fsm import can_proceed

from ..gateway.types import DisputeSnapshot
from ..notifications import notify
from ..states import (
    DISPUTE_APPEAL_STATES,
    DISPUTE_CLOSED_STATES,
    DISPUTE_KEPT_STATES,
    DisputeStatus,
    WebhookEventStatus,
)
from ..states import PaymentStatus as S
from . import errors, radar_holds, releases, tip_outcomes, tips
from .common import lock_payment_for, model, open_disputes
from .stripe_objects import require_funded
from .task_status import sync_task_status

logger = logging.getLogger("django_escrow_connect.services")

#: How far along a dispute is; Stripe never moves a dispute backwards.
_RANK: dict[str, int] = {
    DisputeStatus.WARNING_NEEDS_RESPONSE: 0,
    DisputeStatus.WARNING_UNDER_REVIEW: 1,
    DisputeStatus.NEEDS_RESPONSE: 2,
    DisputeStatus.UNDER_REVIEW: 3,
    DisputeStatus.WARNING_CLOSED: 4,
    DisputeStatus.WON: 4,
    DisputeStatus.LOST: 4,
    DisputeStatus.PREVENTED: 4,
    DisputeStatus.APPEAL_NEEDS_RESPONSE: 5,
    DisputeStatus.APPEAL_UNDER_REVIEW: 6,
}
#: ``won`` or ``lost`` deciding an appeal.
_APPEAL_DECIDED = 7
#: Closed states in which the platform keeps the money.
_KEPT = DISPUTE_KEPT_STATES
#: Where an appeal can come from: a lost dispute (or one whose loss we missed).
_APPEALABLE = frozenset(
    {
        DisputeStatus.NEEDS_RESPONSE,
        DisputeStatus.UNDER_REVIEW,
        DisputeStatus.LOST,
        *DISPUTE_APPEAL_STATES,
    }
)


def _stage(dispute: Any) -> int:
    """How far along the stored dispute is."""
    if dispute.is_appealed and dispute.status in (DisputeStatus.WON, DisputeStatus.LOST):
        return _APPEAL_DECIDED
    return _RANK.get(dispute.status, -1)


def _stage_of(dispute: Any, status: str, as_of: datetime | None) -> int:
    """How far along Stripe's ``status`` (reported at ``as_of``) is, for this dispute."""
    current = dispute.status
    if status in DISPUTE_APPEAL_STATES:
        return _RANK[status] if current in _APPEALABLE else -1
    if status == DisputeStatus.WON and (
        current == DisputeStatus.LOST or current in DISPUTE_APPEAL_STATES
    ):
        # Only an appeal turns a lost dispute into a won one.
        return _APPEAL_DECIDED
    if status == DisputeStatus.LOST and current in DISPUTE_APPEAL_STATES:
        # The appeal's outcome, or the first loss delivered late?
        if as_of is None or dispute.appealed_at is None or as_of > dispute.appealed_at:
            return _APPEAL_DECIDED
        return _RANK[DisputeStatus.LOST]
    return _RANK.get(status, -1)


def _log(message: str, *args: Any, payment: Any, event_id: str, level: int = logging.INFO) -> None:
    logger.log(
        level,
        message,
        *args,
        extra={
            "stripe_event_id": event_id,
            "payment_id": str(payment.pk),
            "connected_account": payment.destination_account_id,
        },
    )


def funds_totals(balance_transactions: Iterable[Mapping[str, Any]] | None) -> tuple[int, int]:
    """(withdrawn, reinstated) from a dispute's ``balance_transactions``.

    Withdrawals are negative balance transactions, reinstatements positive;
    only the disputed amount counts, not Stripe's fee.
    """
    withdrawn = reinstated = 0
    for tx in balance_transactions or ():
        amount = tx.get("amount") if isinstance(tx, Mapping) else None
        if not isinstance(amount, int) or isinstance(amount, bool):
            continue
        if amount < 0:
            withdrawn += -amount
        else:
            reinstated += amount
    return withdrawn, reinstated


def apply_dispute(
    snapshot: DisputeSnapshot,
    *,
    event_id: str = "",
    balance_transactions: Iterable[Mapping[str, Any]] | None = None,
    as_of: datetime | None = None,
) -> Any:
    """Create or update the Dispute row and move its payment.

    ``as_of`` is when Stripe reported ``snapshot`` (the event's ``created``);
    it tells a late first loss from an appeal's loss. Raises
    :class:`~.errors.UnknownObject` when no payment has the disputed charge
    or PaymentIntent yet. Notifies ``dispute_opened`` once, when the dispute
    is first seen open, and ``dispute_closed`` when it closes: once, and once
    more when an appeal of it is decided.
    """
    payment = lock_payment_for(payment_intent=snapshot.payment_intent, charge=snapshot.charge)
    tip = None
    if payment is None:
        found = tip_outcomes.lock_tip_for(
            payment_intent=snapshot.payment_intent, charge=snapshot.charge
        )
        if found is None:
            raise errors.UnknownObject(f"No payment for the charge of dispute {snapshot.id} (yet).")
        payment, tip = found
    Dispute = model("Dispute")
    dispute = Dispute.objects.filter(stripe_dispute_id=snapshot.id).first()
    if dispute is not None and tip is not None and dispute.tip_id is None:
        # A tip's dispute recorded before ``dispute.tip`` was filled (a host
        # that swaps Dispute or EscrowTip and skipped the upgrade's query):
        # named now, so the payment's detail, the tips API and the report
        # stop showing it as the payment's own.
        Dispute.objects.filter(pk=dispute.pk).update(tip=tip)
        dispute.tip = tip
    if dispute is None:
        if tip is None:
            require_funded(payment, f"Dispute {snapshot.id}")
        else:
            tip_outcomes.require_tip_paid(tip, f"Dispute {snapshot.id}")
        dispute = Dispute.objects.create(
            payment=payment,
            tip=tip,
            stripe_dispute_id=snapshot.id,
            stripe_charge_id=snapshot.charge or (tip or payment).stripe_charge_id,
            amount=snapshot.amount,
            currency=snapshot.currency,
            # Opened in its first known state; a closed one is closed below,
            # through the transition, so closed_at is set the same way.
            status=_first_state(snapshot.status),
            reason=(snapshot.reason or "")[:64],
            evidence_due_by=snapshot.evidence_due_by,
        )
        if tip is None:
            _open(payment, dispute, event_id=event_id)
        else:
            _open_tip(payment, tip, dispute, event_id=event_id)
    elif dispute.is_final or _stage_of(dispute, snapshot.status, as_of) <= _stage(dispute):
        # Not forward (a decided dispute is final): only the funds and,
        # unless a newer event was applied already, the amount may move.
        _update_funds(dispute, balance_transactions)
        if dispute.amount != snapshot.amount and not _superseded(dispute, event_id, as_of):
            _log_amount(payment, dispute, snapshot.amount, event_id=event_id)
            dispute.amount = snapshot.amount
            dispute.save(update_fields=["amount", "updated_at"])
            if tip is None:
                _follow_amount(payment, event_id=event_id)
        _lift_refusal_holds(payment, tip, dispute, snapshot, event_id=event_id)
        return dispute

    was_open = dispute.is_open
    if snapshot.status != dispute.status and can_proceed(dispute.apply_stripe_status):
        dispute.apply_stripe_status(snapshot.status, as_of)
    if dispute.amount != snapshot.amount:
        _log_amount(payment, dispute, snapshot.amount, event_id=event_id)
    dispute.amount = snapshot.amount
    dispute.evidence_due_by = snapshot.evidence_due_by or dispute.evidence_due_by
    _set_funds(dispute, balance_transactions)
    dispute.save()
    if not dispute.is_open:
        if tip is None:
            _close(payment, dispute, event_id=event_id)
        else:
            _close_tip(payment, tip, dispute, event_id=event_id)
    elif not was_open:
        _log(
            "dispute appealed: %s (%s)",
            dispute.stripe_dispute_id,
            dispute.status,
            payment=payment,
            event_id=event_id,
        )
    if tip is None:
        _follow_amount(payment, event_id=event_id)
    _lift_refusal_holds(payment, tip, dispute, snapshot, event_id=event_id)
    return dispute


def _lift_refusal_holds(
    payment: Any, tip: Any, dispute: Any, snapshot: DisputeSnapshot, *, event_id: str
) -> None:
    """The dispute is recorded: a ``charge_disputed`` hold of its charge is lifted.

    Stripe's refusal saying the charge is disputed held the payment until
    the dispute was recorded (:func:`.radar_holds.hold_for_refusal`); from
    now on the dispute's own rules govern (release frozen while it is open,
    its outcome after). Run once the event is applied, on the dispute as
    recorded. One that stands open or lost lifts every such hold. One that
    stands closed in the platform's favour (won, an inquiry closed,
    prevented) lifts only a hold whose latest refusal came before the
    dispute was first recorded (the refusal was about it, its events on
    their way: its close may come first); a hold opened, or refused again,
    after it was recorded may be about a new chargeback not heard yet, and
    its late events must not lift it. Such a hold waits for a dispute
    recorded open or lost, or for staff.
    """
    # A dispute recorded before the hold (or before Stripe refused again,
    # saying the charge is disputed) and decided for the platform cannot be
    # what that refusal was about.
    refused_before = dispute.created_at if dispute.status in DISPUTE_KEPT_STATES else None
    charge_id = (
        snapshot.charge
        or (dispute.stripe_charge_id if dispute is not None else "")
        or (tip or payment).stripe_charge_id
    )
    why = f"dispute {snapshot.id} recorded ({snapshot.status}"
    why += f", event {event_id})" if event_id else ")"
    lifted = radar_holds.lift_refusal_holds(
        payment, why, charge_id=charge_id, refused_before=refused_before
    )
    if tip is None:
        # A hold whose charge was not known when Stripe refused (none yet
        # recorded on the payment) is the payment's own charge's.
        lifted += radar_holds.lift_refusal_holds(
            payment, why, charge_id="", refused_before=refused_before
        )
    if lifted and tip is not None:
        # A tip's own dispute lifted the hold of its charge: if that was the
        # payment's last hold, the other tips it held go now, as when staff
        # resolve it or Stripe closes a last Radar hold (the disputed tip
        # itself is refused by its dispute). A dispute of the payment's own
        # charge sends them from its close (decided for the platform) or
        # freezes them (open, lost).
        tips.transfer_held_tips_once_unheld(payment)
    for hold in lifted:
        _log(
            "charge_disputed hold %s lifted by dispute %s",
            hold.pk,
            snapshot.id,
            payment=payment,
            event_id=event_id,
        )


def _superseded(dispute: Any, event_id: str, as_of: datetime | None) -> bool:
    """An event of this dispute newer than ``as_of`` was processed: its amount is later.

    Stripe's ``created`` has a resolution of one second; two events of the
    same second are taken in the order they arrive.
    """
    if as_of is None:
        return False
    return bool(
        model("WebhookEvent")
        .objects.filter(
            object_id=dispute.stripe_dispute_id,
            stripe_created__gt=as_of,
            status=WebhookEventStatus.PROCESSED,
        )
        .exclude(stripe_event_id=event_id)
        .exists()
    )


def _log_amount(payment: Any, dispute: Any, amount: int, *, event_id: str) -> None:
    _log(
        "dispute amount changed: %s (%s -> %s %s)",
        dispute.stripe_dispute_id,
        dispute.amount,
        amount,
        dispute.currency,
        payment=payment,
        event_id=event_id,
    )


def _disputed_figure(payment: Any) -> int:
    """What the payment's own charge's undecided or lost disputes take, at most what was charged.

    Stripe's amount may exceed the charge (currency conversion): escrow
    never held more than was charged, and ``amount_disputed`` stays within
    the payment's amount; the Dispute row keeps Stripe's figure.
    """
    disputes = payment.disputes.filter(tip__isnull=True).exclude(status__in=list(_KEPT))
    total = sum(int(amount) for amount in disputes.values_list("amount", flat=True))
    return max(0, min(total, int(payment.amount_charged)))


def _follow_amount(payment: Any, *, event_id: str) -> None:
    """``amount_disputed`` follows Stripe's latest figures while a dispute decides the payment."""
    if not payment.frozen_by_dispute:
        return
    figure = _disputed_figure(payment)
    if figure == payment.amount_disputed:
        return
    _log(
        "amount disputed changed: %s -> %s",
        payment.amount_disputed,
        figure,
        payment=payment,
        event_id=event_id,
    )
    payment.amount_disputed = figure
    payment.save(update_fields=["amount_disputed", "updated_at"])


def _first_state(status: str) -> str:
    if status not in DISPUTE_CLOSED_STATES and status not in DISPUTE_APPEAL_STATES:
        return status
    if status == DisputeStatus.WARNING_CLOSED:
        return DisputeStatus.WARNING_NEEDS_RESPONSE
    return DisputeStatus.NEEDS_RESPONSE


def _update_funds(dispute: Any, balance_transactions: Any) -> None:
    """Funds events on a dispute whose state did not move."""
    if balance_transactions is None:
        return
    before = (dispute.funds_withdrawn, dispute.funds_reinstated)
    _set_funds(dispute, balance_transactions)
    if (dispute.funds_withdrawn, dispute.funds_reinstated) != before:
        dispute.save(update_fields=["funds_withdrawn", "funds_reinstated", "updated_at"])


def _set_funds(dispute: Any, balance_transactions: Any) -> None:
    if balance_transactions is None:
        return
    withdrawn, reinstated = funds_totals(balance_transactions)
    # Running totals from Stripe: never lower what an earlier event reported.
    dispute.funds_withdrawn = max(dispute.funds_withdrawn, withdrawn)
    dispute.funds_reinstated = max(dispute.funds_reinstated, reinstated)


def _open(payment: Any, dispute: Any, *, event_id: str) -> None:
    if payment.released_in_parts and not dispute.released_when_opened:
        dispute.released_when_opened = _released_so_far(payment)
        dispute.save(update_fields=["released_when_opened", "updated_at"])
    if can_proceed(payment.open_dispute):
        payment.open_dispute(min(dispute.amount, payment.amount_charged))
        payment.save()
        sync_task_status(payment)
    elif payment.status != S.DISPUTED:
        # Not a state a dispute can freeze (e.g. already refunded): the row
        # is kept, and release refuses while it is open anyway.
        _log(
            "dispute on a %s payment recorded",
            payment.status,
            payment=payment,
            event_id=event_id,
            level=logging.WARNING,
        )
    _log("dispute opened: %s", dispute.stripe_dispute_id, payment=payment, event_id=event_id)
    notify("dispute_opened", payment=payment, dispute=dispute)


def _released_so_far(payment: Any) -> dict[str, Any]:
    """What a payment released in parts had paid out when a dispute opened.

    Recorded as a fact, not acted on: Stripe takes a dispute on a separate
    charge from the platform's balance; whether to reverse payees' transfers
    is the platform's decision (refund_payment), not automatic.
    """
    return {
        "amount_released": payment.amount_released,
        "amount_held": payment.amount_held,
        "releases": [
            {
                "release_id": release.pk,
                "milestone_id": release.milestone_id,
                "amount": release.amount,
                "transfers": [
                    t.stripe_transfer_id for t in release.transfers.all() if t.stripe_transfer_id
                ],
            }
            for release in payment.releases.prefetch_related("transfers").order_by("position")
        ],
    }


def _close(payment: Any, dispute: Any, *, event_id: str) -> None:
    # The payment's own disputes only: a dispute of one of its tips' charges
    # never moved the payment, so it must not keep it disputed either.
    others = payment.disputes.exclude(pk=dispute.pk).filter(tip__isnull=True)
    still_open = open_disputes(others)
    if payment.status == S.DISPUTED and not still_open.exists():
        if dispute.status in _KEPT:
            payment.win_dispute()
        else:
            payment.lose_dispute()
        payment.save()
        sync_task_status(payment)
    elif (
        payment.status == S.DISPUTE_LOST
        and dispute.status in _KEPT
        # Every other dispute of the payment was decided for the platform.
        and not others.exclude(status__in=list(_KEPT)).exists()
    ):
        payment.win_appeal()
        if payment.released_in_parts:
            releases.fee_after_appeal(payment)
        payment.save()
        sync_task_status(payment)
    if not payment.frozen_by_dispute:
        # Decided for the platform: the tips the dispute held go to the doer.
        tips.transfer_held_tips_on_commit(payment)
    _log(
        "dispute closed: %s (%s)",
        dispute.stripe_dispute_id,
        dispute.status,
        payment=payment,
        event_id=event_id,
    )
    notify("dispute_closed", payment=payment, dispute=dispute)


def _open_tip(payment: Any, tip: Any, dispute: Any, *, event_id: str) -> None:
    # Stripe has debited the platform for the tip's disputed amount and fee,
    # while the tip's transfers to the payees stand: recorded, not reversed
    # (as for a payment's releases, recovering it is the platform's call).
    dispute.released_when_opened = tip_outcomes.tip_paid_out(tip)
    dispute.save(update_fields=["released_when_opened", "updated_at"])
    if not tip.stripe_charge_id and dispute.stripe_charge_id:
        tip.stripe_charge_id = dispute.stripe_charge_id
        tip.save(update_fields=["stripe_charge_id", "updated_at"])
    _log(
        "tip dispute opened: %s (tip %s)",
        dispute.stripe_dispute_id,
        tip.pk,
        payment=payment,
        event_id=event_id,
        level=logging.WARNING,
    )
    notify("tip_dispute_opened", payment=payment, tip=tip, dispute=dispute)


def _close_tip(payment: Any, tip: Any, dispute: Any, *, event_id: str) -> None:
    if dispute.status in _KEPT:
        # Decided for the platform (won, an inquiry closed): the tip it held
        # goes to the doer once this event commits, as its payment's won
        # dispute sends the tips it held.
        tips.transfer_tip_on_commit(tip)
    _log(
        "tip dispute closed: %s (%s, tip %s)",
        dispute.stripe_dispute_id,
        dispute.status,
        tip.pk,
        payment=payment,
        event_id=event_id,
    )
    notify("tip_dispute_closed", payment=payment, tip=tip, dispute=dispute)
