"""Abstract bases of every model the package stores.

A host that needs an extra field subclasses one of these and names its model
in ``ESCROW_CONNECT_<MODEL>_MODEL`` (see "Model settings" in docs/settings.md).
The concrete defaults live in :mod:`django_escrow_connect.models`.

Why the foreign keys run the way they do: only :class:`AbstractEscrowPayment`
is pointed at by other library models, and it points at no library model
itself (the payee's Stripe account is kept as its id). That keeps a host that
swaps the payment model free of circular migration dependencies.

Transitions here only change state and the fields that describe it; they do
no I/O. Services (``services/``) lock rows, call the gateway, apply these
transitions, save and notify on commit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length, Lower
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition

from .. import permissions
from ..states import (
    DISPUTE_APPEAL_STATES,
    DISPUTE_CLOSED_STATES,
    AccountStatus,
    BusinessType,
    DisputeStatus,
    EscrowStrategy,
    IncidentKind,
    MoneyOperationKind,
    MoneyOperationStatus,
    PaymentStatus,
    RefundStatus,
    TaskPaymentStatus,
    TransferReversalStatus,
    TransferStatus,
    WebhookEndpoint,
    WebhookEventStatus,
)
from ..swappable import model_name

__all__ = [
    "AbstractConnectedAccount",
    "AbstractDispute",
    "AbstractEscrowPayment",
    "AbstractIncident",
    "AbstractMoneyOperation",
    "AbstractOrganizationPlaceholder",
    "AbstractPaymentIncident",
    "AbstractRefund",
    "AbstractTransfer",
    "AbstractTransferIncident",
    "AbstractTransferReversal",
    "AbstractWebhookEvent",
    "EscrowTaskMixin",
    "TimestampedModel",
]

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


# --------------------------------------------------------------------------
# Host task mixin
# --------------------------------------------------------------------------


class EscrowTaskMixin(ConcurrentTransitionMixin, models.Model):
    """Mix into the host's task model: the task's side of the payment.

    ``payment_status`` is kept in step with the task's escrow payment by the
    services; hosts read it, never write it. The host implements
    :meth:`get_escrow_terms` (or names an adapter in
    ``ESCROW_CONNECT["PAYMENT_TERMS"]``) to say who pays whom and how much.
    """

    payment_status = FSMField(
        _("payment status"),
        max_length=32,
        choices=TaskPaymentStatus.choices,
        default=TaskPaymentStatus.PENDING_PAYMENT,
        protected=True,
        db_index=True,
    )

    class Meta:
        abstract = True

    def get_escrow_terms(self) -> Any:
        """Return :class:`django_escrow_connect.terms.EscrowTerms` for this task.

        Raise :class:`django_escrow_connect.terms.TermsUnavailable` while the
        task cannot be paid for (no accepted bid, already paid, ...).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_escrow_terms(), or set "
            'ESCROW_CONNECT["PAYMENT_TERMS"] to an adapter.'
        )

    @transition(
        field=payment_status,
        source=[TaskPaymentStatus.PENDING_PAYMENT, TaskPaymentStatus.PAYMENT_FAILED],
        target=TaskPaymentStatus.PAYMENT_IN_ESCROW,
    )
    def mark_payment_in_escrow(self) -> None:
        pass

    @transition(
        field=payment_status,
        # From refunded: a released payment's lost dispute, appealed and won.
        source=[TaskPaymentStatus.PAYMENT_IN_ESCROW, TaskPaymentStatus.REFUNDED],
        target=TaskPaymentStatus.PAYMENT_RELEASED,
    )
    def mark_payment_released(self) -> None:
        pass

    @transition(
        field=payment_status,
        source=TaskPaymentStatus.PENDING_PAYMENT,
        target=TaskPaymentStatus.PAYMENT_FAILED,
    )
    def mark_payment_failed(self) -> None:
        pass

    @transition(
        field=payment_status,
        source=[TaskPaymentStatus.PAYMENT_IN_ESCROW, TaskPaymentStatus.PAYMENT_RELEASED],
        target=TaskPaymentStatus.REFUNDED,
    )
    def mark_payment_refunded(self) -> None:
        pass

    @transition(
        field=payment_status,
        source=[TaskPaymentStatus.PAYMENT_FAILED, TaskPaymentStatus.PAYMENT_IN_ESCROW],
        target=TaskPaymentStatus.PENDING_PAYMENT,
    )
    def mark_payment_pending(self) -> None:
        """A canceled payment (or a lapsed hold) leaves the task to be paid again."""

    @transition(
        field=payment_status,
        source=[TaskPaymentStatus.PAYMENT_RELEASED, TaskPaymentStatus.REFUNDED],
        target=TaskPaymentStatus.PAYMENT_IN_ESCROW,
    )
    def mark_payment_returned_to_escrow(self) -> None:
        """A failed refund, or a release undone by reconciliation."""


# --------------------------------------------------------------------------
# Organization placeholder
# --------------------------------------------------------------------------


class AbstractOrganizationPlaceholder(models.Model):
    """Stands in for the host's organization model when the host has none.

    Nothing in the library creates rows in it; its only cost is one empty
    table. Set ``ESCROW_CONNECT_ORGANIZATION_MODEL`` to your own model instead.
    """

    class Meta:
        abstract = True


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
        unique=True,
        help_text=_(
            "Sent with the create call: a retry after a crash finds the account Stripe made."
        ),
    )
    business_type = models.CharField(
        _("business type"), max_length=16, choices=BusinessType.choices
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
        db_index=True,
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
        constraints = [
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


# --------------------------------------------------------------------------
# Escrow payments
# --------------------------------------------------------------------------


def _no_open_dispute(payment: AbstractEscrowPayment) -> bool:
    return bool(payment.status != S.DISPUTED)


def _fully_refundable_left(payment: AbstractEscrowPayment) -> bool:
    return payment.amount_refunded < payment.amount


def _nothing_captured(payment: AbstractEscrowPayment) -> bool:
    # A held manual-capture payment is an authorisation, which can be voided;
    # money captured by a separate charge goes back by a refund instead.
    return payment.status != S.HELD or payment.is_manual_capture


class AbstractEscrowPayment(ConcurrentTransitionMixin, TimestampedModel):
    """One customer payment for one task, held until released or refunded."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.ForeignKey(
        model_name("Task"),
        verbose_name=_("task"),
        on_delete=models.PROTECT,
        related_name="escrow_payments",
    )
    payer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("payer"),
        on_delete=models.PROTECT,
        related_name="escrow_payments_made",
    )
    payee_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("payee (user)"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escrow_payments_received",
    )
    payee_organization = models.ForeignKey(
        model_name("Organization"),
        verbose_name=_("payee (organization)"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escrow_payments_received",
    )
    # The payee's Stripe account when the payment was made (an id, not a
    # foreign key: see the module docstring).
    destination_account_id = models.CharField(
        _("destination account id"),
        max_length=255,
        blank=True,
        help_text=_("The payee's Stripe account (acct_...) when the payment was made."),
    )

    currency = models.CharField(_("currency"), max_length=3)
    amount = models.BigIntegerField(
        _("amount (minor units)"), help_text=_("Minor units of the currency (cents for usd).")
    )
    platform_fee = models.BigIntegerField(
        _("platform fee (minor units)"),
        default=0,
        help_text=_("The platform's share of the amount, in minor units."),
    )
    amount_refunded = models.BigIntegerField(_("amount refunded (minor units)"), default=0)
    amount_disputed = models.BigIntegerField(_("amount disputed (minor units)"), default=0)
    amount_transferred = models.BigIntegerField(
        _("amount transferred (minor units)"),
        default=0,
        help_text=_("What was transferred to the payee's account (their share), before reversals."),
    )
    amount_reversed = models.BigIntegerField(
        _("amount reversed (minor units)"),
        default=0,
        help_text=_("What was pulled back from the payee's account."),
    )

    strategy = models.CharField(_("escrow strategy"), max_length=40, choices=EscrowStrategy.choices)
    status = FSMField(
        _("status"),
        max_length=32,
        choices=PaymentStatus.choices,
        default=PaymentStatus.AWAITING_PAYMENT,
        protected=True,
        help_text=_(
            "Changed only by the payment's transitions (services and webhooks), never by editing."
        ),
    )
    status_before_dispute = models.CharField(
        _("status before dispute"),
        max_length=32,
        blank=True,
        help_text=_("Where a won dispute returns the payment to."),
    )

    stripe_payment_intent_id = models.CharField(
        _("Stripe PaymentIntent id"), max_length=255, blank=True
    )
    stripe_charge_id = models.CharField(_("Stripe charge id"), max_length=255, blank=True)
    transfer_group = models.CharField(
        _("transfer group"),
        max_length=255,
        unique=True,
        help_text=_("Stripe transfer_group tying the charge to its transfers."),
    )
    # Keys are stored before the call they protect; attempts only advance
    # after a definite failure, so a crash retried reuses the same key.
    intent_idempotency_key = models.CharField(
        _("PaymentIntent idempotency key"), max_length=255, blank=True
    )
    intent_attempts = models.PositiveIntegerField(_("PaymentIntent attempts"), default=0)
    release_attempts = models.PositiveIntegerField(_("release attempts"), default=0)
    # Manual capture: Stripe voids the authorisation at this time.
    capture_before = models.DateTimeField(
        _("capture before"),
        null=True,
        blank=True,
        help_text=_("Manual capture: when Stripe voids the card authorization."),
    )

    failure_code = models.CharField(_("failure code"), max_length=255, blank=True)
    failure_message = models.TextField(_("failure message"), blank=True)

    held_at = models.DateTimeField(_("held at"), null=True, blank=True)
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)
    refunded_at = models.DateTimeField(_("refunded at"), null=True, blank=True)
    canceled_at = models.DateTimeField(_("canceled at"), null=True, blank=True)
    failed_at = models.DateTimeField(_("failed at"), null=True, blank=True)
    disputed_at = models.DateTimeField(_("disputed at"), null=True, blank=True)

    class Meta:
        abstract = True
        verbose_name = _("escrow payment")
        verbose_name_plural = _("escrow payments")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(payee_user__isnull=False, payee_organization__isnull=True)
                    | Q(payee_user__isnull=True, payee_organization__isnull=False)
                ),
                name="escrow_payment_payee_user_xor_organization",
            ),
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="escrow_payment_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(platform_fee__gte=0) & Q(platform_fee__lte=F("amount")),
                name="escrow_payment_fee_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(amount_refunded__gte=0) & Q(amount_refunded__lte=F("amount")),
                name="escrow_payment_refunded_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(amount_disputed__gte=0) & Q(amount_disputed__lte=F("amount")),
                name="escrow_payment_disputed_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(amount_transferred__gte=0)
                & Q(amount_transferred__lte=F("amount") - F("platform_fee")),
                name="escrow_payment_transferred_within_net",
            ),
            models.CheckConstraint(
                condition=Q(amount_reversed__gte=0)
                & Q(amount_reversed__lte=F("amount_transferred")),
                name="escrow_payment_reversed_within_transferred",
            ),
            _currency_constraint("escrow_payment"),
            models.CheckConstraint(
                condition=~Q(payer=F("payee_user")) | Q(payee_user__isnull=True),
                name="escrow_payment_payer_is_not_payee",
            ),
            models.UniqueConstraint(
                fields=["stripe_payment_intent_id"],
                condition=~Q(stripe_payment_intent_id=""),
                name="escrow_payment_unique_payment_intent",
            ),
            models.UniqueConstraint(
                fields=["stripe_charge_id"],
                condition=~Q(stripe_charge_id=""),
                name="escrow_payment_unique_charge",
            ),
            # A task is paid for once: a second payment is possible only
            # after the first was canceled.
            models.UniqueConstraint(
                fields=["task"],
                condition=~Q(status=PaymentStatus.CANCELED),
                name="escrow_payment_one_live_payment_per_task",
            ),
        ]
        indexes = [
            models.Index(fields=["payer", "-created_at"], name="escrow_pay_payer_idx"),
            models.Index(fields=["payee_user", "-created_at"], name="escrow_pay_payee_user_idx"),
            models.Index(
                fields=["payee_organization", "-created_at"], name="escrow_pay_payee_org_idx"
            ),
            models.Index(fields=["status", "updated_at"], name="escrow_pay_status_idx"),
            models.Index(fields=["capture_before"], name="escrow_pay_capture_idx"),
        ]

    def __str__(self) -> str:
        return f"payment {self.pk} ({self.status})"

    # -- derived amounts -------------------------------------------------
    @property
    def refundable_amount(self) -> int:
        return self.amount - self.amount_refunded

    @property
    def payee(self) -> Any:
        return self.payee_user if self.payee_user_id is not None else self.payee_organization

    @property
    def is_manual_capture(self) -> bool:
        return self.strategy == EscrowStrategy.MANUAL_CAPTURE

    # -- transitions driven by Stripe (webhooks, gateway results) ----------
    @transition(field=status, source=S.AWAITING_PAYMENT, target=S.PROCESSING)
    def mark_processing(self) -> None:
        pass

    @transition(field=status, source=[S.AWAITING_PAYMENT, S.PROCESSING, S.FAILED], target=S.HELD)
    def mark_held(self) -> None:
        self.held_at = timezone.now()
        self.failure_code = ""
        self.failure_message = ""

    @transition(field=status, source=[S.AWAITING_PAYMENT, S.PROCESSING], target=S.FAILED)
    def mark_failed(self, code: str = "", message: str = "") -> None:
        self.failed_at = timezone.now()
        self.failure_code = code[:255]
        self.failure_message = message

    @transition(
        field=status,
        source=[S.AWAITING_PAYMENT, S.PROCESSING, S.FAILED, S.HELD],
        target=S.CANCELED,
    )
    def mark_canceled(self) -> None:
        """Stripe canceled the PaymentIntent: a void the platform asked for, a
        lapsed authorisation, or a payment Stripe gave up on while processing."""
        self.canceled_at = timezone.now()

    # -- cancel: asked for on the platform (API, admin, commands) --------------
    @transition(
        field=status,
        # Not while processing: Stripe refuses to cancel a PaymentIntent then.
        source=[S.AWAITING_PAYMENT, S.FAILED, S.HELD],
        target=S.CANCELED,
        conditions=[_nothing_captured],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
        permission=permissions.may_cancel,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def cancel(self) -> None:
        self.canceled_at = timezone.now()

    # -- the customer tries again after a failed payment ---------------------
    @transition(
        field=status,
        source=S.FAILED,
        target=S.AWAITING_PAYMENT,
        permission=permissions.may_retry,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def retry_payment(self) -> None:
        self.failure_code = ""
        self.failure_message = ""

    # -- release -------------------------------------------------------------
    @transition(
        field=status,
        source=S.HELD,
        target=S.RELEASING,
        conditions=[_no_open_dispute],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def start_release(self) -> None:
        """The money-moving call was sent but its outcome is not known yet.

        Only entered by a release the user was allowed to ask for (``release``'s
        permission), so it declares none of its own.
        """

    @transition(
        field=status,
        source=[S.HELD, S.RELEASING],
        target=S.RELEASED,
        conditions=[_no_open_dispute],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
        permission=permissions.may_release,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def release(self, amount_transferred: int = 0, platform_fee: int | None = None) -> None:
        self.released_at = timezone.now()
        self.amount_transferred = amount_transferred
        if platform_fee is not None:
            self.platform_fee = platform_fee

    @transition(field=status, source=S.RELEASING, target=S.HELD)
    def release_failed(self) -> None:
        """The transfer definitely did not happen: the money is still held."""
        self.release_attempts += 1

    # -- refunds ---------------------------------------------------------------
    @transition(
        field=status,
        source=[S.HELD, S.RELEASED, S.PARTIALLY_REFUNDED],
        target=RETURN_VALUE(S.HELD, S.PARTIALLY_REFUNDED, S.REFUNDED),
        conditions=[_fully_refundable_left],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
        permission=permissions.may_refund,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def refund(self, amount: int) -> str:
        """Record ``amount`` more refunded; the state follows the totals."""
        was_released = self.status in (S.RELEASED, S.PARTIALLY_REFUNDED)
        self.amount_refunded += amount
        if self.amount_refunded >= self.amount:
            self.refunded_at = timezone.now()
            return S.REFUNDED
        return S.PARTIALLY_REFUNDED if was_released else S.HELD

    @transition(
        field=status,
        source=[S.HELD, S.PARTIALLY_REFUNDED, S.REFUNDED],
        target=RETURN_VALUE(S.HELD, S.RELEASED, S.PARTIALLY_REFUNDED),
    )
    def refund_failed(self, amount: int) -> str:
        """A refund Stripe could not complete: give its amount back."""
        self.amount_refunded = max(0, self.amount_refunded - amount)
        self.refunded_at = None
        if self.released_at is None:
            return S.HELD
        return S.PARTIALLY_REFUNDED if self.amount_refunded else S.RELEASED

    # -- disputes --------------------------------------------------------------
    @transition(
        field=status,
        source=[S.HELD, S.RELEASING, S.RELEASED, S.PARTIALLY_REFUNDED],
        target=S.DISPUTED,
    )
    def open_dispute(self, amount: int) -> None:
        self.status_before_dispute = self.status
        self.amount_disputed = amount
        self.disputed_at = timezone.now()

    @transition(
        field=status,
        source=S.DISPUTED,
        target=RETURN_VALUE(S.HELD, S.RELEASING, S.RELEASED, S.PARTIALLY_REFUNDED),
    )
    def win_dispute(self) -> str:
        return self._state_before_dispute()

    @transition(field=status, source=S.DISPUTED, target=S.DISPUTE_LOST)
    def lose_dispute(self) -> None:
        # status_before_dispute is kept: an appeal won returns the payment there.
        pass

    @transition(
        field=status,
        source=S.DISPUTE_LOST,
        target=RETURN_VALUE(S.HELD, S.RELEASING, S.RELEASED, S.PARTIALLY_REFUNDED),
    )
    def win_appeal(self) -> str:
        """The lost dispute was appealed and won: back where it was before the dispute."""
        return self._state_before_dispute()

    def _state_before_dispute(self) -> str:
        previous = self.status_before_dispute or S.HELD
        self.status_before_dispute = ""
        self.amount_disputed = 0
        return previous


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
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, unique=True)
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

    class Meta:
        abstract = True
        verbose_name = _("money operation")
        verbose_name_plural = _("money operations")
        ordering = ["-created_at"]
        constraints = [
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


# --------------------------------------------------------------------------
# Transfers and reversals
# --------------------------------------------------------------------------


class AbstractTransfer(ConcurrentTransitionMixin, TimestampedModel):
    """Money sent from the platform to the payee's connected account."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="transfers",
    )
    stripe_transfer_id = models.CharField(_("Stripe transfer id"), max_length=255, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, unique=True)
    amount = models.BigIntegerField(_("amount (minor units)"))
    amount_reversed = models.BigIntegerField(_("amount reversed (minor units)"), default=0)
    currency = models.CharField(_("currency"), max_length=3)
    destination_account_id = models.CharField(_("destination account id"), max_length=255)
    source_transaction = models.CharField(
        _("source transaction"),
        max_length=255,
        blank=True,
        help_text=_("The charge the transfer is funded from (source_transaction)."),
    )
    status = FSMField(
        _("status"),
        max_length=32,
        choices=TransferStatus.choices,
        default=TransferStatus.PENDING,
        protected=True,
    )
    failure_code = models.CharField(_("failure code"), max_length=255, blank=True)
    failure_message = models.TextField(_("failure message"), blank=True)

    class Meta:
        abstract = True
        verbose_name = _("transfer")
        verbose_name_plural = _("transfers")
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="escrow_transfer_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(amount_reversed__gte=0) & Q(amount_reversed__lte=F("amount")),
                name="escrow_transfer_reversed_within_amount",
            ),
            _currency_constraint("escrow_transfer"),
            models.UniqueConstraint(
                fields=["stripe_transfer_id"],
                condition=~Q(stripe_transfer_id=""),
                name="escrow_transfer_unique_stripe_id",
            ),
            # Exactly-once release, enforced by the database: a payment has at
            # most one transfer that did not fail.
            models.UniqueConstraint(
                fields=["payment"],
                condition=~Q(status=TransferStatus.FAILED),
                name="escrow_transfer_one_live_per_payment",
            ),
        ]

    def __str__(self) -> str:
        return self.stripe_transfer_id or f"transfer {self.pk} ({self.status})"

    @transition(field=status, source=TransferStatus.PENDING, target=TransferStatus.CREATED)
    def mark_created(self, stripe_transfer_id: str) -> None:
        self.stripe_transfer_id = stripe_transfer_id

    @transition(field=status, source=TransferStatus.PENDING, target=TransferStatus.FAILED)
    def mark_failed(self, code: str = "", message: str = "") -> None:
        self.failure_code = code[:255]
        self.failure_message = message

    @transition(
        field=status,
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
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, unique=True)
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
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, unique=True)
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
    """A customer's dispute (or inquiry) of a payment's charge; freezes release while open."""

    payment = models.ForeignKey(
        model_name("EscrowPayment"),
        verbose_name=_("payment"),
        on_delete=models.PROTECT,
        related_name="disputes",
    )
    stripe_dispute_id = models.CharField(_("Stripe dispute id"), max_length=255, unique=True)
    stripe_charge_id = models.CharField(_("Stripe charge id"), max_length=255)
    amount = models.BigIntegerField(_("amount (minor units)"))
    currency = models.CharField(_("currency"), max_length=3)
    status = FSMField(_("status"), max_length=32, choices=DisputeStatus.choices, protected=True)
    reason = models.CharField(_("reason"), max_length=64, blank=True)
    evidence_due_by = models.DateTimeField(_("evidence due by"), null=True, blank=True)
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
        db_index=True,
        help_text=_(
            "What the incident is about when not the payment: a Radar review, a fraud warning."
        ),
    )

    class Meta(AbstractIncident.Meta):
        abstract = True
        verbose_name = _("payment incident")
        verbose_name_plural = _("payment incidents")

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

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.code or self.message[:40]}"


# --------------------------------------------------------------------------
# Webhook event log
# --------------------------------------------------------------------------


class AbstractWebhookEvent(ConcurrentTransitionMixin, models.Model):
    """Every verified Stripe event, once. The unique id refuses duplicates."""

    stripe_event_id = models.CharField(_("Stripe event id"), max_length=255, unique=True)
    type = models.CharField(_("type"), max_length=128, db_index=True)
    endpoint = models.CharField(_("endpoint"), max_length=16, choices=WebhookEndpoint.choices)
    account = models.CharField(
        _("connected account id"),
        max_length=255,
        blank=True,
        db_index=True,
        help_text=_(
            "The connected account (acct_...) of a Connect event; blank for the platform's."
        ),
    )
    livemode = models.BooleanField(_("live mode"), default=False)
    api_version = models.CharField(_("API version"), max_length=64, blank=True)
    object_id = models.CharField(
        _("object id"),
        max_length=255,
        blank=True,
        db_index=True,
        help_text=_("The id of the event's data.object."),
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
        indexes = [
            models.Index(fields=["status", "received_at"], name="escrow_evt_status_idx"),
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
