"""Admin for every library model that is not swapped out.

Stripe ids, amounts and states are read-only: the admin is for looking, and
for the operator actions the services expose (:mod:`.actions`: release,
refund, cancel, retry a failed transfer, reconcile, resolve or annotate an
incident, refresh an account), never for editing money. Every action is
recorded in the staff audit trail (``StaffAction``).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import swapper
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DataError, connections, router, transaction
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..services.operations import in_transaction
from ..services.report import build_report, stuck_payment_hours
from ..states import StaffActionKind, StaffActionOutcome
from ..swappable import APP_LABEL
from ..webhooks.operations import replay_event as replay_webhook_event
from .actions import (
    CONFIRMATION_TEMPLATE,
    AccountActionsMixin,
    Attempt,
    IncidentActionsMixin,
    PaymentActionsMixin,
    record,
)

# Public (docs/admin.md): a host that swaps a model registers it with one of
# these classes, or a subclass, since the package registers only its own.
__all__ = [
    "ADMINS",
    "ConnectedAccountAdmin",
    "DisputeAdmin",
    "EscrowPaymentAdmin",
    "EscrowTipAdmin",
    "EscrowTipTransferAdmin",
    "IncidentAdmin",
    "MilestoneAdmin",
    "MoneyOperationAdmin",
    "PayeeAdmin",
    "ReadOnlyMoneyAdmin",
    "RefundAdmin",
    "ReleaseAdmin",
    "StaffActionAdmin",
    "TransferAdmin",
    "TransferReversalAdmin",
    "WebhookEventAdmin",
]

logger = logging.getLogger("django_escrow_connect.admin")

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


def _points_nowhere(model: Any) -> bool:
    """Whether a foreign key of ``model`` names a model that is not installed."""
    return any(
        isinstance(field.remote_field.model, str)
        for field in model._meta.get_fields()
        if field.is_relation and field.remote_field is not None
    )


def _is_primary_key(model: Any, value: str) -> bool:
    """Whether ``value`` can be a primary key of ``model`` (a UUID, an id in range)."""
    field = model._meta.pk
    if "\x00" in value:  # PostgreSQL refuses NUL in any text it is sent
        return False
    try:
        field.run_validators(field.to_python(value))
    except (ValidationError, ValueError, TypeError):
        return False
    return True


#: How SQLite's REGEXP (Django's, in Python) sees each regex lookup's value.
_SQLITE_PATTERNS = {"regex": "", "iregex": "(?i)"}


def _check_python_patterns(request: HttpRequest) -> None:
    """ValueError for a ``__regex``/``__iregex`` value Python cannot compile.

    SQLite has no regular expressions: Django registers ``re.search`` as its
    REGEXP function, and a pattern ``re`` refuses fails inside SQLite, on the
    first row it reads, as an ``OperationalError`` ("user-defined function
    raised exception") no different from a database that fails. So the
    pattern is compiled here first, as that function would compile it.
    """
    for key in request.GET:
        prefix = _SQLITE_PATTERNS.get(key.rpartition("__")[2])
        if prefix is None:
            continue
        for value in request.GET.getlist(key):
            try:
                re.compile(prefix + value)
            # OverflowError: a repeat count past what re takes (a{4294967296});
            # RecursionError: thousands of nested groups.
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"{key}: not a regular expression ({exc})") from exc


class _LookupsFromTheQueryString(_ModelAdmin):
    """The changelist's query string is input: a value no query can use is a bad lookup."""

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # Django refuses most malformed lookups (a redirect to ``?e=1``), but
        # not a date hierarchy day past 9999-12-31 (OverflowError while it
        # computes the next day), a year no datetime holds
        # (``created_at__year=99999``: ValueError when the query is built), a
        # value the database refuses (NUL, a malformed regular expression on
        # PostgreSQL), or a regular expression SQLite's Python REGEXP cannot
        # compile: those were 500s.
        using = router.db_for_read(self.model)
        try:
            if connections[using].vendor == "sqlite":
                _check_python_patterns(request)
            # A savepoint: a value the database refuses aborts it alone, not
            # a transaction the request may run in (ATOMIC_REQUESTS, a
            # middleware), which would fail on its next statement.
            with transaction.atomic(using=using):
                return super().get_changelist_instance(request)
        except (OverflowError, ValueError, DataError) as exc:
            # Logged with its traceback: the same errors from a host's
            # get_queryset override would otherwise look like a bad lookup.
            logger.warning(
                "admin list refused as a bad lookup: %s",
                exc,
                exc_info=True,
                extra={"model": self.model._meta.label, "query": request.GET.urlencode()},
            )
            raise IncorrectLookupParameters(exc) from exc


class ReadOnlyMoneyAdmin(_LookupsFromTheQueryString):
    """Rows that mirror Stripe are written by services and webhooks only."""

    def response_action(self, request: HttpRequest, queryset: Any, **kwargs: Any) -> Any:
        # Django 6.1 passes ``action_location`` (changelist or change form):
        # handed on as given, so the override fits every supported version.
        # Django filters the changelist by the posted ids before the action
        # runs: one that is no id of this model ("junk", another model's
        # integer id for a UUID, 2**70) was a ValidationError or an
        # OverflowError there, a 500. It is refused, and nothing is done.
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(_is_primary_key(self.model, value) for value in selected):
            self.message_user(
                request,
                gettext("The selection names rows that do not exist. Nothing was done."),
                messages.WARNING,
            )
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset, **kwargs)

    def check(self, **kwargs: Any) -> list[Any]:
        # A model setting naming no installed model (escrow_connect.E002/E003
        # and Django's fields.E300 report it) leaves a foreign key a string,
        # and Django's inline checks crash on it (AttributeError), so `check`
        # would end in a traceback instead of those errors.
        if any(_points_nowhere(model) for model in (self.model, *(i.model for i in self.inlines))):
            return []
        return list(super().check(**kwargs))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        if request.method == "POST":
            # Every field is read-only, so a save has nothing to change: it
            # would only write the whole row back as read, without a lock,
            # undoing what a webhook or a service committed in between.
            # (The staff actions post to their own pages.)
            raise PermissionDenied
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().changeform_view(request, object_id, form_url, extra_context)


class ConnectedAccountAdmin(AccountActionsMixin, ReadOnlyMoneyAdmin):
    """Connected accounts: status, requirements, and the refresh action."""

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


if TYPE_CHECKING:
    _TabularInline = admin.TabularInline[Any, Any]
else:
    _TabularInline = admin.TabularInline


class ReadOnlyInline(_TabularInline):
    """Rows shown with their parent (written by services only), never edited there."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _model(name: str) -> Any:
    return swapper.load_model(APP_LABEL, name, require_ready=False)


class MilestoneInline(ReadOnlyInline):
    model = _model("EscrowMilestone")
    fields = readonly_fields = (
        "position",
        "name",
        "amount",
        "currency",
        "status",
        "due_date",
        "delivered_at",
        "released_at",
    )


class PayeeInline(ReadOnlyInline):
    model = _model("EscrowPayee")
    fields = readonly_fields = (
        "position",
        "user",
        "organization",
        "basis_points",
        "amount",
        "destination_account_id",
    )


class ReleaseInline(ReadOnlyInline):
    model = _model("EscrowRelease")
    fields = readonly_fields = (
        "position",
        "milestone",
        "amount",
        "platform_fee",
        "allocations",
        "status",
        "requested_by",
        "released_at",
    )


class PayeeTransferInline(ReadOnlyInline):
    """Every transfer of the payment, with its release and payee (split payments)."""

    model = _model("Transfer")
    fields = readonly_fields = (
        "stripe_transfer_id",
        "release",
        "payee",
        "amount",
        "amount_reversed",
        "destination_account_id",
        "status",
        "failure_code",
        "created_at",
    )


class EscrowTipInline(ReadOnlyInline):
    """The payment's tips (docs/tips.md), each with its transfers."""

    model = swapper.load_model(APP_LABEL, "EscrowTip", require_ready=False)
    fields = (
        "amount",
        "currency",
        "platform_fee",
        "status",
        "stripe_payment_intent_id",
        "tip_transfers",
        "failure_code",
        "created_at",
        "paid_at",
        "transferred_at",
    )
    readonly_fields = fields

    @admin.display(description=_("transfers"))
    def tip_transfers(self, tip: Any) -> str:
        return (
            ", ".join(
                f"{t.stripe_transfer_id or t.idempotency_key}: {t.amount} -> "
                f"{t.destination_account_id} ({t.status})"
                for t in tip.transfers.all()
            )
            or "-"
        )


class EscrowTipTransferInline(ReadOnlyInline):
    model = swapper.load_model(APP_LABEL, "EscrowTipTransfer", require_ready=False)
    fields = (
        "destination_account_id",
        "amount",
        "currency",
        "status",
        "stripe_transfer_id",
        "idempotency_key",
        "failure_code",
        "created_at",
    )
    readonly_fields = fields


class EscrowPaymentAdmin(PaymentActionsMixin, ReadOnlyMoneyAdmin):
    """Payments with their milestones, payees, releases and tips; the staff actions."""

    inlines = (MilestoneInline, PayeeInline, ReleaseInline, PayeeTransferInline, EscrowTipInline)
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
    """Transfers to connected accounts."""

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


class MilestoneAdmin(ChildAdmin):
    """A payment's milestones (funding or release per milestone)."""

    list_display = ("payment", "position", "name", "amount", "currency", "status", "due_date")
    search_fields = ("name",)


class PayeeAdmin(ReadOnlyMoneyAdmin):
    """A payment's payees and their allocations (splits)."""

    list_display = ("payment", "position", "user", "organization", "basis_points", "amount")
    list_select_related = ("payment", "user", "organization")
    raw_id_fields = ("payment",)


class ReleaseAdmin(ChildAdmin):
    """Releases of a payment in parts."""

    list_display = ("payment", "position", "milestone", "amount", "platform_fee", "status")


class TransferReversalAdmin(ChildAdmin):
    """Reversals of transfers, the app's and those made outside it."""

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
    """Refunds, the app's and those made outside it."""

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


# ChildAdmin's settings plus the tip; not its subclass, whose attributes mypy types as
# those exact tuples.
class DisputeAdmin(ReadOnlyMoneyAdmin):
    """Disputes: the payment's own and its tips' (``tip``), with what was out when each opened."""

    list_display = (
        "stripe_dispute_id",
        "payment",
        "tip",
        "amount",
        "currency",
        "status",
        "reason",
        "evidence_due_by",
        "closed_at",
    )
    # Not empty: a dispute of a tip's charge, which never moves the payment.
    list_filter = ("status", "reason", "currency", ("tip", admin.EmptyFieldListFilter))
    search_fields = ("stripe_dispute_id", "stripe_charge_id")
    list_select_related = ("payment", "tip")
    raw_id_fields = ("payment", "tip")


class IncidentAdmin(IncidentActionsMixin, ReadOnlyMoneyAdmin):
    """Payment and transfer incidents, with the resolve and annotate actions."""

    list_display = ("kind", "payment", "code", "message", "created_at", "resolved_at")
    list_filter = ("kind", "created_at", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("code", "message", "stripe_event_id", "stripe_request_id")
    list_select_related = ("payment",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "staff_notes"]

    @admin.display(description="Staff notes")
    def staff_notes(self, obj: Any) -> str:
        """What staff did and wrote about this incident, oldest first."""
        notes = (
            swapper.load_model(APP_LABEL, "StaffAction")
            .objects.filter(incident_model=obj._meta.label_lower, incident_id=str(obj.pk))
            .select_related("staff")
            .order_by("created_at")
        )
        return (
            format_html_join(
                mark_safe("<br>"),
                "{} — {} ({}, {}): {}",
                (
                    (
                        f"{note.created_at:%Y-%m-%d %H:%M}",
                        note.staff,
                        note.get_action_display(),
                        note.get_outcome_display(),
                        note.note,
                    )
                    for note in notes
                ),
            )
            or "—"
        )


def _record_replay(request: HttpRequest, result: Attempt) -> None:
    """The audit trail's entry for one replayed event (``replay_event``).

    The message names the event (``evt_...``, its type) and its state after
    the replay; the staff action list's search finds it by the event's id.
    """
    record(request, StaffActionKind.REPLAY_EVENT, result)


class WebhookEventAdmin(ReadOnlyMoneyAdmin):
    """Received webhook events, with the replay action and the escrow report."""

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
    actions = ["replay_events"]
    # Adds an "Escrow report" button to the event log (webhooks/report page).
    change_list_template = "escrow_connect/admin/webhookevent_change_list.html"

    @admin.action(description=_("Replay selected events"), permissions=["change"])
    def replay_events(self, request: HttpRequest, queryset: Any) -> TemplateResponse | None:
        """Confirm (the events listed), then process them again, oldest first.

        Replaying runs the handlers: they move payments and may read Stripe
        (``ReadFirst``) or finish a transfer, so it must run with no
        transaction open, as ``escrow_replay_events`` does. The changelist is
        marked ``non_atomic_requests`` (``get_urls``); inside a transaction
        anyway (a host's middleware) it refuses rather than run.
        """
        events = list(queryset.order_by("received_at", "pk"))
        if "confirm" not in request.POST:
            return self._confirm_replay(request, events)
        if in_transaction():
            refusal = gettext(
                "Nothing replayed: a database transaction is open, and replaying "
                "must run outside one (its handlers read Stripe) (in_transaction)."
            )
            for event in events:
                text = f"{event.stripe_event_id} ({event.type}): {refusal}"
                _record_replay(request, Attempt(StaffActionOutcome.REFUSED, text, "in_transaction"))
            self.message_user(request, refusal, messages.ERROR)
            return None
        counts: dict[str, int] = {}
        for event in events:
            status = replay_webhook_event(event.pk)
            counts[status] = counts.get(status, 0) + 1
            # Each replay is a staff action on money's state (handlers move
            # payments): the audit trail says who replayed what, and how it ended.
            outcome = StaffActionOutcome.ERROR if status == "failed" else StaffActionOutcome.OK
            message = f"{event.stripe_event_id} ({event.type}): {status}"
            code = "event_failed" if status == "failed" else ""
            _record_replay(request, Attempt(outcome, message, code))
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        level = messages.WARNING if counts.get("failed") else messages.SUCCESS
        self.message_user(
            request,
            gettext("Replayed: %(summary)s.") % {"summary": summary or gettext("nothing")},
            level,
        )
        return None

    def _confirm_replay(self, request: HttpRequest, events: list[Any]) -> TemplateResponse:
        """The confirmation page: each event selected, and what replaying it does."""
        label = gettext("Replay selected events")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("%(action)s: are you sure?") % {"action": label},
            "kind": "replay_events",
            "label": label,
            "explanation": gettext(
                "Each event is processed again, oldest first, whatever its state: its "
                "handler compares it with the current state, so an event already applied "
                "changes nothing. What escrow_replay_events --event does."
            ),
            "items": [(event, self._replay_lines(event)) for event in events],
            "form": forms.Form(),
            "single": False,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, CONFIRMATION_TEMPLATE, context)

    @staticmethod
    def _replay_lines(event: Any) -> list[str]:
        lines = [gettext("%(n)s attempts") % {"n": event.attempts}]
        if event.last_error:
            lines.append(event.last_error[:120])
        return lines

    def get_urls(self) -> list[Any]:
        info = (self.model._meta.app_label, self.model._meta.model_name)
        report = path(
            "report/",
            self.admin_site.admin_view(self.report_view),
            name=f"{info[0]}_{info[1]}_report",
        )
        urls = super().get_urls()
        for pattern in urls:
            if getattr(pattern, "name", "") == f"{info[0]}_{info[1]}_changelist":
                # The replay action runs webhook handlers, which must run with
                # no transaction open: not inside ATOMIC_REQUESTS' one.
                transaction.non_atomic_requests(pattern.callback)
        return [report, *urls]

    def report_view(self, request: HttpRequest) -> Any:
        """The ``escrow_report`` command's report as a page (``?days=7``, ``?format=json``)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = max(1, min(int(request.GET.get("days", 7)), 366))
        except ValueError:
            days = 7
        report: dict[str, Any] | None = None
        try:
            stuck_payment_hours()
        except ValueError as exc:
            # STUCK_PAYMENT_HOURS as system check E102 refuses (a server
            # running without the checks): staff are told which setting to
            # fix, on the page without the report, not shown a 500. Only the
            # setting is read here: an error while building the report is a
            # bug and keeps its traceback.
            if request.GET.get("format") == "json":
                return JsonResponse({"error": str(exc)}, status=503)
            self.message_user(request, str(exc), messages.ERROR)
        else:
            report = build_report(since=timezone.now() - timedelta(days=days))
        if request.GET.get("format") == "json":
            return JsonResponse(report)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Escrow report"),
            "report": report,
            "days": days,
            "day_choices": (1, 7, 30, 90),
        }
        return TemplateResponse(request, "escrow_connect/admin/report.html", context)


class MoneyOperationAdmin(ReadOnlyMoneyAdmin):
    """The operation journal: every money call to Stripe, its key and outcome."""

    list_display = (
        "idempotency_key",
        "kind",
        "status",
        "amount",
        "currency",
        "stripe_object_id",
        "error_code",
        "sent_count",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "kind", "created_at")
    search_fields = ("=idempotency_key", "=stripe_object_id", "=payment__id", "stripe_request_id")
    date_hierarchy = "created_at"
    list_select_related = ("payment",)


class StaffActionAdmin(_LookupsFromTheQueryString):
    """The audit trail: readable by staff who may view it, written by actions only."""

    list_display = (
        "created_at",
        "staff",
        "action",
        "outcome",
        "payment",
        "incident_id",
        "account_id",
        "amount",
        "currency",
        "code",
    )
    list_filter = ("action", "outcome", "created_at")
    search_fields = ("=payment__id", "account_id", "code", "note", "message")
    date_hierarchy = "created_at"
    list_select_related = ("staff", "payment")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EscrowTipAdmin(ChildAdmin):
    """Tips on released payments."""

    list_display = ("id", "payment", "amount", "currency", "platform_fee", "status", "created_at")
    search_fields = ("=id", "stripe_payment_intent_id", "stripe_charge_id")
    inlines = [EscrowTipTransferInline]


class EscrowTipTransferAdmin(ReadOnlyMoneyAdmin):
    """The transfers that sent a tip to its payees."""

    list_display = ("stripe_transfer_id", "tip", "amount", "currency", "status", "created_at")
    list_filter = ("status", "currency", "created_at")
    search_fields = ("stripe_transfer_id", "idempotency_key", "destination_account_id")
    raw_id_fields = ("tip",)


#: Which admin class the package registers for each library model (by model name).
ADMINS: dict[str, type[admin.ModelAdmin[Any]]] = {
    "ConnectedAccount": ConnectedAccountAdmin,
    "EscrowPayment": EscrowPaymentAdmin,
    "EscrowMilestone": MilestoneAdmin,
    "EscrowPayee": PayeeAdmin,
    "EscrowRelease": ReleaseAdmin,
    "Transfer": TransferAdmin,
    "TransferReversal": TransferReversalAdmin,
    "Refund": RefundAdmin,
    "Dispute": DisputeAdmin,
    "PaymentIncident": IncidentAdmin,
    "TransferIncident": IncidentAdmin,
    "WebhookEvent": WebhookEventAdmin,
    "MoneyOperation": MoneyOperationAdmin,
    "StaffAction": StaffActionAdmin,
    "EscrowTip": EscrowTipAdmin,
    "EscrowTipTransfer": EscrowTipTransferAdmin,
}

for _name, _admin_class in ADMINS.items():
    # A swapped model belongs to the host, which registers its own admin
    # (subclassing the classes above if it likes).
    if not swapper.is_swapped(APP_LABEL, _name):
        admin.site.register(swapper.load_model(APP_LABEL, _name, require_ready=False), _admin_class)
