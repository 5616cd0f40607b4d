"""What every abstract model shares."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Length, Lower
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ...states import (
    PaymentStatus,
)

S = PaymentStatus


def _currency_constraint(prefix: str) -> models.CheckConstraint:
    """A currency is three lowercase letters, as Stripe sends it."""
    return models.CheckConstraint(
        condition=Q(Exact(Length("currency"), 3), currency=Lower("currency")),
        name=f"{prefix}_currency_iso_lower",
    )


class TimestampedModel(models.Model):
    """When a row was created and last changed."""

    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        abstract = True
