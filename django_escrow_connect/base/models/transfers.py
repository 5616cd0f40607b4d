"""Transfers to the payee's connected account, and their reversals."""

from __future__ import annotations

import copy
from typing import cast

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition

from ...states import (
    TransferReversalStatus,
    TransferStatus,
)
from ...swappable import model_name
from ._common import TimestampedModel, _currency_constraint

__all__ = [
    "AbstractStripeTransfer",
    "AbstractTransfer",
    "AbstractTransferReversal",
    "stripe_transfer_constraints",
    "stripe_transfer_status",
]


# --------------------------------------------------------------------------
# Transfers and reversals
# --------------------------------------------------------------------------


class AbstractStripeTransfer(ConcurrentTransitionMixin, TimestampedModel):
    """What every transfer to a connected account shares: a payment's or a tip's.

    The row exists (with its idempotency key) before Stripe is called; the
    transfer is then either created (with Stripe's id) or failed.
    """

    stripe_transfer_id = models.CharField(_("Stripe transfer id"), max_length=255, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=255)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    destination_account_id = models.CharField(_("destination account id"), max_length=255)
    status = FSMField(
        _("status"),
        max_length=32,
        choices=TransferStatus.choices,
        default=TransferStatus.PENDING,
        protected=True,
    )
    failure_code = models.CharField(_("failure code"), max_length=255, blank=True)
    failure_message = models.TextField(_("failure message"), blank=True)

    # What __str__ calls a row that has no Stripe id yet.
    str_label = "transfer"

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.stripe_transfer_id or f"{self.str_label} {self.pk} ({self.status})"

    @transition(field=status, source=TransferStatus.PENDING, target=TransferStatus.CREATED)
    def mark_created(self, stripe_transfer_id: str) -> None:
        self.stripe_transfer_id = stripe_transfer_id

    @transition(field=status, source=TransferStatus.PENDING, target=TransferStatus.FAILED)
    def mark_failed(self, code: str = "", message: str = "") -> None:
        self.failure_code = code[:255]
        self.failure_message = message


def stripe_transfer_status(choices: type[models.TextChoices]) -> FSMField:
    """The shared ``status`` field, narrowed to a subclass's own choices.

    A copy, not a new field: django-fsm hands a transition to a model's
    field only when the field is the one the transition was declared on, or
    a copy of it (same name and creation counter). A fresh ``FSMField`` would
    leave :meth:`AbstractStripeTransfer.mark_created` and ``mark_failed``
    unknown to the subclass's ``get_available_status_transitions``.
    ``choices`` must keep the base's pending/created/failed values.
    """
    field = cast(FSMField, copy.deepcopy(AbstractStripeTransfer._meta.get_field("status")))
    field.choices = list(choices.choices)
    field.default = choices("pending")
    return field


def stripe_transfer_constraints(prefix: str) -> list[models.BaseConstraint]:
    """The constraints every transfer table has, named after ``prefix``."""
    return [
        # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
        models.UniqueConstraint(
            fields=["idempotency_key"], name=f"{prefix}_unique_idempotency_key"
        ),
        models.CheckConstraint(condition=Q(amount__gt=0), name=f"{prefix}_amount_positive"),
        _currency_constraint(prefix),
        models.UniqueConstraint(
            fields=["stripe_transfer_id"],
            condition=~Q(stripe_transfer_id=""),
            name=f"{prefix}_unique_stripe_id",
        ),
    ]


class AbstractTransfer(AbstractStripeTransfer):
    """Money sent from the platform to the payee's connected account."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="transfers",
    )
    # Set only on a split payment's transfers (one per release and payee).
    release = models.ForeignKey(
        model_name("EscrowRelease"),
        verbose_name=_("release"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transfers",
    )
    payee = models.ForeignKey(
        model_name("EscrowPayee"),
        verbose_name=_("payee"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transfers",
    )
    amount_reversed = models.BigIntegerField(_("amount reversed (minor units)"), default=0)
    source_transaction = models.CharField(
        _("source transaction"),
        max_length=255,
        blank=True,
        help_text=_("The charge the transfer is funded from (source_transaction)."),
    )

    class Meta:
        abstract = True
        verbose_name = _("transfer")
        verbose_name_plural = _("transfers")
        indexes = [
            # A payout.failed finds the payment that most recently paid the
            # account (services.stripe_objects._latest_payment_to): its sent
            # transfers, newest first; the first index row is the answer.
            models.Index(
                fields=["destination_account_id", "status", "-created_at"],
                name="escrow_transfer_dest_idx",
            ),
        ]
        constraints = [
            *stripe_transfer_constraints("escrow_transfer"),
            models.CheckConstraint(
                condition=Q(amount_reversed__gte=0) & Q(amount_reversed__lte=F("amount")),
                name="escrow_transfer_reversed_within_amount",
            ),
            # Exactly-once release, enforced by the database: a payment
            # released in one transfer has at most one that did not fail ...
            models.UniqueConstraint(
                fields=["payment"],
                condition=~Q(status=TransferStatus.FAILED) & Q(release__isnull=True),
                name="escrow_transfer_one_live_per_payment",
            ),
            # ... and a split payment at most one per release and payee.
            models.UniqueConstraint(
                fields=["release", "payee"],
                condition=~Q(status=TransferStatus.FAILED) & Q(release__isnull=False),
                name="escrow_transfer_one_live_per_release_payee",
            ),
            models.CheckConstraint(
                condition=Q(release__isnull=True) | Q(payee__isnull=False),
                name="escrow_transfer_release_has_payee",
            ),
        ]

    # By name: the field object belongs to the base (see stripe_transfer_status).
    @transition(
        field="status",
        source=[TransferStatus.CREATED, TransferStatus.PARTIALLY_REVERSED],
        target=RETURN_VALUE(TransferStatus.PARTIALLY_REVERSED, TransferStatus.REVERSED),
    )
    def apply_reversed_total(self, amount_reversed: int) -> str:
        """Stripe's running total of reversals (never decreases)."""
        self.amount_reversed = max(self.amount_reversed, min(amount_reversed, self.amount))
        if self.amount_reversed >= self.amount:
            return TransferStatus.REVERSED
        return TransferStatus.PARTIALLY_REVERSED


class AbstractTransferReversal(ConcurrentTransitionMixin, TimestampedModel):
    """Money pulled back from the payee's account (before a refund after release)."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="transfer_reversals",
    )
    stripe_transfer_id = models.CharField(_("Stripe transfer id"), max_length=255)
    stripe_reversal_id = models.CharField(_("Stripe reversal id"), max_length=255, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=255)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    status = FSMField(
        _("status"),
        max_length=32,
        choices=TransferReversalStatus.choices,
        default=TransferReversalStatus.PENDING,
        protected=True,
    )
    failure_code = models.CharField(_("failure code"), max_length=255, blank=True)
    failure_message = models.TextField(_("failure message"), blank=True)

    class Meta:
        abstract = True
        verbose_name = _("transfer reversal")
        verbose_name_plural = _("transfer reversals")
        constraints = [
            # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
            models.UniqueConstraint(
                fields=["idempotency_key"], name="escrow_reversal_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="escrow_reversal_amount_positive"
            ),
            _currency_constraint("escrow_reversal"),
            models.UniqueConstraint(
                fields=["stripe_reversal_id"],
                condition=~Q(stripe_reversal_id=""),
                name="escrow_reversal_unique_stripe_id",
            ),
        ]

    def __str__(self) -> str:
        return self.stripe_reversal_id or f"reversal {self.pk} ({self.status})"

    @transition(
        field=status, source=TransferReversalStatus.PENDING, target=TransferReversalStatus.SUCCEEDED
    )
    def mark_succeeded(self, stripe_reversal_id: str) -> None:
        self.stripe_reversal_id = stripe_reversal_id

    @transition(
        field=status, source=TransferReversalStatus.PENDING, target=TransferReversalStatus.FAILED
    )
    def mark_failed(self, code: str = "", message: str = "") -> None:
        self.failure_code = code[:255]
        self.failure_message = message
