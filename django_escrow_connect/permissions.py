"""Who may do what: the rules every API view, service and transition shares.

Organization administration is the host's business; the library only asks the
predicate named in ``ESCROW_CONNECT["ORGANIZATION_ADMIN_PREDICATE"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .conf import escrow_settings
from .states import PaymentStatus

__all__ = [
    "deny_all_organization_admins",
    "is_authenticated",
    "is_one_of_the_payees",
    "is_organization_admin",
    "is_payee",
    "is_payer",
    "is_platform_staff",
    "may_cancel",
    "may_refund",
    "may_release",
    "may_retry",
    "may_view",
]

if TYPE_CHECKING:
    from .base.models import AbstractEscrowPayment


def deny_all_organization_admins(user: Any, organization: Any) -> bool:
    """Default predicate: nobody administers an organization's account.

    Safe by default: a host with organizations must say who their admins are.
    """
    return False


def is_authenticated(user: Any) -> bool:
    """A signed-in user (not ``None``, not anonymous)."""
    return bool(user is not None and getattr(user, "is_authenticated", False))


def is_platform_staff(user: Any) -> bool:
    """An active staff member of the platform."""
    return bool(is_authenticated(user) and getattr(user, "is_staff", False) and user.is_active)


def is_organization_admin(user: Any, organization: Any) -> bool:
    """``user`` administers ``organization``, per ``ORGANIZATION_ADMIN_PREDICATE``."""
    if not is_authenticated(user) or organization is None:
        return False
    return bool(escrow_settings.ORGANIZATION_ADMIN_PREDICATE(user, organization))


def is_payer(user: Any, payment: AbstractEscrowPayment) -> bool:
    """The customer who pays ``payment``."""
    return is_authenticated(user) and payment.payer_id == user.pk


def is_payee(user: Any, payment: AbstractEscrowPayment) -> bool:
    """The doer paid by ``payment``: the user, or an admin of the organization."""
    if not is_authenticated(user):
        return False
    if payment.payee_user_id is not None:
        return bool(payment.payee_user_id == user.pk)
    return is_organization_admin(user, payment.payee_organization)


def is_one_of_the_payees(user: Any, payment: AbstractEscrowPayment) -> bool:
    """A payee of a payment shared by several (splits): the user, or an admin of the organization.

    The first payee is also the payment's own payee (:func:`is_payee`); the
    others are only in its payee rows. Being one of them lets a user see the
    payment, not act on it: a refund or a cancel gives back the whole
    payment, which one payee of several may not decide.
    """
    if not is_authenticated(user):
        return False
    # The reverse accessor of the payee model (swappable), unknown to the abstract type.
    for payee in cast(Any, payment).payees.all():
        if payee.user_id is not None:
            if payee.user_id == user.pk:
                return True
        elif is_organization_admin(user, payee.organization):
            return True
    return False


# Transition permissions: the ``permission=`` of the payment's transitions
# (base/models/), asked by the services through
# :func:`django_escrow_connect.transitions.may` for every request made on a
# user's behalf. They are the only definition of who may do what; the system
# (webhooks, escrow_reconcile, scheduled release) passes no user and is not
# asked. ``tests/payments/test_transition_permissions.py`` checks each is enforced.


def may_release(payment: AbstractEscrowPayment, user: Any) -> bool:
    """The payer or platform staff may release the held money."""
    return is_payer(user, payment) or is_platform_staff(user)


def may_refund(payment: AbstractEscrowPayment, user: Any) -> bool:
    """Platform staff or the payee may refund."""
    # The customer cannot refund themselves once money is held: that is what
    # disputes and staff are for. The doer may give the money back.
    return is_platform_staff(user) or is_payee(user, payment)


def may_cancel(payment: AbstractEscrowPayment, user: Any) -> bool:
    """The payer, the payee or staff may cancel before money moved.

    A held manual-capture payment is voided, which gives the money back: who
    may refund decides.
    """
    if payment.status == PaymentStatus.HELD and payment.is_manual_capture:
        # Voiding an authorisation gives the customer's money back: who may
        # refund decides, not the customer.
        return may_refund(payment, user)
    return is_payer(user, payment) or is_platform_staff(user) or is_payee(user, payment)


def may_retry(payment: AbstractEscrowPayment, user: Any) -> bool:
    """Only the payer may pay again after a failed attempt."""
    # Paying again is the customer's own card at work: staff cannot do it.
    return is_payer(user, payment)


def may_view(payment: AbstractEscrowPayment, user: Any) -> bool:
    """The payer, a payee (of several too) or staff may see the payment."""
    return (
        is_payer(user, payment)
        or is_payee(user, payment)
        or is_platform_staff(user)
        or is_one_of_the_payees(user, payment)
    )
