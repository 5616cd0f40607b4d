"""The tip API: the customer adds a tip to a released payment; both parties list them.

``POST payments/{payment_id}/tips/`` ``{amount}`` creates a tip (its own
PaymentIntent) and answers 201 with the tip and the ``client_secret`` the
customer's browser confirms it with. ``GET payments/{payment_id}/tips/`` lists
the payment's tips, each with the disputes of its charge, to whoever may see
the payment (payer, payee, staff);
``POST payments/{payment_id}/tips/{tip_id}/retry-transfer/`` is for staff,
after Stripe refused a tip's transfer. See docs/tips.md.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Prefetch, prefetch_related_objects
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from .. import swappable
from ..conf import escrow_settings
from ..services import errors, saved_methods
from ..services import tips as tip_services
from ..states import TipStatus
from .payments import DisputeOutput, PaymentAPIView, get_visible_payment
from .schema import extend_schema
from .serializers import (
    IDEMPOTENCY_KEY_PARAMETER,
    MinorAmountField,
    StrictSerializer,
    error_responses,
    idempotency_key,
    validated,
)

__all__ = ["SavedPaymentMethodView", "TipListCreateView", "TipRetryTransferView"]

_ERROR_DESCRIPTIONS = {
    400: "Invalid input (codes: invalid_amount, amount_too_small, tips_unavailable, "
    "invalid_idempotency_key, idempotency_key_reused).",
    402: "The card was declined.",
    403: "Not signed in, or not the payer (or not staff, for a retry).",
    404: "No such payment or tip (or not one you may see).",
    409: "The payment or tip does not allow this now (codes: not_tippable, operation_pending, "
    "tip_transfer_failed, transition_not_allowed, no_saved_payment_method, account_not_ready).",
    503: "Stripe is not reachable or its answer is pending; retry.",
}


class CreateTipRequest(StrictSerializer):
    amount = MinorAmountField(
        help_text="The tip in the payment's currency's minor units; at most "
        "TIP_MAX_AMOUNT for that currency."
    )


class EmptyRequest(StrictSerializer):
    pass


class TipOutput(serializers.Serializer[Any]):
    id = serializers.CharField(source="pk")
    payment_id = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    platform_fee = serializers.IntegerField()
    status = serializers.CharField(help_text="One of: " + ", ".join(TipStatus.values) + ".")
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    transferred_at = serializers.DateTimeField(allow_null=True)
    amount_refunded = serializers.IntegerField(
        help_text="What Stripe says was refunded of the tip's charge (minor units; refunds "
        "made in the Stripe Dashboard); 0 if none."
    )
    refunded_at = serializers.DateTimeField(
        allow_null=True, help_text="When a refund of the tip was last recorded."
    )
    # The payment's own representation of a dispute: the customer and the
    # payee see a tip's chargeback where they look at the tip, not only on
    # the payment (where it is listed too, with its ``tip``).
    disputes = DisputeOutput(
        many=True,
        help_text="The disputes of the tip's charge, oldest first (as the payment's "
        "disputes show them); empty if it was never disputed.",
    )


class TipStartOutput(TipOutput):
    """A new tip, and what the browser needs to pay it: returned, never stored or logged."""

    client_secret = serializers.CharField(
        allow_null=True,
        help_text="For Stripe.js only (confirm the tip); never store or log it. Null when "
        "the saved card was charged off-session.",
    )
    confirmation = serializers.ChoiceField(
        choices=["off_session", "customer"],
        # Not a tip attribute: the view sets it from the service's answer.
        default="customer",
        help_text="off_session: the saved card was charged, nothing to confirm; customer: "
        "the customer confirms the tip with client_secret (no saved card, or Stripe "
        "needs the customer: authentication_required or a decline).",
    )
    publishable_key = serializers.SerializerMethodField(
        help_text="STRIPE_PUBLISHABLE_KEY, for Stripe(...) in the browser; null when not set."
    )

    def get_publishable_key(self, tip: Any) -> str | None:
        return escrow_settings.STRIPE_PUBLISHABLE_KEY or None


class TipListOutput(serializers.Serializer[Any]):
    results = TipOutput(many=True)


_CREATE_ERRORS = error_responses(_ERROR_DESCRIPTIONS, 400, 402, 403, 404, 409, 503)
_READ_ERRORS = error_responses(_ERROR_DESCRIPTIONS, 403, 404)


class TipListCreateView(PaymentAPIView):
    """``GET|POST payments/{payment_id}/tips/``."""

    @extend_schema(
        responses={200: TipListOutput, **_READ_ERRORS},
        summary="A payment's tips",
        operation_id="payments_tips_list",
    )
    def get(self, request: Request, payment_id: str) -> Response:
        payment = get_visible_payment(request.user, payment_id)
        tips = (
            swappable.load("EscrowTip")
            .objects.filter(payment=payment)
            .order_by("created_at")
            # One query for every listed tip's disputes, however many tips.
            .prefetch_related(_tip_disputes())
        )
        return Response({"results": TipOutput(tips, many=True).data})

    @extend_schema(
        request=CreateTipRequest,
        responses={201: TipStartOutput, **_CREATE_ERRORS},
        summary="Add a tip to a released payment",
        operation_id="payments_tips_create",
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request: Request, payment_id: str) -> Response:
        payment = get_visible_payment(request.user, payment_id)
        data = validated(CreateTipRequest, request.data)
        # A tip sent again is a second tip (a second charge of a saved card):
        # the client's key tells a retry from a new request.
        start = tip_services.create_tip(
            payment.pk, request.user, data["amount"], request_key=idempotency_key(request)
        )
        # A keyed retry may answer an older tip, which may have been disputed.
        prefetch_related_objects([start.tip], _tip_disputes())
        body = dict(TipStartOutput(start.tip).data)
        body["client_secret"] = start.client_secret
        body["confirmation"] = start.confirmation
        return Response(body, status=status.HTTP_201_CREATED)


class SavedPaymentMethodView(PaymentAPIView):
    """``DELETE payments/{payment_id}/saved-payment-method/``: the payer withdraws consent."""

    @extend_schema(
        request=None,
        responses={204: None, **error_responses(_ERROR_DESCRIPTIONS, 403, 404, 409, 503)},
        summary="Withdraw consent to the saved card (and detach it at Stripe)",
        operation_id="payments_saved_payment_method_destroy",
    )
    def delete(self, request: Request, payment_id: str) -> Response:
        payment = get_visible_payment(request.user, payment_id)
        saved_methods.withdraw_saved_payment_method(payment.pk, request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TipRetryTransferView(PaymentAPIView):
    """``POST payments/{payment_id}/tips/{tip_id}/retry-transfer/`` (staff)."""

    @extend_schema(
        request=None,
        responses={200: TipOutput, **_CREATE_ERRORS},
        summary="Retry a tip's failed transfer (staff)",
        operation_id="payments_tips_retry_transfer",
    )
    def post(self, request: Request, payment_id: str, tip_id: str) -> Response:
        payment = get_visible_payment(request.user, payment_id)
        validated(EmptyRequest, request.data)
        try:
            pk = uuid.UUID(str(tip_id))
        except ValueError:
            raise errors.NotFound(_no_tip()) from None
        if not swappable.load("EscrowTip").objects.filter(pk=pk, payment=payment).exists():
            raise errors.NotFound(_no_tip())
        tip = tip_services.retry_tip_transfer(pk, request.user)
        prefetch_related_objects([tip], _tip_disputes())
        return Response(TipOutput(tip).data)


def _tip_disputes() -> Prefetch[Any]:
    """A tip's disputes in :class:`TipOutput`'s order (oldest first), in one query."""
    return Prefetch(
        "disputes", queryset=swappable.load("Dispute").objects.order_by("created_at", "pk")
    )


def _no_tip() -> str:
    from django.utils.translation import gettext as _

    return _("No such tip.")
