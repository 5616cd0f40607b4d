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

from ._common import TimestampedModel
from .accounts import AbstractConnectedAccount
from .incidents import AbstractIncident, AbstractPaymentIncident, AbstractTransferIncident
from .milestones import AbstractEscrowMilestone, AbstractEscrowPayee, AbstractEscrowRelease
from .operations import AbstractMoneyOperation
from .payments import AbstractEscrowPayment
from .refunds import AbstractDispute, AbstractRefund
from .staff import AbstractStaffAction
from .task import AbstractOrganizationPlaceholder, EscrowTaskMixin
from .tips import AbstractEscrowTip, AbstractEscrowTipTransfer
from .transfers import AbstractTransfer, AbstractTransferReversal
from .webhooks import AbstractWebhookEvent

__all__ = [
    "AbstractConnectedAccount",
    "AbstractDispute",
    "AbstractEscrowMilestone",
    "AbstractEscrowPayee",
    "AbstractEscrowPayment",
    "AbstractEscrowRelease",
    "AbstractEscrowTip",
    "AbstractEscrowTipTransfer",
    "AbstractIncident",
    "AbstractMoneyOperation",
    "AbstractOrganizationPlaceholder",
    "AbstractPaymentIncident",
    "AbstractRefund",
    "AbstractStaffAction",
    "AbstractTransfer",
    "AbstractTransferIncident",
    "AbstractTransferReversal",
    "AbstractWebhookEvent",
    "EscrowTaskMixin",
    "TimestampedModel",
]
