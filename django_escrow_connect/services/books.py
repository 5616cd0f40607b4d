"""How the app counts the money of a payment, in Stripe's terms.

Pure functions of a payment's amounts (no queries, no Stripe calls), shared
by the use cases, the outcomes of their Stripe calls and the webhook
appliers, so all three count a reversal or a destination charge's fee alike.

The whole is ``payment.amount_charged``: the amount, or what a capture for
less took (a manual-capture hold captured in part outside the app). Stripe
counts a charge's refunds, and the transfer reversals and application-fee
refunds they make, against the charge's ``amount_captured``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "UNCAPTURED_REFUND_REASON",
    "application_fee_refunded",
    "destination_refund_reversed",
    "doer_share_reversed",
    "is_gross_transfer",
    "refunds_uncaptured_money",
    "reversal_target",
    "taken_back_by_refunds",
]

#: The reason Stripe gives the refunds it makes itself: of an authorisation it
#: released, never of money it charged. Before API 2025-03-31 a capture for
#: less (and a void) made such a Refund of the uncaptured rest and counted it
#: in the charge's ``amount_refunded``.
UNCAPTURED_REFUND_REASON = "expired_uncaptured_charge"


def refunds_uncaptured_money(reason: str | None) -> bool:
    """Whether a refund with ``reason`` gave back an uncaptured authorisation.

    Such a refund moved no money (the customer was never charged it): it is
    recorded, never counted in ``amount_refunded``, and the audit leaves it
    out of Stripe's refunded total.
    """
    return reason == UNCAPTURED_REFUND_REASON


def reversal_target(
    payment: Any,
    total_refunded: int,
    transferred: int | None = None,
    released: int | None = None,
) -> int:
    """How much of the transfers should be reversed once ``total_refunded`` is.

    A refund takes first what the transfers never carried: money still held,
    or refunded before the release (``payment.amount_charged - released``).
    Only what it takes beyond that comes out of the transfers, in proportion
    to the gross they were released from (``released``; the whole payment
    unless given), like Stripe's ``reverse_transfer``. A refund of all of it
    reverses everything that was transferred.
    """
    charged = payment.amount_charged
    if transferred is None:
        transferred = payment.amount_transferred
    if released is None:
        released = charged
    if transferred <= 0 or released <= 0:
        return 0
    from_transfers = total_refunded - (charged - released)
    if from_transfers <= 0:
        return 0
    if from_transfers >= released:
        return int(transferred)
    return int((from_transfers * transferred) // released)


def is_gross_transfer(payment: Any, transfer_amount: int) -> bool:
    """Whether a transfer is a destination charge's, made by Stripe in full.

    Stripe transfers a destination charge's whole amount (what was captured)
    to the connected account and takes the application fee back from it.
    (Before 0.3 the
    simulated Stripe transferred the amount less the fee; such a transfer is
    all the doer's.)
    """
    return bool(
        payment.is_manual_capture
        and payment.platform_fee
        and transfer_amount == payment.amount_charged
    )


def taken_back_by_refunds(payment: Any) -> int:
    """What a destination charge's refunds took back from its transfer and fee.

    A released destination charge is refunded with ``reverse_transfer`` and
    ``refund_application_fee``: Stripe reverses the transfer and returns the
    fee as it makes the refund. When that refund fails later, Stripe gives
    its amount back to the platform's balance, but the reversal and the fee
    refund stay made. So what the refunds took back is everything no longer
    released (``amount_charged - amount_released``): what is refunded, and
    what a failed refund left on the platform's balance (held). Before the
    release it is what is refunded.
    """
    if payment.released_at is None:
        return int(payment.amount_refunded)
    return max(int(payment.amount_refunded), int(payment.amount_charged - payment.amount_released))


def application_fee_refunded(payment: Any, total_refunded: int | None = None) -> int:
    """How much of a destination charge's application fee refunds gave back.

    The app refunds a released destination charge with
    ``refund_application_fee=true``: Stripe returns the fee in proportion to
    the refund (all of it with a full refund), and keeps it returned when the
    refund fails later (:func:`taken_back_by_refunds`). Stripe's rounding may
    differ by one minor unit per refund.
    """
    if total_refunded is None:
        total_refunded = taken_back_by_refunds(payment)
    fee = payment.platform_fee
    if not payment.is_manual_capture or fee <= 0 or total_refunded <= 0:
        return 0
    charged = payment.amount_charged
    if total_refunded >= charged:
        return int(fee)
    return int((total_refunded * fee) // charged)


def doer_share_reversed(payment: Any, transfer_amount: int, transfer_reversed: int) -> int:
    """The doer's part of what Stripe reversed of a transfer (``amount_reversed``).

    For a destination charge's full transfer this is what Stripe reversed
    less the application fee Stripe gave back to the connected account with
    the refunds: half refund of 10,000 with a fee of 1,000 reverses 5,000 and
    returns 500 of the fee, so the doer gave back 4,500 and keeps 4,500.
    """
    if not is_gross_transfer(payment, transfer_amount):
        return transfer_reversed
    return max(0, transfer_reversed - application_fee_refunded(payment))


def destination_refund_reversed(payment: Any) -> int:
    """What Stripe has reversed of a destination charge's transfer after its refunds.

    The app refunds a captured destination charge with
    ``reverse_transfer=true``: Stripe reverses the transfer (the whole charge)
    in proportion to the refunds. Stripe's rounding may differ by one minor
    unit per refund; its ``transfer.reversed`` event then corrects the total.
    """
    return reversal_target(payment, taken_back_by_refunds(payment), payment.amount_charged)
