"""The audit trail of what staff did from the admin."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from ...states import StaffActionKind, StaffActionOutcome
from ...swappable import model_name
from ._common import TimestampedModel

__all__ = ["AbstractStaffAction"]


class AbstractStaffAction(TimestampedModel):
    """One attempt by a staff member to act from the admin, refused ones too.

    Written after the service call, in its own transaction: the record of an
    attempt never shares a transaction with the money call it describes.
    """

    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("staff member"),
        # Who moved money must stay answerable: the user cannot be deleted.
        on_delete=models.PROTECT,
        related_name="escrow_staff_actions",
    )
    action = models.CharField(_("action"), max_length=32, choices=StaffActionKind.choices)
    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="staff_actions",
        null=True,
        blank=True,
    )
    # Incidents live in two models (payment, transfer), either of which can be
    # swapped: the label and primary key name one without a foreign key.
    incident_model = models.CharField(_("incident model"), max_length=100, blank=True)
    incident_id = models.CharField(_("incident id"), max_length=64, blank=True)
    account_id = models.CharField(_("Stripe account id"), max_length=255, blank=True)
    amount = models.BigIntegerField(_("amount (minor units)"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, blank=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=StaffActionOutcome.choices)
    code = models.CharField(
        _("code"), max_length=255, blank=True, help_text=_("The service's error code.")
    )
    message = models.TextField(_("message"), blank=True)
    note = models.TextField(_("note"), blank=True)

    class Meta:
        abstract = True
        verbose_name = _("staff action")
        verbose_name_plural = _("staff actions")
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["incident_model", "incident_id"], name="escrow_staff_incident_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.staff}: {self.get_outcome_display()}"
