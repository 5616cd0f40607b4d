"""A task doer's Stripe Connect account."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition

from ...states import (
    AccountsApi,
    AccountStatus,
    BusinessType,
)
from ...swappable import model_name
from ._common import TimestampedModel

__all__ = ["AbstractConnectedAccount"]


# --------------------------------------------------------------------------
# Connected accounts
# --------------------------------------------------------------------------


class AbstractConnectedAccount(ConcurrentTransitionMixin, TimestampedModel):
    """A task doer's Stripe Connect account: owned by a user XOR an organization."""

    owner_user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner (user)"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escrow_connected_account",
    )
    owner_organization = models.OneToOneField(
        model_name("Organization"),
        verbose_name=_("owner (organization)"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escrow_connected_account",
    )
    # Blank until Stripe has created the account; the idempotency key is set
    # first, so a retry after a crash finds the account Stripe already made.
    stripe_account_id = models.CharField(
        _("Stripe account id"),
        max_length=255,
        blank=True,
        help_text=_("Stripe's id of the account (acct_...); blank until Stripe has created it."),
    )
    creation_idempotency_key = models.CharField(
        _("creation idempotency key"),
        max_length=255,
        help_text=_(
            "Sent with the create call: a retry after a crash finds the account Stripe made."
        ),
    )
    business_type = models.CharField(
        _("business type"), max_length=16, choices=BusinessType.choices
    )
    # Fixed when the row is made (ACCOUNTS_API at the time): the account is
    # read, linked and updated through the API that created it, whatever the
    # setting says later. Rows from before the setting existed are v1.
    accounts_api = models.CharField(
        _("accounts API"),
        max_length=2,
        choices=AccountsApi.choices,
        default=AccountsApi.V1,
        help_text=_("The Stripe Accounts API (v1 or v2) the account was created with."),
    )
    country = models.CharField(
        _("country"),
        max_length=2,
        blank=True,
        help_text=_("ISO 3166-1 alpha-2 code of the account's country."),
    )
    email = models.EmailField(_("email"), blank=True)
    livemode = models.BooleanField(
        _("live mode"), default=False, help_text=_("Off for an account made with a test-mode key.")
    )
    status = FSMField(
        _("status"),
        max_length=32,
        choices=AccountStatus.choices,
        default=AccountStatus.PENDING_VERIFICATION,
        protected=True,
        help_text=_("Derived from Stripe's requirements; changed by webhooks and syncs only."),
    )
    charges_enabled = models.BooleanField(_("charges enabled"), default=False)
    payouts_enabled = models.BooleanField(_("payouts enabled"), default=False)
    details_submitted = models.BooleanField(_("details submitted"), default=False)
    requirements_currently_due = models.JSONField(
        _("requirements currently due"),
        default=list,
        blank=True,
        help_text=_("Stripe's list of the information due now."),
    )
    requirements_eventually_due = models.JSONField(
        _("requirements eventually due"), default=list, blank=True
    )
    requirements_past_due = models.JSONField(
        _("requirements past due"),
        default=list,
        blank=True,
        help_text=_("Overdue information: Stripe disables charges or payouts until it is given."),
    )
    disabled_reason = models.CharField(
        _("disabled reason"),
        max_length=255,
        blank=True,
        help_text=_("Stripe's requirements.disabled_reason, if any."),
    )
    capabilities = models.JSONField(
        _("capabilities"),
        default=dict,
        blank=True,
        help_text=_("Stripe's capability states, by name."),
    )
    # When Stripe produced the data above (event ``created`` or fetch time):
    # an older account.updated never overwrites newer data.
    synced_at = models.DateTimeField(
        _("synced at"),
        null=True,
        blank=True,
        help_text=_(
            "When Stripe produced the data above; older updates never overwrite newer ones."
        ),
    )
    deauthorized_at = models.DateTimeField(
        _("deauthorized at"),
        null=True,
        blank=True,
        help_text=_("When the account disconnected from the platform."),
    )

    class Meta:
        abstract = True
        verbose_name = _("connected account")
        verbose_name_plural = _("connected accounts")
        # Uniqueness and indexes here rather than on the fields: no "_like"
        # index on PostgreSQL (see AbstractWebhookEvent).
        indexes = [models.Index(fields=["status"], name="escrow_account_status_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["creation_idempotency_key"], name="escrow_account_unique_creation_key"
            ),
            models.CheckConstraint(
                condition=(
                    Q(owner_user__isnull=False, owner_organization__isnull=True)
                    | Q(owner_user__isnull=True, owner_organization__isnull=False)
                ),
                name="escrow_account_owner_user_xor_organization",
            ),
            models.UniqueConstraint(
                fields=["stripe_account_id"],
                condition=~Q(stripe_account_id=""),
                name="escrow_account_unique_stripe_id",
            ),
        ]

    def __str__(self) -> str:
        return self.stripe_account_id or f"connected account {self.pk} (not created yet)"

    @property
    def owner(self) -> Any:
        return self.owner_user if self.owner_user_id is not None else self.owner_organization

    @property
    def is_created(self) -> bool:
        return bool(self.stripe_account_id)

    @property
    def is_deauthorized(self) -> bool:
        return bool(self.status == AccountStatus.DEAUTHORIZED)

    @property
    def can_transfer(self) -> bool:
        """Stripe will accept a transfer to this account."""
        return (
            self.is_created
            and not self.is_deauthorized
            and self.capabilities.get("transfers") == "active"
        )

    @property
    def is_verified(self) -> bool:
        return bool(self.status == AccountStatus.VERIFIED)

    def derived_status(self) -> str:
        """The state the synced Stripe data implies (deauthorization is sticky).

        Stripe marks a brand-new account ``disabled_reason =
        "requirements.past_due"`` with everything past due: until the owner has
        submitted onboarding that means "not onboarded yet", not "restricted".
        ``requirements.pending_verification`` means Stripe is checking what was
        submitted. A rejected account is restricted whatever else it says.
        """
        if self.is_deauthorized:
            return AccountStatus.DEAUTHORIZED
        return self._status_from_stripe_data()

    def _status_from_stripe_data(self) -> str:
        if self.disabled_reason.startswith("rejected."):
            return AccountStatus.RESTRICTED
        if not self.details_submitted:
            return AccountStatus.PENDING_VERIFICATION
        if self.requirements_past_due:
            return AccountStatus.RESTRICTED
        if self.disabled_reason == "requirements.pending_verification":
            return AccountStatus.PENDING_VERIFICATION
        if self.disabled_reason or not self.payouts_enabled:
            return AccountStatus.RESTRICTED
        if self.capabilities.get("transfers") == "active":
            return AccountStatus.VERIFIED
        return AccountStatus.PENDING_VERIFICATION

    @transition(
        field=status,
        source=[
            AccountStatus.PENDING_VERIFICATION,
            AccountStatus.VERIFIED,
            AccountStatus.RESTRICTED,
        ],
        target=RETURN_VALUE(
            AccountStatus.PENDING_VERIFICATION, AccountStatus.VERIFIED, AccountStatus.RESTRICTED
        ),
    )
    def apply_stripe_status(self) -> str:
        """Move to the state the freshly synced fields imply."""
        return self.derived_status()

    @transition(
        field=status,
        source=[
            AccountStatus.PENDING_VERIFICATION,
            AccountStatus.VERIFIED,
            AccountStatus.RESTRICTED,
        ],
        target=AccountStatus.DEAUTHORIZED,
    )
    def deauthorize(self) -> None:
        self.deauthorized_at = timezone.now()

    @transition(
        field=status,
        source=AccountStatus.DEAUTHORIZED,
        target=RETURN_VALUE(
            AccountStatus.PENDING_VERIFICATION, AccountStatus.VERIFIED, AccountStatus.RESTRICTED
        ),
    )
    def reauthorize(self) -> str:
        self.deauthorized_at = None
        # Still "deauthorized" while the transition runs: skip that check.
        return self._status_from_stripe_data()
