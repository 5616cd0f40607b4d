"""The escrow payment: one customer payment for one task."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition

from ... import permissions
from ...states import (
    DISPUTE_LOST_STATES,
    EscrowStrategy,
    PaymentStatus,
    TransferStatus,
)
from ...swappable import model_name
from ._common import S, TimestampedModel, _currency_constraint

__all__ = ["AbstractEscrowPayment"]


# --------------------------------------------------------------------------
# Escrow payments
# --------------------------------------------------------------------------


def _no_open_dispute(payment: AbstractEscrowPayment) -> bool:
    return bool(payment.status != S.DISPUTED)


def _fully_refundable_left(payment: AbstractEscrowPayment) -> bool:
    return payment.amount_refunded < payment.amount_charged


def _frozen(payment: AbstractEscrowPayment) -> bool:
    """An open or lost dispute decides the payment's state (``disputed``, ``dispute_lost``)."""
    return payment.status in (S.DISPUTED, S.DISPUTE_LOST)


def _settled_state(payment: AbstractEscrowPayment) -> str:
    """The state the payment is in, or returns to when its dispute closes in its favour."""
    if _frozen(payment):
        return str(payment.status_before_dispute or S.HELD)
    return str(payment.status)


def _release_unsettled(payment: AbstractEscrowPayment) -> bool:
    # The release's transfer (or capture) was sent and Stripe's answer is
    # not known yet, also when a dispute opened meanwhile.
    return _settled_state(payment) == S.RELEASING


def _releasable_before_dispute(payment: AbstractEscrowPayment) -> bool:
    # Where ``release`` leaves from; the dispute froze the payment there.
    return _settled_state(payment) in (S.HELD, S.RELEASING, S.PARTIALLY_RELEASED)


def _rest_left_by_a_loss(payment: AbstractEscrowPayment) -> bool:
    # A partial dispute lost before any release left the rest held on the
    # platform's balance (amount_held): it may still go to the doer by one
    # transfer. Not a manual-capture payment (a lost dispute means its charge
    # was captured, i.e. released), nor one released in parts (its releases
    # name their amounts, and a loss does not say which part it took).
    return (
        payment.status == S.DISPUTE_LOST
        and _settled_state(payment) == S.HELD
        and not payment.is_manual_capture
        and not payment.released_in_parts
        and payment.amount_held > 0
    )


def _rest_in_parts_left_by_a_loss(payment: AbstractEscrowPayment) -> bool:
    # A partial dispute lost after a release by amount left the rest held
    # (amount_held): it goes to the one doer as one more release, the rest
    # all of it. Not a payment with milestones (a loss does not say which
    # milestone it took) nor one split between several payees (nor which
    # payee's share); those stay refused (docs/recovery.md).
    return (
        payment.status == S.DISPUTE_LOST
        and _settled_state(payment) == S.PARTIALLY_RELEASED
        and payment.released_in_parts
        and not payment.is_manual_capture
        and payment.amount_held > 0
        and not payment.milestones.exists()  # type: ignore[attr-defined]  # reverse accessor of the swappable EscrowMilestone
        and payment.payees.count() <= 1  # type: ignore[attr-defined]  # reverse accessor of the swappable EscrowPayee
    )


def _release_settled(payment: AbstractEscrowPayment) -> bool:
    # A refund counts against held or released money depending on whether
    # the release in flight was made: it waits for the release's outcome.
    return not _release_unsettled(payment)


def _nothing_captured(payment: AbstractEscrowPayment) -> bool:
    # A held manual-capture payment is an authorisation, which can be voided;
    # money captured by a separate charge goes back by a refund instead.
    return payment.status != S.HELD or payment.is_manual_capture


def _only_a_refused_part(payment: AbstractEscrowPayment) -> bool:
    # A manual-capture payment ``partially_released`` by an older version's
    # release in parts (docs/recovery.md): its part was a transfer Stripe
    # refused, so voiding the hold leaves nothing moved. Any other
    # partially released payment paid a payee, and a void cannot end it.
    if payment.status != S.PARTIALLY_RELEASED:
        return True
    transfers: Any = payment.transfers  # type: ignore[attr-defined]  # reverse accessor of the swappable Transfer
    return (
        payment.is_manual_capture and not transfers.exclude(status=TransferStatus.FAILED).exists()
    )


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
        # escrow_pay_payer_idx leads with this column: an index of its own
        # would only cost a write on every insert and non-HOT update.
        db_index=False,
    )
    payee_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("payee (user)"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escrow_payments_received",
        db_index=False,  # escrow_pay_payee_*_idx lead with it (see payer)
    )
    payee_organization = models.ForeignKey(
        model_name("Organization"),
        verbose_name=_("payee (organization)"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escrow_payments_received",
        db_index=False,  # escrow_pay_payee_*_idx lead with it (see payer)
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
    amount_released = models.BigIntegerField(
        _("amount released (minor units)"),
        default=0,
        help_text=_(
            "Gross amount out of escrow to the payee(s), less what refunds took back: "
            "released + refunded + held = amount."
        ),
    )
    # Null is "the whole amount" (once captured), which is what every payment
    # captured so far had: the app captures everything, and a capture for less
    # was never booked before this field. So no existing row (nor a host's
    # swapped model) needs a data migration, and only a capture for less made
    # outside the app (manual capture, in the Stripe dashboard) writes it.
    amount_captured = models.BigIntegerField(
        _("amount captured (minor units)"),
        null=True,
        blank=True,
        help_text=_(
            "Set only when Stripe captured less than the amount (a manual-capture hold "
            "captured in part outside the app; Stripe released the rest of the "
            "authorization to the customer). Empty: the whole amount, once captured."
        ),
    )

    released_in_parts = models.BooleanField(
        _("released in parts"),
        default=False,
        help_text=_(
            "Milestones, several payees or a partial release: released by releases, "
            "one transfer per payee each."
        ),
    )
    # Funding per milestone (docs/milestones.md): each milestone is paid for
    # by its own payment, an ordinary one, so every money path applies to it.
    funded_milestone = models.PositiveSmallIntegerField(
        _("funded milestone"),
        default=0,
        help_text=_(
            "0: the payment funds the whole task; k: it funds the task's k-th milestone "
            "(1-based) alone."
        ),
    )
    milestone_count = models.PositiveSmallIntegerField(
        _("milestones of the task"),
        default=0,
        help_text=_("Funding per milestone: how many milestones the task has (0 otherwise)."),
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

    # Saving the card for off-session tips (docs/tips.md): the payer's
    # consent is the audit trail of every later charge without them.
    payment_method_consent_at = models.DateTimeField(
        _("consent to save the payment method at"),
        null=True,
        blank=True,
        help_text=_("When the payer agreed to save the card for later charges (tips)."),
    )
    payment_method_consent_withdrawn_at = models.DateTimeField(
        _("consent withdrawn at"), null=True, blank=True
    )
    stripe_customer_id = models.CharField(
        _("Stripe Customer id"),
        max_length=255,
        blank=True,
        help_text=_("The payer's Customer, reused by the payer's later payments."),
    )
    saved_payment_method_id = models.CharField(
        _("saved PaymentMethod id"),
        max_length=255,
        blank=True,
        help_text=_("The card Stripe saved for off-session charges; empty once withdrawn."),
    )

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
            # Unique through Meta.constraints, not unique=True: see AbstractWebhookEvent.
            models.UniqueConstraint(
                fields=["transfer_group"], name="escrow_payment_unique_transfer_group"
            ),
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
            # Within the amount. (released + refunded <= amount holds too, as
            # the services keep it; not a constraint, so that a row broken by
            # hand can still be saved and found by escrow_audit.)
            models.CheckConstraint(
                condition=Q(amount_released__gte=0) & Q(amount_released__lte=F("amount")),
                name="escrow_payment_released_within_amount",
            ),
            # Less than the amount or nothing: one way to say "all of it".
            models.CheckConstraint(
                condition=Q(amount_captured__isnull=True)
                | (Q(amount_captured__gte=0) & Q(amount_captured__lt=F("amount"))),
                name="escrow_payment_captured_below_amount",
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
            # A task (or one milestone of a task funded per milestone) is
            # paid for once: a second payment is possible only after the
            # first was canceled. Mixing the two modes on one task is
            # refused by create_payment under the task's lock.
            models.UniqueConstraint(
                fields=["task", "funded_milestone"],
                condition=~Q(status=PaymentStatus.CANCELED),
                name="escrow_payment_one_live_payment_per_task_part",
            ),
            models.CheckConstraint(
                condition=Q(funded_milestone__lte=F("milestone_count")),
                name="escrow_payment_funded_milestone_within_count",
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
            # A payout.failed: the manual-capture payment that most recently
            # paid the account (services.stripe_objects._latest_payment_to).
            models.Index(
                fields=["destination_account_id", "-released_at"], name="escrow_pay_dest_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"payment {self.pk} ({self.status})"

    # -- derived amounts -------------------------------------------------
    @property
    def amount_charged(self) -> int:
        """What the books count the payment as: the amount, or what a capture for less took.

        A manual-capture hold captured in part outside the app charged the
        customer only ``amount_captured``; Stripe released the rest of the
        authorisation to the card (no refund: ``amount_uncaptured``). Held,
        released and refunded money add up to this, and refunds, reversals
        and the application fee's share are counted against it, as Stripe
        counts them against the charge's ``amount_captured``.
        """
        return int(self.amount if self.amount_captured is None else self.amount_captured)

    @property
    def amount_uncaptured(self) -> int:
        """What a capture for less left with the customer (never charged, never refunded)."""
        return int(self.amount - self.amount_charged)

    @property
    def refundable_amount(self) -> int:
        """What a refund may ask for now: charged less refunded, 0 while a dispute
        decides the payment (``disputed``, ``dispute_lost``).

        A refund of a frozen payment is refused (``409``): Stripe refuses to
        refund a charged-back charge (``charge_disputed``), and while a dispute
        is open its outcome decides where the money goes. A dispute (or
        appeal) won gives the figure back.
        """
        if _frozen(self):
            return 0
        return self.amount_charged - self.amount_refunded

    @property
    def frozen_by_dispute(self) -> bool:
        """An open or lost dispute decides the state (``disputed``, ``dispute_lost``)."""
        return _frozen(self)

    @property
    def settled_status(self) -> str:
        """The state the payment is in, or returns to when its dispute closes in its favour."""
        return _settled_state(self)

    @property
    def amount_held(self) -> int:
        """Still in escrow: neither released nor refunded (nor left uncaptured), nor
        taken by a lost dispute (:attr:`amount_lost`).

        ``amount_held + amount_released + amount_refunded + amount_lost`` is
        ``amount_charged``.
        """
        return self.amount_held_before_loss - self.amount_lost

    @property
    def amount_held_before_loss(self) -> int:
        """What escrow holds leaving a lost dispute aside: ``amount_held + amount_lost``.

        A won appeal gives the lost money back to escrow, so where a frozen
        payment returns to (``status_before_dispute``) and whether its
        releases are all done are decided on this figure, not on
        :attr:`amount_held`. The two differ only while ``dispute_lost``.
        """
        return int(self.amount_charged - self.amount_released - self.amount_refunded)

    @property
    def amount_lost(self) -> int:
        """What a lost dispute took out of escrow: 0 unless ``dispute_lost``.

        Stripe debits the platform's balance by the disputed amount (the
        payment's own charge's disputes decided ``lost``, or appealed and not
        won yet). Escrow loses what it still held of that, at most: a dispute
        lost after a release takes the rest from the platform's own money,
        while the doer keeps the transfer (docs/recovery.md). A partial
        dispute leaves the rest held. Reads the payment's disputes (prefetched
        by the API), so a payment in any other state costs no query.
        """
        if self.status != S.DISPUTE_LOST:
            return 0
        disputes: Any = self.disputes.all()  # type: ignore[attr-defined]  # reverse accessor of the swappable Dispute
        taken = 0
        for dispute in disputes:
            # A tip's dispute takes the tip's money, never the payment's.
            if dispute.tip_id is None and dispute.status in DISPUTE_LOST_STATES:
                taken += int(dispute.amount)
        return max(0, min(taken, self.amount_held_before_loss))

    @property
    def payee(self) -> Any:
        return self.payee_user if self.payee_user_id is not None else self.payee_organization

    @property
    def saves_payment_method(self) -> bool:
        """The payer agreed to save the card and has not withdrawn that consent."""
        return (
            self.payment_method_consent_at is not None
            and self.payment_method_consent_withdrawn_at is None
        )

    @property
    def off_session_payment_method(self) -> str:
        """The saved card a tip may be charged on without the payer, or ""."""
        if self.saves_payment_method and self.stripe_customer_id:
            return self.saved_payment_method_id
        return ""

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
        source=[S.AWAITING_PAYMENT, S.PROCESSING, S.FAILED, S.HELD, S.PARTIALLY_RELEASED],
        target=S.CANCELED,
        conditions=[_only_a_refused_part],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def mark_canceled(self) -> None:
        """Stripe canceled the PaymentIntent: a void the platform asked for, a
        lapsed authorisation, or a payment Stripe gave up on while processing.

        Also a manual-capture payment an older version left
        ``partially_released`` (its part's transfer refused): the void is
        Stripe's last word on it, and nothing of it was released.
        """
        self.canceled_at = timezone.now()
        if self.status == S.PARTIALLY_RELEASED:
            # Booked as released, but Stripe refused its transfer.
            self.amount_released = 0

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
        source=S.DISPUTE_LOST,
        target=S.DISPUTE_LOST,
        conditions=[_rest_left_by_a_loss],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def start_release_of_rest(self) -> None:
        """The transfer of what a partial dispute lost left held was sent.

        The payment stays ``dispute_lost``, which keeps the lost figure
        (``amount_lost``); what it is otherwise (an appeal won returns it
        there) is ``releasing`` until Stripe answers. Entered only by a
        release the user was allowed to ask for, as ``start_release``.
        """
        self.status_before_dispute = S.RELEASING

    @transition(
        field=status,
        source=[S.HELD, S.RELEASING, S.PARTIALLY_RELEASED],
        target=S.RELEASED,
        conditions=[_no_open_dispute],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
        permission=permissions.may_release,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def release(
        self,
        amount_transferred: int = 0,
        platform_fee: int | None = None,
        amount_captured: int | None = None,
    ) -> None:
        """``amount_captured``: Stripe captured less than the amount (see the field)."""
        self._record_release(str(self.status), amount_transferred, platform_fee, amount_captured)

    @transition(
        field=status,
        source=[S.DISPUTED, S.DISPUTE_LOST],
        target=RETURN_VALUE(S.DISPUTED, S.DISPUTE_LOST),
        conditions=[_releasable_before_dispute],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def release_during_dispute(
        self,
        amount_transferred: int = 0,
        platform_fee: int | None = None,
        amount_captured: int | None = None,
    ) -> str:
        """Stripe made a release sent before the dispute opened (its answer came late).

        Stripe's fact is recorded as ``release`` records it; the payment stays
        frozen, and a dispute won (or an appeal won) returns it to ``released``.
        """
        self._record_release(
            _settled_state(self), amount_transferred, platform_fee, amount_captured
        )
        return self._settle(S.RELEASED)

    def _record_release(
        self,
        previous: str,
        amount_transferred: int,
        platform_fee: int | None,
        amount_captured: int | None = None,
    ) -> None:
        self.released_at = timezone.now()
        if amount_captured is not None and amount_captured < self.amount:
            self.amount_captured = amount_captured
        if previous != S.PARTIALLY_RELEASED:
            # A split payment counts its transfers one by one (release_part).
            self.amount_transferred = amount_transferred
        if platform_fee is not None:
            self.platform_fee = platform_fee
        released = self.amount_charged - self.amount_refunded
        if previous != S.PARTIALLY_RELEASED and not self.is_manual_capture:
            # One transfer: it released what it was sent for, its amount and
            # the fee on it (_begin_release). All that was held, except after
            # a lost dispute: the rest it left is released, not what it took.
            released = min(released, amount_transferred + self.platform_fee)
        self.amount_released = max(0, released)

    @transition(
        field=status,
        source=[S.HELD, S.PARTIALLY_RELEASED],
        target=S.PARTIALLY_RELEASED,
        conditions=[_no_open_dispute],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
        permission=permissions.may_release,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def release_part(self, amount: int, platform_fee: int) -> None:
        """``amount`` (gross) leaves escrow for a release of a split payment.

        ``platform_fee`` is the payment's fee so far: what the releases took
        plus the fee on what is still held.
        """
        self.released_in_parts = True
        self.amount_released += amount
        self.platform_fee = platform_fee

    @transition(
        field=status,
        source=S.DISPUTE_LOST,
        target=S.DISPUTE_LOST,
        conditions=[_rest_in_parts_left_by_a_loss],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def release_rest_in_parts(self, amount: int, platform_fee: int) -> None:
        """The rest a partial dispute lost left held leaves escrow as one more
        release of a payment released in parts (``release_part``'s booking).

        The payment stays ``dispute_lost``, which keeps the lost figure
        (``amount_lost``); an appeal won returns it to ``partially_released``
        (``status_before_dispute`` is kept), holding what the loss took.
        Entered only by a release the user was allowed to ask for
        (``release_part``'s permission), as ``start_release_of_rest``.
        """
        self.amount_released += amount
        self.platform_fee = platform_fee

    @transition(
        field=status,
        source=[S.RELEASING, S.DISPUTED, S.DISPUTE_LOST],
        target=RETURN_VALUE(S.HELD, S.DISPUTED, S.DISPUTE_LOST),
        conditions=[_release_unsettled],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def release_failed(self) -> str:
        """The transfer definitely did not happen: the money is still held.

        When a dispute opened meanwhile the payment stays frozen, and the
        dispute's close returns it to ``held``.
        """
        self.release_attempts += 1
        return self._settle(S.HELD)

    # -- refunds ---------------------------------------------------------------
    @transition(
        field=status,
        source=[S.HELD, S.PARTIALLY_RELEASED, S.RELEASED, S.PARTIALLY_REFUNDED],
        target=RETURN_VALUE(S.HELD, S.PARTIALLY_RELEASED, S.PARTIALLY_REFUNDED, S.REFUNDED),
        conditions=[_fully_refundable_left],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
        permission=permissions.may_refund,  # type: ignore[arg-type]  # fsm stubs: Model, not our model
    )
    def refund(self, amount: int) -> str:
        """Record ``amount`` more refunded; the state follows the totals."""
        return self._record_refund(str(self.status), amount)

    @transition(
        field=status,
        source=[S.DISPUTED, S.DISPUTE_LOST],
        target=RETURN_VALUE(S.DISPUTED, S.DISPUTE_LOST),
        conditions=[_fully_refundable_left, _release_settled],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def refund_during_dispute(self, amount: int) -> str:
        """A refund Stripe made while a dispute is open or lost: counted as ``refund`` counts it.

        Stripe refunds a charge under an inquiry, and a refund sent before
        the dispute opened may be confirmed after. The payment stays frozen;
        the dispute's close returns it to the state the totals lead to
        (``refunded`` when all of it was refunded).
        """
        return self._settle(self._record_refund(_settled_state(self), amount))

    def _record_refund(self, previous: str, amount: int) -> str:
        was_released = previous in (S.RELEASED, S.PARTIALLY_REFUNDED)
        self.amount_refunded += amount
        # A refund takes what is held first; beyond that it takes back
        # released money (the transfers were reversed before it).
        self.amount_released = max(
            0, min(self.amount_released, self.amount_charged - self.amount_refunded)
        )
        if self.amount_refunded >= self.amount_charged:
            self.refunded_at = timezone.now()
            return S.REFUNDED
        if previous == S.PARTIALLY_RELEASED:
            # Released in parts and the rest refunded: nothing is left to
            # release, so it ends as a released payment partly refunded.
            # Before any loss: a won appeal returns the payment to this state.
            return S.PARTIALLY_RELEASED if self.amount_held_before_loss else S.PARTIALLY_REFUNDED
        return S.PARTIALLY_REFUNDED if was_released else S.HELD

    @transition(
        field=status,
        source=[
            S.HELD,
            S.PARTIALLY_RELEASED,
            S.RELEASED,
            S.PARTIALLY_REFUNDED,
            S.REFUNDED,
            S.DISPUTED,
            S.DISPUTE_LOST,
        ],
        target=RETURN_VALUE(
            S.HELD,
            S.PARTIALLY_RELEASED,
            S.RELEASED,
            S.PARTIALLY_REFUNDED,
            S.DISPUTED,
            S.DISPUTE_LOST,
        ),
        conditions=[_release_settled],  # type: ignore[list-item]  # fsm stubs: Callable[[Model], bool] only
    )
    def refund_failed(self, amount: int) -> str:
        """A refund Stripe could not complete: give its amount back (to escrow).

        The money is back in the platform's balance: counted as held
        (``amount_held``), not as released, since what a refund after release
        reversed from the doer stays reversed. A released payment stays
        released (or partially refunded) and the refund can be asked again.
        During a dispute the payment stays frozen and returns to that state
        when the dispute closes in its favour.
        """
        previous = _settled_state(self)
        self.amount_refunded = max(0, self.amount_refunded - amount)
        self.refunded_at = None
        if self.released_at is None:
            return self._settle(S.PARTIALLY_RELEASED if self.amount_released else S.HELD)
        if previous == S.RELEASED:
            # Its refunds were all made before the release: it stays released.
            return self._settle(S.RELEASED)
        return self._settle(S.PARTIALLY_REFUNDED if self.amount_refunded else S.RELEASED)

    # -- disputes --------------------------------------------------------------
    @transition(
        field=status,
        source=[S.HELD, S.RELEASING, S.PARTIALLY_RELEASED, S.RELEASED, S.PARTIALLY_REFUNDED],
        target=S.DISPUTED,
    )
    def open_dispute(self, amount: int) -> None:
        self.status_before_dispute = self.status
        self.amount_disputed = amount
        self.disputed_at = timezone.now()

    @transition(
        field=status,
        source=S.DISPUTED,
        target=RETURN_VALUE(
            S.HELD, S.RELEASING, S.PARTIALLY_RELEASED, S.RELEASED, S.PARTIALLY_REFUNDED, S.REFUNDED
        ),
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
        target=RETURN_VALUE(
            S.HELD, S.RELEASING, S.PARTIALLY_RELEASED, S.RELEASED, S.PARTIALLY_REFUNDED, S.REFUNDED
        ),
    )
    def win_appeal(self) -> str:
        """The lost dispute was appealed and won: back where it was before the dispute."""
        return self._state_before_dispute()

    def _state_before_dispute(self) -> str:
        previous = self.status_before_dispute or S.HELD
        self.status_before_dispute = ""
        self.amount_disputed = 0
        return previous

    def _settle(self, state: str) -> str:
        """``state`` is where Stripe's news leads; a dispute keeps the payment
        frozen and returns it there when it closes in the platform's favour."""
        if _frozen(self):
            self.status_before_dispute = state
            return str(self.status)
        return state
