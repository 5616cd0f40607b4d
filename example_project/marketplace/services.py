"""The marketplace's use cases: post, bid, accept, pay, complete, refund, cancel.

The HTML views, the JSON API and the ``demo_flow`` command all call these,
and these call the package's services for anything that moves money
(:mod:`django_escrow_connect.services.payments`). Errors are the package's
:class:`~django_escrow_connect.services.errors.ServiceError` subclasses, so
the API answers them in the package's error shape.

Tasks are locked (``select_for_update``) before a transition: the task model
mixes in django-fsm's ``ConcurrentTransitionMixin``, and the package moves
``payment_status`` on its own rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django_fsm import can_proceed

from django_escrow_connect import swappable
from django_escrow_connect.gateway import get_gateway
from django_escrow_connect.money import (
    InvalidAmount,
    format_money,
    max_charge_amount,
    normalize_currency,
    validate_charge_amount,
    validate_minor_amount,
)
from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.services import errors
from django_escrow_connect.services import payments as payment_services
from django_escrow_connect.services import tips as tip_services
from django_escrow_connect.states import PaymentStatus, TipStatus

from .models import OPEN_TASK_STATES, Bid, Notification, Organization, Task, TaskStatus

logger = logging.getLogger("marketplace")

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def payment_model() -> Any:
    return swappable.load("EscrowPayment")


def current_payment(task: Task) -> Any:
    """The task's live payment (the newest that was not canceled), or None."""
    return (
        payment_model()
        .objects.filter(task=task)
        .exclude(status=PaymentStatus.CANCELED)
        .order_by("-created_at")
        .first()
    )


def lock_task(task_id: Any) -> Task:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_task() must run inside transaction.atomic()")
    try:
        return Task.objects.select_for_update().get(pk=task_id)
    except (Task.DoesNotExist, ValueError, TypeError) as exc:
        raise errors.NotFound("No such task.", code="task_not_found") from exc


def get_task(task_id: Any) -> Task:
    try:
        return Task.objects.select_related("customer").get(pk=task_id)
    except (Task.DoesNotExist, ValueError, TypeError) as exc:
        raise errors.NotFound("No such task.", code="task_not_found") from exc


def notify_user(
    user: Any,
    kind: str,
    message: str,
    *,
    task: Task | None = None,
    payment: Any = None,
    url: str = "",
) -> Notification:
    if not url and task is not None:
        url = task.get_absolute_url()
    return Notification.objects.create(
        user=user, kind=kind, message=message[:300], task=task, payment=payment, url=url
    )


def doer_people(user: Any = None, organization: Organization | None = None) -> list[Any]:
    """Who hears about a doer's money: the user, or the organization's admins."""
    if user is not None:
        return [user]
    if organization is None:
        return []
    return [m.user for m in organization.memberships.filter(role="admin").select_related("user")]


def onboarding_url(organization: Organization | None = None) -> str:
    url = reverse("onboarding")
    return f"{url}?organization_id={organization.pk}" if organization is not None else url


def doer_account(bid: Bid) -> Any:
    return account_services.get_account(
        owner_user=bid.doer_user, owner_organization=bid.doer_organization
    )


def doer_can_be_paid(bid: Bid) -> bool:
    """The doer (and, for a team bid, the partner) has a verified connected account."""
    account = doer_account(bid)
    if account is None or not account.is_verified:
        return False
    if bid.partner_user_id is None:
        return True
    partner = account_services.get_account(owner_user=bid.partner_user)
    return partner is not None and partner.is_verified


# --------------------------------------------------------------------------
# Posting and bidding
# --------------------------------------------------------------------------


def post_task(customer: Any, title: str, description: str = "") -> Task:
    title = (title or "").strip()
    if not title:
        raise errors.InvalidInput("A task needs a title.", code="title_required")
    return Task.objects.create(customer=customer, title=title[:120], description=description)


def place_bid(
    task_id: Any,
    user: Any,
    *,
    amount: int,
    currency: str = "usd",
    organization: Organization | None = None,
    message: str = "",
    milestones: list[tuple[str, int]] | None = None,
    partner: Any = None,
    partner_basis_points: int | None = None,
    fund_per_milestone: bool = False,
) -> Bid:
    """``user`` offers to do the task for ``amount`` minor units, alone or for ``organization``.

    ``milestones`` (name, minor units) divide the amount into parts the
    customer releases one by one; with ``fund_per_milestone`` the customer
    also pays them one by one. ``partner`` makes it a team bid, the partner
    being paid ``partner_basis_points`` of each release's net.
    """
    try:
        currency = normalize_currency(currency)
    except (InvalidAmount, ValueError, TypeError) as exc:
        raise errors.InvalidInput(str(exc), code="invalid_currency") from exc
    check_bid_amount(amount, currency)
    milestone_rows = _milestone_rows(milestones or [], amount, currency, charged=fund_per_milestone)
    if fund_per_milestone and not milestone_rows:
        raise errors.InvalidInput(
            "Funding per milestone needs milestones.", code="fund_per_milestone_needs_milestones"
        )
    if partner is not None:
        if partner.pk == user.pk:
            raise errors.InvalidInput("Your partner must be someone else.", code="invalid_partner")
        if not isinstance(partner_basis_points, int) or not 0 < partner_basis_points < 10_000:
            raise errors.InvalidInput(
                "The partner's share must be between 1 and 9999 basis points.",
                code="invalid_partner_share",
            )
    else:
        partner_basis_points = None
    if organization is not None and not organization.is_member(user):
        raise errors.Forbidden(
            "You can only bid for an organization you belong to.", code="not_a_member"
        )
    with transaction.atomic():
        task = lock_task(task_id)
        if task.customer_id in (user.pk, getattr(partner, "pk", None)):
            raise errors.Forbidden("You cannot bid on your own task.", code="own_task")
        if task.status not in (TaskStatus.CREATED, TaskStatus.BIDDING):
            raise errors.Conflict("This task no longer takes bids.", code="bidding_closed")
        doer = {"doer_user": None, "doer_organization": organization}
        if organization is None:
            doer = {"doer_user": user, "doer_organization": None}
        if task.bids.filter(**doer).exists():
            raise errors.Conflict("This doer has already bid on the task.", code="already_bid")
        bid = Bid.objects.create(
            task=task,
            amount=amount,
            currency=currency,
            message=message[:300],
            placed_by=user,
            milestones=milestone_rows,
            partner_user=partner,
            partner_basis_points=partner_basis_points,
            fund_per_milestone=fund_per_milestone,
            **doer,
        )
        if can_proceed(task.open_bidding):
            task.open_bidding()
            task.save(update_fields=["status"])
        notify_user(
            task.customer,
            Notification.Kind.BID,
            f"{bid.doer} bids {bid.formatted_amount} on “{task.title}”.",
            task=task,
        )
    return bid


def tell_partner_to_onboard(bid: Bid) -> bool:
    """Ask a team bid's partner without a verified account to onboard; True if asked.

    The bid stands, but the customer cannot accept it until the partner can
    be paid (:func:`doer_can_be_paid`): better they hear it now.
    """
    if bid.partner_user_id is None:
        return False
    account = account_services.get_account(owner_user=bid.partner_user)
    if account is not None and account.is_verified:
        return False
    notify_user(
        bid.partner_user,
        Notification.Kind.ONBOARDING_NEEDED,
        f"{bid.placed_by} named you as team partner on a bid for “{bid.task.title}”: "
        "set up payouts (Stripe onboarding) so the bid can be accepted and you can be paid.",
        task=bid.task,
        url=onboarding_url(),
    )
    return True


def _milestone_rows(
    milestones: list[tuple[str, int]], amount: int, currency: str, *, charged: bool
) -> list[dict[str, Any]]:
    """The bid's milestones as stored; refused unless they add up to the bid.

    ``charged``: funded per milestone, each milestone is a charge of its own.
    """
    rows = []
    for name, part in milestones:
        name = (name or "").strip()
        if not name:
            raise errors.InvalidInput("Every milestone needs a name.", code="invalid_milestone")
        rows.append(
            {"name": name[:80], "amount": check_bid_amount(part, currency, charged=charged)}
        )
    if rows and sum(row["amount"] for row in rows) != amount:
        raise errors.InvalidInput(
            "The milestones must add up to the bid's amount.", code="milestones_mismatch"
        )
    return rows


def check_bid_amount(amount: Any, currency: str, *, charged: bool = True) -> int:
    """A price the customer can actually pay, in minor units.

    Checked before the bid is stored: a bid of 10**20 would not fit the
    column (a 500), and one Stripe cannot charge would only fail at payment
    time, after the customer accepted it. ``charged``: the amount is charged
    on its own (the bid's price, or a milestone funded per milestone), so it
    must be between Stripe's smallest and largest charge in its currency
    (``money.validate_charge_amount``: 0.50 USD up to 999,999.99 USD). A
    milestone of a bid paid up front is only ever transferred: 1 minor unit
    up to the largest charge.
    """
    try:
        if charged:
            return validate_charge_amount(amount, currency)
        validate_minor_amount(amount, currency)
    except (ValueError, TypeError) as exc:  # InvalidAmount, InvalidCurrency
        raise errors.InvalidInput(str(exc), code="invalid_amount") from exc
    maximum = max_charge_amount(currency)
    if not 1 <= amount <= maximum:
        raise errors.InvalidInput(
            f"The amount must be between 1 and {maximum} minor units "
            f"({format_money(maximum, currency)}).",
            code="invalid_amount",
        )
    return int(amount)


def visible_bids(task: Task, user: Any) -> Any:
    """The bids of ``task`` that ``user`` may read.

    The customer (and staff) see every bid; a doer sees their own bid, and a
    member of an organization its organization's bid. Others see none: what
    competitors offered is the customer's business.
    """
    bids = task.bids.select_related("doer_user", "doer_organization", "placed_by", "partner_user")
    if not getattr(user, "is_authenticated", False):
        return bids.none()
    if task.customer_id == user.pk or (user.is_staff and user.is_active):
        return bids
    return bids.filter(
        Q(doer_user=user) | Q(partner_user=user) | Q(doer_organization__memberships__user=user)
    ).distinct()


class DoerNotReady(errors.AccountNotReady):
    """The doer cannot receive money yet: no verified connected account."""

    def __init__(self, message: str, *, onboarding_url: str) -> None:
        super().__init__(message, code="doer_not_verified")
        self.onboarding_url = onboarding_url


def accept_bid(bid_id: Any, user: Any) -> Bid:
    """The customer picks a bid. Refused while the doer cannot be paid."""
    try:
        bid = Bid.objects.select_related("task", "doer_user", "doer_organization").get(pk=bid_id)
    except (Bid.DoesNotExist, ValueError, TypeError) as exc:
        raise errors.NotFound("No such bid.", code="bid_not_found") from exc
    if bid.task.customer_id != user.pk:
        raise errors.Forbidden("Only the task's customer can accept a bid.", code="not_customer")
    if not doer_can_be_paid(bid):
        url = onboarding_url(bid.doer_organization)
        for person in doer_people(bid.doer_user, bid.doer_organization):
            notify_user(
                person,
                Notification.Kind.ONBOARDING_NEEDED,
                f"{bid.task.customer} wants to accept your bid on “{bid.task.title}”: "
                "set up payouts (Stripe onboarding) so you can be paid.",
                task=bid.task,
                url=url,
            )
        raise DoerNotReady(
            f"{bid.doer} has not finished setting up payouts (no verified Stripe account), "
            "so their bid cannot be accepted yet. They have been told to complete onboarding.",
            onboarding_url=url,
        )
    with transaction.atomic():
        task = lock_task(bid.task_id)
        if not can_proceed(task.accept):
            raise errors.Conflict(
                f"A bid cannot be accepted on a task that is {task.get_status_display().lower()}.",
                code="cannot_accept",
            )
        bid = Bid.objects.select_for_update().get(pk=bid.pk)
        bid.accepted = True
        bid.accepted_at = timezone.now()
        bid.save(update_fields=["accepted", "accepted_at"])
        task.accept()
        task.save(update_fields=["status"])
        for person in doer_people(bid.doer_user, bid.doer_organization):
            notify_user(
                person,
                Notification.Kind.BID,
                f"Your bid of {bid.formatted_amount} on “{task.title}” was accepted. "
                "You can start once the customer's payment is held in escrow.",
                task=task,
            )
    return bid


# --------------------------------------------------------------------------
# Paying
# --------------------------------------------------------------------------


def funded_per_milestone(task: Task) -> bool:
    """The accepted bid has the customer pay milestone by milestone."""
    bid = task.accepted_bid
    return bid is not None and bid.funds_per_milestone


def milestone_payments(task: Task) -> dict[int, Any]:
    """A task funded per milestone: its live payment of each milestone, by 1-based index."""
    payments = (
        payment_model()
        .objects.filter(task=task, funded_milestone__isnull=False)
        .exclude(status=PaymentStatus.CANCELED)
        .prefetch_related("milestones")
    )
    return {payment.funded_milestone: payment for payment in payments}


#: A milestone's payment in these states still waits for the customer's card.
UNPAID = (PaymentStatus.AWAITING_PAYMENT, PaymentStatus.FAILED)


def next_milestone_to_pay(task: Task) -> int | None:
    """The first milestone (1-based) nobody has paid for yet, or None.

    Whether it may be paid for now (``FUND_NEXT_MILESTONE``) is the package's
    answer when the customer tries: the page does not guess the rule.
    """
    bid = task.accepted_bid
    if bid is None or not bid.funds_per_milestone:
        return None
    payments = milestone_payments(task)
    for index in range(1, len(bid.milestones) + 1):
        payment = payments.get(index)
        if payment is None or payment.status in UNPAID:
            return index
    return None


def milestone_parts(task: Task) -> list[dict[str, Any]]:
    """A task funded per milestone: each milestone with its payment's state, for the page."""
    bid = task.accepted_bid
    if bid is None or not bid.funds_per_milestone:
        return []
    payments = milestone_payments(task)
    parts = []
    for index, row in enumerate(bid.milestones, start=1):
        payment = payments.get(index)
        milestone = payment.milestones.all()[0] if payment is not None else None
        parts.append(
            {
                "index": index,
                "name": row["name"],
                "amount": format_money(int(row["amount"]), bid.currency),
                "payment": payment,
                "status": payment.status if payment is not None else "unpaid",
                "status_display": (
                    payment.get_status_display() if payment is not None else "Not paid yet"
                ),
                "milestone": milestone,
                "releasable": milestone is not None
                and milestone.status in ("held", "delivered")
                and payment.status in (PaymentStatus.HELD, PaymentStatus.PARTIALLY_RELEASED),
            }
        )
    return parts


@dataclass(frozen=True)
class PaymentPart:
    """What the customer pays next for a task: the whole task, or one milestone."""

    task: Task
    bid: Bid | None
    #: 1-based, for a task funded per milestone; None when paid up front.
    milestone: int | None
    #: The amount the customer saw on the bid (minor units), None if unknown.
    amount: int | None
    currency: str
    #: The part's live payment (awaiting payment, failed, ...), None before the first try.
    payment: Any

    @property
    def milestone_name(self) -> str:
        if self.bid is None or self.milestone is None:
            return ""
        if not 1 <= self.milestone <= len(self.bid.milestones):
            return ""
        return str(self.bid.milestones[self.milestone - 1]["name"])


def payment_part(task_id: Any, user: Any, *, milestone: int | None = None) -> PaymentPart:
    """What ``user`` would pay for the task now: read only, nothing is created.

    The pay page shows it on GET; :func:`start_payment` (a POST) creates the
    payment. The same refusals as paying: not the customer (403), a task
    not waiting for payment (409), every milestone paid for (409).
    """
    task = get_task(task_id)
    if task.customer_id != user.pk:
        raise errors.Forbidden("Only the task's customer can pay for it.", code="not_customer")
    bid = task.accepted_bid
    per_milestone = bid is not None and bid.funds_per_milestone
    payable = (TaskStatus.BID_ACCEPTED, TaskStatus.IN_PROGRESS) if per_milestone else ()
    if task.status != TaskStatus.BID_ACCEPTED and task.status not in payable:
        raise errors.Conflict(
            f"A task that is {task.get_status_display().lower()} is not waiting for payment.",
            code="not_payable",
        )
    currency = bid.currency if bid is not None else ""
    if not per_milestone:
        amount = bid.amount if bid is not None else None
        return PaymentPart(task, bid, None, amount, currency, current_payment(task))
    assert bid is not None
    if milestone is None:
        milestone = next_milestone_to_pay(task)
        if milestone is None:
            raise errors.Conflict("Every milestone is paid for.", code="already_paid")
    count = len(bid.milestones)
    if not 1 <= milestone <= count:
        # The package's own refusal (and message) for an index out of range.
        raise errors.InvalidInput(
            f"The milestone must be a number from 1 to {count}.", code="milestone_out_of_range"
        )
    # Whether it may be paid for now (FUND_NEXT_MILESTONE) is the package's
    # answer when the customer pays.
    expected = int(bid.milestones[milestone - 1]["amount"])
    return PaymentPart(
        task, bid, milestone, expected, currency, milestone_payments(task).get(milestone)
    )


def start_payment(
    task_id: Any,
    user: Any,
    *,
    retry_failed: bool = False,
    milestone: int | None = None,
    save_payment_method: bool = False,
) -> payment_services.PaymentStart:
    """Create (or resume) the task's escrow payment.

    A failed payment keeps its PaymentIntent, which can be confirmed again;
    with ``retry_failed`` it first goes back to ``awaiting_payment`` (the
    customer is trying another card now).

    A task funded per milestone pays one milestone at a time: ``milestone``
    (1-based; by default the first one not paid for) names it, also while
    the work is in progress. The package decides whether it may be paid for
    now (``FUND_NEXT_MILESTONE``) and refuses with its own 409 message.

    ``save_payment_method``: the customer ticked "Save my card for tips"
    next to the consent text; the package records when (the audit trail of
    every later off-session tip). A payment already created keeps the
    choice it was created with.
    """
    part = payment_part(task_id, user, milestone=milestone)
    payment = part.payment
    if retry_failed and payment is not None and payment.status == PaymentStatus.FAILED:
        return payment_services.retry_payment(payment.pk, user)
    return payment_services.create_payment(
        part.task.pk,
        user,
        expected_amount=part.amount,
        milestone=part.milestone,
        save_payment_method=save_payment_method,
    )


@dataclass(frozen=True)
class CardOutcome:
    """What paying with a simulated card did."""

    payment: Any
    #: "succeeded", "requires_action", "declined" or "processing".
    outcome: str
    message: str = ""
    payment_intent_id: str = ""


def simulated_gateway() -> Any:
    gateway = get_gateway()
    if not hasattr(gateway, "confirm_payment_intent"):
        raise errors.Conflict("Simulated cards exist only in simulated mode.", code="not_simulated")
    return gateway


def pay_with_simulated_card(
    task_id: Any,
    user: Any,
    card: str,
    *,
    milestone: int | None = None,
    save_payment_method: bool = False,
) -> CardOutcome:
    """The customer's browser confirms the PaymentIntent with a simulated test card.

    In Stripe test mode Stripe.js does this; here the simulated gateway plays
    Stripe and its events reach the package's webhook pipeline, which moves
    the payment (held, failed) exactly as real webhooks would.
    """
    gateway = simulated_gateway()
    start = start_payment(
        task_id,
        user,
        retry_failed=True,
        milestone=milestone,
        save_payment_method=save_payment_method,
    )
    payment = start.payment
    intent = gateway.confirm_payment_intent(payment.stripe_payment_intent_id, card)
    return _card_outcome(payment, intent)


def complete_simulated_authentication(
    payment_intent_id: str, user: Any, approve: bool
) -> CardOutcome:
    """The customer passes (or fails) the simulated 3-D Secure challenge."""
    gateway = simulated_gateway()
    payment = payment_model().objects.filter(stripe_payment_intent_id=payment_intent_id).first()
    if payment is None:
        # A tip's PaymentIntent (a tip confirmed with a 3-D Secure card).
        tip = (
            tip_model()
            .objects.filter(stripe_payment_intent_id=payment_intent_id, payer_id=user.pk)
            .first()
        )
        if tip is None:
            raise errors.NotFound("No such payment.")
        intent = gateway.complete_authentication(payment_intent_id, succeed=approve)
        return _tip_outcome(tip, intent)
    if payment.payer_id != user.pk:
        raise errors.NotFound("No such payment.")
    intent = gateway.complete_authentication(payment_intent_id, succeed=approve)
    return _card_outcome(payment, intent)


def _card_outcome(payment: Any, intent: Any) -> CardOutcome:
    payment.refresh_from_db()
    error = intent.last_payment_error
    if intent.status in ("succeeded", "requires_capture"):
        outcome, message = "succeeded", "Payment received: the money is held in escrow."
    elif intent.status == "requires_action":
        outcome, message = "requires_action", "Your bank asks you to authenticate the payment."
    elif intent.status == "processing":
        outcome, message = "processing", "The payment is processing."
    else:
        outcome = "declined"
        message = (error or {}).get("message") or "The card was declined."
    return CardOutcome(
        payment=payment, outcome=outcome, message=message, payment_intent_id=intent.id
    )


# --------------------------------------------------------------------------
# Tips
# --------------------------------------------------------------------------


def tip_model() -> Any:
    return swappable.load("EscrowTip")


def tippable_payment(task: Task) -> Any:
    """The task's newest payment that takes tips (released, even in part), or None.

    Funded per milestone a task has one payment per milestone: a tip goes on
    the latest one released. The package checks the state again under lock.
    """
    return (
        payment_model()
        .objects.filter(task=task, status__in=tip_services.TIPPABLE_PAYMENT_STATES)
        .order_by("-created_at")
        .first()
    )


def task_tips(task: Task) -> Any:
    """Every tip added on the task's payments, oldest first."""
    return tip_model().objects.filter(payment__task=task).order_by("created_at")


def add_tip(
    task_id: Any, user: Any, amount: int, *, request_key: str = ""
) -> tip_services.TipStart:
    """The customer tips the doer ``amount`` minor units, in the payment's currency.

    The package decides how it is charged: on the card the customer agreed
    to save (``confirmation == "off_session"``, paid already) or by the
    customer confirming its PaymentIntent (``"customer"``). It checks who
    may tip and the bound (``TIP_MAX_AMOUNT``) and answers with its own
    messages.
    """
    task = get_task(task_id)
    if task.customer_id != user.pk:
        raise errors.Forbidden("Only the task's customer can add a tip.", code="not_customer")
    payment = tippable_payment(task)
    if payment is None:
        raise errors.Conflict(
            "A tip can be added only once the payment is released.", code="not_tippable"
        )
    return tip_services.create_tip(payment.pk, user, amount, request_key=request_key)


#: A tip in these states still waits for the customer to confirm it.
TIP_UNPAID = (TipStatus.AWAITING_PAYMENT, TipStatus.FAILED)


def customer_tip(task_id: Any, tip_id: Any, user: Any) -> Any:
    """The task's tip ``tip_id`` if ``user`` added it; NotFound for everyone else."""
    tip = (
        tip_model()
        .objects.filter(pk=tip_id, payment__task_id=task_id, payer_id=user.pk)
        .select_related("payment")
        .first()
    )
    if tip is None:
        raise errors.NotFound("No such tip.", code="tip_not_found")
    return tip


def pay_tip_with_simulated_card(task_id: Any, tip_id: Any, user: Any, card: str) -> CardOutcome:
    """The customer confirms a tip's PaymentIntent with a simulated card.

    The same confirmation as the pay page's (:func:`pay_with_simulated_card`):
    the simulated gateway plays Stripe.js, and its ``payment_intent.*``
    events make the tip paid (and transferred) through the package's
    webhook pipeline. A declined tip can be confirmed again.
    """
    gateway = simulated_gateway()
    tip = customer_tip(task_id, tip_id, user)
    if tip.status not in TIP_UNPAID:
        raise errors.Conflict("This tip is not waiting for payment.", code="tip_not_payable")
    intent = gateway.confirm_payment_intent(tip.stripe_payment_intent_id, card)
    return _tip_outcome(tip, intent)


def _tip_outcome(tip: Any, intent: Any) -> CardOutcome:
    tip.refresh_from_db()
    outcome = _card_outcome(tip.payment, intent)
    if outcome.outcome == "succeeded":
        outcome = CardOutcome(
            payment=tip.payment,
            outcome="succeeded",
            message=f"Tip of {format_money(tip.amount, tip.currency)} paid: thank you!",
            payment_intent_id=intent.id,
        )
    return outcome


# --------------------------------------------------------------------------
# Completing, refunding, cancelling
# --------------------------------------------------------------------------


def complete_task(task_id: Any, user: Any) -> Task:
    """The customer confirms the work: release the escrow payment, then close the task.

    A failed release (the transfer was refused) leaves the money held and the
    task in progress; the customer (or staff) can simply try again.
    """
    task = get_task(task_id)
    if task.customer_id != user.pk and not user.is_staff:
        raise errors.Forbidden("Only the task's customer can confirm it.", code="not_customer")
    if task.status != TaskStatus.IN_PROGRESS:
        raise errors.Conflict(
            f"A task that is {task.get_status_display().lower()} cannot be completed.",
            code="cannot_complete",
        )
    payment = current_payment(task)
    if payment is None:
        raise errors.Conflict("This task has no payment to release.", code="no_payment")
    payment_services.release_payment(payment.pk, user)
    return mark_completed(task.pk)


def release_milestone(task_id: Any, user: Any, milestone_id: Any) -> Any:
    """The customer approves one milestone: its part goes to the payee(s).

    The package checks that the milestone belongs to the payment and that
    ``user`` may release it; once the last milestone is released the task is
    completed.
    """
    task = get_task(task_id)
    if task.customer_id != user.pk and not user.is_staff:
        raise errors.Forbidden(
            "Only the task's customer can release a milestone.", code="not_customer"
        )
    # Funded per milestone, each milestone has its own payment (and a later
    # one may already be paid for): release through the milestone's payment.
    payment = (
        payment_model()
        .objects.filter(task=task, milestones__pk=milestone_id)
        .exclude(status=PaymentStatus.CANCELED)
        .first()
    ) or current_payment(task)
    if payment is None:
        raise errors.Conflict("This task has no payment to release.", code="no_payment")
    payment = payment_services.release_payment(payment.pk, user, milestone_id=milestone_id)
    if payment.status == PaymentStatus.RELEASED:
        mark_completed(task.pk)
    return payment


def mark_completed(task_id: Any) -> Task:
    with transaction.atomic():
        task = lock_task(task_id)
        if can_proceed(task.complete):
            task.complete()
            task.save(update_fields=["status", "completed_at"])
    return task


def mark_started(task_id: Any) -> Task:
    with transaction.atomic():
        task = lock_task(task_id)
        if can_proceed(task.start):
            task.start()
            task.save(update_fields=["status"])
    return task


def refund_task(task_id: Any, user: Any, *, amount: int | None = None, reason: str = "") -> Any:
    """The doer (or staff) gives money back; a fully refunded open task is cancelled."""
    task = get_task(task_id)
    payment = current_payment(task)
    if payment is None:
        raise errors.Conflict("This task has no payment to refund.", code="no_payment")
    payment = payment_services.refund_payment(payment.pk, user, amount=amount, reason=reason)
    payment.refresh_from_db()
    if payment.status == PaymentStatus.REFUNDED:
        cancel_if_open(task.pk)
    return payment


def cancel_task(task_id: Any, user: Any) -> Task:
    """The customer withdraws a task before money is held (an unpaid payment is canceled)."""
    task = get_task(task_id)
    if task.customer_id != user.pk and not user.is_staff:
        raise errors.Forbidden("Only the task's customer can cancel it.", code="not_customer")
    if task.status not in (TaskStatus.CREATED, TaskStatus.BIDDING, TaskStatus.BID_ACCEPTED):
        raise errors.Conflict(
            "Money is held for this task: ask the doer (or support) for a refund instead.",
            code="cannot_cancel",
        )
    payment = current_payment(task)
    if payment is not None:
        if payment.status not in (PaymentStatus.AWAITING_PAYMENT, PaymentStatus.FAILED):
            raise errors.Conflict(
                "The payment is already being processed; it cannot be canceled now.",
                code="cannot_cancel",
            )
        payment_services.cancel_payment(payment.pk, user)
    return cancel_if_open(task.pk)


def cancel_if_open(task_id: Any) -> Task:
    with transaction.atomic():
        task = lock_task(task_id)
        if can_proceed(task.cancel):
            task.cancel()
            task.save(update_fields=["status", "cancelled_at"])
    return task


def cancel_work_of_disconnected_doer(account: Any) -> list[Task]:
    """The doer disconnected their Stripe account: they can no longer be paid.

    Their open tasks are cancelled: money still held is refunded to the
    customer (the charge was never transferred), an unpaid payment is
    canceled. Returns the cancelled tasks.
    """
    bids = Bid.objects.filter(accepted=True, task__status__in=OPEN_TASK_STATES)
    if account.owner_user_id is not None:
        bids = bids.filter(doer_user_id=account.owner_user_id)
    else:
        bids = bids.filter(doer_organization_id=account.owner_organization_id)
    cancelled = []
    for bid in bids.select_related("task", "task__customer"):
        task = bid.task
        payment = current_payment(task)
        try:
            if payment is not None and payment.status in (
                PaymentStatus.HELD,
                PaymentStatus.RELEASING,
            ):
                payment_services.refund_payment(
                    payment.pk, system=True, reason="requested_by_customer"
                )
            elif payment is not None and payment.status in (
                PaymentStatus.AWAITING_PAYMENT,
                PaymentStatus.FAILED,
            ):
                payment_services.cancel_payment(payment.pk, system=True)
        except errors.ServiceError:
            logger.exception("could not give back the money of task %s", task.pk)
            continue
        cancelled.append(cancel_if_open(task.pk))
        notify_user(
            task.customer,
            Notification.Kind.ACCOUNT_DEAUTHORIZED,
            f"{bid.doer} disconnected their payout account, so “{task.title}” was cancelled"
            + (" and your payment refunded." if payment is not None else "."),
            task=task,
            payment=payment,
        )
    return cancelled


def format_amount(amount: int, currency: str) -> str:
    return format_money(amount, currency)


def is_simulated() -> bool:
    return bool(getattr(settings, "SIMULATED_STRIPE", False))
