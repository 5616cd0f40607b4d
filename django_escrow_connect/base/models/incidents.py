"""Incidents: what went wrong and needs a person."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from ...states import (
    IncidentKind,
)
from ...swappable import model_name
from ._common import TimestampedModel

__all__ = ["AbstractIncident", "AbstractPaymentIncident", "AbstractTransferIncident"]


# --------------------------------------------------------------------------
# Incidents: the audit trail of what went wrong
# --------------------------------------------------------------------------


class AbstractIncident(TimestampedModel):
    """Something that went wrong and needs a person: recorded, never silently retried."""

    kind = models.CharField(_("kind"), max_length=32, choices=IncidentKind.choices)
    code = models.CharField(
        _("code"), max_length=255, blank=True, help_text=_("Stripe's error or failure code.")
    )
    decline_code = models.CharField(_("decline code"), max_length=255, blank=True)
    message = models.TextField(_("message"), blank=True)
    stripe_request_id = models.CharField(_("Stripe request id"), max_length=255, blank=True)
    stripe_event_id = models.CharField(_("Stripe event id"), max_length=255, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)

    class Meta:
        abstract = True


class AbstractPaymentIncident(AbstractIncident):
    """An incident about a payment (failed charge, amount mismatch, Radar hold, ...)."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="incidents",
    )
    stripe_payment_intent_id = models.CharField(
        _("Stripe PaymentIntent id"), max_length=255, blank=True
    )
    # The Stripe object the incident is about when it is not the payment
    # itself: a Radar review (prv_...) or an early fraud warning (issfr_...).
    stripe_object_id = models.CharField(
        _("Stripe object id"),
        max_length=255,
        blank=True,
        help_text=_(
            "What the incident is about when not the payment: a Radar review, a fraud warning."
        ),
    )

    class Meta(AbstractIncident.Meta):
        abstract = True
        verbose_name = _("payment incident")
        verbose_name_plural = _("payment incidents")
        # Indexed here rather than db_index=True: no "_like" index on
        # PostgreSQL (see AbstractWebhookEvent).
        indexes = [models.Index(fields=["stripe_object_id"], name="escrow_incident_object_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.code or self.message[:40]}"


class AbstractTransferIncident(AbstractIncident):
    """An incident about a transfer to a payee (refused, failed, reversed outside the app)."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="transfer_incidents",
    )
    stripe_transfer_id = models.CharField(_("Stripe transfer id"), max_length=255, blank=True)
    stripe_payout_id = models.CharField(_("Stripe payout id"), max_length=255, blank=True)
    destination_account_id = models.CharField(
        _("destination account id"), max_length=255, blank=True
    )
    amount = models.BigIntegerField(_("amount (minor units)"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, blank=True)

    class Meta(AbstractIncident.Meta):
        abstract = True
        verbose_name = _("transfer incident")
        verbose_name_plural = _("transfer incidents")
        indexes = [
            # A payout.failed looks for its own incident first (Stripe sends
            # payout.updated with it). Not a partial index (payout ids only):
            # SQLite would not use it for ``stripe_payout_id = 'po_...'``.
            models.Index(fields=["stripe_payout_id"], name="escrow_incident_payout_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.code or self.message[:40]}"
