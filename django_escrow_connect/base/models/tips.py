"""Tips: money the customer adds after release, charged and transferred on its own.

A tip is never part of the escrowed payment: it has its own PaymentIntent
(so the payment's amount, refunds and books stay what they were) and its
own transfers, one per recipient (:func:`~django_escrow_connect.services.tips.tip_recipients`).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from ...states import TipStatus, TipTransferStatus
from ...swappable import model_name
from ._common import TimestampedModel, _currency_constraint
from .transfers import AbstractStripeTransfer, stripe_transfer_constraints, stripe_transfer_status

__all__ = ["AbstractEscrowTip", "AbstractEscrowTipTransfer"]

T = TipStatus


class AbstractEscrowTip(ConcurrentTransitionMixin, TimestampedModel):
    """A tip on a released payment: its own PaymentIntent, then transfers."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="tips",
    )
    payer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("payer"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    # What the platform keeps of the tip (TIP_FEE policy; none by default).
    platform_fee = models.BigIntegerField(_("platform fee (minor units)"), default=0)
    status = FSMField(
        _("status"),
        max_length=32,
        choices=TipStatus.choices,
        default=TipStatus.AWAITING_PAYMENT,
        protected=True,
    )
    stripe_payment_intent_id = models.CharField(
        _("Stripe PaymentIntent id"), max_length=255, blank=True
    )
    stripe_charge_id = models.CharField(_("Stripe charge id"), max_length=255, blank=True)
    intent_idempotency_key = models.CharField(_("PaymentIntent idempotency key"), max_length=255)
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)
    transferred_at = models.DateTimeField(_("transferred at"), null=True, blank=True)
    failure_code = models.CharField(_("failure code"), max_length=255, blank=True)
    failure_message = models.TextField(_("failure message"), blank=True)
    # What Stripe says was refunded of the tip's charge (refunds made in the
    # Stripe Dashboard): its running total, never more than the tip.
    amount_refunded = models.BigIntegerField(_("amount refunded (minor units)"), default=0)
    refunded_at = models.DateTimeField(_("refunded at"), null=True, blank=True)

    class Meta:
        abstract = True
        verbose_name = _("tip")
        verbose_name_plural = _("tips")
        ordering = ["created_at"]
        constraints = [
            # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
            models.UniqueConstraint(
                fields=["intent_idempotency_key"], name="escrow_tip_unique_intent_key"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="escrow_tip_amount_positive"),
            models.CheckConstraint(
                condition=Q(platform_fee__gte=0) & Q(platform_fee__lte=models.F("amount")),
                name="escrow_tip_fee_within_amount",
            ),
            _currency_constraint("escrow_tip"),
            models.CheckConstraint(
                condition=Q(amount_refunded__gte=0) & Q(amount_refunded__lte=models.F("amount")),
                name="escrow_tip_refunded_within_amount",
            ),
            models.UniqueConstraint(
                fields=["stripe_payment_intent_id"],
                condition=~Q(stripe_payment_intent_id=""),
                name="escrow_tip_unique_payment_intent",
            ),
        ]

    def __str__(self) -> str:
        return f"tip {self.amount} {self.currency} ({self.status})"

    @property
    def transfer_group(self) -> str:
        """The tip's own transfer group: one business action, apart from the payment's.

        The payment's group holds exactly the payment's transfer (the books
        audit compares it with the charge); a tip is money of its own.
        """
        return f"escrow_tip_{self.pk.hex}"

    @transition(field=status, source=T.AWAITING_PAYMENT, target=T.PROCESSING)
    def mark_processing(self) -> None:
        pass

    # From failed too: after a decline the customer may confirm the same
    # PaymentIntent again, and Stripe's "succeeded" is the fact that counts.
    # From canceled as well: a tip is given up when its PaymentIntent's
    # creation cannot be confirmed (the key may be forgotten after 24 hours,
    # and Stripe cannot look a PaymentIntent up by it), yet an off-session
    # charge may have been made; a PaymentIntent Stripe canceled never
    # succeeds, so "succeeded" can only mean the customer was charged.
    @transition(
        field=status,
        source=[T.AWAITING_PAYMENT, T.PROCESSING, T.FAILED, T.CANCELED],
        target=T.PAID,
    )
    def mark_paid(self, charge_id: str = "") -> None:
        if charge_id:
            self.stripe_charge_id = charge_id
        self.failure_code = ""
        self.failure_message = ""
        self.paid_at = timezone.now()

    @transition(field=status, source=[T.AWAITING_PAYMENT, T.PROCESSING], target=T.FAILED)
    def mark_failed(self, code: str = "", message: str = "") -> None:
        self.failure_code = code[:255]
        self.failure_message = message

    @transition(
        field=status, source=[T.AWAITING_PAYMENT, T.PROCESSING, T.FAILED], target=T.CANCELED
    )
    def mark_canceled(self, code: str = "") -> None:
        if code:
            self.failure_code = code[:255]

    @transition(field=status, source=[T.PAID, T.TRANSFER_FAILED], target=T.TRANSFERRED)
    def mark_transferred(self) -> None:
        self.transferred_at = timezone.now()
        self.failure_code = ""
        self.failure_message = ""

    @transition(field=status, source=T.PAID, target=T.TRANSFER_FAILED)
    def mark_transfer_failed(self, code: str = "", message: str = "") -> None:
        self.failure_code = code[:255]
        self.failure_message = message

    @transition(field=status, source=T.TRANSFER_FAILED, target=T.PAID)
    def retry_transfer(self) -> None:
        """Staff (or the system) asked to send the failed transfer again."""

    # Refunded before anything was sent to a recipient (the caller checks
    # that no transfer is live): the tip is never transferred.
    @transition(field=status, source=[T.PAID, T.TRANSFER_FAILED], target=T.REFUNDED)
    def mark_refunded(self, amount_refunded: int) -> None:
        self.note_refunded(amount_refunded)

    def note_refunded(self, amount_refunded: int) -> None:
        """Record Stripe's running refund total (only ever higher; no state change)."""
        if amount_refunded > self.amount_refunded:
            self.amount_refunded = amount_refunded
            self.refunded_at = timezone.now()


class AbstractEscrowTipTransfer(AbstractStripeTransfer):
    """A tip's transfer to one recipient's connected account."""

    tip = models.ForeignKey(
        model_name("EscrowTip"),
        verbose_name=_("tip"),
        on_delete=models.PROTECT,
        related_name="transfers",
    )
    # A tip transfer is never reversed: pending, created or failed only.
    status = stripe_transfer_status(TipTransferStatus)

    str_label = "tip transfer"

    class Meta:
        abstract = True
        verbose_name = _("tip transfer")
        verbose_name_plural = _("tip transfers")
        ordering = ["created_at"]
        constraints = [
            *stripe_transfer_constraints("escrow_tip_transfer"),
            # Each recipient is paid a tip at most once, by the database:
            # only failed attempts can sit beside the live one.
            models.UniqueConstraint(
                fields=["tip", "destination_account_id"],
                condition=~Q(status=TipTransferStatus.FAILED),
                name="escrow_tip_transfer_one_live_per_recipient",
            ),
        ]
