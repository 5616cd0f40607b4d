"""Admin for every library model that is not swapped out.

Stripe ids, amounts and states are read-only: the admin is for looking, and
for the few operator actions the services expose, never for editing money.
"""

from __future__ import annotations

from typing import Any

import swapper
from django.contrib import admin
from django.http import HttpRequest

from .swappable import APP_LABEL


class ReadOnlyMoneyAdmin(admin.ModelAdmin):
    """Rows that mirror Stripe are written by services and webhooks only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]


class ConnectedAccountAdmin(ReadOnlyMoneyAdmin):
    list_display = (
        "stripe_account_id",
        "owner_user",
        "owner_organization",
        "business_type",
        "status",
        "charges_enabled",
        "payouts_enabled",
        "updated_at",
    )
    list_filter = ("status", "business_type", "charges_enabled", "payouts_enabled", "country")
    search_fields = ("stripe_account_id", "email")
    list_select_related = ("owner_user", "owner_organization")


class EscrowPaymentAdmin(ReadOnlyMoneyAdmin):
    list_display = (
        "id",
        "task",
        "payer",
        "amount",
        "currency",
        "platform_fee",
        "amount_refunded",
        "status",
        "strategy",
        "created_at",
    )
    list_filter = ("status", "strategy", "currency", "created_at")
    search_fields = (
        "=id",
        "stripe_payment_intent_id",
        "stripe_charge_id",
        "transfer_group",
        "destination_account_id",
    )
    list_select_related = ("task", "payer", "payee_user", "payee_organization")
    date_hierarchy = "created_at"


class ChildAdmin(ReadOnlyMoneyAdmin):
    list_filter = ("status", "currency", "created_at")
    list_select_related = ("payment",)
    raw_id_fields = ("payment",)


class TransferAdmin(ChildAdmin):
    list_display = (
        "stripe_transfer_id",
        "payment",
        "amount",
        "amount_reversed",
        "currency",
        "destination_account_id",
        "status",
        "created_at",
    )
    search_fields = ("stripe_transfer_id", "destination_account_id", "idempotency_key")


class TransferReversalAdmin(ChildAdmin):
    list_display = (
        "stripe_reversal_id",
        "stripe_transfer_id",
        "payment",
        "amount",
        "currency",
        "status",
        "created_at",
    )
    search_fields = ("stripe_reversal_id", "stripe_transfer_id")


class RefundAdmin(ChildAdmin):
    list_display = (
        "stripe_refund_id",
        "payment",
        "amount",
        "currency",
        "status",
        "reason",
        "created_at",
    )
    search_fields = ("stripe_refund_id", "idempotency_key")


class DisputeAdmin(ChildAdmin):
    list_display = (
        "stripe_dispute_id",
        "payment",
        "amount",
        "currency",
        "status",
        "reason",
        "evidence_due_by",
        "closed_at",
    )
    list_filter = ("status", "reason", "currency")
    search_fields = ("stripe_dispute_id", "stripe_charge_id")


class IncidentAdmin(ReadOnlyMoneyAdmin):
    list_display = ("kind", "payment", "code", "message", "created_at", "resolved_at")
    list_filter = ("kind", "created_at")
    search_fields = ("code", "message", "stripe_event_id", "stripe_request_id")
    list_select_related = ("payment",)


class WebhookEventAdmin(ReadOnlyMoneyAdmin):
    list_display = (
        "stripe_event_id",
        "type",
        "endpoint",
        "account",
        "status",
        "attempts",
        "received_at",
        "processed_at",
    )
    list_filter = ("status", "endpoint", "type", "livemode", "received_at")
    search_fields = ("=stripe_event_id", "type", "account", "object_id")
    date_hierarchy = "received_at"


ADMINS: dict[str, type[admin.ModelAdmin]] = {
    "ConnectedAccount": ConnectedAccountAdmin,
    "EscrowPayment": EscrowPaymentAdmin,
    "Transfer": TransferAdmin,
    "TransferReversal": TransferReversalAdmin,
    "Refund": RefundAdmin,
    "Dispute": DisputeAdmin,
    "PaymentIncident": IncidentAdmin,
    "TransferIncident": IncidentAdmin,
    "WebhookEvent": WebhookEventAdmin,
}

for _name, _admin_class in ADMINS.items():
    # A swapped model belongs to the host, which registers its own admin
    # (subclassing the classes above if it likes).
    if not swapper.is_swapped(APP_LABEL, _name):
        admin.site.register(swapper.load_model(APP_LABEL, _name, require_ready=False), _admin_class)
