"""Receivers of the package's business-event signals.

The package sends every signal after its transaction commits (and with
``send_robust``), so these see committed rows and cannot break a payment.
Here they write in-app notifications and move the task's own state machine.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from django_escrow_connect import signals
from django_escrow_connect.money import format_money

from . import services
from .models import Notification

logger = logging.getLogger("marketplace")
K = Notification.Kind


def _money(payment: Any, amount: int | None = None) -> str:
    return format_money(payment.amount if amount is None else amount, payment.currency)


def _payees(payment: Any) -> list[Any]:
    return services.doer_people(payment.payee_user, payment.payee_organization)


def _tell(people: list[Any], kind: str, message: str, payment: Any, url: str = "") -> None:
    task = payment.task
    for person in people:
        services.notify_user(person, kind, message, task=task, payment=payment, url=url)


@receiver(signals.payment_required, dispatch_uid="marketplace.payment_required")
def payment_required(sender: Any, payment: Any, client_secret: Any = None, **kwargs: Any) -> None:
    # The client secret is for the customer's browser only: never stored.
    from django.urls import reverse

    _tell(
        [payment.payer],
        K.PAYMENT_REQUIRED,
        f"Pay {_money(payment)} for “{payment.task.title}” to get the work started.",
        payment,
        url=reverse("task-pay", args=[payment.task_id]),
    )


@receiver(signals.payment_held, dispatch_uid="marketplace.payment_held")
def payment_held(sender: Any, payment: Any, **kwargs: Any) -> None:
    services.mark_started(payment.task_id)
    title = payment.task.title
    _tell(
        [payment.payer],
        K.PAYMENT_HELD,
        f"Your payment of {_money(payment)} for “{title}” is held in escrow until you "
        "confirm the work.",
        payment,
    )
    _tell(
        _payees(payment),
        K.PAYMENT_HELD,
        f"Payment received: {_money(payment)} for “{title}” is held in escrow. "
        "You can start the work.",
        payment,
    )


@receiver(signals.payment_released, dispatch_uid="marketplace.payment_released")
def payment_released(sender: Any, payment: Any, transfer: Any = None, **kwargs: Any) -> None:
    services.mark_completed(payment.task_id)
    title = payment.task.title
    _tell(
        _payees(payment),
        K.PAYMENT_RELEASED,
        f"Payment released: {_money(payment, payment.amount_transferred)} for “{title}” was "
        f"sent to your Stripe account (platform fee {_money(payment, payment.platform_fee)}).",
        payment,
    )
    _tell(
        [payment.payer],
        K.PAYMENT_RELEASED,
        f"You released {_money(payment)} for “{title}”. Thank you!",
        payment,
    )


@receiver(signals.milestone_funding_due, dispatch_uid="marketplace.milestone_funding_due")
def milestone_funding_due(
    sender: Any, payment: Any, task: Any, milestone_index: int, amount: int, **kwargs: Any
) -> None:
    # The package never charges the customer by itself (no saved card): the
    # customer is asked to pay for the next milestone, linked to its payment page.
    from django.urls import reverse

    _tell(
        [payment.payer],
        K.MILESTONE_FUNDING_DUE,
        f"Milestone {milestone_index} of “{task.title}” is next: pay {_money(payment, amount)} "
        "into escrow so the work can go on.",
        payment,
        url=f"{reverse('task-pay', args=[task.pk])}?milestone={milestone_index}",
    )


@receiver(signals.payment_failed, dispatch_uid="marketplace.payment_failed")
def payment_failed(sender: Any, payment: Any, incident: Any = None, **kwargs: Any) -> None:
    from django.urls import reverse

    reason = getattr(incident, "message", "") or payment.failure_message or "the card was declined"
    _tell(
        [payment.payer],
        K.PAYMENT_FAILED,
        f"Your payment for “{payment.task.title}” failed: {reason} Try another card.",
        payment,
        url=reverse("task-pay", args=[payment.task_id]),
    )


@receiver(signals.payment_refunded, dispatch_uid="marketplace.payment_refunded")
def payment_refunded(sender: Any, payment: Any, refund: Any = None, **kwargs: Any) -> None:
    amount = getattr(refund, "amount", None) or payment.amount_refunded
    title = payment.task.title
    _tell(
        [payment.payer],
        K.PAYMENT_REFUNDED,
        f"{_money(payment, amount)} for “{title}” was refunded to your card.",
        payment,
    )
    _tell(
        _payees(payment),
        K.PAYMENT_REFUNDED,
        f"{_money(payment, amount)} for “{title}” was refunded to the customer.",
        payment,
    )


@receiver(signals.transfer_failed, dispatch_uid="marketplace.transfer_failed")
def transfer_failed(sender: Any, payment: Any, incident: Any = None, **kwargs: Any) -> None:
    code = getattr(incident, "code", "") or "error"
    message = (
        f"Releasing the payment for “{payment.task.title}” failed at Stripe ({code}). "
        "The money is still held in escrow; the release can be retried."
    )
    _tell([payment.payer, *_payees(payment)], K.TRANSFER_FAILED, message, payment)


@receiver(signals.dispute_opened, dispatch_uid="marketplace.dispute_opened")
def dispute_opened(sender: Any, payment: Any, dispute: Any = None, **kwargs: Any) -> None:
    reason = getattr(dispute, "reason", "") or "no reason given"
    title = payment.task.title
    _tell(
        [payment.payer],
        K.DISPUTE,
        f"Your bank opened a dispute ({reason}) about the payment for “{title}”.",
        payment,
    )
    _tell(
        _payees(payment),
        K.DISPUTE,
        f"The customer disputed the payment for “{title}” ({reason}). "
        "The payment is frozen until the dispute is decided.",
        payment,
    )


@receiver(signals.dispute_closed, dispatch_uid="marketplace.dispute_closed")
def dispute_closed(sender: Any, payment: Any, dispute: Any = None, **kwargs: Any) -> None:
    outcome = getattr(dispute, "status", "") or "closed"
    if outcome == "lost":
        # The card network gave the money back to the customer: the task ends.
        services.cancel_if_open(payment.task_id)
    _tell(
        [payment.payer, *_payees(payment)],
        K.DISPUTE,
        f"The dispute about “{payment.task.title}” is closed: {outcome}.",
        payment,
    )


def _account_people(account: Any) -> list[Any]:
    return services.doer_people(account.owner_user, account.owner_organization)


@receiver(signals.account_requirements_due, dispatch_uid="marketplace.requirements_due")
def account_requirements_due(
    sender: Any, account: Any, currently_due: Any = (), past_due: Any = (), **kwargs: Any
) -> None:
    due = sorted(set(currently_due or ()) | set(past_due or ()))
    # A brand-new account always has requirements: only tell people about
    # information needed *after* they were verified or submitted details.
    if not account.details_submitted:
        return
    url = services.onboarding_url(account.owner_organization)
    for person in _account_people(account):
        services.notify_user(
            person,
            K.ACCOUNT_REQUIREMENTS,
            f"Stripe needs more information before you can be paid ({len(due)} item(s), "
            f"e.g. {', '.join(due[:2]) or 'details'}). Update your payout details.",
            url=url,
        )


@receiver(signals.account_deauthorized, dispatch_uid="marketplace.account_deauthorized")
def account_deauthorized(sender: Any, account: Any, **kwargs: Any) -> None:
    cancelled = services.cancel_work_of_disconnected_doer(account)
    for person in _account_people(account):
        services.notify_user(
            person,
            K.ACCOUNT_DEAUTHORIZED,
            "Your Stripe account was disconnected from the marketplace. "
            + (f"{len(cancelled)} open task(s) were cancelled. " if cancelled else "")
            + "New payments to you are refused until the account is reconnected.",
            url=services.onboarding_url(account.owner_organization),
        )
