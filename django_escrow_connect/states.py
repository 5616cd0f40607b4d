"""State names for every state machine in the package.

They are chosen once, here, so that the first migration does not churn when
transitions are added: a value stored in a row is part of the public contract.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = [
    "DISPUTE_APPEAL_STATES",
    "DISPUTE_CLOSED_STATES",
    "DISPUTE_KEPT_STATES",
    "DISPUTE_LOST_STATES",
    "PAYMENT_HOLD_KINDS",
    "RADAR_HOLD_KINDS",
    "UNRESOLVED_OPERATION_STATES",
    "AccountStatus",
    "AccountsApi",
    "BusinessType",
    "DisputeStatus",
    "EscrowStrategy",
    "IncidentKind",
    "MilestoneStatus",
    "MoneyOperationKind",
    "MoneyOperationStatus",
    "PaymentStatus",
    "RefundStatus",
    "ReleaseStatus",
    "StaffActionKind",
    "StaffActionOutcome",
    "TaskPaymentStatus",
    "TipStatus",
    "TipTransferStatus",
    "TransferReversalStatus",
    "TransferStatus",
    "WebhookEndpoint",
    "WebhookEventStatus",
]


class PaymentStatus(models.TextChoices):
    """States of an escrow payment."""

    AWAITING_PAYMENT = "awaiting_payment", _("Awaiting payment")
    PROCESSING = "processing", _("Processing")
    HELD = "held", _("Held in escrow")
    #: Part of the money went to the payee(s) (a milestone or an amount);
    #: the rest is still held.
    PARTIALLY_RELEASED = "partially_released", _("Partially released")
    RELEASING = "releasing", _("Releasing")
    RELEASED = "released", _("Released")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
    REFUNDED = "refunded", _("Refunded")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")
    DISPUTED = "disputed", _("Disputed")
    DISPUTE_LOST = "dispute_lost", _("Dispute lost")


class TaskPaymentStatus(models.TextChoices):
    """The task's view of its payment (``EscrowTaskMixin.payment_status``)."""

    PENDING_PAYMENT = "pending_payment", _("Pending payment")
    PAYMENT_IN_ESCROW = "payment_in_escrow", _("Payment in escrow")
    PAYMENT_RELEASED = "payment_released", _("Payment released")
    PAYMENT_FAILED = "payment_failed", _("Payment failed")
    REFUNDED = "refunded", _("Refunded")


class AccountStatus(models.TextChoices):
    """States of a connected account, derived from Stripe's account."""

    PENDING_VERIFICATION = "pending_verification", _("Pending verification")
    VERIFIED = "verified", _("Verified")
    RESTRICTED = "restricted", _("Restricted")
    DEAUTHORIZED = "deauthorized", _("Deauthorized")


class BusinessType(models.TextChoices):
    """Who the connected account belongs to, as Stripe's ``business_type``."""

    INDIVIDUAL = "individual", _("Individual")
    COMPANY = "company", _("Company")


class EscrowStrategy(models.TextChoices):
    """How the money is held: separate charges and transfers, or manual capture."""

    SEPARATE_CHARGES_AND_TRANSFERS = (
        "separate_charges_and_transfers",
        _("Separate charges and transfers"),
    )
    MANUAL_CAPTURE = "manual_capture", _("Destination charge, manual capture")


class TransferStatus(models.TextChoices):
    """States of a transfer to a payee's connected account."""

    # The row exists (with its idempotency key) before Stripe is called.
    PENDING = "pending", _("Pending")
    CREATED = "created", _("Created")
    FAILED = "failed", _("Failed")
    PARTIALLY_REVERSED = "partially_reversed", _("Partially reversed")
    REVERSED = "reversed", _("Reversed")


class MilestoneStatus(models.TextChoices):
    """States of one milestone of a payment."""

    HELD = "held", _("Held")
    #: The doer says the work is done (starts the milestone's auto-release clock).
    DELIVERED = "delivered", _("Delivered")
    RELEASED = "released", _("Released")
    REFUNDED = "refunded", _("Refunded")
    CANCELED = "canceled", _("Canceled")


class ReleaseStatus(models.TextChoices):
    """States of one release (a milestone or an amount) of a split payment."""

    #: Some payee transfers are not made yet (sending, or refused: retryable).
    PENDING = "pending", _("Pending")
    #: Every payee's transfer was made.
    RELEASED = "released", _("Released")
    #: Never made: the payment's hold was voided while its transfer was
    #: refused (a manual-capture payment an older version released in part,
    #: docs/recovery.md). Final.
    CANCELED = "canceled", _("Canceled")


class TransferReversalStatus(models.TextChoices):
    """States of a transfer reversal."""

    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


class RefundStatus(models.TextChoices):
    """Stripe's refund statuses."""

    PENDING = "pending", _("Pending")
    REQUIRES_ACTION = "requires_action", _("Requires action")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")


class DisputeStatus(models.TextChoices):
    """Stripe's dispute statuses, inquiries and appeals included."""

    # Stripe's own dispute statuses.
    WARNING_NEEDS_RESPONSE = "warning_needs_response", _("Inquiry: needs response")
    WARNING_UNDER_REVIEW = "warning_under_review", _("Inquiry: under review")
    WARNING_CLOSED = "warning_closed", _("Inquiry: closed")
    NEEDS_RESPONSE = "needs_response", _("Needs response")
    UNDER_REVIEW = "under_review", _("Under review")
    WON = "won", _("Won")
    LOST = "lost", _("Lost")
    PREVENTED = "prevented", _("Prevented")
    # API version 2026-10-28.endive: a lost dispute can be appealed; the
    # appeal ends in ``won`` or, finally, ``lost``.
    APPEAL_NEEDS_RESPONSE = "appeal_needs_response", _("Appeal: needs response")
    APPEAL_UNDER_REVIEW = "appeal_under_review", _("Appeal: under review")


#: Closed for now: release may go ahead (won, prevented, an inquiry closed) or
#: the money went back to the customer (lost). A ``lost`` dispute can still be
#: appealed, which opens it again (:data:`DISPUTE_APPEAL_STATES`).
DISPUTE_CLOSED_STATES = frozenset(
    {DisputeStatus.WARNING_CLOSED, DisputeStatus.WON, DisputeStatus.LOST, DisputeStatus.PREVENTED}
)
#: An appeal of a lost dispute is under way: open (release stays frozen).
DISPUTE_APPEAL_STATES = frozenset(
    {DisputeStatus.APPEAL_NEEDS_RESPONSE, DisputeStatus.APPEAL_UNDER_REVIEW}
)
#: The disputed amount went back to the customer: lost, or lost and appealed
#: until the appeal is won. What a payment's ``amount_lost`` and the
#: dashboards' totals count as taken by a dispute.
DISPUTE_LOST_STATES = frozenset({DisputeStatus.LOST, *DISPUTE_APPEAL_STATES})
#: Closed with the platform keeping the money (won, prevented, an inquiry
#: closed). Any other dispute, open or lost, holds back what it disputes.
DISPUTE_KEPT_STATES = DISPUTE_CLOSED_STATES - DISPUTE_LOST_STATES


#: A charge with disputes only in these states can be refunded at Stripe: an
#: inquiry (open or closed; a refund closes it), or a dispute decided for the
#: platform. A chargeback open or lost refuses a refund (``charge_disputed``).
REFUNDABLE_DISPUTE_STATES = DISPUTE_KEPT_STATES | {
    DisputeStatus.WARNING_NEEDS_RESPONSE,
    DisputeStatus.WARNING_UNDER_REVIEW,
}


class IncidentKind(models.TextChoices):
    """What an incident is about."""

    PAYMENT_FAILED = "payment_failed", _("Payment failed")
    PAYMENT_CANCELED = "payment_canceled", _("Payment canceled")
    AMOUNT_MISMATCH = "amount_mismatch", _("Amount or currency mismatch")
    CAPTURE_EXPIRED = "capture_expired", _("Authorization expired")
    TRANSFER_FAILED = "transfer_failed", _("Transfer failed")
    TRANSFER_REVERSED = "transfer_reversed", _("Transfer reversed")
    REVERSAL_FAILED = "reversal_failed", _("Transfer reversal failed")
    REFUND_FAILED = "refund_failed", _("Refund failed")
    PAYOUT_FAILED = "payout_failed", _("Payout failed")
    # Radar: open while the review is open / the warning is actionable;
    # ``resolved_at`` is set when it closes. Release refuses while one is open.
    RADAR_REVIEW = "radar_review", _("Radar review")
    EARLY_FRAUD_WARNING = "early_fraud_warning", _("Early fraud warning")
    # A tip's charge was refunded in the Stripe Dashboard after (part of) it
    # was sent to the doer, or in part before: staff decide (docs/tips.md).
    TIP_REFUNDED = "tip_refunded", _("Tip refunded")
    # Stripe refused an operation of the payment because its charge (or a
    # tip's) is disputed, before the dispute's webhook was recorded: open
    # until the dispute is recorded, escrow_reconcile finds the charge not
    # disputed, or staff resolve it. Release and tips' transfers refuse
    # while it is open (services/radar_holds.py).
    CHARGE_DISPUTED = "charge_disputed", _("Charge disputed (refused by Stripe)")


#: Incident kinds nobody acts on and nothing resolves: a declined card (the
#: customer retries or leaves). An audit record only: ``escrow_report`` counts
#: them in the period and never lists them as still open, and the
#: ``incidents.open`` gauge leaves them out (its count would only ever grow).
INCIDENTS_NEEDING_NOBODY = (IncidentKind.PAYMENT_FAILED,)


#: Radar's incident kinds (Stripe closes them; staff cannot): they freeze
#: release while unresolved.
RADAR_HOLD_KINDS = (IncidentKind.RADAR_REVIEW, IncidentKind.EARLY_FRAUD_WARNING)
#: Every incident kind that freezes release and tips' transfers while
#: unresolved: Radar's, and Stripe's refusal saying the charge is disputed.
PAYMENT_HOLD_KINDS = (*RADAR_HOLD_KINDS, IncidentKind.CHARGE_DISPUTED)


class MoneyOperationKind(models.TextChoices):
    """The Stripe calls that create a payment or move its money."""

    PAYMENT_INTENT = "payment_intent", _("Create the PaymentIntent")
    TRANSFER = "transfer", _("Transfer to the doer")
    CAPTURE = "capture", _("Capture the authorization")
    REVERSAL = "reversal", _("Reverse a transfer")
    REFUND = "refund", _("Refund the customer")
    CANCEL = "cancel", _("Void the authorization")
    # A tip: its own PaymentIntent, and its transfer to each recipient.
    TIP_INTENT = "tip_intent", _("Create a tip's PaymentIntent")
    TIP_TRANSFER = "tip_transfer", _("Transfer a tip")
    # Not money, but a Stripe call a crash must not repeat under a new key:
    # the payer's Customer, for a payment that saves its payment method.
    CUSTOMER = "customer", _("Create the payer's Stripe Customer")


class TipStatus(models.TextChoices):
    """Where a tip stands: charged on its own PaymentIntent, then transferred."""

    AWAITING_PAYMENT = "awaiting_payment", _("Awaiting payment")
    PROCESSING = "processing", _("Processing")
    PAID = "paid", _("Paid")
    TRANSFERRED = "transferred", _("Transferred")
    # Stripe refused a tip transfer: the money is on the platform; retryable.
    TRANSFER_FAILED = "transfer_failed", _("Transfer failed")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")
    # Its charge was refunded (in full or in part) before it was transferred:
    # never transferred by the package (docs/tips.md).
    REFUNDED = "refunded", _("Refunded")


class TipTransferStatus(models.TextChoices):
    """One tip transfer to one recipient."""

    PENDING = "pending", _("Pending")
    CREATED = "created", _("Created")
    FAILED = "failed", _("Failed")


class MoneyOperationStatus(models.TextChoices):
    """Where a money operation stands: pending, done, refused or unknown."""

    # Committed with its idempotency key before Stripe is called; still
    # pending after a crash during the call.
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    # Stripe answered with a timeout or a 5xx: it may or may not have acted.
    UNKNOWN = "unknown", _("Outcome unknown")


#: Operations whose outcome is not settled: at most one per payment.
UNRESOLVED_OPERATION_STATES = frozenset(
    {MoneyOperationStatus.PENDING, MoneyOperationStatus.UNKNOWN}
)


#: The ``follow_up`` entry of a transfer operation sent after the payment's
#: dispute was lost: the rest the loss left (``releases.release_payment``), or
#: a tip staff decided to send anyway (``tips.retry_tip_transfer``). Whoever
#: finishes it sends it with its key as any release; only a dispute opened
#: since freezes it (``outcomes.drive``, ``tip_outcomes``).
AFTER_LOSS = "after_loss"


class WebhookEndpoint(models.TextChoices):
    """Which webhook endpoint received an event (platform, Connect, or thin events)."""

    PLATFORM = "platform", _("Platform")
    CONNECT = "connect", _("Connect")
    # An event destination with thin payloads (v2 events: a type and the
    # related object's id; the object is fetched when processing).
    THIN = "thin", _("Thin events")


class AccountsApi(models.TextChoices):
    """Which Stripe Accounts API created (and reads) a connected account."""

    V1 = "v1", _("Accounts v1")
    V2 = "v2", _("Accounts v2")


class WebhookEventStatus(models.TextChoices):
    """Processing states of a recorded webhook event."""

    RECEIVED = "received", _("Received")
    PROCESSED = "processed", _("Processed")
    FAILED = "failed", _("Failed")
    IGNORED = "ignored", _("Ignored")
    # The event names an object this app has no row for (yet); the reconcile
    # command retries it once the row exists.
    DEFERRED = "deferred", _("Deferred")


#: How ``last_error`` starts for an event ``failed`` because its object cannot
#: be read (the webhooks' ``UnparseableEvent``; the pipeline writes the
#: exception's class name first): every replay of the same body fails alike
#: until the package (or the endpoint's API version) changes, so the scheduled
#: replay leaves it alone and ``escrow_report --check`` does not alert on it.
UNREADABLE_EVENT_ERROR_PREFIX = "UnparseableEvent: "


class StaffActionKind(models.TextChoices):
    """What a staff member did from the admin (the audit trail's ``action``)."""

    RELEASE = "release", _("Release")
    REFUND = "refund", _("Refund")
    CANCEL = "cancel", _("Cancel")
    RETRY_TRANSFER = "retry_transfer", _("Retry failed transfer")
    RECONCILE = "reconcile", _("Reconcile")
    RESOLVE_INCIDENT = "resolve_incident", _("Resolve incident")
    ANNOTATE_INCIDENT = "annotate_incident", _("Annotate incident")
    REFRESH_ACCOUNT = "refresh_account", _("Refresh account")
    REPLAY_EVENT = "replay_event", _("Replay webhook event")
    RECORD_OUTSIDE_TRANSFER = "record_outside_transfer", _("Record a transfer made in Stripe")


class StaffActionOutcome(models.TextChoices):
    """How a staff action ended."""

    OK = "ok", _("Done")
    #: The service said no (permission, state, input): nothing was sent.
    REFUSED = "refused", _("Refused")
    #: Stripe did not answer, or the outcome is not known yet.
    ERROR = "error", _("Error")
