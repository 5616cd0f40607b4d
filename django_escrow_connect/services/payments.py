"""Payment use cases: create, release, refund, cancel, retry.

Every money-moving use case runs in the three atomic phases of
:mod:`.operations`: a short transaction locks the payment, checks the
transition and the caller's permission and commits the operation (its key
and request) with the payment's in-flight state; the Stripe call follows
with no transaction open; a second short transaction commits the outcome
(:mod:`.outcomes`) and notifies on commit. An operation left unresolved by
a crash or a timeout is settled before anything else happens to the
payment: the same request finishes it with the same key; a different one
looks it up at Stripe first. Money cannot move twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_fsm import can_proceed

from .. import permissions
from ..conf import escrow_settings
from ..exceptions import GatewayError
from ..fees import compute_platform_fee
from ..money import (
    InvalidAmount,
    amount_step,
    format_money,
    validate_charge_amount,
    validate_minor_amount,
)
from ..notifications import deliver, notify
from ..states import (
    REFUNDABLE_DISPUTE_STATES,
    AccountStatus,
    EscrowStrategy,
    MoneyOperationKind,
    MoneyOperationStatus,
    ReleaseStatus,
    TransferStatus,
)
from ..states import PaymentStatus as S
from ..terms import TermsUnavailable, get_terms
from ..transitions import may
from . import errors, operations, outcomes, radar, radar_holds, releases, saved_methods
from .books import reversal_target
from .common import (
    AMOUNT_REFUSAL_CODES,
    KEY_PREFIX,
    account_for_payee,
    gateway,
    idempotency_key,
    key_prefix,
    lock_payment,
    model,
    open_disputes,
    payment_model,
    transfer_account,
    translate,
)
from .releases import release_transfer_and_fee
from .task_status import sync_task_status

__all__ = [
    "PaymentStart",
    "announce_next_milestone",
    "cancel_payment",
    "create_payment",
    "payment_id_for",
    "refund_payment",
    "release_payment",
    "retry_payment",
]

K = MoneyOperationKind

#: Namespace for payment ids derived from the task: a retried create after a
#: crash produces the same id, the same metadata and so the same Stripe key.
PAYMENT_ID_NAMESPACE = uuid.UUID("6f1c1a3e-5b0e-4e53-9a55-6c0a1e7f3b21")


_log = outcomes.log_payment
logger = logging.getLogger("django_escrow_connect.payments")


@dataclass(frozen=True)
class PaymentStart:
    """What the customer's browser needs to pay: never stored."""

    payment: Any
    client_secret: str | None
    #: True when this call created the payment; False when it returned the open one.
    created: bool = False


# --------------------------------------------------------------------------
# Create
# --------------------------------------------------------------------------


def create_payment(
    task_id: Any,
    user: Any,
    *,
    expected_amount: int | None = None,
    milestone: int | None = None,
    save_payment_method: bool = False,
) -> PaymentStart:
    """Create (or return the open) payment for a task, with its PaymentIntent.

    The amount, currency and parties come from the task's terms, never from
    the request; ``expected_amount`` is only compared with them. The payment
    and its PaymentIntent operation are committed before Stripe is called: a
    crash during the call leaves them for the retry (same id, same key).

    Terms funded per milestone pay for one milestone at a time: ``milestone``
    (1-based) names it, and the payment is that milestone's alone (its amount,
    its id, its key); see docs/milestones.md.

    ``save_payment_method``: the payer agrees to save the card for later
    off-session charges (tips); allowed when ``SAVE_PAYMENT_METHODS`` is on.
    A payer without a Stripe Customer yet gets one first, a journaled call
    of its own (:mod:`.saved_methods`).
    """
    if save_payment_method:
        saved_methods.check_saving_allowed()
    Task = model("Task")
    with transaction.atomic():
        try:
            # Locking the task serialises concurrent "pay" clicks.
            task = Task.objects.select_for_update().get(pk=task_id)
        except (Task.DoesNotExist, ValueError, TypeError, ValidationError) as exc:
            # ValidationError: a malformed value for a UUID primary key.
            raise _no_such_task() from exc
        # Access first: anyone but the task's customer gets the answer of a
        # task that does not exist, whatever the task's state, so a stranger
        # cannot tell a task with an accepted bid from one without (or from
        # no task at all) by the status code.
        try:
            terms = get_terms(task)
        except TermsUnavailable as exc:
            payer = getattr(exc, "payer", None)
            if payer is None or payer.pk != user.pk:
                raise _no_such_task() from exc
            raise errors.Conflict(str(exc), code="no_payment_terms") from exc
        if terms.payer.pk != user.pk:
            raise _no_such_task()
        if terms.payee_user is not None and terms.payee_user.pk == user.pk:
            raise errors.InvalidInput(_("You cannot pay for your own task."), code="self_payment")
        if terms.payee_organization is not None and permissions.is_organization_admin(
            user, terms.payee_organization
        ):
            # Whoever administers the payee organization controls its payouts.
            raise errors.InvalidInput(
                _("You cannot pay an organization you administer."), code="self_payment"
            )
        Payment = payment_model()
        live = Payment.objects.filter(task=task).exclude(status=S.CANCELED)
        if terms.funded_per_milestone:
            existing, part_terms = _milestone_part(task, terms, milestone, live)
        else:
            if milestone is not None:
                raise errors.InvalidInput(
                    _("This task is paid for up front, not milestone by milestone."),
                    code="not_funded_per_milestone",
                )
            # One query, as before: the up-front payment, or a part funded
            # per milestone when the terms changed mode (refused below).
            existing = live.order_by("funded_milestone").first()
            if existing is not None and existing.funded_milestone:
                raise _mixed_funding()
            part_terms = terms
        if expected_amount is not None and expected_amount != part_terms.amount:
            raise errors.InvalidInput(
                _("The amount does not match the accepted bid."), code="amount_mismatch"
            )
        if existing is not None:
            _refuse_other_terms(existing, part_terms)
        if existing is None:
            funded_milestone = (milestone or 0) if terms.funded_per_milestone else 0
            _require_chargeable(task, part_terms, funded_milestone)
            payment, operation = _new_payment(
                task,
                part_terms,
                funded_milestone=funded_milestone,
                milestone_count=len(terms.milestones) if terms.funded_per_milestone else 0,
                save_payment_method=save_payment_method,
            )
    if existing is not None:
        return _resume(existing, user)

    if operation.kind == K.CUSTOMER:
        # Its outcome commits the PaymentIntent operation that uses the Customer.
        outcomes.apply_outcome(operation, operations.send(operation))
        operation = operations.unresolved_operation(payment)
        if operation is None or operation.kind != K.PAYMENT_INTENT:
            # A webhook cannot settle it: the PaymentIntent was not sent yet.
            raise errors.OperationInFlight()
    outcome = operations.send(operation)
    # The payment as phase 3 committed it: read under its lock, a new instance.
    payment = outcomes.apply_outcome(operation, outcome)
    _log(payment, "payment created")
    client_secret = outcome.result.client_secret
    notify("payment_required", payment=payment, client_secret=client_secret)
    return PaymentStart(payment=payment, client_secret=client_secret, created=True)


def _require_chargeable(task: Any, terms: Any, milestone: int) -> None:
    """Refuse (409, nothing written) a new payment Stripe would not charge.

    The price comes from the host's data (a bid, a milestone funded on its
    own): one below Stripe's smallest charge in its currency, or above its
    largest, would be journaled and then refused by Stripe. Checked here,
    for the amount charged, not in :class:`~..terms.EscrowTerms`: a milestone
    funded up front is only ever transferred, and terms of payments made
    before this check are read again to release them. ``milestone`` (1-based)
    is the milestone funded on its own that ``terms`` pay for, 0 for the
    whole price: the customer is told which amount cannot be charged.
    """
    try:
        validate_charge_amount(terms.amount, terms.currency)
    except InvalidAmount as exc:
        logger.error("Task %s cannot be paid, its terms are invalid: %s", task.pk, exc)
        if milestone:
            message = _(
                "Milestone %(index)s ('%(name)s') cannot be paid as it stands: %(reason)s"
            ) % {"index": milestone, "name": terms.milestones[0].name, "reason": exc}
        else:
            message = _("This task's price cannot be paid as it stands: %(reason)s") % {
                "reason": exc
            }
        raise errors.Conflict(message, code="no_payment_terms") from exc


def _no_such_task() -> errors.ServiceError:
    """What a create for a task that is not the user's to pay answers: 404."""
    return errors.NotFound(_("No such task."))


#: An open payment the customer may still confirm: its amount is what they
#: would pay next. One already confirmed (``processing``) is returned as is.
_UNCONFIRMED_STATES = frozenset({S.AWAITING_PAYMENT, S.FAILED})


def _refuse_other_terms(payment: Any, terms: Any) -> None:
    """Refuse to hand back (or retry) ``payment`` when it no longer matches ``terms``.

    An open payment keeps the amount and payer it was created with: handing
    it back after the price changed would charge the old price for the new
    terms. Updating the PaymentIntent's amount (Stripe allows it until it is
    confirmed) would be a money operation of its own, with a new fee and new
    shares: the payment is canceled and created again. One already confirmed
    (``processing``) or paid is not the new terms' business: it is answered
    as it stands.
    """
    if payment.payer_id != terms.payer.pk:
        if payment.status not in _UNCONFIRMED_STATES:
            raise errors.Conflict(_("This task is already paid for."), code="already_paid")
        # The task changed hands: its customer's payment is not this one.
        raise errors.Conflict(
            _(
                "This task's payment was started by another customer: it must be "
                "canceled (by them or by the platform) before the task is paid again."
            ),
            code="terms_changed",
        )
    if payment.status not in _UNCONFIRMED_STATES:
        return
    if payment.amount != terms.amount or payment.currency != terms.currency:
        raise errors.Conflict(
            _(
                "The price changed since this task's payment was started "
                "(%(old)s, now %(new)s): cancel that payment to pay the new price."
            )
            % {
                "old": format_money(payment.amount, payment.currency),
                "new": format_money(terms.amount, terms.currency),
            },
            code="terms_changed",
        )


def _reread(payment: Any) -> Any:
    """The payment as committed now: a new instance, not ``refresh_from_db()``.

    django-fsm-2's ``refresh_from_db`` lifts the status field's protection
    on the field object, which all threads share: another thread's refresh
    ending meanwhile puts it back mid-way and the first one raises
    "Direct status modification is not allowed" (seen with concurrent
    creates in one process, tests/payments/test_concurrency.py).
    """
    return payment_model().objects.get(pk=payment.pk)


def _mixed_funding() -> errors.ServiceError:
    return errors.Conflict(
        _(
            "This task already has a payment funded the other way (up front or per "
            "milestone); one task is funded one way."
        ),
        code="funding_mode_mismatch",
    )


#: A part's payment at least this far along lets the next milestone be
#: funded under ``FUND_NEXT_MILESTONE = "when_held"``.
_FUNDED_STATES = frozenset(
    {
        S.HELD,
        S.RELEASING,
        S.PARTIALLY_RELEASED,
        S.RELEASED,
        S.PARTIALLY_REFUNDED,
        S.REFUNDED,
        S.DISPUTED,
        S.DISPUTE_LOST,
    }
)
_RELEASED_STATES = frozenset({S.RELEASED, S.PARTIALLY_REFUNDED})


def _milestone_part(task: Any, terms: Any, milestone: Any, live: Any) -> tuple[Any, Any]:
    """The open payment of milestone ``milestone`` (or None) and its terms.

    Runs under the task's lock: the mode check and the order rule read every
    live part of the task, so two concurrent creates cannot both pass them.
    """
    if milestone is None:
        raise errors.InvalidInput(
            _("This task is paid for milestone by milestone: say which milestone."),
            code="milestone_required",
        )
    count = len(terms.milestones)
    if isinstance(milestone, bool) or not isinstance(milestone, int) or not 1 <= milestone <= count:
        raise errors.InvalidInput(
            _("The milestone must be a number from 1 to %(count)s.") % {"count": count},
            code="milestone_out_of_range",
        )
    parts = {p.funded_milestone: p for p in live}
    if 0 in parts:
        raise _mixed_funding()
    existing = parts.get(milestone)
    if existing is None and milestone > 1:
        rule = escrow_settings.FUND_NEXT_MILESTONE
        previous = parts.get(milestone - 1)
        status = previous.status if previous is not None else None
        if rule == "on_release" and status not in _RELEASED_STATES:
            raise errors.Conflict(
                _("Milestone %(previous)s must be released before milestone %(index)s is paid for.")
                % {"previous": milestone - 1, "index": milestone},
                code="previous_milestone_unpaid",
            )
        if rule == "when_held" and status not in _FUNDED_STATES:
            raise errors.Conflict(
                _("Milestone %(previous)s must be paid for before milestone %(index)s.")
                % {"previous": milestone - 1, "index": milestone},
                code="previous_milestone_unpaid",
            )
    return existing, terms.for_milestone(milestone)


def announce_next_milestone(sender: Any = None, *, payment: Any, **kwargs: Any) -> None:
    """Receiver of ``payment_released``: send ``milestone_funding_due``.

    For a milestone funded on its own whose next milestone has no payment
    yet (none, or only canceled ones). Connected by the app config; it runs
    after the release committed, as every signal does.
    """
    index = payment.funded_milestone + 1
    if not payment.funded_milestone or index > payment.milestone_count:
        return
    task = payment.task
    funded = (
        payment_model()
        .objects.filter(task_id=payment.task_id, funded_milestone=index)
        .exclude(status=S.CANCELED)
        .exists()
    )
    if funded:
        return
    try:
        terms = get_terms(task)
    except TermsUnavailable:
        _log(payment, "milestone %s is due but the task has no terms now", index)
        return
    if not terms.funded_per_milestone or index > len(terms.milestones):
        return
    deliver(
        "milestone_funding_due",
        payment=payment,
        task=task,
        milestone_index=index,
        amount=terms.milestones[index - 1].amount,
    )


def payment_id_for(task: Any, attempt: int, funded_milestone: int = 0) -> uuid.UUID:
    """The id of a task's ``attempt``-th payment: the same on every retry.

    Installations that share a Stripe account (each with its own
    ``IDEMPOTENCY_KEY_PREFIX``) derive different ids, so their transfer
    groups and metadata never collide. The default prefix keeps 0.1's ids.
    A milestone funded on its own (``funded_milestone`` k) has ids of its
    own, and so its own idempotency keys.
    """
    name = f"{task._meta.label_lower}:{task.pk}:{attempt}"
    if funded_milestone:
        name = f"{task._meta.label_lower}:{task.pk}:milestone-{funded_milestone}:{attempt}"
    if key_prefix() != KEY_PREFIX:
        name = f"{key_prefix()}:{name}"
    return uuid.uuid5(PAYMENT_ID_NAMESPACE, name)


def _new_payment(
    task: Any,
    terms: Any,
    *,
    funded_milestone: int = 0,
    milestone_count: int = 0,
    save_payment_method: bool = False,
) -> tuple[Any, Any]:
    """Phase 1 of a new payment: the row and its PaymentIntent operation.

    ``terms`` are the payment's own: a milestone funded on its own passes
    :meth:`~..terms.EscrowTerms.for_milestone`'s.

    With the payer's consent to save the card and no Customer of theirs
    known yet, the operation is the Customer's creation instead; its
    outcome begins the PaymentIntent's.
    """
    Payment = payment_model()
    account = account_for_payee(terms.payee_user, terms.payee_organization)
    if account is None or account.status == AccountStatus.DEAUTHORIZED or not account.can_transfer:
        raise errors.AccountNotReady(
            _("The task doer has no connected account that can receive money yet.")
        )
    attempt = Payment.objects.filter(
        task=task, funded_milestone=funded_milestone, status=S.CANCELED
    ).count()
    payment_id = payment_id_for(task, attempt, funded_milestone)
    strategy = escrow_settings.ESCROW_STRATEGY
    fee = compute_platform_fee(terms.amount, terms.currency)
    split_accounts = releases.check_split_terms(terms, fee, strategy) if terms.is_split else None
    payment = Payment(
        id=payment_id,
        task=task,
        payer=terms.payer,
        payee_user=terms.payee_user,
        payee_organization=terms.payee_organization,
        destination_account_id=account.stripe_account_id,
        amount=terms.amount,
        currency=terms.currency,
        platform_fee=fee,
        strategy=strategy,
        transfer_group=f"escrow_{payment_id.hex}",
        released_in_parts=split_accounts is not None,
        funded_milestone=funded_milestone,
        milestone_count=milestone_count,
    )
    if save_payment_method:
        payment.payment_method_consent_at = timezone.now()
        payment.stripe_customer_id = saved_methods.known_customer(terms.payer)
    payment.intent_idempotency_key = idempotency_key("payment", payment.pk, "intent", 0)
    try:
        # No savepoint of its own: create_payment's transaction rolls back
        # whole on this error, and a savepoint costs two statements.
        payment.save(force_insert=True)
    except IntegrityError as exc:
        raise errors.Conflict(_("This task already has a payment."), code="already_paid") from exc
    if split_accounts is not None:
        releases.record_split_terms(payment, terms, split_accounts)
    if save_payment_method and not payment.stripe_customer_id:
        key = idempotency_key("payment", payment.pk, "customer", 0)
        operation = operations.begin(
            payment,
            K.CUSTOMER,
            saved_methods.customer_request(payment, key),
            user=terms.payer,
            key=key,
            attempt=0,
            # The PaymentIntent's request; the outcome adds the Customer and begins it.
            follow_up={"intent_request": payment_intent_request(payment, terms.description)},
        )
        sync_task_status(payment)
        return payment, operation
    operation = operations.begin(
        payment,
        K.PAYMENT_INTENT,
        payment_intent_request(payment, terms.description),
        amount=payment.amount,
        user=terms.payer,
        key=payment.intent_idempotency_key,
        attempt=0,
    )
    sync_task_status(payment)
    return payment, operation


def _metadata(payment: Any, key: str = "") -> dict[str, str]:
    return operations.operation_metadata(payment, key)


# The requests below are what the journal stores and phase 2 sends to the
# gateway (keyword arguments of its method); the gateway's cassette tests
# build theirs with the same functions, so the two cannot drift apart.


def payment_intent_request(payment: Any, description: str) -> dict[str, Any]:
    """The PaymentIntent a new payment asks for (``create_payment_intent``)."""
    manual = payment.strategy == EscrowStrategy.MANUAL_CAPTURE
    request: dict[str, Any] = {
        "amount": payment.amount,
        "currency": payment.currency,
        "transfer_group": payment.transfer_group,
        "metadata": operations.operation_metadata(payment),
        "capture_method": "manual" if manual else "automatic",
        "destination": payment.destination_account_id if manual else None,
        "application_fee_amount": payment.platform_fee if manual else None,
        "description": description[:500] or None,
    }
    if manual and escrow_settings.DESTINATION_ON_BEHALF_OF is True:
        # The doer is the settlement merchant (Stripe requires it for a
        # destination charge to an account in another region).
        request["on_behalf_of"] = payment.destination_account_id
    if payment.payment_method_consent_at is not None and payment.stripe_customer_id:
        # The payer agreed: Stripe saves the card to their Customer for tips
        # charged without them. Without consent the request is what it was.
        request["customer"] = payment.stripe_customer_id
        request["setup_future_usage"] = "off_session"
    return request


def capture_request(payment: Any) -> dict[str, Any]:
    """The capture that releases a manual-capture payment (``capture_payment_intent``)."""
    return {"application_fee_amount": payment.platform_fee}


def transfer_request(payment: Any, amount: int, destination: str, key: str) -> dict[str, Any]:
    """The release of a separate-charges payment (``create_transfer``)."""
    return {
        "amount": amount,
        "currency": payment.currency,
        "destination": destination,
        "source_transaction": payment.stripe_charge_id,
        "transfer_group": payment.transfer_group,
        "metadata": _metadata(payment, key),
    }


def reversal_request(payment: Any, transfer_id: str, amount: int, key: str) -> dict[str, Any]:
    """Taking the doer's share back before a refund (``create_transfer_reversal``)."""
    return {"transfer_id": transfer_id, "amount": amount, "metadata": _metadata(payment, key)}


#: Voiding a manual-capture hold (``cancel_payment_intent``).
VOID_REQUEST = {"cancellation_reason": "requested_by_customer"}


def _resume(payment: Any, user: Any) -> PaymentStart:
    """A second "pay" for the same task: the open payment, not a new one.

    A PaymentIntent creation left unresolved by a crash is finished first
    (the same request and key: Stripe returns the intent it made, or makes it).
    """
    if payment.payer_id != user.pk:
        raise errors.Forbidden(_("Only the task's customer can pay for it."))
    if not can_proceed(payment.mark_held):
        # Held already, or further on: the task is paid for.
        raise errors.Conflict(_("This task is already paid for."), code="already_paid")
    pending = operations.unresolved_operation(payment)
    created = False
    creating = (K.CUSTOMER, K.PAYMENT_INTENT)
    if pending is not None:
        outcomes.drive(pending, wanted=pending.kind in creating)
        # This request finished the creation an earlier one started.
        created = pending.kind in creating
        following = operations.unresolved_operation(payment)
        if pending.kind == K.CUSTOMER and following is not None:
            # The Customer's outcome began the PaymentIntent: finish it too.
            outcomes.drive(following, wanted=following.kind == K.PAYMENT_INTENT)
        payment = _reread(payment)
        if payment.status == S.CANCELED and payment.failure_code in AMOUNT_REFUSAL_CODES:
            # The earlier request was refused for the amount: starting again
            # would be refused again, the price (or milestone) must change.
            raise outcomes.amount_refused(payment, payment.failure_message)
        if payment.status == S.CANCELED:
            raise errors.Conflict(
                _("The payment could not be created at Stripe; start it again."),
                code="payment_not_created",
            )
    client_secret = None
    if payment.stripe_payment_intent_id:
        try:
            intent = gateway().retrieve_payment_intent(payment.stripe_payment_intent_id)
        except GatewayError as exc:
            raise translate(exc, _("look up the payment")) from exc
        client_secret = intent.client_secret
    return PaymentStart(payment=payment, client_secret=client_secret, created=created)


# --------------------------------------------------------------------------
# Settling what another operation left unresolved
# --------------------------------------------------------------------------

#: How many unresolved operations one request settles before it gives up
#: (each settled one lets the next step of the request begin).
_MAX_STEPS = 4


def _steps() -> range:
    return range(_MAX_STEPS)


def _too_many_steps() -> errors.ServiceError:
    return errors.OperationInFlight(
        _("The payment kept changing while this request ran; try again.")
    )


# --------------------------------------------------------------------------
# Release
# --------------------------------------------------------------------------


def release_payment(
    payment_id: Any,
    user: Any = None,
    *,
    system: bool = False,
    milestone_id: Any = None,
    amount: int | None = None,
    request_key: str = "",
) -> Any:
    """Send the held money (less the platform fee) to the doer. Exactly once.

    With neither ``milestone_id`` nor ``amount`` everything still held is
    released. A milestone or an amount releases that part (see
    docs/milestones.md); payments with milestones or several payees are
    released by :mod:`.releases`, one transfer per payee.

    A payment already released is returned unchanged: a repeated confirm is
    not an error. A new release by ``amount`` of it is (409
    ``transition_not_allowed``): it asks for money to move; only the keyed
    retry of an earlier release by amount of it is returned unchanged, as is
    the payment whose rest (after a lost dispute) this call's retry finished.
    ``system=True`` is for the automatic-release policy. A release whose call
    crashed or timed out is finished with the same key; any other unresolved
    operation is settled first. ``request_key``: the client's
    ``Idempotency-Key`` of a release by ``amount`` (:func:`.releases.release_in_parts`).
    """
    finished_rest = False
    for _step in _steps():
        with transaction.atomic():
            payment = lock_payment(payment_id)
            if not system and not may(payment.release, user):
                raise errors.Forbidden(
                    _("Only the customer or platform staff can release a payment.")
                )
            asks_a_part = milestone_id is not None or amount is not None
            # A manual-capture payment an older version released in part: its
            # release in full is refused while its part stays refused; in any
            # other state (canceled by the void, captured in the Dashboard
            # since, then refunded) it is answered as any payment in that state.
            older_part = payment.released_in_parts and payment.is_manual_capture and not asks_a_part
            if older_part and payment.status == S.PARTIALLY_RELEASED:
                _refuse_release_of_a_refused_part()
            in_parts = asks_a_part or (payment.released_in_parts and not older_part)
            if in_parts and payment.is_manual_capture:
                # Whatever its state: a part of a capture is never released.
                raise errors.InvalidInput(
                    _("A manual-capture payment is captured once: it is released in full."),
                    code="split_unsupported",
                )
            if payment.status == S.RELEASED or (
                # The older payment's pending release is no share owed: its
                # capture paid the doer all there was.
                payment.status == S.PARTIALLY_REFUNDED and (older_part or not _owes_payees(payment))
            ):
                # Answered here, without release_in_parts (which checks the
                # key on every other path): a key used for another amount is
                # refused, not answered 200.
                replay = releases.require_same_release(payment, user, amount, request_key)
                if amount is not None and not replay:
                    # A new release by amount asks for money to move: a 200
                    # would tell the client it did. Only its keyed retry is
                    # answered as the payment stands.
                    _refuse_release(payment)
                return payment
            if in_parts and payment.status != S.RELEASING:
                break
            pending = operations.unresolved_operation(payment)
            if pending is None:
                pending = _adopt_legacy_release(payment)
            if pending is None:
                if not can_proceed(_start_of(payment)):
                    if finished_rest and payment.status == S.DISPUTE_LOST:
                        # This request finished the rest's transfer (its
                        # retry): answered as any release already done.
                        return payment
                    _refuse_release(payment)
                if open_disputes(payment.disputes).exists():
                    raise errors.TransitionNotAllowed(
                        _("The payment is disputed; release is frozen.")
                    )
                radar.check_not_held(payment)
                operation = _begin_release(payment, user)
                if operation is None:
                    return payment
        if pending is None:
            outcomes.execute(operation)
            return payment_model().objects.get(pk=payment_id)
        outcomes.drive(pending, wanted=pending.kind in (K.TRANSFER, K.CAPTURE), pays_out=True)
        finished_rest = _released_rest(pending)
    else:
        raise _too_many_steps()
    return releases.release_in_parts(
        payment_id,
        user,
        system=system,
        milestone_id=milestone_id,
        amount=amount,
        request_key=request_key,
    )


def _refuse_release(payment: Any) -> NoReturn:
    raise errors.TransitionNotAllowed(
        _("A payment that is %(status)s cannot be released.")
        % {"status": payment.get_status_display().lower()}
    )


def _refuse_release_of_a_refused_part() -> NoReturn:
    """A release in full of a manual-capture payment an older version released in part.

    Its part's transfer was refused and its hold still waits (docs/recovery.md):
    a capture would pay the doer the whole payment while the books say a part
    was released, so it is refused for its state, and staff are told the way out.
    """
    raise errors.TransitionNotAllowed(
        _(
            "An older version released part of this manual-capture payment and Stripe "
            "refused it: it cannot be released. Refund it in full to void the hold."
        )
    )


def _owes_payees(payment: Any) -> bool:
    """A release of a payment released in parts still has transfers to send.

    A refund after a payee's transfer was refused leaves the payment
    ``partially_refunded`` with that release pending: what the refund left of
    the share is still the payee's, and releasing again sends it.
    """
    return bool(
        payment.released_in_parts and payment.releases.filter(status=ReleaseStatus.PENDING).exists()
    )


def _released_rest(operation: Any) -> bool:
    """``operation`` (just driven) was the transfer of the rest a lost dispute
    left, and Stripe made it (:func:`.releases.finished_rest`)."""
    return releases.finished_rest(operation)


def _start_of(payment: Any) -> Any:
    """The transition a release begins with: the rest a lost dispute left
    keeps the payment ``dispute_lost`` (and so its lost figure)."""
    if payment.status == S.DISPUTE_LOST:
        return payment.start_release_of_rest
    return payment.start_release


def release_preview(payment: Any) -> tuple[int, int] | None:
    """What a release of ``payment`` in one transfer would send now and its fee,
    or None when a release would send nothing: no release in flight and its
    state starts none (released already, canceled, a won appeal's rest:
    docs/recovery.md), and while a ``charge_disputed`` hold is open (Stripe
    said the charge is disputed: the release refuses and sends nothing, a
    release in flight is only looked up). For the admin's confirmation page
    and audit trail, which must show what is sent and nothing else.
    """
    if radar_holds.refusal_holds(payment).exists():
        return None
    pending = operations.unresolved_operation(payment)
    if pending is not None and pending.kind in (K.TRANSFER, K.CAPTURE):
        # A release in flight: confirming finishes it with its key, and the
        # fee it was begun with.
        return int(pending.amount), int(payment.platform_fee)
    if payment.status == S.RELEASING:
        # A 0.1 release without a journal: adopted with its key and sent.
        return release_transfer_and_fee(payment)
    if not can_proceed(_start_of(payment)):
        return None
    return release_transfer_and_fee(payment)


def _begin_release(payment: Any, user: Any) -> Any:
    """Phase 1 of a release; None when nothing is left to send (released now)."""
    if payment.is_manual_capture:
        operation = operations.begin(
            payment,
            K.CAPTURE,
            capture_request(payment),
            amount=payment.amount,
            target_id=payment.stripe_payment_intent_id,
            user=user,
        )
        payment.start_release()
        payment.save()
        return operation

    account = transfer_account(
        payment.payee_user,
        payment.payee_organization,
        _("The doer's connected account cannot receive transfers now."),
    )
    amount, fee = release_transfer_and_fee(payment)
    if amount <= 0:
        outcomes.record_release(payment, amount_transferred=0, platform_fee=fee)
        payment.save()
        sync_task_status(payment)
        _log(payment, "payment released (nothing to transfer)")
        notify("payment_released", payment=payment, transfer=None)
        return None
    if not payment.stripe_charge_id:
        raise errors.Conflict(
            _("The charge is not known yet; try again shortly."), code="charge_pending"
        )
    key, attempt = operations.next_key(payment, K.TRANSFER)
    request = transfer_request(payment, amount, account.stripe_account_id, key)
    start = _start_of(payment)
    operation = operations.begin(
        payment,
        K.TRANSFER,
        request,
        amount=amount,
        user=user,
        key=key,
        attempt=attempt,
        # Sent after the loss: finished as any release, unlike one a dispute
        # caught in flight (outcomes.drive).
        follow_up={releases.AFTER_LOSS: True} if payment.status == S.DISPUTE_LOST else None,
    )
    model("Transfer").objects.create(
        payment=payment,
        idempotency_key=key,
        amount=amount,
        currency=payment.currency,
        destination_account_id=account.stripe_account_id,
        source_transaction=payment.stripe_charge_id,
    )
    # The fee on what is released (less earlier refunds) is the fee charged.
    payment.platform_fee = fee
    start()
    payment.save()
    return operation


def _adopt_legacy_release(payment: Any) -> Any:
    """A release left ``releasing`` by 0.1 (no journal): journal it, same key."""
    if payment.status != S.RELEASING:
        return None
    if payment.is_manual_capture:
        key = idempotency_key("payment", payment.pk, "capture", payment.release_attempts)
        request: dict[str, Any] = {"application_fee_amount": payment.platform_fee}
        kind, amount, target = K.CAPTURE, payment.amount, payment.stripe_payment_intent_id
    else:
        transfer = payment.transfers.filter(status=TransferStatus.PENDING).first()
        if transfer is None:
            return None
        key = transfer.idempotency_key
        request = {
            "amount": transfer.amount,
            "currency": transfer.currency,
            "destination": transfer.destination_account_id,
            "source_transaction": transfer.source_transaction,
            "transfer_group": payment.transfer_group,
            "metadata": {
                "escrow_payment_id": str(payment.pk),
                "task_id": str(payment.task_id),
                "transfer_group": payment.transfer_group,
            },
        }
        kind, amount, target = K.TRANSFER, transfer.amount, ""
    return operations.begin(
        payment,
        kind,
        request,
        amount=amount,
        target_id=target,
        key=key,
        attempt=payment.release_attempts,
    )


# --------------------------------------------------------------------------
# Refund
# --------------------------------------------------------------------------


def refund_payment(
    payment_id: Any,
    user: Any = None,
    *,
    amount: int | None = None,
    reason: str = "",
    system: bool = False,
    request_key: str = "",
) -> Any:
    """Give money back to the customer, in full or in part.

    Before release the charge is refunded (or, with manual capture, the hold
    is voided). After release the doer's share is first reversed from their
    connected account, then the charge is refunded; if the reversal fails no
    refund is made. Whether to reverse is decided from the transfers Stripe
    made, not from the payment's status. A refund whose call crashed is
    finished with its own key; any other unresolved operation is settled first.

    ``request_key``: the client's ``Idempotency-Key``. Every operation the
    request begins carries it; the same key again from the same user on this
    payment finishes what is unresolved of that request and answers as the
    first one did, never refunding twice; with another amount or reason it is
    refused (400 ``idempotency_key_reused``). Without a key, the same amount
    again is taken for the same request only while its refund is unresolved;
    no amount again (the rest) takes an unresolved refund asked with no
    amount for its own, even once the rest has shrunk since (a refund made
    in the Stripe Dashboard), not once it has grown (a refund failed since):
    :func:`_asks_the_rest_again`.
    """
    # A split payment may need one reversal per payee and release first.
    for _step in range(_refund_step_budget(payment_id)):
        answered = False
        with transaction.atomic():
            payment = lock_payment(payment_id)
            if not system and not may(payment.refund, user):
                raise errors.Forbidden(_("Only the doer or platform staff can refund a payment."))
            earlier = operations.request_operations(payment, user, request_key)
            if earlier:
                _require_same_refund(payment, earlier, amount, reason)
            pending = operations.unresolved_operation(payment)
            mine = operations.is_request_operation(pending, user, request_key)
            if earlier and not mine:
                # This request was carried out (nothing of it is unresolved):
                # answer it again; another request's operation is not its own.
                answered = True
            else:
                pending = pending or _adopt_legacy_refund(payment)
                asked = _amount_asked(payment, amount)
                if pending is None:
                    operation = _begin_refund_step(payment, user, amount, reason, request_key)
                elif (
                    not request_key
                    and pending.kind == K.REFUND
                    and pending.amount is not None
                    and asked != pending.amount
                    and not _asks_the_rest_again(pending, amount, asked)
                ):
                    raise errors.Conflict(
                        _("A refund of %(amount)s is still unconfirmed; retry it first.")
                        % {"amount": pending.amount},
                        code="refund_pending",
                    )
        if answered:
            return _refund_answered_again(payment_id, earlier)
        if pending is None:
            outcomes.execute(operation)
            if operation.kind != K.REVERSAL:
                return payment_model().objects.get(pk=payment_id)
            continue  # the reversal is done: now the refund itself
        this_refund = _is_this_refund(pending, asked, request_key, mine, amount is None)
        outcomes.drive(
            pending,
            # The void a keyed refund of a held manual-capture payment began
            # is that request's own money call: its retry sends it again with
            # its key, as it would its refund. Only looked up, a void whose
            # call never reached Stripe answered the retry 409 within its
            # lease and, after it, gave it up and answered a refusal
            # Stripe never made (``not_made``), the hold still standing.
            wanted=pending.kind in (K.REFUND, K.REVERSAL)
            or (pending.kind == K.CANCEL and this_refund),
            # Another request's refund (or reversal) is finished first; its
            # refusal is its own, and this request goes on to its own refund.
            for_another=not this_refund,
        )
        # Without a key an unresolved refund is taken for this request (same
        # amount); with one, another request's refund is settled first and
        # this request's own is begun on the next step.
        if pending.kind == K.REFUND and (not request_key or mine):
            return payment_model().objects.get(pk=payment_id)
    raise _too_many_steps()


def _amount_asked(payment: Any, amount: int | None) -> int:
    """The amount a refund request asks for: ``amount``, or without one the
    rest (charged less refunded).

    Only compared with an unresolved refund's amount: the rest is counted
    even while a dispute freezes the payment, so that a full refund sent
    again finishes its own unresolved refund (Stripe decides on it).
    """
    if amount is not None:
        return amount
    return int(payment.amount_charged - payment.amount_refunded)


def _asks_the_rest_again(pending: Any, amount: int | None, asked: int) -> bool:
    """A request with no amount (the rest, ``asked``) finding an unresolved
    refund, or the reversal before it, that a request with no amount began,
    for at least the rest as it stands now.

    Taken for the same request when the rest has shrunk since: a refund recorded
    since (made in the Stripe Dashboard, its webhook) makes the rest smaller
    than the refund in flight, which compared by amount was ``409
    refund_pending``, the request's own refund keeping it from ever being
    asked again. It is safe: only that refund is sent, under its own Stripe
    key (never a second one), and it asks for what this request asks, the
    rest. Stripe makes it only if nothing was refunded since it was asked
    (the charge holds no more than the rest), and otherwise refuses it
    (``amount_too_large``), which answers this request; the next one asks
    for the rest as it stands. A partial refund (an amount) is never taken
    for a full one's. Nor one for less than the rest is now: a refund that
    failed since gave its amount back (the rest grew), and answering this
    request with the smaller refund made would leave money held that it
    asked back (``409 refund_pending``, as compared by amount).
    """
    if amount is not None or not pending.follow_up.get(operations.ASKED_THE_REST):
        return False
    planned = pending.amount if pending.kind == K.REFUND else pending.follow_up.get("refund")
    return planned is None or int(planned) >= asked


def _is_this_refund(
    pending: Any, asked: int, request_key: str, mine: bool, asked_the_rest: bool = False
) -> bool:
    """Whether the unresolved ``pending`` is this refund request's own.

    With a key: begun under it (a reversal, the refund, or the void of a
    held manual-capture payment, which is then sent again with its own
    Stripe key, not only looked up). Without one, an unresolved refund of the
    amount asked (:func:`_amount_asked`; none asked: the rest) is taken for
    this request (one of another amount was refused above:
    ``refund_pending``), as is a reversal making room for a refund of that
    amount, and, none asked, one that a request with no amount began
    (:func:`_asks_the_rest_again`); a refused one answers this request.
    """
    if request_key:
        return mine
    if asked_the_rest and _asks_the_rest_again(pending, None, asked):
        return pending.kind in (K.REFUND, K.REVERSAL)
    if pending.kind == K.REFUND:
        return pending.amount is None or pending.amount == asked
    if pending.kind == K.REVERSAL:
        planned = pending.follow_up.get("refund")
        return planned is None or int(planned) == asked
    return False


def _require_same_refund(payment: Any, earlier: list[Any], amount: int | None, reason: str) -> None:
    """Refuse an ``Idempotency-Key`` already used for another request (nothing written).

    The same refund: the same amount (or again none: everything that was
    refundable then) and the same reason. A void (manual capture, held)
    records no reason, so its reason is not compared.
    """
    first = earlier[0]
    recorded_reason: str | None = None
    if first.kind == K.REVERSAL and first.follow_up.get("refund"):
        recorded_amount = int(first.follow_up["refund"])
        recorded_reason = str(first.follow_up.get("reason") or "")
    elif first.kind == K.REFUND:
        recorded_amount = first.amount
        refund = (
            model("Refund")
            .objects.filter(idempotency_key__in=[op.idempotency_key for op in earlier])
            .order_by("created_at")
            .first()
        )
        recorded_reason = refund.reason if refund is not None else None
    elif first.kind == K.CANCEL:
        recorded_amount = payment.amount
    else:
        raise errors.IdempotencyKeyReused()
    if amount is not None and amount != recorded_amount:
        raise errors.IdempotencyKeyReused()
    if recorded_reason is not None and (reason or "")[:64] != recorded_reason:
        raise errors.IdempotencyKeyReused()


def _refund_answered_again(payment_id: Any, earlier: list[Any]) -> Any:
    """What the first request answered, its operations all resolved: the
    payment as it stands now, or the error Stripe's refusal gave."""
    last = operations.operation_model().objects.get(pk=earlier[-1].pk)
    if last.status == MoneyOperationStatus.FAILED:
        if last.kind == K.REVERSAL:
            raise errors.Conflict(
                _("The doer's account could not return the money (%(code)s); no refund was made.")
                % {"code": last.error_code or "error"},
                code="reversal_failed",
            )
        action = _("refund the payment") if last.kind == K.REFUND else _("void the authorisation")
        raise translate(GatewayError(last.error_message, code=last.error_code or None), action)
    return payment_model().objects.get(pk=payment_id)


def _refund_step_budget(payment_id: Any) -> int:
    """How many steps one refund request may take: settling what other
    operations left unresolved, plus one reversal per transfer still
    carrying money. A fixed bound stopped a split payment's full refund
    after its 16th reversal, with the payees' money back at the platform and
    the customer not refunded (the refund is committed with the last one)."""
    live = model("Transfer").objects.filter(
        payment_id=payment_id,
        status__in=[TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED],
    )
    return _MAX_STEPS * 4 + int(live.count())


def _begin_refund_step(
    payment: Any, user: Any, amount: int | None, reason: str, request_key: str = ""
) -> Any:
    """Phase 1 of the next step of a refund: a reversal, the refund, or a void."""
    # The state first: refunding a canceled or refunded payment is a conflict
    # (409), whatever amount was asked for.
    if not can_proceed(payment.refund):
        raise errors.TransitionNotAllowed(
            _("A payment that is %(status)s cannot be refunded.")
            % {"status": payment.get_status_display().lower()}
        )
    # What was charged (less when a capture took less) and not refunded yet.
    refundable = payment.refundable_amount
    # Recorded with the operations: a retry without a key and without an
    # amount asks for the rest again (_asks_the_rest_again: taken for its
    # own unless the rest has grown since).
    asked_the_rest = amount is None
    if amount is None:
        amount = refundable
    try:
        validate_minor_amount(amount, payment.currency)
    except (InvalidAmount, TypeError) as exc:
        raise errors.InvalidInput(str(exc), code="invalid_amount") from exc
    if amount <= 0 or amount > refundable:
        raise errors.InvalidInput(
            _("The refund must be between 1 and %(refundable)s (minor units).")
            % {"refundable": refundable},
            code="invalid_amount",
        )
    captured = payment.status in (S.RELEASED, S.PARTIALLY_REFUNDED)
    if payment.is_manual_capture and not captured:
        if amount != payment.amount:
            raise errors.InvalidInput(
                _(
                    "With manual capture a held payment can only be voided in full; "
                    "release it first for a partial refund."
                ),
                code="partial_refund_unsupported",
            )
        return _begin_void(payment, user, request_key)
    if payment.is_manual_capture and 0 < payment.amount_held < amount:
        # A released destination charge holds money only after a refund that
        # failed: its reversal stays made, so that money is refunded without
        # reversing the doer again, while a refund of the rest reverses
        # (Stripe's reverse_transfer takes no amount). One refund cannot do
        # both: ask for the held part first.
        raise errors.InvalidInput(
            _(
                "%(held)s of this payment is back on the platform's balance after a "
                "refund failed; refund at most that first, then the rest."
            )
            % {"held": payment.amount_held},
            code="invalid_amount",
        )
    if not payment.is_manual_capture:
        reversal = _begin_reversal_if_needed(
            payment, amount, user, reason, request_key, asked_the_rest=asked_the_rest
        )
        if reversal is not None:
            return reversal
    return outcomes.begin_refund(
        payment, amount, reason, user, request_key=request_key, asked_the_rest=asked_the_rest
    )


def _adopt_legacy_refund(payment: Any) -> Any:
    """A refund sent by 0.1 (no journal) whose answer was lost: phase 1 of
    what it needs next, or None. Nothing of it is sent here.

    After a release (separate charges and transfers) the doer's share is
    reversed first, as for any refund (:func:`_begin_reversal_if_needed`):
    journaled with 0.1's refund only, it was sent without that reversal and
    the platform refunded the customer from its own balance while the doer
    kept the money. The reversal (the last one, for a split payment) then
    journals the refund with its own key (``outcomes._continue_refund``);
    a refused one makes no refund (``outcomes.reversal_refused``). Otherwise
    the refund is journaled now, with its own key
    (:func:`.outcomes.begin_legacy_refund`). A destination charge's refund
    reverses with it (``reverse_transfer``).
    """
    refund = outcomes.legacy_refund_row(payment)
    if refund is None:
        return None
    # Only a refund Stripe can still make reverses the doer's share first: of
    # a charge charged back since (a dispute open or lost; an inquiry does
    # not stop a refund, it closes it) or refunded since (a Dashboard
    # refund) beyond this amount, Stripe refuses it, and a reversal made for
    # it would have taken the doer's money for nothing. Such a refund is
    # journaled alone: looked up at Stripe (0.1 may have made it), else sent
    # and refused, and failed with Stripe's reason.
    refundable = not _charged_back(payment) and refund.amount <= (
        payment.amount_charged - payment.amount_refunded
    )
    if refundable and not payment.is_manual_capture:
        reversal = _begin_reversal_if_needed(
            payment, refund.amount, None, refund.reason, legacy_key=refund.idempotency_key
        )
        if reversal is not None:
            return reversal
    return outcomes.begin_legacy_refund(payment, refund)


def _charged_back(payment: Any) -> bool:
    """Whether a dispute of the payment's own charge stops a refund at Stripe (open or lost)."""
    disputes = payment.disputes.filter(tip__isnull=True)
    return bool(disputes.exclude(status__in=list(REFUNDABLE_DISPUTE_STATES)).exists())


def retry_legacy_refund(payment_id: Any) -> Any:
    """``escrow_reconcile``: finish a refund 0.1 sent (no journal) whose
    answer was lost, and what it needs first; return the payment.

    Only that refund, for its own amount: :func:`refund_payment` with no
    amount asks for the rest, which is not a partial refund's amount (``409
    refund_pending`` on every run, the customer's money held). Journaled by
    :func:`_adopt_legacy_refund` (after a release: the reversal first) and
    settled by :func:`.outcomes.drive` as any journaled operation, the
    refund looked up at Stripe before it is sent again. An operation of the
    payment still unresolved is finished first. Raises Stripe's refusal
    (the reversal's: no refund made).
    """
    for _step in range(_refund_step_budget(payment_id)):
        with transaction.atomic():
            payment = lock_payment(payment_id)
            pending = operations.unresolved_operation(payment) or _adopt_legacy_refund(payment)
        if pending is None:
            return payment_model().objects.get(pk=payment_id)
        outcomes.drive(pending, wanted=True)
    raise _too_many_steps()


STRIPE_REFUND_REASONS = outcomes.STRIPE_REFUND_REASONS


def _begin_reversal_if_needed(
    payment: Any,
    amount: int,
    user: Any,
    reason: str,
    request_key: str = "",
    *,
    asked_the_rest: bool = False,
    legacy_key: str = "",
) -> Any:
    """Phase 1 of the reversal a refund needs first, or None.

    ``legacy_key``: the refund is one 0.1 sent (:func:`_adopt_legacy_refund`);
    the reversal carries its key, and is committed unsent (driven by the
    caller).

    Decided from the transfers Stripe made (recorded rows), whatever the
    payment's status says: a release confirmed only by a webhook counts.
    A payment released in parts follows :func:`.releases.reversal_plan`.
    """
    if payment.released_in_parts:
        return _begin_split_reversal(
            payment,
            amount,
            user,
            reason,
            request_key,
            asked_the_rest=asked_the_rest,
            legacy_key=legacy_key,
        )
    live = list(
        payment.transfers.filter(
            status__in=[TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED]
        ).order_by("-created_at")
    )
    if not live:
        return None
    transferred = sum(t.amount for t in live)
    reversed_total = sum(t.amount_reversed for t in live)
    # The release transferred what was left after earlier refunds, less the
    # fee on it (_begin_release): a refund made before the release never
    # reached the doer, so it must not be taken back from them.
    released = min(payment.amount, transferred + payment.platform_fee)
    needed = reversal_target(payment, payment.amount_refunded + amount, transferred, released)
    # Prorated, so rounded down to an amount Stripe accepts (amount_step: a
    # multiple of 10 in a three-decimal currency, of 100 in ISK); a full
    # refund's target is the transfer.
    needed -= needed % amount_step(payment.currency)
    needed -= reversed_total
    if needed <= 0:
        return None
    transfer = next(t for t in live if t.amount > t.amount_reversed)
    needed = min(needed, transfer.amount - transfer.amount_reversed)
    key, attempt = operations.next_key(payment, K.REVERSAL)
    operation = operations.begin(
        payment,
        K.REVERSAL,
        reversal_request(payment, transfer.stripe_transfer_id, needed, key),
        amount=needed,
        target_id=transfer.stripe_transfer_id,
        user=user,
        key=key,
        attempt=attempt,
        # The refund is committed with the reversal: a crash between the two
        # cannot leave the doer's money returned and the customer unpaid.
        follow_up=_refund_follow_up(amount, reason, asked_the_rest, legacy_key),
        request_key=request_key,
        sent=not legacy_key,
    )
    model("TransferReversal").objects.create(
        payment=payment,
        idempotency_key=key,
        stripe_transfer_id=transfer.stripe_transfer_id,
        amount=needed,
        currency=payment.currency,
    )
    return operation


def _refund_follow_up(
    amount: int, reason: str, asked_the_rest: bool, legacy_key: str = ""
) -> dict[str, Any]:
    """The refund a reversal makes room for, carried by the reversal (and the next ones)."""
    follow_up: dict[str, Any] = {"refund": amount, "reason": reason}
    if asked_the_rest:
        follow_up[operations.ASKED_THE_REST] = True
    if legacy_key:
        follow_up[operations.LEGACY_REFUND] = legacy_key
    return follow_up


def _begin_split_reversal(
    payment: Any,
    amount: int,
    user: Any,
    reason: str,
    request_key: str = "",
    *,
    asked_the_rest: bool = False,
    legacy_key: str = "",
) -> Any:
    """The first reversal of a split payment's refund, carrying the rest of it."""
    plan = releases.reversal_plan(payment, payment.amount_refunded + amount)
    if not plan:
        return None
    transfer, needed = plan[0]
    # The refund and the reversals still to make after this one: each
    # reversal's outcome commits the next (and after the last, the refund,
    # see outcomes.reversal_made), so a request cut short after any of them
    # is finished by a retry, the webhook or escrow_reconcile, and the
    # customer is refunded once every payee's share is back.
    follow_up = {
        **_refund_follow_up(amount, reason, asked_the_rest, legacy_key),
        "next": [[t.stripe_transfer_id, need] for t, need in plan[1:]],
    }
    return outcomes.begin_reversal(
        payment,
        transfer.stripe_transfer_id,
        needed,
        user,
        follow_up=follow_up,
        request_key=request_key,
        sent=not legacy_key,
    )


def _begin_void(payment: Any, user: Any, request_key: str = "") -> Any:
    key, attempt = operations.next_key(payment, K.CANCEL)
    return operations.begin(
        payment,
        K.CANCEL,
        dict(VOID_REQUEST),
        target_id=payment.stripe_payment_intent_id,
        user=user,
        key=key,
        attempt=attempt,
        request_key=request_key,
    )


# --------------------------------------------------------------------------
# Cancel and retry
# --------------------------------------------------------------------------


def cancel_payment(payment_id: Any, user: Any = None, *, system: bool = False) -> Any:
    """Cancel a payment before money moved (void a manual-capture hold)."""
    for _step in _steps():
        with transaction.atomic():
            payment = lock_payment(payment_id)
            # Who first, whatever the state: a canceled payment too.
            if not system and not may(payment.cancel, user):
                if payment.status == S.HELD:
                    raise errors.Forbidden(_("Only the doer or staff can void money already held."))
                raise errors.Forbidden(_("You cannot cancel this payment."))
            if payment.status == S.CANCELED:
                return payment
            pending = operations.unresolved_operation(payment)
            if pending is None:
                operation = _begin_cancel(payment, user)
                if operation is None:
                    return payment
        if pending is None:
            outcomes.execute(operation)
            return payment_model().objects.get(pk=payment_id)
        outcomes.drive(pending, wanted=pending.kind == K.CANCEL)
    raise _too_many_steps()


def _begin_cancel(payment: Any, user: Any) -> Any:
    if not can_proceed(payment.cancel):
        status = payment.get_status_display().lower()
        if payment.status == S.HELD:
            message = _("A payment that is %(status)s cannot be canceled. Use a refund instead.")
        else:
            message = _("A payment that is %(status)s cannot be canceled.")
        raise errors.TransitionNotAllowed(message % {"status": status})
    if not payment.stripe_payment_intent_id:
        payment.cancel()
        payment.save()
        sync_task_status(payment)
        notify("payment_canceled", payment=payment)
        return None
    return _begin_void(payment, user)


def retry_payment(payment_id: Any, user: Any) -> PaymentStart:
    """After a failed attempt the customer pays again on the same intent."""
    with transaction.atomic():
        payment = lock_payment(payment_id)
        # Who first (403 in any state), then whether the state allows it (409).
        if not may(payment.retry_payment, user):
            raise errors.Forbidden(_("Only the customer can retry a payment."))
        if not can_proceed(payment.retry_payment):
            raise errors.TransitionNotAllowed(_("Only a failed payment can be retried."))
        # The new attempt confirms the same PaymentIntent, at the amount it
        # was created with: only while that is still the task's price and
        # customer (a retry is no way around create's ``terms_changed``).
        _refuse_other_terms(payment, _current_terms(payment))
        payment.retry_payment()
        payment.save()
        sync_task_status(payment)
    return _resume(payment, user)


def _current_terms(payment: Any) -> Any:
    """The task's terms now, for the part ``payment`` pays (its milestone, or all)."""
    try:
        terms = get_terms(payment.task)
    except TermsUnavailable as exc:
        # The payer asked (checked before): they are told why.
        raise errors.Conflict(str(exc), code="no_payment_terms") from exc
    if terms.funded_per_milestone != bool(payment.funded_milestone) or (
        payment.funded_milestone > len(terms.milestones)
    ):
        raise errors.Conflict(
            _(
                "How this task is funded changed since its payment was started: "
                "cancel that payment to pay on the new terms."
            ),
            code="terms_changed",
        )
    return terms.for_milestone(payment.funded_milestone) if payment.funded_milestone else terms
