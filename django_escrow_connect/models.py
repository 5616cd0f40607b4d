"""Concrete default models. Each can be swapped for a host subclass of its
abstract base by naming it in ``ESCROW_CONNECT_<MODEL>_MODEL``."""

from __future__ import annotations

from .base import models as base
from .swappable import setting_name


class Organization(base.AbstractOrganizationPlaceholder):
    class Meta(base.AbstractOrganizationPlaceholder.Meta):
        abstract = False
        swappable = setting_name("Organization")


class ConnectedAccount(base.AbstractConnectedAccount):
    class Meta(base.AbstractConnectedAccount.Meta):
        abstract = False
        swappable = setting_name("ConnectedAccount")


class EscrowPayment(base.AbstractEscrowPayment):
    class Meta(base.AbstractEscrowPayment.Meta):
        abstract = False
        swappable = setting_name("EscrowPayment")


class EscrowMilestone(base.AbstractEscrowMilestone):
    class Meta(base.AbstractEscrowMilestone.Meta):
        abstract = False
        swappable = setting_name("EscrowMilestone")


class EscrowPayee(base.AbstractEscrowPayee):
    class Meta(base.AbstractEscrowPayee.Meta):
        abstract = False
        swappable = setting_name("EscrowPayee")


class EscrowRelease(base.AbstractEscrowRelease):
    class Meta(base.AbstractEscrowRelease.Meta):
        abstract = False
        swappable = setting_name("EscrowRelease")


class Transfer(base.AbstractTransfer):
    class Meta(base.AbstractTransfer.Meta):
        abstract = False
        swappable = setting_name("Transfer")


class TransferReversal(base.AbstractTransferReversal):
    class Meta(base.AbstractTransferReversal.Meta):
        abstract = False
        swappable = setting_name("TransferReversal")


class Refund(base.AbstractRefund):
    class Meta(base.AbstractRefund.Meta):
        abstract = False
        swappable = setting_name("Refund")


class Dispute(base.AbstractDispute):
    class Meta(base.AbstractDispute.Meta):
        abstract = False
        swappable = setting_name("Dispute")


class PaymentIncident(base.AbstractPaymentIncident):
    class Meta(base.AbstractPaymentIncident.Meta):
        abstract = False
        swappable = setting_name("PaymentIncident")


class TransferIncident(base.AbstractTransferIncident):
    class Meta(base.AbstractTransferIncident.Meta):
        abstract = False
        swappable = setting_name("TransferIncident")


class WebhookEvent(base.AbstractWebhookEvent):
    class Meta(base.AbstractWebhookEvent.Meta):
        abstract = False
        swappable = setting_name("WebhookEvent")


class MoneyOperation(base.AbstractMoneyOperation):
    class Meta(base.AbstractMoneyOperation.Meta):
        abstract = False
        swappable = setting_name("MoneyOperation")


class StaffAction(base.AbstractStaffAction):
    class Meta(base.AbstractStaffAction.Meta):
        abstract = False
        swappable = setting_name("StaffAction")


class EscrowTip(base.AbstractEscrowTip):
    class Meta(base.AbstractEscrowTip.Meta):
        abstract = False
        swappable = setting_name("EscrowTip")


class EscrowTipTransfer(base.AbstractEscrowTipTransfer):
    class Meta(base.AbstractEscrowTipTransfer.Meta):
        abstract = False
        swappable = setting_name("EscrowTipTransfer")
