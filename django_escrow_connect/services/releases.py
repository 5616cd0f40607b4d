"""Releasing a payment in parts (milestones, amounts) and to several payees.

A payment whose terms list milestones or several payees is released by
*releases* (:class:`~django_escrow_connect.base.models.AbstractEscrowRelease`):
each takes a gross amount out of escrow, keeps its share of the platform fee
(cumulative, see :func:`_release_fee`) and sends the rest to the payees in
one transfer each. The amounts, the fee and the per-payee allocation are
fixed when the release is created, before any transfer, so a retry or a
crash recovery resends exactly the same.

Each payee's transfer is its own money operation with its own idempotency key
(per release and payee), in the three phases of :mod:`.operations`: intent
committed with the payment locked, the Stripe call with no transaction open,
the outcome committed (:mod:`.outcomes`). Transfers go one after another; a
refused one leaves the others done and is resent alone by the next release
request, checked like a new release (no dispute, no Radar hold) and less what
a refund since took of it. See docs/milestones.md and docs/splits.md.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, NoReturn

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from ..exceptions import GatewayError
from ..fees import compute_platform_fee
from ..money import (
    InvalidAmount,
    amount_step,
    amount_step_rule,
    format_money,
    validate_minor_amount,
)
from ..notifications import notify
from ..states import (
    AccountStatus,
    EscrowStrategy,
    MilestoneStatus,
    MoneyOperationKind,
    MoneyOperationStatus,
    PaymentStatus,
    ReleaseStatus,
    TransferStatus,
)
from ..terms import BASIS_POINTS_WHOLE, split_amount
from ..transitions import may
from . import errors, operations, outcomes, radar
from .common import (
    account_for_payee,
    gateway,
    idempotency_key,
    lock_payment,
    model,
    open_disputes,
    payment_model,
    transfer_account,
    translate,
)
from .task_status import sync_task_status

__all__ = [
    "auto_release_due",
    "check_payees_ready",
    "check_split_terms",
    "deliver_milestone",
    "pending_transfers_made",
    "record_outside_transfer",
    "record_split_terms",
    "release_in_parts",
    "require_same_release",
    "reversal_plan",
    "split_transfer_request",
    "transfers_made",
    "transfers_owed",
    "transfers_unconfirmed",
]

K = MoneyOperationKind

AFTER_LOSS = operations.AFTER_LOSS

#: Transfers that count as made (or being made) for a (release, payee).
_LIVE = (TransferStatus.PENDING, TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED,
         TransferStatus.REVERSED)  # fmt: skip
_MADE = (TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED, TransferStatus.REVERSED)


# --------------------------------------------------------------------------
# Creating a split payment (from create_payment, payment locked)
# --------------------------------------------------------------------------


def check_split_terms(terms: Any, fee: int, strategy: str) -> list[Any]:
    """Refuse terms a split payment cannot honour; the payees' accounts, in order.

    Manual capture is one capture of a destination charge (one transfer,
    implied by the charge): neither milestones nor several payees fit it.
    """
    if strategy == EscrowStrategy.MANUAL_CAPTURE:
        raise errors.InvalidInput(
            _(
                "Milestones and split payouts need the separate charges and transfers "
                "strategy; manual capture releases the whole payment to one payee."
            ),
            code="split_unsupported",
        )
    if terms.payees_by_amount and sum(p.weight for p in terms.payees) != terms.amount - fee:
        raise errors.InvalidInput(
            _("The payees' amounts must add up to the amount less the platform fee (%(net)s).")
            % {"net": terms.amount - fee},
            code="split_mismatch",
        )
    accounts = []
    for share in terms.payees or ():
        account = account_for_payee(share.user, share.organization)
        if account is None or account.status == AccountStatus.DEAUTHORIZED:
            raise errors.AccountNotReady(
                _("Every payee needs a connected account that can receive money.")
            )
        accounts.append(account)
    return accounts


def record_split_terms(payment: Any, terms: Any, accounts: list[Any]) -> None:
    """The payment's milestone and payee rows, from its terms."""
    Payee = model("EscrowPayee")
    if terms.payees:
        Payee.objects.bulk_create(
            Payee(
                payment=payment,
                position=position,
                user=share.user,
                organization=share.organization,
                basis_points=share.basis_points,
                amount=share.amount,
                destination_account_id=account.stripe_account_id,
            )
            for position, (share, account) in enumerate(zip(terms.payees, accounts, strict=True))
        )
    else:
        _single_payee(payment)
    Milestone = model("EscrowMilestone")
    Milestone.objects.bulk_create(
        Milestone(
            payment=payment,
            position=position,
            name=milestone.name[:255],
            amount=milestone.amount,
            currency=payment.currency,
            due_date=milestone.due_date,
            auto_release_after=milestone.auto_release_after,
        )
        for position, milestone in enumerate(terms.milestones)
    )


def _single_payee(payment: Any) -> Any:
    """The payee row of a payment with one payee (all of every release)."""
    return model("EscrowPayee").objects.create(
        payment=payment,
        position=0,
        user=payment.payee_user,
        organization=payment.payee_organization,
        basis_points=BASIS_POINTS_WHOLE,
        destination_account_id=payment.destination_account_id,
    )


# --------------------------------------------------------------------------
# The request a payee's transfer sends
# --------------------------------------------------------------------------


def split_transfer_request(
    payment: Any, release: Any, payee: Any, amount: int, destination: str, key: str
) -> dict[str, Any]:
    """One payee's transfer of one release (``create_transfer``).

    Same charge (``source_transaction``) and ``transfer_group`` as a
    one-transfer release; the metadata also names the release and the payee,
    so a webhook or a lookup matches it to its row.
    """
    metadata = operations.operation_metadata(payment, key)
    metadata["escrow_release_id"] = str(release.pk)
    metadata["escrow_payee"] = str(payee.pk)
    return {
        "amount": amount,
        "currency": payment.currency,
        "destination": destination,
        "source_transaction": payment.stripe_charge_id,
        "transfer_group": payment.transfer_group,
        "metadata": metadata,
    }


# --------------------------------------------------------------------------
# Release
# --------------------------------------------------------------------------


def release_in_parts(
    payment_id: Any,
    user: Any = None,
    *,
    system: bool = False,
    milestone_id: Any = None,
    amount: int | None = None,
    request_key: str = "",
) -> Any:
    """Release a milestone, an amount, or everything still held (neither given).

    Transfers left unsent or refused by an earlier request are sent first;
    releasing a milestone already released changes nothing. Raises the first
    refusal (409 ``release_failed``) after every other payee's transfer was
    tried. A manual-capture payment is refused (400 ``split_unsupported``):
    its capture releases it whole (:func:`.payments.release_payment`).

    ``request_key``: the client's ``Idempotency-Key`` of a release by
    ``amount`` (the one request a repeat would carry out twice), committed on
    the transfers of the release it creates. The same key again from the same
    user finishes that release and never creates another one (400
    ``idempotency_key_reused`` with another amount).
    """
    asked = _Ask(milestone_id, amount, request_key if amount is not None else "")
    failures: list[errors.ServiceError] = []
    refused: set[tuple[int, int]] = set()
    # Bounded: each step settles or sends one transfer (at most one per
    # payee and release, twice when an unresolved one is settled first).
    for _step in range(_step_budget(payment_id)):
        with transaction.atomic():
            payment = lock_payment(payment_id)
            if not system and not may(payment.release_part, user):
                raise errors.Forbidden(
                    _("Only the customer or platform staff can release a payment.")
                )
            if payment.is_manual_capture:
                # Its charge is only authorised until the capture, which pays
                # the doer: a part would be a transfer no charge funds.
                raise errors.InvalidInput(
                    _("A manual-capture payment is captured once: it is released in full."),
                    code="split_unsupported",
                )
            earlier = operations.request_operations(payment, user, asked.request_key)
            if earlier:
                # This request's release exists: finish it, never make another.
                asked.release_pk = _require_same_release(earlier, asked).pk
                asked.created = True
            pending = operations.unresolved_operation(payment)
            if pending is None:
                step = _next_step(payment, user, asked, refused, failed=bool(failures))
        if pending is not None:
            outcomes.drive(pending, wanted=pending.kind == K.TRANSFER, pays_out=True)
            _answer_rest_sent(asked, pending)
            continue
        if step is None:
            break
        operation, slot = step
        try:
            outcomes.execute(operation)
        except errors.Conflict as exc:
            if exc.code != "release_failed":
                raise
            failures.append(exc)
            refused.add(slot)
        else:
            _answer_rest_sent(asked, operation)
    else:
        raise errors.OperationInFlight(
            _("The payment kept changing while this request ran; try again.")
        )
    if failures:
        raise failures[0]
    return payment_model().objects.get(pk=payment_id)


def _answer_rest_sent(asked: _Ask, operation: Any) -> None:
    """This request (a retry) made the transfer of the rest a lost dispute
    left, finishing it or sending it again after a refusal: it is answered as
    a release already done (200), as :func:`.payments.release_payment`
    answers for a payment released at once, not refused because nothing is
    left to release. Only a release of everything: an amount or a milestone
    asked of a ``dispute_lost`` payment stays refused. Not once an appeal won
    gave the payment back what its loss took (no longer ``dispute_lost``):
    the request goes on to release that, as any release of everything."""
    if (
        asked.milestone_id is None
        and asked.amount is None
        and finished_rest(operation)
        and payment_model()
        .objects.filter(pk=operation.payment_id, status=PaymentStatus.DISPUTE_LOST)
        .exists()
    ):
        asked.created = True


class _Ask:
    """What one request asked for, and whether its release exists yet."""

    def __init__(self, milestone_id: Any, amount: int | None, request_key: str = "") -> None:
        self.milestone_id = milestone_id
        self.amount = amount
        self.created = False
        self.request_key = request_key
        #: the release this request created (its transfers carry the key)
        self.release_pk: Any = None
        #: the release of the rest a lost dispute left this request created
        self.rest_pk: Any = None


def require_same_release(payment: Any, user: Any, amount: int | None, request_key: str) -> bool:
    """Whether ``request_key`` is the key of an earlier release by ``amount``
    ``user`` asked on ``payment`` (its retry); refuse (400
    ``idempotency_key_reused``) a key used for another request.

    For a caller that answers without reaching :func:`release_in_parts` (a
    payment released by now answers a retry 200 as it stands, and refuses a
    new release by amount): the same key with another amount is refused
    whatever the payment's state, as for refunds and tips. Run with the
    payment locked.
    """
    if amount is None:
        return False  # the key is read only for a release by amount
    earlier = operations.request_operations(payment, user, request_key)
    if earlier:
        _require_same_release(earlier, _Ask(None, amount, request_key))
    return bool(earlier)


def _require_same_release(earlier: list[Any], asked: _Ask) -> Any:
    """The release a keyed request created; an ``Idempotency-Key`` already used
    for another request is refused (nothing written)."""
    transfer = (
        model("Transfer")
        .objects.filter(idempotency_key__in=[op.idempotency_key for op in earlier])
        .select_related("release")
        .first()
    )
    release = transfer.release if transfer is not None else None
    if (
        any(op.kind != K.TRANSFER for op in earlier)
        or release is None
        or release.milestone_id is not None
        or release.amount != asked.amount
    ):
        raise errors.IdempotencyKeyReused()
    return release


def _step_budget(payment_id: Any) -> int:
    payees = model("EscrowPayee").objects.filter(payment_id=payment_id).count()
    milestones = model("EscrowMilestone").objects.filter(payment_id=payment_id).count()
    return int(16 + 2 * max(payees, 1) * max(milestones, 1))


def _next_step(
    payment: Any, user: Any, asked: _Ask, refused: set[tuple[int, int]], *, failed: bool
) -> tuple[Any, tuple[int, int]] | None:
    """Phase 1 of the next transfer, or None when the request is done.

    Runs with the payment locked. Finishes releases already begun before it
    creates the one asked for.
    """
    while True:
        step = _next_transfer(payment, user, refused, asked)
        if step is not None:
            return step
        if failed or asked.created:
            _finish_payment(payment)
            return None
        release = _create_release(payment, user, asked)
        if release is None:
            _finish_payment(payment)
            return None
        asked.release_pk = release.pk


def _next_transfer(
    payment: Any, user: Any, refused: set[tuple[int, int]], asked: _Ask | None = None
) -> tuple[Any, tuple[int, int]] | None:
    releases = list(payment.releases.filter(status=ReleaseStatus.PENDING).order_by("position"))
    if not releases:
        return None
    payees = {p.pk: p for p in payment.payees.all()}
    # What refunds already took of each unpaid share (committed refunds only:
    # a refund still under way has reversed nothing it would count on here).
    borne = _borne_by_unpaid(payment, payees)
    for release in releases:
        live = set(release.transfers.filter(status__in=_LIVE).values_list("payee_id", flat=True))
        nothing_owed: set[int] = set()
        for payee_id, due in _left_to_send(release, borne, skip=live):
            if due <= 0:
                nothing_owed.add(payee_id)
                continue
            if (release.pk, payee_id) in refused:
                continue
            # The release was allowed when it was made; this transfer moves
            # money now, so the payment must allow it now (no dispute, no
            # Radar hold, not refunded).
            rest = asked is not None and asked.rest_pk == release.pk
            _check_sendable(payment, release, made_now=rest)
            # Only the release this request created is its own: an earlier
            # one it finishes on the way belongs to another request.
            mine = asked is not None and asked.release_pk == release.pk
            key = asked.request_key if mine and asked is not None else ""
            return _begin_transfer(payment, release, payees[payee_id], due, user, key), (
                release.pk,
                payee_id,
            )
        if any((release.pk, p) in refused for p, _share in _allocations(release)):
            continue
        if nothing_owed and _wholly_refunded(payment, release):
            _close_refunded_release(payment, release)
        else:
            outcomes.finish_release(payment, release, nothing_owed)
    return None


def _wholly_refunded(payment: Any, release: Any) -> bool:
    return any(
        r.pk == release.pk and part >= r.amount
        for r, part in _refunded_parts(payment, payment.amount_refunded)
    )


def _close_refunded_release(payment: Any, release: Any) -> None:
    """A pending release a refund took back whole: nothing is left to send.

    Its payees paid gave their transfers back and the others are owed
    nothing, so the release is over (``released``: no transfer is awaited)
    and its milestone, all of whose money went back, is ``refunded``; no
    ``milestone_released`` is sent.
    """
    release.mark_released()
    release.save()
    milestone = release.milestone
    if milestone is not None and can_proceed(milestone.mark_refunded):
        milestone.mark_refunded()
        milestone.save()
    outcomes.log_payment(payment, "release %s closed: refunded whole", release.position)


def _allocations(release: Any) -> list[tuple[int, int]]:
    return [(int(k), int(v)) for k, v in release.allocations.items() if int(v) > 0]


def _left_to_send(
    release: Any, borne: dict[int, dict[int, int]], *, skip: Collection[int]
) -> list[tuple[int, int]]:
    """(payee id, what their transfer of ``release`` sends) for its payees not in
    ``skip``: the allocation less what refunds took of it (``borne``, from
    :func:`_borne_by_unpaid`); 0 or less when they are owed nothing."""
    taken = borne.get(release.pk, {})
    return [
        (payee_id, share - taken.get(payee_id, 0))
        for payee_id, share in _allocations(release)
        if payee_id not in skip
    ]


def shares_owed(payment_ids: Collection[Any]) -> dict[int, dict[int, int]]:
    """``{release id: {payee id: amount}}``: what the pending releases of these
    payments still owe the payees no transfer was made to.

    The amount is what the next release request sends that payee
    (:func:`_next_transfer`): their allocation less what the refunds made so
    far took of it; a payee owed nothing is left out. A transfer in flight
    counts as not made (it was sent with this amount: a refund waits for it
    to be settled). ``REVERSAL_POLICY`` divides a refund, and it is Python,
    so this is not SQL; it reads the payments, their releases (latest
    first), the releases' made transfers and the payees in four queries
    however many payments there are (the dashboards' query count stays
    fixed).
    """
    payments = (
        payment_model()
        .objects.filter(pk__in=list(payment_ids))
        .prefetch_related(
            Prefetch(
                "releases",
                queryset=model("EscrowRelease").objects.order_by("-position"),
                to_attr="latest_first",
            ),
            Prefetch(
                "latest_first__transfers",
                queryset=model("Transfer").objects.filter(status__in=_MADE).order_by(),
                to_attr="made",
            ),
            Prefetch("payees", queryset=model("EscrowPayee").objects.order_by(), to_attr="rows"),
        )
    )
    owed: dict[int, dict[int, int]] = {}
    for payment in payments:
        made = {r.pk: {t.payee_id: t for t in r.made} for r in payment.latest_first}
        borne = _borne_by_unpaid(
            payment, {p.pk: p for p in payment.rows}, payment.latest_first, made
        )
        for release in payment.latest_first:
            if release.status != ReleaseStatus.PENDING:
                continue
            owed[release.pk] = {
                payee_id: due
                for payee_id, due in _left_to_send(release, borne, skip=made[release.pk])
                if due > 0
            }
    return owed


def transfers_made(payment_id: Any) -> set[Any]:
    """The ids of the payment's payee transfers Stripe made (reversed since included)."""
    return set(
        model("Transfer")
        .objects.filter(payment_id=payment_id, release__isnull=False, status__in=_MADE)
        .values_list("pk", flat=True)
    )


def pending_transfers_made(payment_id: Any) -> int:
    """How many payee transfers Stripe made of the payment's pending releases
    (a release stopped part-way: the payees it paid before it stopped)."""
    return int(
        model("Transfer")
        .objects.filter(
            payment_id=payment_id, release__status=ReleaseStatus.PENDING, status__in=_MADE
        )
        .count()
    )


def transfers_owed(payment_id: Any) -> int:
    """How many payee transfers the payment's pending releases still owe
    (:func:`shares_owed`: refused, never sent, or in flight)."""
    return sum(len(owed) for owed in shares_owed([payment_id]).values())


def transfers_unconfirmed(payment_id: Any) -> int:
    """How many of the payment's payee transfers :func:`transfers_owed` counts
    are in flight: sent (or about to be) with no answer from Stripe, which may
    have made them. Retrying the release finishes them with the same
    idempotency key; paying those payees by hand could pay them twice."""
    return int(
        model("Transfer")
        .objects.filter(
            payment_id=payment_id,
            release__status=ReleaseStatus.PENDING,
            status=TransferStatus.PENDING,
        )
        .count()
    )


def _begin_transfer(
    payment: Any, release: Any, payee: Any, share: int, user: Any, request_key: str = ""
) -> Any:
    account = transfer_account(
        payee.user,
        payee.organization,
        _("A payee's connected account cannot receive transfers now."),
    )
    attempt = release.transfers.filter(payee=payee).count()
    key = idempotency_key(
        "payment", payment.pk, f"release{release.position}-payee{payee.position}", attempt
    )
    request = split_transfer_request(payment, release, payee, share, account.stripe_account_id, key)
    operation = operations.begin(
        payment,
        K.TRANSFER,
        request,
        amount=share,
        user=user,
        key=key,
        attempt=attempt,
        request_key=request_key,
        # The rest a lost dispute left (the only release _check_sendable lets
        # out of a dispute_lost payment): finished as any release, unlike a
        # transfer a dispute caught in flight (outcomes.drive), as the rest
        # of a payment released at once is.
        follow_up={AFTER_LOSS: True} if payment.status == PaymentStatus.DISPUTE_LOST else None,
    )
    model("Transfer").objects.create(
        payment=payment,
        release=release,
        payee=payee,
        idempotency_key=key,
        amount=share,
        currency=payment.currency,
        destination_account_id=account.stripe_account_id,
        source_transaction=payment.stripe_charge_id,
    )
    return operation


def _create_release(payment: Any, user: Any, asked: _Ask) -> Any:
    """The release this request asked for, with its fee and allocation; None if nothing is."""
    asked.created = True
    milestones = list(payment.milestones.all())
    releases = list(payment.releases.all())
    # The rest a partial dispute lost left is what is held after the loss.
    # Otherwise leaving a lost dispute aside, so a payment whose dispute was
    # lost gets to _check_releasable's 409 rather than "nothing left" (200)
    # or "too much" (400); a won appeal gives that money back to escrow.
    rest = _rest_releasable(payment)
    held = payment.amount_held if rest else payment.amount_held_before_loss
    left = _milestones_left(milestones, releases, held)
    milestone = None
    if asked.milestone_id is not None:
        milestone = next((m for m in milestones if str(m.pk) == str(asked.milestone_id)), None)
        if milestone is None:
            raise errors.NotFound(_("No such milestone on this payment."))
        if milestone.status in (MilestoneStatus.RELEASED, MilestoneStatus.REFUNDED):
            return None  # released already (or refunded): nothing changes
        gross = left.get(milestone.pk, 0)
    elif asked.amount is not None:
        if milestones:
            raise errors.InvalidInput(
                _("This payment is released by milestone; name the milestone."),
                code="release_by_milestone",
            )
        if not can_proceed(payment.release_part):
            # Refused for its state (refunded, ...), as a release of
            # everything is, not as an amount above the nothing it holds.
            _refuse_state(payment)
        gross = _valid_amount(payment, asked.amount, held)
    else:
        if held <= 0:
            return None
        # The next milestone still held (none with a release yet), in order.
        milestone = next((m for m in milestones if m.pk in left), None)
        gross = left.get(milestone.pk, 0) if milestone is not None else held
        if milestone is not None:
            # Everything: one milestone per step, in order, each its own release.
            asked.created = False
    gross = min(gross, held)
    if gross <= 0:
        return None
    _check_releasable(payment)
    if not payment.stripe_charge_id:
        raise errors.Conflict(
            _("The charge is not known yet; try again shortly."), code="charge_pending"
        )
    check_payees_ready(payment)
    payees = list(payment.payees.all()) or [_single_payee(payment)]
    before = sum(r.amount for r in releases)
    taken = sum(r.platform_fee for r in releases)
    fee, shares = _fee_and_shares(payment, gross, payees, releases)
    if asked.amount is not None and not any(shares):
        # All fee (a fixed fee above a small release): it would take the
        # amount out of escrow and send no transfer, and only a transfer
        # records the request's Idempotency-Key (a release has no column for
        # it), so a retry would release as much again. A release by amount
        # is meant to pay the payees: refused, keyed or not, before anything
        # is written. A milestone or everything held (repeat-safe) still
        # releases such a remainder, or escrow could never be emptied.
        raise errors.InvalidInput(
            _(
                "All of this release (%(amount)s) would be the platform fee and "
                "nothing would reach the payees: release a larger amount, or "
                "everything still held."
            )
            % {"amount": format_money(gross, payment.currency)},
            code="invalid_amount",
        )
    release = model("EscrowRelease").objects.create(
        payment=payment,
        milestone=milestone,
        position=len(releases),
        amount=gross,
        platform_fee=fee,
        currency=payment.currency,
        allocations={str(p.pk): s for p, s in zip(payees, shares, strict=True)},
        requested_by=user if getattr(user, "pk", None) else None,
    )
    # The payment's fee: what the releases took, and what releasing the rest
    # would add (the same cumulative rule).
    expected = _fee_so_far(payment, payees, before + gross, taken + fee, held - gross)
    if rest:
        # All of the rest (gross is all that is held): the payment stays
        # dispute_lost, and its transfer may leave it (_check_sendable).
        payment.release_rest_in_parts(gross, expected)
        asked.rest_pk = release.pk
    else:
        payment.release_part(gross, expected)
    payment.save()
    sync_task_status(payment)
    outcomes.log_payment(payment, "release %s of %s created", release.position, gross)
    return release


def _fee_and_shares(
    payment: Any, gross: int, payees: list[Any], releases: list[Any]
) -> tuple[int, list[int]]:
    """A new release of ``gross``: its fee (cumulative over ``releases``, the
    payment's releases so far) and each payee's share of the rest, in order."""
    before = sum(r.amount for r in releases)
    taken = sum(r.platform_fee for r in releases)
    context = {"payees": payees, "payment": payment}
    fee = _release_fee(payment, gross, context, before=before, taken=taken)
    shares = split_amount(
        gross - fee, [p.weight for p in payees], unit=amount_step(payment.currency)
    )
    return fee, shares


def release_transfer_and_fee(payment: Any) -> tuple[int, int]:
    """What a release in one transfer sends the doer, and the platform fee on it.

    Here, not in :mod:`.payments` (which imports it), so that a transfer staff
    made by hand is checked against the very figure a release sends
    (:func:`record_outside_transfer`) without an import cycle.

    What is held: the amount less refunds, and less what a lost dispute took
    (the rest a partial dispute left). The admin's confirmation page and
    audit trail show these figures, so they must be the ones sent.
    """
    return transfer_and_fee(int(payment.amount_held), payment.currency)


def transfer_and_fee(held: int, currency: str) -> tuple[int, int]:
    """What a release in one transfer of ``held`` sends the doer, and the fee on it.

    The doer's dashboard counts the rest a partial dispute left held with
    this figure: what its release will send.
    """
    fee = compute_platform_fee(held, currency)
    return held - fee, fee


def rest_transfer_and_fee(payment: Any) -> tuple[int, int]:
    """What releasing the rest a partial dispute lost left of a payment released
    in parts sends its one doer, and the fee on it: the release
    :func:`_create_release` would make now (for the doer's dashboard, which
    counts the rest as what its release sends). Reads the payment's releases
    and payee rows (prefetched by the caller, or two queries)."""
    held = int(payment.amount_held)
    fee, shares = _fee_and_shares(
        payment, held, list(payment.payees.all()), list(payment.releases.all())
    )
    return sum(shares), fee


def finished_rest(operation: Any) -> bool:
    """``operation`` (just driven) was the transfer of the rest a lost dispute
    left, and Stripe made it: nothing is left to release, and the request that
    finished it is answered as a release already done (200), not refused.

    The rest of a payment released at once (:func:`.payments.release_payment`)
    and of one released in parts alike (``follow_up["after_loss"]``).
    """
    if operation.kind != K.TRANSFER or not operation.follow_up.get(AFTER_LOSS):
        return False
    # ``drive`` may have sent it again under the next key (Stripe stored a
    # 5xx under the first, or may have forgotten it) and marked the first
    # attempt not made: the attempt it made in its place is this request's.
    latest = operations.last_attempt(operation)
    return bool(latest.status == MoneyOperationStatus.SUCCEEDED)


def _sent_after_loss(release: Any) -> bool:
    """A transfer of ``release`` was begun after the payment's dispute was
    lost: it is the release of the rest the loss left (:func:`_create_release`)."""
    keys = release.transfers.values("idempotency_key")
    return bool(
        model("MoneyOperation")
        .objects.filter(
            payment_id=release.payment_id,
            kind=K.TRANSFER,
            idempotency_key__in=keys,
            **{f"follow_up__{AFTER_LOSS}": True},
        )
        .exists()
    )


def check_payees_ready(payment: Any, *, only: Collection[int] | None = None) -> None:
    """Refuse (409 ``account_not_ready``) while a payee's account cannot receive a transfer.

    What a release checks of every payee (the doer, or each payee of a
    split) before any Stripe call; reads only, so ``escrow_auto_release
    --dry-run`` tells what the real run will do. A manual-capture payment
    sends no transfer (its capture pays the doer's destination charge).
    ``only``: these payees (ids) of a split, the ones a release stopped
    part-way still owes.
    """
    if payment.is_manual_capture:
        return
    rows = list(payment.payees.all())
    if rows:
        parties = [
            (payee.user, payee.organization) for payee in rows if only is None or payee.pk in only
        ]
    else:
        parties = [(payment.payee_user, payment.payee_organization)]
    for user, organization in parties:
        transfer_account(
            user,
            organization,
            _("Every payee's connected account must be able to receive transfers."),
        )


def _valid_amount(payment: Any, amount: Any, held: int) -> int:
    try:
        validate_minor_amount(amount, payment.currency)
    except (InvalidAmount, TypeError) as exc:
        raise errors.InvalidInput(str(exc), code="invalid_amount") from exc
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= held:
        raise errors.InvalidInput(
            _("The release must be between 1 and %(held)s (minor units).") % {"held": held},
            code="invalid_amount",
        )
    return amount


def _check_releasable(payment: Any) -> None:
    """A new release may be made (409 otherwise)."""
    # An earlier release left pending is refused before this, by its own
    # transfer (_check_sendable: _refuse_unsent_before_loss).
    if not (can_proceed(payment.release_part) or _rest_releasable(payment)):
        _refuse_state(payment)
    _check_not_frozen(payment)


def _refuse_unsent_before_loss() -> NoReturn:
    # Said as it is: "a payment that is dispute lost cannot be released" hid
    # that the earlier release is what keeps everything.
    raise errors.TransitionNotAllowed(
        _(
            "An earlier release of this payment was not transferred when its dispute "
            "was lost: it is not sent (settle it with the payee outside the app), and "
            "nothing else of the payment is released."
        )
    )


def _rest_releasable(payment: Any) -> bool:
    """The rest a lost partial dispute left a payment released in parts may be
    released (``release_rest_in_parts``), before its release is made: not
    while an earlier release's transfer is unmade (``pending``). The dispute
    caught it unsent, and it is never sent (settled with the payee by hand,
    docs/recovery.md); the rest waits with it, as
    :func:`~django_escrow_connect.holdings.holding` leaves it uncounted."""
    return bool(
        can_proceed(payment.release_rest_in_parts)
        and not payment.releases.filter(status=ReleaseStatus.PENDING).exists()
    )


def fee_after_appeal(payment: Any) -> None:
    """An appeal won gave a payment released in parts back the money its loss
    took: its ``platform_fee`` is ``release_part``'s again, what its releases
    took plus what releasing what it holds would add (the cumulative rule),
    which the doer's dashboard reads. The release of a lost dispute's rest
    had left it at what the releases took (nothing was held any more)."""
    releases = list(payment.releases.all())
    payment.platform_fee = _fee_so_far(
        payment,
        list(payment.payees.all()) or [_single_payee(payment)],
        sum(r.amount for r in releases),
        sum(r.platform_fee for r in releases),
        int(payment.amount_held),
    )


def _fee_so_far(payment: Any, payees: list[Any], released: int, taken: int, held: int) -> int:
    """The payment's ``platform_fee`` as a release in parts keeps it: what its
    releases took (``taken`` on ``released``), and what releasing what it
    still holds would add (the cumulative rule, never less than taken)."""
    if held <= 0:
        return taken
    context = {"payees": payees, "payment": payment}
    return max(taken, compute_platform_fee(released + held, payment.currency, **context))


#: The states in which a pending release's transfers may still be sent: the
#: states ``release_part`` leaves, and a payment partly refunded after it
#: (its pending releases still owe the payees what the refund left them).
_SENDABLE = (PaymentStatus.PARTIALLY_RELEASED, PaymentStatus.PARTIALLY_REFUNDED)


def _check_sendable(payment: Any, release: Any, *, made_now: bool = False) -> None:
    """A pending release's transfer may be sent now: the checks of a new
    release, except that a payment partly refunded still pays what it owes.

    A ``dispute_lost`` payment sends only the release of the rest its loss
    left (made by this request, ``made_now``, or whose transfer was begun
    after the loss: its retry after a refusal or a transfer never made). An
    earlier release whose transfer was not made when the dispute opened
    stays refused (docs/recovery.md: settled with the payee by hand).
    """
    if payment.status == PaymentStatus.DISPUTE_LOST and (made_now or _sent_after_loss(release)):
        _check_not_frozen(payment)
        return
    if payment.status not in _SENDABLE:
        if payment.status == PaymentStatus.DISPUTE_LOST:
            _refuse_unsent_before_loss()
        _refuse_state(payment)
    _check_not_frozen(payment)


def _refuse_state(payment: Any) -> NoReturn:
    raise errors.TransitionNotAllowed(
        _("A payment that is %(status)s cannot be released.")
        % {"status": payment.get_status_display().lower()}
    )


def _check_not_frozen(payment: Any) -> None:
    if open_disputes(payment.disputes).exists():
        raise errors.TransitionNotAllowed(_("The payment is disputed; release is frozen."))
    radar.check_not_held(payment)


def _release_fee(
    payment: Any, gross: int, context: dict[str, Any], *, before: int, taken: int
) -> int:
    """The platform fee of one release: cumulative.

    ``before`` is the gross of the earlier releases and ``taken`` their
    fees. A release pays the fee on everything released so far, itself
    included, less the fees the earlier releases paid: so after any number
    of releases their fees add up exactly to the fee on what they released
    together (the fee on the whole once everything is released), whatever a
    fixed part or the rounding would add per release. Only stored amounts go
    in (the earlier releases' rows and this gross), so recomputing after a
    crash gives the same fee. Never below 0 nor above the release's gross
    (a policy whose fee shrinks as the amount grows could otherwise ask it).
    """
    cumulative = compute_platform_fee(before + gross, payment.currency, **context)
    return max(0, min(gross, cumulative - taken))


def _milestones_left(milestones: list[Any], releases: list[Any], held: int) -> dict[Any, int]:
    """What each milestone not released yet can still release, by id.

    The held money is the milestones' with no release; a refund took what
    they add up to beyond ``amount_held``, from the latest of them first (as
    :func:`.outcomes.mark_refunded_milestones` marks them): a milestone
    partly refunded releases what is left of it.
    """
    released = {r.milestone_id for r in releases}
    still_held = sorted(
        (
            m
            for m in milestones
            if m.status in (MilestoneStatus.HELD, MilestoneStatus.DELIVERED)
            and m.pk not in released
        ),
        key=lambda m: m.position,
        reverse=True,
    )
    shortfall = max(0, sum(m.amount for m in still_held) - held)
    left = {}
    for milestone in still_held:
        refunded = min(shortfall, milestone.amount)
        shortfall -= refunded
        left[milestone.pk] = milestone.amount - refunded
    return left


def _finish_payment(payment: Any) -> None:
    """Nothing held and every release done: the payment is released."""
    # As _finish_split_payment: money a lost dispute took was never released.
    if payment.amount_held_before_loss > 0 or payment.amount_released <= 0:
        return
    if payment.releases.filter(status=ReleaseStatus.PENDING).exists():
        return
    outcomes.payment_fully_released(payment)


# --------------------------------------------------------------------------
# Refunds beyond what is held: which transfers to reverse
# --------------------------------------------------------------------------


def reversal_plan(payment: Any, total_refunded: int) -> list[tuple[Any, int]]:
    """The reversals a split payment needs once ``total_refunded`` is refunded.

    A refund takes what is still held first. What it takes beyond that comes
    out of the releases, the latest first; of each release it takes back the
    payees' share of the part refunded (its net in proportion to its gross),
    divided between the payees of its allocation by ``REVERSAL_POLICY``. A
    payee already paid gives their part back by a reversal; a payee not paid
    yet bears it by a smaller transfer (:func:`_borne_by_unpaid`), not by
    another payee's reversal. Deterministic in the totals: after a crash the
    same plan follows, less what was reversed.
    """
    plan: list[tuple[Any, int]] = []
    payees = {p.pk: p for p in payment.payees.all()}
    for release, part in _refunded_parts(payment, total_refunded):
        made = _made_by_payee(release)
        for payee_id, allocation, share in _refund_shares(payment, release, part, made, payees):
            transfer = made.get(payee_id)
            if transfer is None:
                continue  # not paid yet: their next transfer is smaller
            # Already given back: what their transfer was short of the
            # allocation (a refund came before it), and what was reversed.
            given = allocation - transfer.amount + transfer.amount_reversed
            need = min(share - given, transfer.amount - transfer.amount_reversed)
            if need > 0:
                plan.append((transfer, need))
    return plan


def _borne_by_unpaid(
    payment: Any,
    payees: dict[int, Any],
    releases: list[Any] | None = None,
    made_by_release: dict[int, dict[int, Any]] | None = None,
) -> dict[int, dict[int, int]]:
    """``{release id: {payee id: share}}``: what the refunds made so far took of
    the shares not paid yet; such a payee's transfer is their allocation less this.

    ``releases`` (every release of the payment) and ``made_by_release``
    (``{release id: {payee id: transfer made}}``) are what :func:`shares_owed`
    loaded for many payments at once; without them they are read here.
    """
    borne: dict[int, dict[int, int]] = {}
    for release, part in _refunded_parts(payment, payment.amount_refunded, releases):
        if release.status != ReleaseStatus.PENDING:
            continue
        if made_by_release is None:
            made = _made_by_payee(release)
        else:
            made = made_by_release.get(release.pk, {})
        borne[release.pk] = {
            payee_id: share
            for payee_id, _allocation, share in _refund_shares(payment, release, part, made, payees)
            if payee_id not in made
        }
    return borne


def _refunded_parts(
    payment: Any, total_refunded: int, releases: list[Any] | None = None
) -> list[tuple[Any, int]]:
    """(release, gross refunded of it), latest release first, once ``total_refunded`` is.

    ``releases``: every release of the payment, when already loaded.
    """
    if releases is None:
        releases = list(payment.releases.order_by("-position"))
    else:
        releases = sorted(releases, key=lambda r: r.position, reverse=True)
    released = sum(r.amount for r in releases)
    overflow = max(0, total_refunded - (payment.amount - released))
    parts = []
    for release in releases:
        if overflow <= 0:
            break
        part = min(overflow, release.amount)
        overflow -= part
        parts.append((release, part))
    return parts


def _made_by_payee(release: Any) -> dict[int, Any]:
    return {t.payee_id: t for t in release.transfers.filter(status__in=_MADE)}


def _refund_shares(
    payment: Any, release: Any, part: int, made: dict[int, Any], payees: dict[int, Any]
) -> list[tuple[int, int, int]]:
    """(payee id, allocation, share) of what refunding ``part`` of ``release``
    takes from each payee of its allocation, in payee order.

    The policy sees one transfer per payee: the one made, or (not paid yet)
    an unsaved one of the payee's allocation. Each share is kept between 0
    and the payee's allocation.
    """
    from ..conf import escrow_settings

    step = amount_step(release.currency)
    target = release.net if part >= release.amount else part * release.net // release.amount
    # Prorated, so rounded down to an amount Stripe accepts (amount_step: a
    # multiple of 10 in a three-decimal currency, of 100 in ISK); the whole
    # release's net already is one.
    target -= target % step
    allocations = sorted(
        ((payee_id, share) for payee_id, share in _allocations(release) if payee_id in payees),
        key=lambda item: payees[item[0]].position,
    )
    Transfer = model("Transfer")
    transfers = [
        made.get(payee_id)
        or Transfer(
            payment=payment,
            release=release,
            payee=payees[payee_id],
            amount=allocation,
            currency=release.currency,
            destination_account_id=payees[payee_id].destination_account_id,
        )
        for payee_id, allocation in allocations
    ]
    shares = escrow_settings.REVERSAL_POLICY(release=release, transfers=transfers, amount=target)
    _check_reversal_shares(shares, [a for _p, a in allocations], target, release.currency)
    return [
        (payee_id, allocation, share)
        for (payee_id, allocation), share in zip(allocations, shares, strict=True)
    ]


def _check_reversal_shares(shares: Any, allocations: list[int], target: int, currency: str) -> None:
    """Refuse a ``REVERSAL_POLICY`` answer that would move the wrong money.

    Checked before anything is written or sent: shares above ``target`` in
    total would take more from the payees than the refund gives back (the
    platform would keep the difference), a float would be truncated, and a
    list of the wrong length would pair shares with the wrong payees. Like a
    bad fee policy this is the host's configuration error, so it is raised as
    :class:`~django.core.exceptions.ImproperlyConfigured`, not clamped.
    """
    setting = 'ESCROW_CONNECT["REVERSAL_POLICY"]'
    if not isinstance(shares, list | tuple) or len(shares) != len(allocations):
        raise ImproperlyConfigured(
            f"{setting} must return a list of {len(allocations)} ints (one per transfer), "
            f"got {shares!r}."
        )
    for share, allocation in zip(shares, allocations, strict=True):
        if isinstance(share, bool) or not isinstance(share, int):
            raise ImproperlyConfigured(
                f"{setting} must return ints in minor units, got {type(share).__name__} "
                f"({share!r})."
            )
        if not 0 <= share <= allocation:
            raise ImproperlyConfigured(
                f"{setting} returned {share} for a payee whose allocation is {allocation}; "
                "each share must be between 0 and the allocation."
            )
        if share % amount_step(currency):
            raise ImproperlyConfigured(
                f"{setting} returned {share} {currency}; {amount_step_rule(currency)}."
            )
    if sum(shares) > target:
        raise ImproperlyConfigured(
            f"{setting} returned {list(shares)} ({sum(shares)} in all) for a refund that "
            f"takes {target} {currency} back; the shares must not add up to more."
        )


# --------------------------------------------------------------------------
# Delivery (the doer marks a milestone done)
# --------------------------------------------------------------------------


def deliver_milestone(payment_id: Any, milestone_id: Any, user: Any) -> Any:
    """The doer marks a milestone delivered (starts its auto-release clock)."""
    from ..permissions import is_one_of_the_payees, is_payee

    with transaction.atomic():
        payment = lock_payment(payment_id)
        if not (is_payee(user, payment) or is_one_of_the_payees(user, payment)):
            raise errors.Forbidden(_("Only the doer can mark a milestone delivered."))
        milestone = payment.milestones.filter(pk=_int_or_none(milestone_id)).first()
        if milestone is None:
            raise errors.NotFound(_("No such milestone on this payment."))
        if milestone.status == MilestoneStatus.DELIVERED:
            return milestone
        if not can_proceed(milestone.mark_delivered) or not can_proceed(payment.release_part):
            raise errors.TransitionNotAllowed(_("This milestone cannot be marked delivered now."))
        milestone.mark_delivered()
        milestone.save()
    return milestone


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def auto_release_due(now: Any) -> list[tuple[Any, Any]]:
    """(payment id, milestone id) of delivered milestones whose auto-release time passed.

    Not those of a ``dispute_lost`` payment: nothing of it can be released,
    and nothing an operator does changes that (an appeal won does, and makes
    them due again), so listing them failed every scheduled run for good. A
    payment whose dispute is open is listed: its release is refused (no
    Stripe call) and reported on an informational line until the dispute is
    decided (docs/milestones.md); a dispute won releases it on the next run.
    """
    due = []
    for milestone in (
        model("EscrowMilestone")
        .objects.filter(status=MilestoneStatus.DELIVERED, auto_release_after__isnull=False)
        .exclude(payment__status=PaymentStatus.DISPUTE_LOST)
    ):
        if milestone.auto_release_at is not None and milestone.auto_release_at <= now:
            due.append((milestone.payment_id, milestone.pk))
    return due


# --------------------------------------------------------------------------
# A payee's share paid outside the app (a transfer made in the Dashboard)
# --------------------------------------------------------------------------

#: The idempotency key of a transfer staff made outside the app and recorded:
#: unique like every transfer's, and never sent to Stripe (no money operation
#: carries it, so nothing retries or looks it up).
RECORDED_KEY_PREFIX = "recorded:"

_TRANSFER_ID = re.compile(r"tr_[A-Za-z0-9]+")


def record_outside_transfer(payment_id: Any, transfer_id: str, user: Any, *, note: str = "") -> Any:
    """Book ``transfer_id``, a transfer staff made in the Stripe Dashboard, as the
    transfer of the share ``payment`` still owes its destination; the Transfer row.

    Stripe's transfer is read first, with no transaction open; then, with the
    payment locked, everything is checked again and the share is booked as if
    the app's own transfer had been made: the transfer row (created, with
    Stripe's id and a ``recorded:`` key), the release and the payment moved
    and notified as for that transfer, and the ``transfer_failed`` incidents
    of that share resolved with a note naming ``user`` and the transfer.
    Refused, with nothing written, when the transfer is recorded already,
    unknown to Stripe, reversed, in another currency, to an account this
    payment owes nothing, or of another amount than the share; when the
    payee was paid already (paid twice: reverse one); when a release would be
    refused; and while a transfer of the payment is in flight. A
    manual-capture payment (its capture pays the doer) and the release of
    the rest a lost dispute left are refused too (docs/recovery.md).

    A transfer an app made (this installation's for another payment or a
    tip, or another installation's: the ``escrow_`` metadata, a
    ``source_transaction``, another transfer group) is refused: it is not a
    hand transfer, and its own row would clash with this one. A hand
    transfer made with the payment's transfer group, already booked by its
    ``transfer.created`` webhook as a transfer with no share, is adopted:
    checked the same way and booked in that row's place.
    """
    from ..permissions import is_platform_staff

    if not is_platform_staff(user):
        raise errors.Forbidden(_("Only platform staff can record a transfer made in Stripe."))
    transfer_id = str(transfer_id or "").strip()
    if not _TRANSFER_ID.fullmatch(transfer_id):
        raise errors.InvalidInput(
            _("A Stripe transfer id starts with tr_ (e.g. tr_1AbC…)."), code="invalid_transfer_id"
        )
    _refuse_recorded(transfer_id, payment_id)  # before asking Stripe: nothing to read
    if operations.in_transaction():
        raise errors.Conflict(
            _("A database transaction is open; Stripe is read outside one."),
            code="in_transaction",
        )
    try:
        snapshot = gateway().retrieve_transfer(transfer_id)
    except GatewayError as exc:
        if not exc.is_transient and exc.code == "resource_missing":
            raise errors.NotFound(
                _("Stripe has no transfer %(id)s (check the id and the mode, test or live).")
                % {"id": transfer_id},
                code="transfer_not_found",
            ) from exc
        raise translate(exc, _("read the transfer")) from exc
    with transaction.atomic():
        payment = lock_payment(payment_id)
        # Checked again under the lock: another request may have recorded it,
        # or the payment moved, while Stripe was asked.
        booked = _refuse_recorded(snapshot.id, payment.pk)
        _check_made_by_hand(payment, snapshot)
        _check_outside_transfer(payment, snapshot)
        try:
            with transaction.atomic():  # a savepoint: the refusal below is clean
                if payment.released_in_parts:
                    transfer = _book_outside_share(payment, snapshot, user, booked)
                else:
                    transfer = _book_outside_release(payment, snapshot, user, booked)
        except IntegrityError:
            # Recorded on another payment by a request that committed after our
            # check (each request locks only its own payment): the transfer's
            # unique Stripe id said no. Any other constraint is a bug: raised.
            taken = model("Transfer").objects.filter(stripe_transfer_id=snapshot.id)
            other = taken.exclude(payment_id=payment.pk).values_list("payment_id", flat=True)
            if not other.exists():
                raise
            _refuse_taken(snapshot.id, other.first())
        outcomes.log_payment(
            payment, "transfer made outside the app recorded by staff: %s", snapshot.id
        )
    return transfer


def _refuse_recorded(transfer_id: str, payment_id: Any) -> Any:
    """Refuse a transfer booked already; except the row its ``transfer.created``
    webhook booked on this payment with no share (returned: adopted)."""
    Transfer = model("Transfer")
    taken = Transfer.objects.filter(stripe_transfer_id=transfer_id).first()
    if taken is not None and _adoptable(taken, payment_id):
        return taken
    if taken is None and not (
        model("EscrowTipTransfer").objects.filter(stripe_transfer_id=transfer_id).exists()
    ):
        return None
    _refuse_taken(transfer_id, taken.payment_id if taken is not None else "-")


def _refuse_taken(transfer_id: str, payment_id: Any) -> NoReturn:
    raise errors.Conflict(
        _("Transfer %(id)s is already recorded (payment %(payment)s).")
        % {"id": transfer_id, "payment": payment_id},
        code="transfer_already_recorded",
    )


#: The key of a transfer the webhook booked from Stripe's word alone
#: (services.stripe_objects: made outside the app in the payment's group).
_WEBHOOK_KEY_PREFIX = "stripe:"


def _adoptable(row: Any, payment_id: Any) -> bool:
    """A hand transfer made with the payment's transfer group whose webhook
    came first: a row of this payment standing for no share, with no money
    operation behind it."""
    return (
        str(row.payment_id) == str(payment_id)
        and row.idempotency_key.startswith(_WEBHOOK_KEY_PREFIX)
        and row.release_id is None
        and row.payee_id is None
        and row.status == TransferStatus.CREATED
        and not row.amount_reversed
    )


def _check_made_by_hand(payment: Any, snapshot: Any) -> None:
    """Only a transfer made by hand in the Dashboard is recorded: one an app
    made (this installation's for another payment or a tip, whose own row may
    not be written yet; or another installation's) carries the app's
    metadata, a source charge, or its payment's transfer group."""
    metadata = snapshot.metadata or {}
    made_by_app = (
        any(key.startswith("escrow_") for key in metadata)
        or bool(snapshot.source_transaction)
        or bool(snapshot.transfer_group and snapshot.transfer_group != payment.transfer_group)
    )
    if made_by_app:
        raise errors.Conflict(
            _(
                "Transfer %(id)s was made by an app (this installation or another, for "
                "another payment or a tip), not by hand in the Stripe Dashboard: it is not "
                "recorded here. Record the transfer you made by hand, with no transfer "
                "group or metadata."
            )
            % {"id": snapshot.id},
            code="not_a_dashboard_transfer",
        )


def _check_outside_transfer(payment: Any, snapshot: Any) -> None:
    """What any payment checks of a transfer to record (payment locked)."""
    if snapshot.amount_reversed or snapshot.reversed:
        raise errors.Conflict(
            _(
                "Transfer %(id)s was reversed (%(amount)s): it pays no share. Make a new "
                "transfer of the share and record that one."
            )
            % {
                "id": snapshot.id,
                "amount": format_money(snapshot.amount_reversed, snapshot.currency),
            },
            code="transfer_reversed",
        )
    if snapshot.currency != payment.currency:
        raise errors.Conflict(
            _("Transfer %(id)s is in %(currency)s; the payment is in %(expected)s.")
            % {
                "id": snapshot.id,
                "currency": snapshot.currency.upper(),
                "expected": payment.currency.upper(),
            },
            code="transfer_mismatch",
        )
    if payment.is_manual_capture:
        # Its release is the capture of a destination charge: no transfer of
        # the app's could stand for it.
        raise errors.InvalidInput(
            _("A manual-capture payment is released by its capture, not by a transfer."),
            code="split_unsupported",
        )
    if (
        operations.unresolved_operation(payment) is not None
        or payment.transfers.filter(status=TransferStatus.PENDING).exists()
    ):
        raise errors.OperationInFlight(
            _(
                "A transfer of this payment is in flight: Stripe may still make it. Run "
                "escrow_reconcile (or the admin's Reconcile) or retry the release first, "
                "then record a transfer only for a share still owed."
            )
        )


def _not_a_payee(snapshot: Any) -> NoReturn:
    raise errors.Conflict(
        _(
            "Transfer %(id)s went to %(account)s, which is not a payee of this payment "
            "still owed a share."
        )
        % {"id": snapshot.id, "account": snapshot.destination or "-"},
        code="transfer_mismatch",
    )


def _paid_twice(snapshot: Any) -> NoReturn:
    raise errors.Conflict(
        _(
            "This payment owes %(account)s nothing: the app's transfer already paid this "
            "share, so with transfer %(id)s the payee was paid twice. Reverse one of the "
            "two transfers in the Stripe Dashboard."
        )
        % {"id": snapshot.id, "account": snapshot.destination or "-"},
        code="payee_paid_twice",
    )


def _nothing_owed(snapshot: Any, *, waiting: bool) -> NoReturn:
    if waiting:
        # A release waits for other payees' transfers; a refund took back
        # what it owed this one.
        message = _(
            "The release waiting to be sent owes %(account)s nothing now (a refund took "
            "that payee's share back): transfer %(id)s pays no share. Reverse it in the "
            "Stripe Dashboard."
        )
    else:
        message = _(
            "No release of this payment waits for a transfer to %(account)s (none was "
            "made, or the app paid each one): transfer %(id)s pays no share owed now. "
            "Reverse it in the Stripe Dashboard; a release made later sends the share itself."
        )
    raise errors.Conflict(
        message % {"id": snapshot.id, "account": snapshot.destination or "-"},
        code="transfer_mismatch",
    )


def _wrong_amount(snapshot: Any, owed: list[int], currency: str) -> NoReturn:
    raise errors.Conflict(
        _(
            "Transfer %(id)s is %(amount)s; the share this payment owes that payee is "
            "%(owed)s. Reverse it in the Stripe Dashboard and transfer exactly the share."
        )
        % {
            "id": snapshot.id,
            "amount": format_money(snapshot.amount, currency),
            "owed": ", ".join(format_money(amount, currency) for amount in owed),
        },
        code="transfer_mismatch",
    )


def _new_recorded_transfer(
    payment: Any, snapshot: Any, amount: int, booked: Any, **links: Any
) -> Any:
    if booked is not None:
        # The webhook's row of this transfer stood for no share: the recorded
        # row takes its place (same Stripe id, so the old one goes first).
        booked.delete()
    return model("Transfer").objects.create(
        payment=payment,
        idempotency_key=f"{RECORDED_KEY_PREFIX}{snapshot.id}",
        amount=amount,
        currency=payment.currency,
        destination_account_id=snapshot.destination or "",
        source_transaction=snapshot.source_transaction or "",
        **links,
    )


def _resolution_note(user: Any, snapshot: Any) -> str:
    who = user.get_username() if hasattr(user, "get_username") else str(user)
    return f"Resolved: {who} recorded transfer {snapshot.id}, made outside the app, for this share."


def _book_outside_release(payment: Any, snapshot: Any, user: Any, booked: Any) -> Any:
    """A payment released in one transfer: the transfer stands for its release."""
    account = account_for_payee(payment.payee_user, payment.payee_organization)
    accounts = {payment.destination_account_id, getattr(account, "stripe_account_id", "")}
    if not snapshot.destination or snapshot.destination not in accounts:
        _not_a_payee(snapshot)
    made = payment.transfers.filter(release__isnull=True, status__in=_MADE)
    if booked is not None:
        made = made.exclude(pk=booked.pk)
    if made.exists():
        # The app's transfer was made (the payment released, perhaps refunded
        # or disputed since): this one paid the payee a second time.
        _paid_twice(snapshot)
    if payment.status != PaymentStatus.HELD or not can_proceed(payment.start_release):
        # A lost dispute's rest, a refunded or disputed payment: its release
        # would be refused, so a transfer cannot stand for it.
        _refuse_state(payment)
    _check_not_frozen(payment)
    amount, fee = release_transfer_and_fee(payment)
    if snapshot.amount != amount:
        _wrong_amount(snapshot, [amount], payment.currency)
    transfer = _new_recorded_transfer(payment, snapshot, amount, booked)
    transfer.mark_created(snapshot.id)
    transfer.save()
    outcomes.resolve_refused_transfers(payment, snapshot.id, note=_resolution_note(user, snapshot))
    # As the app's own transfer is booked (outcomes.transfer_made): the fee on
    # what is released is the fee charged.
    payment.platform_fee = fee
    outcomes.record_release(payment, amount_transferred=amount, platform_fee=fee)
    payment.save()
    sync_task_status(payment)
    outcomes.log_payment(payment, "payment released (transfer made outside the app)")
    notify("payment_released", payment=payment, transfer=transfer)
    return transfer


def _book_outside_share(payment: Any, snapshot: Any, user: Any, booked: Any) -> Any:
    """A payment released in parts: the transfer stands for the share a pending
    release owes its destination (the earliest of that amount)."""
    payees = [p for p in payment.payees.all() if _pays(p, snapshot.destination)]
    if not payees:
        _not_a_payee(snapshot)
    ids = {p.pk for p in payees}
    by_release = shares_owed([payment.pk])
    owed = [
        (release, payee_id, due)
        for release in payment.releases.filter(status=ReleaseStatus.PENDING).order_by("position")
        for payee_id, due in by_release.get(release.pk, {}).items()
        if payee_id in ids
    ]
    if not owed:
        pending = payment.releases.filter(status=ReleaseStatus.PENDING)
        made = model("Transfer").objects.filter(
            payment=payment, payee_id__in=ids, status__in=_MADE, release__in=pending
        )
        if made.exists():
            _paid_twice(snapshot)  # the app paid this payee's share of that release
        _nothing_owed(snapshot, waiting=pending.exists())
    match = next(((r, p, due) for r, p, due in owed if due == snapshot.amount), None)
    if match is None:
        _wrong_amount(snapshot, [due for _r, _p, due in owed], payment.currency)
    release, payee_id, due = match
    # The checks a transfer of that release would pass now (_next_transfer).
    _check_sendable(payment, release)
    if payment.status == PaymentStatus.DISPUTE_LOST:
        _refuse_state(payment)  # the rest a lost dispute left: not recorded
    transfer = _new_recorded_transfer(
        payment,
        snapshot,
        due,
        booked,
        release=release,
        payee=next(p for p in payees if p.pk == payee_id),
    )
    outcomes.resolve_refused_transfers(
        payment,
        snapshot.id,
        destination_account_id=transfer.destination_account_id,
        amount=due,
        note=_resolution_note(user, snapshot),
    )
    # Booked exactly as the app's transfer of that share is when Stripe makes
    # it: the release (and the payment, the last one) done and notified.
    outcomes.split_transfer_made(payment, transfer, snapshot)
    return transfer


def _pays(payee: Any, destination: str | None) -> bool:
    if not destination:
        return False
    account = account_for_payee(payee.user, payee.organization)
    return destination in {payee.destination_account_id, getattr(account, "stripe_account_id", "")}
