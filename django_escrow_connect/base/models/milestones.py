"""Milestones, payees and releases: a payment released in parts, to several payees.

Only payments whose terms list milestones or several payees have these rows
(see docs/milestones.md and docs/splits.md); a payment without them is
released in one transfer to ``payment.payee`` as it always was.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from ...states import MilestoneStatus, ReleaseStatus
from ...swappable import model_name
from ._common import TimestampedModel, _currency_constraint

__all__ = ["AbstractEscrowMilestone", "AbstractEscrowPayee", "AbstractEscrowRelease"]

M = MilestoneStatus


class AbstractEscrowMilestone(ConcurrentTransitionMixin, TimestampedModel):
    """One part of a payment's amount, released on its own (from the terms)."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="milestones",
        db_index=False,  # escrow_milestone_unique_position (payment, position) leads with it
    )
    position = models.PositiveSmallIntegerField(_("position"))
    name = models.CharField(_("name"), max_length=255)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    due_date = models.DateField(_("due date"), null=True, blank=True)
    auto_release_after = models.DurationField(
        _("auto-release after"),
        null=True,
        blank=True,
        help_text=_("Released this long after the doer marked it delivered (empty: never)."),
    )
    status = FSMField(
        _("status"),
        max_length=32,
        choices=MilestoneStatus.choices,
        default=MilestoneStatus.HELD,
        protected=True,
    )
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)

    class Meta:
        abstract = True
        verbose_name = _("milestone")
        verbose_name_plural = _("milestones")
        ordering = ["payment", "position"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="escrow_milestone_amount_positive"
            ),
            _currency_constraint("escrow_milestone"),
            models.UniqueConstraint(
                fields=["payment", "position"], name="escrow_milestone_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @transition(field=status, source=M.HELD, target=M.DELIVERED)
    def mark_delivered(self) -> None:
        """The doer says the work is done; starts ``auto_release_after``."""
        self.delivered_at = timezone.now()

    @transition(field=status, source=[M.HELD, M.DELIVERED], target=M.RELEASED)
    def mark_released(self) -> None:
        self.released_at = timezone.now()

    @transition(field=status, source=[M.HELD, M.DELIVERED], target=M.REFUNDED)
    def mark_refunded(self) -> None:
        """Its money went back to the customer before it was released."""

    @property
    def auto_release_at(self) -> Any:
        if self.auto_release_after is None or self.delivered_at is None:
            return None
        return self.delivered_at + self.auto_release_after


class AbstractEscrowPayee(TimestampedModel):
    """One payee of a split payment and their share of every release."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="payees",
        db_index=False,  # escrow_payee_unique_position (payment, position) leads with it
    )
    position = models.PositiveSmallIntegerField(_("position"))
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    organization = models.ForeignKey(
        model_name("Organization"),
        verbose_name=_("organization"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    basis_points = models.PositiveIntegerField(_("basis points"), null=True, blank=True)
    amount = models.BigIntegerField(_("amount (minor units)"), null=True, blank=True)
    destination_account_id = models.CharField(
        _("destination account id"),
        max_length=255,
        blank=True,
        help_text=_("The payee's Stripe account (acct_...) when the payment was made."),
    )

    class Meta:
        abstract = True
        verbose_name = _("payee")
        verbose_name_plural = _("payees")
        ordering = ["payment", "position"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(user__isnull=False, organization__isnull=True)
                    | Q(user__isnull=True, organization__isnull=False)
                ),
                name="escrow_payee_user_xor_organization",
            ),
            models.CheckConstraint(
                condition=(
                    Q(basis_points__isnull=False, amount__isnull=True, basis_points__gt=0)
                    | Q(basis_points__isnull=True, amount__isnull=False, amount__gt=0)
                ),
                name="escrow_payee_one_positive_share",
            ),
            models.UniqueConstraint(
                fields=["payment", "position"], name="escrow_payee_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return str(self.party)

    @property
    def party(self) -> Any:
        return self.user if self.user_id is not None else self.organization

    @property
    def weight(self) -> int:
        return int(self.basis_points if self.basis_points is not None else self.amount or 0)


class AbstractEscrowRelease(TimestampedModel):
    """One release of a split payment: a milestone, an amount, or the rest.

    Its gross amount, fee and per-payee allocation are fixed when it is
    created (before any transfer): a retry resends the same amounts.
    """

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="releases",
        db_index=False,  # escrow_release_unique_position (payment, position) leads with it
    )
    milestone = models.ForeignKey(
        model_name("EscrowMilestone"),
        verbose_name=_("milestone"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="releases",
    )
    position = models.PositiveSmallIntegerField(_("position"))
    amount = models.BigIntegerField(
        _("amount (minor units)"), help_text=_("Gross: what the release takes out of escrow.")
    )
    platform_fee = models.BigIntegerField(_("platform fee (minor units)"), default=0)
    currency = models.CharField(_("currency"), max_length=3)
    #: ``{payee id: minor units}``: each payee's transfer of this release.
    allocations = models.JSONField(_("allocations"), default=dict)
    status = FSMField(
        _("status"),
        max_length=32,
        choices=ReleaseStatus.choices,
        default=ReleaseStatus.PENDING,
        protected=True,
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)

    class Meta:
        abstract = True
        verbose_name = _("release")
        verbose_name_plural = _("releases")
        ordering = ["payment", "position"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="escrow_release_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(platform_fee__gte=0) & Q(platform_fee__lte=F("amount")),
                name="escrow_release_fee_within_amount",
            ),
            _currency_constraint("escrow_release"),
            models.UniqueConstraint(
                fields=["payment", "position"], name="escrow_release_unique_position"
            ),
            # A milestone is released once.
            models.UniqueConstraint(
                fields=["milestone"],
                condition=Q(milestone__isnull=False),
                name="escrow_release_one_per_milestone",
            ),
        ]

    def __str__(self) -> str:
        return f"release {self.position} of {self.payment_id} ({self.status})"

    @property
    def net(self) -> int:
        return int(self.amount - self.platform_fee)

    @transition(field=status, source=ReleaseStatus.PENDING, target=ReleaseStatus.RELEASED)
    def mark_released(self) -> None:
        self.released_at = timezone.now()

    @transition(field=status, source=ReleaseStatus.PENDING, target=ReleaseStatus.CANCELED)
    def mark_canceled(self) -> None:
        """The payment's void settled it: none of its transfers was made, and none can be."""
