"""Refunds and disputes of a payment's charge."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition

from ...states import (
    DISPUTE_APPEAL_STATES,
    DISPUTE_CLOSED_STATES,
    DisputeStatus,
    RefundStatus,
)
from ...swappable import model_name
from ._common import TimestampedModel, _currency_constraint

__all__ = ["AbstractDispute", "AbstractRefund"]


# --------------------------------------------------------------------------
# Refunds and disputes
# --------------------------------------------------------------------------


class AbstractRefund(ConcurrentTransitionMixin, TimestampedModel):
    """A refund of (part of) a payment, as Stripe reports it."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="refunds",
    )
    stripe_refund_id = models.CharField(_("Stripe refund id"), max_length=255, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=255)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    status = FSMField(
        _("status"),
        max_length=32,
        choices=RefundStatus.choices,
        default=RefundStatus.PENDING,
        protected=True,
    )
    reason = models.CharField(_("reason"), max_length=64, blank=True)
    failure_reason = models.CharField(_("failure reason"), max_length=255, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        abstract = True
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        constraints = [
            # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
            models.UniqueConstraint(
                fields=["idempotency_key"], name="escrow_refund_unique_idempotency_key"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="escrow_refund_amount_positive"),
            _currency_constraint("escrow_refund"),
            models.UniqueConstraint(
                fields=["stripe_refund_id"],
                condition=~Q(stripe_refund_id=""),
                name="escrow_refund_unique_stripe_id",
            ),
        ]

    def __str__(self) -> str:
        return self.stripe_refund_id or f"refund {self.pk} ({self.status})"

    @transition(
        field=status,
        # A card refund can still fail after it succeeded (refund.failed,
        # e.g. the card account was closed), so succeeded is not final.
        source=[RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED],
        target=RETURN_VALUE(
            RefundStatus.PENDING,
            RefundStatus.REQUIRES_ACTION,
            RefundStatus.SUCCEEDED,
            RefundStatus.FAILED,
            RefundStatus.CANCELED,
        ),
    )
    def apply_stripe_status(self, stripe_status: str, failure_reason: str = "") -> str:
        if failure_reason:
            self.failure_reason = failure_reason[:255]
        return stripe_status


def _dispute_not_final(dispute: AbstractDispute) -> bool:
    return not dispute.is_final


class AbstractDispute(ConcurrentTransitionMixin, TimestampedModel):
    """A dispute (or inquiry) of a payment's charge or of its tip's; freezes release while open."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="disputes",
    )
    # A tip's charge is disputed on the tip's payment (docs/tips.md), but it
    # never moves the payment: this tells the two apart without matching
    # charge ids. Null for the payment's own charge.
    tip = models.ForeignKey(
        model_name("EscrowTip"),
        verbose_name=_("tip"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="disputes",
        help_text=_(
            "The tip whose charge is disputed; empty for a dispute of the payment's own charge."
        ),
    )
    stripe_dispute_id = models.CharField(_("Stripe dispute id"), max_length=255)
    stripe_charge_id = models.CharField(_("Stripe charge id"), max_length=255)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    status = FSMField(_("status"), max_length=32, choices=DisputeStatus.choices, protected=True)
    reason = models.CharField(_("reason"), max_length=64, blank=True)
    evidence_due_by = models.DateTimeField(_("evidence due by"), null=True, blank=True)
    # On separate charges a dispute debits the platform's balance, never the
    # payees' transfers: this records which releases were already out.
    released_when_opened = models.JSONField(
        _("released when opened"),
        default=dict,
        blank=True,
        help_text=_(
            "A payment released in parts: the releases and transfers already made when "
            "the dispute opened (Stripe debits the platform, not these transfers)."
        ),
    )
    funds_withdrawn = models.BigIntegerField(_("funds withdrawn (minor units)"), default=0)
    funds_reinstated = models.BigIntegerField(_("funds reinstated (minor units)"), default=0)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)
    # When the lost dispute's appeal began (the first appeal event's time):
    # a ``lost`` older than this is the first loss, delivered late; a newer
    # one is the appeal's final outcome.
    appealed_at = models.DateTimeField(
        _("appealed at"),
        null=True,
        blank=True,
        help_text=_("When the appeal of the lost dispute began."),
    )

    class Meta:
        abstract = True
        verbose_name = _("dispute")
        verbose_name_plural = _("disputes")
        constraints = [
            # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
            models.UniqueConstraint(
                fields=["stripe_dispute_id"], name="escrow_dispute_unique_stripe_id"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="escrow_dispute_amount_nonneg"),
            models.CheckConstraint(
                condition=Q(funds_withdrawn__gte=0) & Q(funds_reinstated__gte=0),
                name="escrow_dispute_funds_nonneg",
            ),
            _currency_constraint("escrow_dispute"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_dispute_id} ({self.status})"

    @property
    def is_open(self) -> bool:
        """Not decided yet: a first-round dispute, or an appeal under way."""
        return self.status not in DISPUTE_CLOSED_STATES

    @property
    def is_appealed(self) -> bool:
        return self.appealed_at is not None

    @property
    def is_final(self) -> bool:
        """Closed for good: anything closed but a ``lost`` that has not been appealed yet."""
        if self.is_open:
            return False
        return self.status != DisputeStatus.LOST or self.is_appealed

    @transition(
        field=status,
        source=[
            DisputeStatus.WARNING_NEEDS_RESPONSE,
            DisputeStatus.WARNING_UNDER_REVIEW,
            DisputeStatus.NEEDS_RESPONSE,
            DisputeStatus.UNDER_REVIEW,
            # A lost dispute may be appealed (endive), and the appeal decided.
            DisputeStatus.LOST,
            DisputeStatus.APPEAL_NEEDS_RESPONSE,
            DisputeStatus.APPEAL_UNDER_REVIEW,
        ],
        target=RETURN_VALUE(*DisputeStatus.values),
        conditions=[_dispute_not_final],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def apply_stripe_status(self, stripe_status: str, as_of: datetime | None = None) -> str:
        """Stripe's new status; ``as_of`` is when Stripe reported it (an event's time)."""
        appealing = stripe_status in DISPUTE_APPEAL_STATES or self.status == DisputeStatus.LOST
        if appealing and self.appealed_at is None:
            # An appeal began (or was decided before its first event arrived).
            self.appealed_at = as_of or timezone.now()
        if stripe_status in DISPUTE_CLOSED_STATES:
            self.closed_at = timezone.now()
        else:
            self.closed_at = None
        return stripe_status
