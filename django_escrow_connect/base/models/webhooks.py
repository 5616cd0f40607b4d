"""The webhook event log."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from ...states import (
    WebhookEndpoint,
    WebhookEventStatus,
)

__all__ = ["AbstractWebhookEvent"]


# --------------------------------------------------------------------------
# Webhook event log
# --------------------------------------------------------------------------


class AbstractWebhookEvent(ConcurrentTransitionMixin, models.Model):
    """Every verified Stripe event, once. The unique id refuses duplicates."""

    # Unique and indexed through Meta, not the field: a field's unique=True or
    # db_index=True also brings a varchar_pattern_ops ("_like") index on
    # PostgreSQL, written on every insert and used by nothing here.
    stripe_event_id = models.CharField(_("Stripe event id"), max_length=255)
    type = models.CharField(_("type"), max_length=128)
    endpoint = models.CharField(_("endpoint"), max_length=16, choices=WebhookEndpoint.choices)
    account = models.CharField(
        _("connected account id"),
        max_length=255,
        blank=True,
        help_text=_(
            "The connected account (acct_...) of a Connect or thin account event; blank for "
            "the platform's."
        ),
    )
    livemode = models.BooleanField(_("live mode"), default=False)
    thin = models.BooleanField(
        _("thin event"),
        default=False,
        help_text=_(
            "A thin (v2) event: the payload names the related object, which is fetched "
            "from Stripe when the event is processed."
        ),
    )
    api_version = models.CharField(_("API version"), max_length=64, blank=True)
    object_id = models.CharField(
        _("object id"),
        max_length=255,
        blank=True,
        help_text=_("The id of the event's data.object (a thin event's related object)."),
    )
    stripe_created = models.DateTimeField(_("created at Stripe"), null=True, blank=True)
    # Null once purged after the retention period; the row (and so the
    # duplicate protection) stays.
    payload = models.JSONField(
        _("payload"),
        null=True,
        blank=True,
        help_text=_("The event as received; null once purged after the retention period."),
    )
    status = FSMField(
        _("status"),
        max_length=16,
        choices=WebhookEventStatus.choices,
        default=WebhookEventStatus.RECEIVED,
        protected=True,
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    payload_purged_at = models.DateTimeField(_("payload purged at"), null=True, blank=True)

    class Meta:
        abstract = True
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-received_at"]
        constraints = [
            # The receiver's INSERT ... ON CONFLICT (stripe_event_id) needs a
            # unique index on exactly this column.
            models.UniqueConstraint(
                fields=["stripe_event_id"], name="escrow_event_unique_stripe_id"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "received_at"], name="escrow_evt_status_idx"),
            models.Index(fields=["type"], name="escrow_evt_type_idx"),
            models.Index(fields=["account"], name="escrow_evt_account_idx"),
            models.Index(fields=["object_id"], name="escrow_evt_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_event_id} {self.type} ({self.status})"

    _PENDING = [
        WebhookEventStatus.RECEIVED,
        WebhookEventStatus.FAILED,
        WebhookEventStatus.DEFERRED,
    ]

    @transition(field=status, source=_PENDING, target=WebhookEventStatus.PROCESSED)
    def mark_processed(self) -> None:
        self.processed_at = timezone.now()
        self.last_error = ""

    @transition(field=status, source=_PENDING, target=WebhookEventStatus.FAILED)
    def mark_failed(self, error: str) -> None:
        self.last_error = error

    @transition(field=status, source=_PENDING, target=WebhookEventStatus.IGNORED)
    def mark_ignored(self, reason: str = "") -> None:
        self.processed_at = timezone.now()
        self.last_error = reason

    @transition(field=status, source=_PENDING, target=WebhookEventStatus.DEFERRED)
    def mark_deferred(self, reason: str) -> None:
        self.last_error = reason

    @transition(
        field=status,
        source=[WebhookEventStatus.PROCESSED, WebhookEventStatus.IGNORED],
        target=WebhookEventStatus.RECEIVED,
    )
    def reset_for_replay(self) -> None:
        """An operator asked to process this event again."""
