"""The money-operation journal: one row per call to Stripe that moves money."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from ...states import (
    MoneyOperationKind,
    MoneyOperationStatus,
)
from ...swappable import model_name
from ._common import TimestampedModel

__all__ = ["AbstractMoneyOperation"]


# --------------------------------------------------------------------------
# The operation journal: one row per money call to Stripe
# --------------------------------------------------------------------------

_UNRESOLVED = [MoneyOperationStatus.PENDING, MoneyOperationStatus.UNKNOWN]


class AbstractMoneyOperation(ConcurrentTransitionMixin, TimestampedModel):
    """One call to Stripe that creates a payment or moves its money.

    The row is committed, with its idempotency key and the exact request, in
    a transaction of its own *before* Stripe is called; the outcome is
    committed in another one after the call. A crash between the two leaves
    the row ``pending``: a retry, a webhook or ``escrow_reconcile`` finds it
    and finishes it from Stripe's facts (see docs/recovery.md). A payment has
    at most one unresolved (pending or unknown) operation at a time.
    """

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="operations",
    )
    kind = models.CharField(_("kind"), max_length=32, choices=MoneyOperationKind.choices)
    idempotency_key = models.CharField(_("idempotency key"), max_length=255)
    # Advances only after Stripe definitely refused (or errored on) the
    # previous attempt: the next attempt needs a new key.
    attempt = models.PositiveIntegerField(_("attempt"), default=0)
    amount = models.BigIntegerField(_("amount (minor units)"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, blank=True)
    status = FSMField(
        _("status"),
        max_length=16,
        choices=MoneyOperationStatus.choices,
        default=MoneyOperationStatus.PENDING,
        protected=True,
    )
    # The gateway method's keyword arguments, sent again unchanged on a retry
    # (Stripe refuses a key reused with other parameters). No secrets.
    request = models.JSONField(_("request"), default=dict, blank=True)
    # What the use case does once this operation succeeded, committed with
    # it: a reversal carries the refund it makes room for ({"refund": amount,
    # "reason": ...}), so a crash between the two cannot lose the refund.
    follow_up = models.JSONField(_("follow-up"), default=dict, blank=True)
    # The object the call targets (a transfer to reverse, a PaymentIntent).
    target_id = models.CharField(_("target Stripe id"), max_length=255, blank=True)
    stripe_object_id = models.CharField(_("Stripe object id"), max_length=255, blank=True)
    stripe_request_id = models.CharField(_("Stripe request id"), max_length=255, blank=True)
    error_code = models.CharField(_("error code"), max_length=255, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    # Stripe's Stripe-Should-Retry answer to the last call (None: not sent).
    should_retry = models.BooleanField(_("Stripe-Should-Retry"), null=True, blank=True)
    # How often the call was sent (a retry with the same key counts).
    sent_count = models.PositiveIntegerField(_("times sent"), default=0)
    # Until then the call may still be running in another process: nobody
    # else decides the operation did not happen.
    lease_expires_at = models.DateTimeField(_("in flight until"), null=True, blank=True)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # The client's Idempotency-Key of the API request that began this
    # operation, on every operation that request begins (a refund's
    # reversals and the refund, an operation restarted under a new Stripe
    # key): a retry of the request finds them and answers instead of
    # refunding or tipping again. Opaque, never sent to Stripe; kept as
    # long as the row. Empty: no key was sent.
    request_key = models.CharField(
        _("client request key"),
        max_length=255,
        blank=True,
        default="",
        help_text=_(
            "The Idempotency-Key header of the API request that began this operation "
            "(empty: none was sent)."
        ),
    )

    class Meta:
        abstract = True
        verbose_name = _("money operation")
        verbose_name_plural = _("money operations")
        ordering = ["-created_at"]
        constraints = [
            # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
            models.UniqueConstraint(
                fields=["idempotency_key"], name="escrow_operation_unique_idempotency_key"
            ),
            # Two money operations on one payment are never in flight at once.
            models.UniqueConstraint(
                fields=["payment"],
                condition=Q(status__in=_UNRESOLVED),
                name="escrow_operation_one_unresolved_per_payment",
            ),
            models.CheckConstraint(
                condition=Q(amount__isnull=True) | Q(amount__gt=0),
                name="escrow_operation_amount_positive",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="escrow_op_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.idempotency_key} ({self.status})"

    @property
    def is_unresolved(self) -> bool:
        return self.status in _UNRESOLVED

    @transition(field=status, source=_UNRESOLVED, target=MoneyOperationStatus.SUCCEEDED)
    def mark_succeeded(self, stripe_object_id: str = "", stripe_request_id: str = "") -> None:
        if stripe_object_id:
            self.stripe_object_id = stripe_object_id
        if stripe_request_id:
            self.stripe_request_id = stripe_request_id
        self.completed_at = timezone.now()
        self.lease_expires_at = None

    @transition(field=status, source=_UNRESOLVED, target=MoneyOperationStatus.FAILED)
    def mark_failed(
        self,
        code: str = "",
        message: str = "",
        *,
        http_status: int | None = None,
        stripe_request_id: str = "",
    ) -> None:
        self.error_code = code[:255]
        self.error_message = message
        self.http_status = http_status
        if stripe_request_id:
            self.stripe_request_id = stripe_request_id
        self.completed_at = timezone.now()
        self.lease_expires_at = None

    @transition(field=status, source=_UNRESOLVED, target=MoneyOperationStatus.UNKNOWN)
    def mark_unknown(
        self,
        code: str = "",
        message: str = "",
        *,
        http_status: int | None = None,
        stripe_request_id: str = "",
        should_retry: bool | None = None,
    ) -> None:
        self.error_code = code[:255]
        self.error_message = message
        self.http_status = http_status
        self.should_retry = should_retry
        if stripe_request_id:
            self.stripe_request_id = stripe_request_id

    @transition(field=status, source=_UNRESOLVED, target=MoneyOperationStatus.PENDING)
    def mark_sending(self, lease_expires_at: Any) -> None:
        """The call is about to be sent (again, with the same key)."""
        self.sent_count += 1
        self.lease_expires_at = lease_expires_at
