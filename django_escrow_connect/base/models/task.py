"""The host task's side of a payment, and the organization placeholder."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from ...states import (
    TaskPaymentStatus,
)

__all__ = ["AbstractOrganizationPlaceholder", "EscrowTaskMixin"]


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
        task cannot be paid for (no accepted bid, already paid, ...), with
        ``payer=`` the task's customer: only they are told why.
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
