"""What a payment still holds, as database expressions.

The one definition of "held" for every total that counts held money in one
query: the dashboards (``api.payments``) and the ``escrow_connect.payments.held``
gauges (:mod:`~django_escrow_connect.observability`). The model's
``amount_held`` is the same figure read in Python (:func:`held_after_loss`);
what the gauges count a release a lost dispute caught in flight as is
:func:`held_counted`.
"""

from __future__ import annotations

from typing import Any

from django.db.models import (
    BigIntegerField,
    Case,
    Exists,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest
from django.db.models.lookups import GreaterThan

from . import swappable, transitions
from .states import (
    AFTER_LOSS,
    DISPUTE_CLOSED_STATES,
    DISPUTE_LOST_STATES,
    UNRESOLVED_OPERATION_STATES,
    EscrowStrategy,
    MoneyOperationKind,
    ReleaseStatus,
    TransferStatus,
)
from .states import PaymentStatus as S

__all__ = [
    "CHARGED",
    "HELD",
    "held_after_loss",
    "held_counted",
    "holding",
    "lost_payment",
    "lost_to_disputes",
    "release_caught_by_loss",
    "release_in_flight",
]

#: What the customer is charged (``amount_charged``): the amount, or what a
#: capture for less took (``amount_captured``; the rest was never charged).
CHARGED = Coalesce(F("amount_captured"), F("amount"))
#: What a payment holds leaving a lost dispute aside
#: (``amount_held_before_loss``): a payment released in parts
#: (``partially_released``) no longer holds what its releases took. It is
#: ``amount_held`` on every payment but a ``dispute_lost`` one
#: (:func:`held_after_loss`).
HELD = CHARGED - F("amount_released") - F("amount_refunded")


def lost_to_disputes() -> Any:
    """What the payment's own lost disputes gave back to the customer (0 if none).

    A correlated subquery inside the one aggregate, so a dashboard total
    stays one query whatever the tables hold. A tip's dispute takes the
    tip's money, never the payment's.
    """
    lost = (
        swappable.load("Dispute")
        .objects.filter(payment=OuterRef("pk"), tip__isnull=True, status__in=DISPUTE_LOST_STATES)
        .order_by()
        .values("payment")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return Coalesce(Subquery(lost), Value(0), output_field=BigIntegerField())


def lost_payment(then: Any, default: Any) -> Case:
    # amount_lost is 0 unless dispute_lost: other payments cost no subquery.
    return Case(
        When(status=S.DISPUTE_LOST, then=then), default=default, output_field=BigIntegerField()
    )


def held_after_loss() -> Case:
    """``amount_held`` of any payment, as a database expression.

    A lost dispute takes what it took out of what was held (``amount_lost``,
    at most all of it); a partial dispute leaves the rest held.
    """
    return lost_payment(Greatest(HELD - lost_to_disputes(), Value(0)), HELD)


def release_caught_by_loss() -> Q:
    """``dispute_lost`` payments whose ordinary release was in flight when the
    dispute opened, its transfer still unresolved at Stripe, as a query condition.

    ``status_before_dispute`` is ``releasing`` both for such a release and
    for the transfer of the rest a partial dispute left (``start_release_of_rest``);
    the rest's transfer is the one begun after the loss (its operation's
    ``follow_up`` says ``after_loss``). The release in flight is the one
    :func:`holding` counts as what it sends, as it counts a ``releasing``
    payment: made, it released all that was held before the dispute
    (``amount_released``; ``amount_lost`` 0, as escrow held nothing more);
    never made, the rest is held again and counted as such.
    """
    in_flight = (
        swappable.load("MoneyOperation")
        .objects.filter(
            payment=OuterRef("pk"),
            kind=MoneyOperationKind.TRANSFER,
            status__in=list(UNRESOLVED_OPERATION_STATES),
        )
        .exclude(follow_up__has_key=AFTER_LOSS)
    )
    return Q(Exists(in_flight), status=S.DISPUTE_LOST, status_before_dispute=S.RELEASING)


def release_in_flight(payee: Any = None) -> Any:
    """The transfers of a release (``OuterRef("pk")``, a release) still in
    flight at Stripe: begun (their row is ``pending``), Stripe's answer not
    recorded. ``payee``: of that payee row only (an expression).

    A pending release of a ``dispute_lost`` payment with such a transfer is
    not known unsent: Stripe may have made it before the dispute, and
    ``escrow_reconcile`` looks it up (never sends it again). Only once its
    transfer is recorded not made (``failed``) is it the unsent release that
    is settled by hand.
    """
    transfers = swappable.load("Transfer").objects.filter(
        release=OuterRef("pk"), status=TransferStatus.PENDING
    )
    return transfers if payee is None else transfers.filter(payee=payee)


def held_counted() -> Case:
    """What :func:`holding` counts a payment as holding (the gauges' amount).

    ``amount_held`` (:func:`held_after_loss`), except a release a lost
    dispute caught in flight (:func:`release_caught_by_loss`): what that
    release takes out of escrow once Stripe makes it, its transfer and the
    fee on it (what was held before the loss), as a ``releasing`` payment
    counts until Stripe answers.
    """
    return Case(
        When(release_caught_by_loss(), then=HELD),
        default=held_after_loss(),
        output_field=BigIntegerField(),
    )


def holding() -> Q:
    """Payments still holding money for their payees, as a query condition.

    The one definition of "held" for the doer's dashboard ``in_escrow`` and
    the ``escrow_connect.payments.held`` gauges: the states a release leaves
    from (``release``'s sources: held, releasing, partially released), and
    a ``dispute_lost`` payment holding the rest a partial dispute left
    (``start_release_of_rest``'s source): not sent yet or its transfer in
    flight (``status_before_dispute`` blank, held or releasing), on a
    payment released at once; or, on a payment released in parts to one doer
    without milestones and with no earlier release known unsent
    (``release_rest_in_parts``'s condition; one whose transfer is still in
    flight, :func:`release_in_flight`, may have been made and does not stop
    it), not released yet
    (``partially_released`` before the dispute: its release takes it out of
    ``amount_held`` when it is made, as any release in parts); while
    :func:`held_after_loss` is above 0 and no dispute of the payment is open
    (an appeal, a second dispute, a tip's freeze the release of the rest).
    Not a manual-capture payment: a dispute means its charge was captured,
    which paid the doer. A dispute that took all of it, or the rest
    released, leaves nothing held.

    A ``dispute_lost`` payment whose ordinary release was in flight when the
    dispute opened (:func:`release_caught_by_loss`) is counted as the
    ``releasing`` payment it was, until Stripe's answer is recorded: for
    what that release sends (:func:`held_counted`), not for the rest a
    release after the loss would send, also when the dispute took all that
    was held (made, the transfer paid the doer; refused, the rest is
    counted as above).
    """
    Payment = swappable.load("EscrowPayment")
    # Any open dispute of the payment (a second one, a tip's, an appeal of
    # the lost one) freezes the release of the rest: not counted while it does.
    open_dispute = (
        swappable.load("Dispute")
        .objects.filter(payment=OuterRef("pk"))
        .exclude(status__in=list(DISPUTE_CLOSED_STATES))
    )
    releasable = Q(~Q(strategy=EscrowStrategy.MANUAL_CAPTURE), ~Exists(open_dispute))
    caught = release_caught_by_loss()
    rest = Q(GreaterThan(held_after_loss(), 0), ~caught)
    released_at_once = Q(
        rest | caught,
        releasable,
        status__in=transitions.sources(Payment, "start_release_of_rest"),
        status_before_dispute__in=("", S.HELD, S.RELEASING),
        released_in_parts=False,
    )
    # Released in parts: one doer (at most one payee row) and no milestones,
    # as release_rest_in_parts's condition says.
    milestone = swappable.load("EscrowMilestone").objects.filter(payment=OuterRef("pk"))
    second_payee = swappable.load("EscrowPayee").objects.filter(
        payment=OuterRef("pk"), position__gt=0
    )
    # An earlier release whose transfer the dispute caught unmade is never
    # sent, and keeps the rest from being released: settled by hand. Not
    # while its transfer is still in flight at Stripe (:func:`release_in_flight`):
    # made, the rest is releasable, so it counts until it is known unsent.
    unsent_release = (
        swappable.load("EscrowRelease")
        .objects.filter(payment=OuterRef("pk"), status=ReleaseStatus.PENDING)
        .exclude(Exists(release_in_flight()))
    )
    released_in_parts = Q(
        GreaterThan(held_after_loss(), 0),
        releasable,
        ~Exists(milestone),
        ~Exists(second_payee),
        ~Exists(unsent_release),
        status__in=transitions.sources(Payment, "release_rest_in_parts"),
        status_before_dispute=S.PARTIALLY_RELEASED,
        released_in_parts=True,
    )
    return (
        Q(status__in=transitions.sources(Payment, "release")) | released_at_once | released_in_parts
    )
