"""The marketplace's own JSON API: post a task, bid, accept a bid.

Paying, releasing, refunding and the dashboards are the package's API under
``/escrow/`` (``payments/create/``, ``payments/confirm/<id>/``, ...). These
views subclass the package's ``EscrowAPIView``, so errors have the same shape
everywhere: ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from django_escrow_connect.api.errors import EscrowAPIView
from django_escrow_connect.money import MAX_CHARGE_AMOUNT, format_money, normalize_currency
from django_escrow_connect.services import errors

from . import services
from .forms import CURRENCIES, DESCRIPTION_MAX_LENGTH
from .models import Bid, Organization, Task, TaskStatus

#: The currencies a bid may be in: the HTML bid form's.
BID_CURRENCIES = tuple(code for code, _label in CURRENCIES)


class TaskInput(serializers.Serializer):
    title = serializers.CharField(max_length=120)
    description = serializers.CharField(
        max_length=DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True, default=""
    )


class BidInput(serializers.Serializer):
    # Stripe's largest charge in every BID_CURRENCIES currency (IDR, which
    # allows more, is not one); services.check_bid_amount checks per currency,
    # Stripe's smallest charge too (money.validate_charge_amount).
    amount = serializers.IntegerField(
        min_value=1,
        max_value=MAX_CHARGE_AMOUNT,
        help_text=(
            "Minor units (cents): 12000 is 120.00 USD; from the smallest charge in the "
            "currency (money.min_charge_amount: Stripe's table, or the MIN_CHARGE_AMOUNTS "
            f"setting's entry) to {MAX_CHARGE_AMOUNT}."
        ),
    )
    currency = serializers.CharField(max_length=3, default="usd")
    organization_id = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**63 - 1
    )
    message = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")

    def validate_amount(self, value: Any) -> int:
        # DRF's IntegerField accepts "12.0" and 12.0; money must be an exact int.
        raw = self.initial_data.get("amount") if hasattr(self.initial_data, "get") else None
        if isinstance(raw, (float, bool)):
            raise serializers.ValidationError("Send an integer amount in minor units.")
        return int(value)

    def validate_currency(self, value: str) -> str:
        try:
            code = normalize_currency(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        # The pages' list (BidForm): a bid in another currency could not be
        # paid or tipped here (TIP_MAX_AMOUNT lists these three).
        if code not in BID_CURRENCIES:
            raise serializers.ValidationError(
                f"The currency must be one of {', '.join(BID_CURRENCIES)}."
            )
        return code

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The same rule as the pages: whole minor units Stripe can charge in
        # this currency (three-decimal currencies end in 0, ISK whole krónur).
        try:
            services.check_bid_amount(attrs["amount"], attrs["currency"])
        except errors.InvalidInput as exc:
            raise serializers.ValidationError({"amount": [exc.message]}) from exc
        return attrs


def bid_data(bid: Bid) -> dict[str, Any]:
    return {
        "id": bid.pk,
        "task_id": bid.task_id,
        "amount": bid.amount,
        "currency": bid.currency,
        "formatted": format_money(bid.amount, bid.currency),
        "doer": (
            {"type": "user", "id": bid.doer_user_id, "name": str(bid.doer_user)}
            if bid.doer_user_id is not None
            else {
                "type": "organization",
                "id": bid.doer_organization_id,
                "name": str(bid.doer_organization),
            }
        ),
        "message": bid.message,
        "accepted": bid.accepted,
        "accepted_at": bid.accepted_at.isoformat() if bid.accepted_at else None,
        "created_at": bid.created_at.isoformat(),
    }


def task_data(task: Task, *, bids_for: Any = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": task.pk,
        "title": task.title,
        "description": task.description,
        "customer_id": task.customer_id,
        "status": task.status,
        "payment_status": task.payment_status,
        "created_at": task.created_at.isoformat(),
        "url": task.get_absolute_url(),
    }
    if bids_for is not None:
        # Only the bids this user may read (services.visible_bids).
        data["bids"] = [bid_data(b) for b in services.visible_bids(task, bids_for)]
    return data


class MarketplaceAPIView(EscrowAPIView):
    permission_classes = [IsAuthenticated]


class TaskListView(MarketplaceAPIView):
    """``GET api/tasks/`` open tasks (``?mine=1``: yours); ``POST`` posts one."""

    def get(self, request: Request) -> Response:
        if request.query_params.get("mine"):
            tasks = Task.objects.filter(customer=request.user)
        else:
            tasks = Task.objects.filter(status__in=[TaskStatus.CREATED, TaskStatus.BIDDING])
        return Response({"results": [task_data(t) for t in tasks[:100]]})

    def post(self, request: Request) -> Response:
        serializer = TaskInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        task = services.post_task(
            request.user,
            serializer.validated_data["title"],
            serializer.validated_data["description"],
        )
        return Response(task_data(task, bids_for=request.user), status=status.HTTP_201_CREATED)


class TaskDetailView(MarketplaceAPIView):
    def get(self, request: Request, pk: int) -> Response:
        return Response(task_data(services.get_task(pk), bids_for=request.user))


class BidCreateView(MarketplaceAPIView):
    """``POST api/tasks/<id>/bids/`` ``{amount, currency?, organization_id?, message?}``."""

    def post(self, request: Request, pk: int) -> Response:
        serializer = BidInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        organization = None
        if data.get("organization_id") is not None:
            organization = Organization.objects.filter(pk=data["organization_id"]).first()
            if organization is None or not organization.is_member(request.user):
                raise errors.NotFound("No such organization.", code="organization_not_found")
        bid = services.place_bid(
            pk,
            request.user,
            amount=data["amount"],
            currency=data["currency"],
            organization=organization,
            message=data["message"],
        )
        return Response(bid_data(bid), status=status.HTTP_201_CREATED)


class BidAcceptView(MarketplaceAPIView):
    """``POST api/bids/<id>/accept/``; then pay with the package's ``payments/create/``."""

    def post(self, request: Request, pk: int) -> Response:
        try:
            bid = services.accept_bid(pk, request.user)
        except services.DoerNotReady as exc:
            return Response(
                {
                    "error": {
                        "code": exc.code,
                        "message": exc.message,
                        "onboarding_url": exc.onboarding_url,
                    }
                },
                status=exc.status_code,
            )
        return Response(
            {
                "bid": bid_data(bid),
                "task": task_data(bid.task),
                "next": {
                    "create_payment": reverse("escrow_connect:payment-create"),
                    "body": {"task_id": str(bid.task_id), "amount": bid.amount},
                },
            }
        )
