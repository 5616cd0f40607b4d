"""Business-event signals. Every one is sent *after* the transaction that
caused it commits (``transaction.on_commit``), so a receiver never sees a
state that is rolled back, and a failing receiver never breaks the payment
operation (signals are sent with ``send_robust`` and failures are logged).

Each signal's ``sender`` is the model class of the first argument. Arguments
are listed next to each signal and in docs/signals.md.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "ALL_SIGNALS",
    "account_deauthorized",
    "account_requirements_due",
    "account_updated",
    "capability_restricted",
    "dispute_closed",
    "dispute_opened",
    "external_account_errored",
    "milestone_funding_due",
    "milestone_released",
    "payee_transfer_failed",
    "payment_canceled",
    "payment_failed",
    "payment_held",
    "payment_refunded",
    "payment_released",
    "payment_required",
    "payout_failed",
    "radar_hold_closed",
    "radar_hold_opened",
    "refund_failed",
    "tip_dispute_closed",
    "tip_dispute_opened",
    "tip_paid",
    "tip_refunded",
    "tip_transfer_failed",
    "transfer_failed",
    "webhook_processing_failed",
]

# --- Payments (kwargs: payment, plus what is listed) -----------------------
#: A payment was created and needs the customer to pay. (payment, client_secret)
payment_required = Signal()
#: The customer's money is held in escrow. (payment)
payment_held = Signal()
#: The money was released to the doer's connected account. (payment, transfer)
payment_released = Signal()
#: A milestone's release is done: every payee's transfer was made.
#: (payment, milestone, transfers)
milestone_released = Signal()
#: Terms funded per milestone: a milestone's payment was released and the
#: next milestone is not paid for yet; prompt the customer (nothing is
#: charged by itself). (payment: the released one, task, milestone_index:
#: 1-based, amount: minor units)
milestone_funding_due = Signal()
#: Stripe refused one payee's transfer of a split release; the other payees'
#: transfers stand and releasing again resends this one. (payment, transfer, payee)
payee_transfer_failed = Signal()
#: A refund was made. (payment, refund)
payment_refunded = Signal()
#: A payment attempt failed. (payment, incident)
payment_failed = Signal()
#: A payment was canceled before money moved. (payment)
payment_canceled = Signal()
#: The customer disputed the charge; release is frozen. (payment, dispute)
dispute_opened = Signal()
#: A dispute closed; ``dispute.status`` is won or lost. (payment, dispute)
dispute_closed = Signal()
#: A transfer to the doer failed; the payment stays held. (payment, incident)
transfer_failed = Signal()
#: A refund failed after it was requested. (payment, refund)
refund_failed = Signal()
#: Stripe Radar holds the payment (a review opened, or an actionable early
#: fraud warning); release is frozen until it closes. (payment, incident)
radar_hold_opened = Signal()
#: A Radar review closed or a fraud warning is no longer actionable; release
#: is possible again unless another hold or a dispute is open. (payment, incident)
radar_hold_closed = Signal()
#: The customer's tip was charged (Stripe says its PaymentIntent succeeded);
#: its transfer follows. (payment, tip)
tip_paid = Signal()
#: Stripe refused a tip's transfer; the tip stays on the platform and the
#: transfer can be retried. (payment, tip, incident)
tip_transfer_failed = Signal()
#: The customer's bank disputed a tip's charge: Stripe debits the platform
#: for it (and its fee); the tip's transfers stand. (payment, tip, dispute)
tip_dispute_opened = Signal()
#: A tip's dispute closed; ``dispute.status`` is won or lost. (payment, tip, dispute)
tip_dispute_closed = Signal()
#: Stripe says (more of) a tip's charge was refunded (in the Stripe
#: dashboard); ``tip.amount_refunded`` is the total. Not transferred yet, the
#: tip is ``refunded`` and never sent; sent already, an incident tells staff.
#: (payment, tip)
tip_refunded = Signal()

# --- Connected accounts (kwargs: account, plus what is listed) --------------
#: Stripe sent new status data for an account. (account, previous_status)
account_updated = Signal()
#: The owner disconnected the platform; no new payments go to it. (account)
account_deauthorized = Signal()
#: Stripe needs more information. (account, currently_due, past_due)
account_requirements_due = Signal()
#: A capability became inactive or restricted. (account, capability, status)
capability_restricted = Signal()
#: A payout to the doer's bank failed. (account, payout)
payout_failed = Signal()
#: Stripe marked the doer's bank account ``errored`` (payouts to it fail until
#: the owner replaces it). (account, external_account)
external_account_errored = Signal()

# --- Operations --------------------------------------------------------------
#: A webhook event failed processing; alert staff. (event, error)
webhook_processing_failed = Signal()

ALL_SIGNALS: dict[str, Signal] = {
    name: value for name, value in list(globals().items()) if isinstance(value, Signal)
}
