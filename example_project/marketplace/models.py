"""The marketplace's own models: people, organizations, tasks, bids, notifications.

``Task`` is the model the package's payments point to
(``ESCROW_CONNECT_TASK_MODEL``); it mixes in ``EscrowTaskMixin`` for its
``payment_status`` and says who pays whom in :meth:`Task.get_escrow_terms`.
Its own life cycle (``status``) is a django-fsm state machine too.
"""

from __future__ import annotations

from typing import Any

import swapper
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django_fsm import FSMField, transition

from django_escrow_connect.base.models import EscrowTaskMixin
from django_escrow_connect.money import format_money
from django_escrow_connect.states import TaskPaymentStatus
from django_escrow_connect.terms import (
    BASIS_POINTS_WHOLE,
    FUND_PER_MILESTONE,
    FUND_UP_FRONT,
    EscrowTerms,
    MilestoneTerms,
    PayeeShare,
    TermsUnavailable,
)

# --------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """Signs in with an email address; no username."""

    email = models.EmailField("email address", unique=True)
    name = models.CharField(max_length=100, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.name or self.email

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return (self.name or self.email).split(" ")[0]

    def administered_organizations(self) -> models.QuerySet[Organization]:
        return Organization.objects.filter(
            memberships__user=self, memberships__role=Membership.Role.ADMIN
        ).order_by("name")

    def organizations(self) -> models.QuerySet[Organization]:
        return Organization.objects.filter(memberships__user=self).order_by("name")


class Organization(models.Model):
    """A team of doers that is paid as one (its own connected account)."""

    name = models.CharField(max_length=100, unique=True)
    country = models.CharField(max_length=2, default="US")
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="member_of"
    )

    def __str__(self) -> str:
        return self.name

    def is_admin(self, user: Any) -> bool:
        return bool(
            getattr(user, "is_authenticated", False)
            and self.memberships.filter(user=user, role=Membership.Role.ADMIN).exists()
        )

    def is_member(self, user: Any) -> bool:
        return bool(
            getattr(user, "is_authenticated", False) and self.memberships.filter(user=user).exists()
        )


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


# --------------------------------------------------------------------------
# Tasks and bids
# --------------------------------------------------------------------------


class TaskStatus(models.TextChoices):
    CREATED = "created", "Created"
    BIDDING = "bidding", "Bidding"
    BID_ACCEPTED = "bid_accepted", "Bid accepted"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


OPEN_TASK_STATES = (
    TaskStatus.CREATED,
    TaskStatus.BIDDING,
    TaskStatus.BID_ACCEPTED,
    TaskStatus.IN_PROGRESS,
)


def _escrow_funded(task: Task) -> bool:
    return task.payment_status == TaskPaymentStatus.PAYMENT_IN_ESCROW


def _escrow_released(task: Task) -> bool:
    return task.payment_status == TaskPaymentStatus.PAYMENT_RELEASED


class Task(EscrowTaskMixin, models.Model):
    """Work a customer posts, doers bid on, and the customer pays for in escrow.

    ``status`` is the marketplace's life cycle; ``payment_status`` (from the
    mixin) is the package's view of the money and is never written here.
    """

    title = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="posted_tasks"
    )
    status = FSMField(
        max_length=20,
        choices=TaskStatus.choices,
        default=TaskStatus.CREATED,
        protected=True,
        db_index=True,
    )
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("task-detail", args=[self.pk])

    # -- who pays whom ---------------------------------------------------------

    @property
    def accepted_bid(self) -> Bid | None:
        return (
            self.bids.filter(accepted=True).select_related("doer_user", "doer_organization").first()
        )

    def get_escrow_terms(self) -> EscrowTerms:
        """The accepted bid decides the amount, the currency and the payee."""
        bid = self.accepted_bid
        if bid is None:
            raise TermsUnavailable("The task has no accepted bid yet.", payer=self.customer)
        description = f"Task #{self.pk}: {self.title}"
        milestones = [MilestoneTerms(m["name"], int(m["amount"])) for m in bid.milestones or ()]
        funding = FUND_PER_MILESTONE if bid.funds_per_milestone else FUND_UP_FRONT
        if bid.partner_user_id is None:
            return EscrowTerms(
                payer=self.customer,
                amount=bid.amount,
                currency=bid.currency,
                payee_user=bid.doer_user,
                payee_organization=bid.doer_organization,
                description=description,
                milestones=milestones,
                funding=funding,
            )
        # A team bid: the bidder keeps what the partner's share leaves over.
        partner_points = int(bid.partner_basis_points or 0)
        return EscrowTerms(
            payer=self.customer,
            amount=bid.amount,
            currency=bid.currency,
            description=description,
            milestones=milestones,
            funding=funding,
            payees=[
                PayeeShare(
                    user=bid.doer_user,
                    organization=bid.doer_organization,
                    basis_points=BASIS_POINTS_WHOLE - partner_points,
                ),
                PayeeShare(user=bid.partner_user, basis_points=partner_points),
            ],
        )

    def is_doer(self, user: Any) -> bool:
        """``user`` does this task: the accepted bidder (or its organization's
        member), or the bid's team partner."""
        bid = self.accepted_bid
        if bid is None or not getattr(user, "is_authenticated", False):
            return False
        if bid.partner_user_id == user.pk:
            return True
        if bid.doer_user_id is not None:
            return bid.doer_user_id == user.pk
        return bid.doer_organization.is_member(user)

    # -- life cycle ----------------------------------------------------------------

    @transition(field=status, source=TaskStatus.CREATED, target=TaskStatus.BIDDING)
    def open_bidding(self) -> None:
        """The first bid arrived."""

    @transition(field=status, source=TaskStatus.BIDDING, target=TaskStatus.BID_ACCEPTED)
    def accept(self) -> None:
        """The customer chose a bid; the escrow payment is next."""

    @transition(
        field=status,
        source=TaskStatus.BID_ACCEPTED,
        target=TaskStatus.IN_PROGRESS,
        conditions=[_escrow_funded],
    )
    def start(self) -> None:
        """The money is held in escrow: the doer can start."""

    @transition(
        field=status,
        source=TaskStatus.IN_PROGRESS,
        target=TaskStatus.COMPLETED,
        conditions=[_escrow_released],
    )
    def complete(self) -> None:
        """The customer confirmed the work and the payment was released."""
        self.completed_at = timezone.now()

    @transition(field=status, source=list(OPEN_TASK_STATES), target=TaskStatus.CANCELLED)
    def cancel(self) -> None:
        self.cancelled_at = timezone.now()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_TASK_STATES


class Bid(models.Model):
    """An offer to do a task, by a user XOR an organization, in minor units."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="bids")
    amount = models.BigIntegerField("amount (minor units)")
    currency = models.CharField(max_length=3, default="usd")
    message = models.CharField(max_length=300, blank=True)
    doer_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="bids",
    )
    doer_organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="bids"
    )
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bids_placed"
    )
    #: Optional ``[{"name": ..., "amount": <minor units>}, ...]`` summing to
    #: ``amount``: the customer releases the payment milestone by milestone.
    milestones = models.JSONField(default=list, blank=True)
    #: With milestones: the customer pays each milestone when it comes up
    #: (one escrow payment per milestone) instead of the whole price up front.
    fund_per_milestone = models.BooleanField(default=False)
    #: Optional second member of a team bid, paid ``partner_basis_points`` of
    #: every release's net (10000 = 100 %); the doer gets the rest.
    partner_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="partner_bids",
    )
    partner_basis_points = models.PositiveIntegerField(null=True, blank=True)
    accepted = models.BooleanField(default=False)
    accepted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(doer_user__isnull=False, doer_organization__isnull=True)
                    | Q(doer_user__isnull=True, doer_organization__isnull=False)
                ),
                name="bid_doer_user_xor_organization",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="bid_amount_positive"),
            models.CheckConstraint(
                condition=(
                    Q(partner_user__isnull=True, partner_basis_points__isnull=True)
                    | Q(
                        partner_user__isnull=False,
                        partner_basis_points__gt=0,
                        partner_basis_points__lt=BASIS_POINTS_WHOLE,
                    )
                ),
                name="bid_partner_with_share",
            ),
            models.UniqueConstraint(
                fields=["task"], condition=Q(accepted=True), name="one_accepted_bid_per_task"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.doer} bids {self.formatted_amount} on {self.task}"

    @property
    def doer(self) -> Any:
        return self.doer_user if self.doer_user_id is not None else self.doer_organization

    @property
    def formatted_amount(self) -> str:
        return format_money(self.amount, self.currency)

    @property
    def is_team_bid(self) -> bool:
        return self.partner_user_id is not None

    @property
    def funds_per_milestone(self) -> bool:
        """The customer pays milestone by milestone (only a bid with milestones can)."""
        return bool(self.fund_per_milestone and self.milestones)


# --------------------------------------------------------------------------
# Notifications
# --------------------------------------------------------------------------


class Notification(models.Model):
    """An in-app message for one user, written by the escrow signal receivers."""

    class Kind(models.TextChoices):
        PAYMENT_REQUIRED = "payment_required", "Payment required"
        PAYMENT_HELD = "payment_held", "Payment received"
        PAYMENT_RELEASED = "payment_released", "Payment released"
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        PAYMENT_REFUNDED = "payment_refunded", "Payment refunded"
        TRANSFER_FAILED = "transfer_failed", "Transfer failed"
        ACCOUNT_REQUIREMENTS = "account_requirements_due", "Account information needed"
        ACCOUNT_DEAUTHORIZED = "account_deauthorized", "Account disconnected"
        DISPUTE = "dispute", "Dispute"
        BID = "bid", "Bids"
        ONBOARDING_NEEDED = "onboarding_needed", "Set up payouts"
        MILESTONE_FUNDING_DUE = "milestone_funding_due", "Milestone to pay"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    message = models.CharField(max_length=300)
    url = models.CharField(max_length=300, blank=True)
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    # Added in migration 0002: the package's models are created after this
    # app's first migration (their task foreign key points here).
    payment = models.ForeignKey(
        swapper.get_model_name("escrow_connect", "EscrowPayment"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_unread_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"
