"""Staff actions from the admin: confirm, run through the services, report, record.

Every action goes through the same service as the API, with
``user=request.user``, so the service's own permission (``permissions.may_*``)
decides as it does for the API; the admin only adds Django's ``change``
permission on the model as the gate to see the action at all. Each attempt,
refused ones included, is written to the audit trail (``StaffAction``) after
the service returned, in a transaction of its own.

Money calls must run with no transaction open: the views that run these
actions are marked ``non_atomic_requests`` (see ``StaffActionsMixin``), and an
action refuses (code ``in_transaction``) rather than call Stripe from inside
one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.validators import RegexValidator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import permissions, swappable
from ..exceptions import EscrowConnectError
from ..money import MAX_MINOR_AMOUNT, format_money
from ..services import errors, tips
from ..services.accounts import refresh_account
from ..services.common import account_for_payee, lock_payment
from ..services.operations import in_transaction
from ..services.outcomes import STRIPE_REFUND_REASONS
from ..services.payments import (
    cancel_payment,
    refund_payment,
    release_payment,
    release_preview,
)
from ..services.radar_holds import check_not_held, freeze_message, refusal_holds
from ..services.reconcile import reconcile
from ..services.releases import record_outside_transfer, shares_owed
from ..states import (
    RADAR_HOLD_KINDS,
    IncidentKind,
    MoneyOperationKind,
    PaymentStatus,
    ReleaseStatus,
    StaffActionKind,
    StaffActionOutcome,
    TransferStatus,
)

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise
else:  # only the type checker needs the name
    StrOrPromise = str

__all__ = [
    "INCIDENT_ACTIONS",
    "PAYMENT_ACTIONS",
    "Attempt",
    "StaffActionsMixin",
    "record",
]

K = StaffActionKind
O = StaffActionOutcome  # noqa: E741 - the outcome's enum, as K is the kind's

CONFIRMATION_TEMPLATE = "escrow_connect/admin/staff_action_confirmation.html"


# --------------------------------------------------------------------------
# Running one attempt and recording it
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """How one action on one object ended."""

    outcome: str
    message: str = ""
    code: str = ""


def attempt(call: Callable[[], str], *, moves_money: bool) -> Attempt:
    """Run ``call``; a service's refusal is an answer, not a crash."""
    if moves_money and in_transaction():
        # A request-wide transaction (ATOMIC_REQUESTS on a view not marked
        # non_atomic) would hold the payment's lock through the Stripe call
        # and roll back the record of it on any error.
        return Attempt(
            O.REFUSED,
            "A database transaction is open; money actions must run outside one.",
            "in_transaction",
        )
    try:
        return Attempt(O.OK, call())
    except errors.ServiceError as exc:
        # 4xx: the service said no and nothing was sent; 5xx: Stripe did not
        # answer, or the outcome is not known yet (reconcile finishes it).
        outcome = O.REFUSED if exc.status_code < 500 else O.ERROR
        return Attempt(outcome, exc.message, exc.code)
    except EscrowConnectError as exc:
        return Attempt(O.ERROR, str(exc), getattr(exc, "code", "") or "error")


def record(
    request: HttpRequest,
    action: str,
    result: Attempt,
    *,
    payment: Any = None,
    incident: Any = None,
    account_id: str = "",
    amount: int | None = None,
    currency: str = "",
    note: str = "",
) -> Any:
    """Write one attempt to the audit trail, in its own transaction."""
    with transaction.atomic():
        return swappable.load("StaffAction").objects.create(
            staff=request.user,
            action=action,
            payment=payment,
            incident_model=incident._meta.label_lower if incident is not None else "",
            incident_id=str(incident.pk) if incident is not None else "",
            account_id=account_id,
            amount=amount,
            currency=currency,
            outcome=result.outcome,
            code=result.code,
            message=result.message[:10_000],
            note=note,
        )


def report(request: HttpRequest, model_admin: Any, subject: str, result: Attempt) -> None:
    """Tell the staff member how one attempt ended."""
    if result.outcome == O.OK:
        model_admin.message_user(request, f"{subject}: {result.message}", messages.SUCCESS)
    else:
        level = messages.WARNING if result.outcome == O.REFUSED else messages.ERROR
        text = f"{subject}: {result.message} ({result.code})"
        model_admin.message_user(request, text, level)


# --------------------------------------------------------------------------
# Forms
# --------------------------------------------------------------------------


#: The longest staff note the forms take. The audit trail's column is a
#: TextField (no limit): a pasted log of 200,000 characters was stored whole
#: and shown whole on every page that lists the notes.
MAX_NOTE_LENGTH = 2_000


class NoteField(forms.CharField):
    """A staff note: line breaks stored as ``\n``, at most :data:`MAX_NOTE_LENGTH`.

    Browsers send a textarea's line breaks as ``\r\n`` but count them as
    one character against its ``maxlength``: without this a note the page
    accepted would be refused as too long.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("label", _("Note for the audit trail"))
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "cols": 60}))
        super().__init__(max_length=MAX_NOTE_LENGTH, **kwargs)

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        return value.replace("\r\n", "\n") if isinstance(value, str) else value


class NoteForm(forms.Form):
    note = NoteField(required=False)

    def __init__(self, *args: Any, objects: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.objects = objects or []


class RequiredNoteForm(NoteForm):
    note = NoteField()


class RefundForm(NoteForm):
    amount = forms.IntegerField(
        label=_("Amount (minor units)"),
        min_value=1,
        # The audit trail's column (a BigIntegerField) holds the amount of
        # every attempt, refused ones included: a larger number is refused
        # here, before anything is attempted.
        max_value=MAX_MINOR_AMOUNT,
        required=False,
        help_text=_("Empty: everything still refundable on each payment."),
    )
    reason = forms.ChoiceField(
        label=_("Reason (sent to Stripe)"),
        required=False,
        choices=[("", "---------"), *((r, r.replace("_", " ")) for r in STRIPE_REFUND_REASONS)],
    )

    def clean_amount(self) -> int | None:
        amount: int | None = self.cleaned_data.get("amount")
        if amount is not None and len(self.objects) != 1:
            # One amount for several payments in different currencies would
            # mean different sums of money: partial refunds go one at a time.
            raise forms.ValidationError(_("Choose one payment to refund part of it."))
        return amount


class RecordTransferForm(RequiredNoteForm):
    """A transfer staff made in the Stripe Dashboard, to book as a share paid."""

    transfer_id = forms.CharField(
        label=_("Stripe transfer id"),
        max_length=255,
        validators=[
            RegexValidator(
                r"^tr_[A-Za-z0-9]+$", _("A Stripe transfer id starts with tr_ (e.g. tr_1AbC…).")
            )
        ],
        help_text=_(
            "The transfer you made in the Stripe Dashboard to the payee's connected account, "
            "for exactly the amount owed shown above."
        ),
    )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if len(self.objects) != 1:
            # One transfer pays one share of one payment.
            raise forms.ValidationError(_("Choose one payment to record a transfer for."))
        return cleaned


# --------------------------------------------------------------------------
# Payment actions
# --------------------------------------------------------------------------


def _money(amount: int, payment: Any) -> str:
    return format_money(amount, payment.currency)


def _release_lines(payment: Any) -> list[str]:
    hold = refusal_holds(payment).first()
    if hold is not None:
        # Stripe said the charge is disputed: the release refuses (409
        # charge_disputed) and sends nothing, split payments' too; the page
        # says why.
        return [gettext("nothing to send: %(reason)s") % {"reason": freeze_message(hold)}]
    if payment.released_in_parts and not payment.is_manual_capture:
        return _split_release_lines(payment)
    preview = release_preview(payment)
    if preview is None:
        # Nothing would be sent: the release answers the payment as it stands
        # (or refuses it); the page must not show money that does not move.
        return [
            gettext("nothing to send: the payment is %(status)s")
            % {"status": payment.get_status_display().lower()}
        ]
    if payment.is_manual_capture:
        return [gettext("capture %(amount)s") % {"amount": _money(payment.amount, payment)}]
    amount, fee = preview
    return [
        gettext("transfer %(amount)s to %(account)s")
        % {"amount": _money(amount, payment), "account": payment.destination_account_id},
        gettext("platform fee %(amount)s") % {"amount": _money(fee, payment)},
    ]


def _split_release_lines(payment: Any) -> list[str]:
    """A payment released in parts (milestones, several payees, an amount).

    What is still held goes out as releases of its own (one per milestone
    left), each less its share of the platform fee and split between the
    payees; transfers of earlier releases not sent yet go first. The whole
    payment's net to one account would be neither the sum nor the place.
    """
    accounts = sorted(
        {p.destination_account_id for p in payment.payees.all() if p.destination_account_id}
    ) or [payment.destination_account_id]
    lines = []
    if payment.amount_held > 0:
        lines.append(
            gettext("release %(amount)s still held, less the platform fee, to %(accounts)s")
            % {"amount": _money(payment.amount_held, payment), "accounts": ", ".join(accounts)}
        )
    if payment.releases.filter(status=ReleaseStatus.PENDING).exists():
        lines.append(gettext("transfers of earlier releases not sent yet are sent first"))
    return lines


def _release_amount(payment: Any, data: dict[str, Any]) -> int | None:
    if payment.released_in_parts and not payment.is_manual_capture:
        # Known only once sent: perform() records the transfers begun.
        return None
    preview = release_preview(payment)
    if preview is None:
        return None  # nothing sent
    if payment.is_manual_capture:
        return int(payment.amount)
    amount, _fee = preview
    return amount


def _refund_amount(payment: Any, data: dict[str, Any]) -> int:
    amount = data.get("amount")
    return int(amount) if amount is not None else int(payment.refundable_amount)


def _outcome(payment: Any) -> str:
    return gettext("now %(status)s") % {"status": payment.get_status_display().lower()}


def _release(payment: Any, user: Any, data: dict[str, Any]) -> str:
    return _outcome(release_payment(payment.pk, user))


#: Where a refused transfer leaves a payment whose money is still held.
RETRYABLE_STATES = (PaymentStatus.HELD, PaymentStatus.DISPUTE_LOST)


def _retry_transfer(payment: Any, user: Any, data: dict[str, Any]) -> str:
    # A transfer Stripe refused leaves the money held (``release_failed``):
    # releasing again sends a new transfer under the next idempotency key.
    # The rest a partial dispute lost left stays ``dispute_lost`` when its
    # transfer is refused; the release API retries it, so staff can too.
    # A hold (Radar's, Stripe's charge_disputed refusal) answers with its own
    # code, as the release it would start does, before anything is sent.
    check_not_held(payment)
    failed = payment.transfers.filter(status=TransferStatus.FAILED).exists()
    # A failed transfer is not enough: the rest must still be releasable (a
    # dispute_lost payment whose rest went out since, or lost in full, is not).
    if payment.status not in RETRYABLE_STATES or not failed or release_preview(payment) is None:
        raise errors.Conflict(
            gettext(
                "Only a held payment, or the rest a lost dispute left held, whose "
                "transfer failed can have its transfer retried."
            ),
            code="no_failed_transfer",
        )
    return _outcome(release_payment(payment.pk, user))


def _owed_lines(payment: Any) -> list[str]:
    """What a transfer made in the Dashboard must be to be recorded: each share
    still owed, to which account (what the app would send it)."""
    if payment.released_in_parts and not payment.is_manual_capture:
        payees = {p.pk: p for p in payment.payees.all()}
        lines = [
            gettext("owed to %(account)s: %(amount)s")
            % {
                "account": _sent_to(payees[payee_id], payees[payee_id].destination_account_id),
                "amount": _money(amount, payment),
            }
            for owed in shares_owed([payment.pk]).values()
            for payee_id, amount in owed.items()
            if payee_id in payees
        ]
    elif payment.status == PaymentStatus.HELD and not payment.is_manual_capture:
        preview = release_preview(payment)
        lines = (
            [
                gettext("owed to %(account)s: %(amount)s")
                % {
                    "account": _sent_to(payment, payment.destination_account_id, prefix="payee_"),
                    "amount": _money(preview[0], payment),
                }
            ]
            if preview is not None
            else []
        )
    else:
        lines = []
    return lines or [gettext("no share is owed to a payee now")]


def _sent_to(owner: Any, stored: str, *, prefix: str = "") -> str:
    """The account the app would send the share to now: the payee's current
    connected account (the one stored on the row may have been replaced)."""
    account = account_for_payee(
        getattr(owner, f"{prefix}user"), getattr(owner, f"{prefix}organization")
    )
    return getattr(account, "stripe_account_id", "") or stored


def _record_outside_transfer(payment: Any, user: Any, data: dict[str, Any]) -> str:
    transfer = record_outside_transfer(
        payment.pk, data["transfer_id"], user, note=data.get("note", "")
    )
    recorded = type(payment).objects.get(pk=payment.pk)
    return gettext("%(transfer)s of %(amount)s to %(account)s recorded, %(outcome)s") % {
        "transfer": transfer.stripe_transfer_id,
        "amount": _money(transfer.amount, payment),
        "account": transfer.destination_account_id,
        "outcome": _outcome(recorded),
    }


def _recorded_amount(payment: Any, data: dict[str, Any]) -> int | None:
    """The audit trail's amount: the transfer's, once recorded (None: refused)."""
    amount = (
        payment.transfers.filter(stripe_transfer_id=data.get("transfer_id", ""))
        .values_list("amount", flat=True)
        .first()
    )
    return int(amount) if amount is not None else None


def _refund(payment: Any, user: Any, data: dict[str, Any]) -> str:
    refunded = refund_payment(
        payment.pk, user, amount=data.get("amount"), reason=data.get("reason") or ""
    )
    return gettext("%(amount)s refunded in all, %(outcome)s") % {
        "amount": _money(refunded.amount_refunded, refunded),
        "outcome": _outcome(refunded),
    }


def _cancel(payment: Any, user: Any, data: dict[str, Any]) -> str:
    return _outcome(cancel_payment(payment.pk, user))


def _reconcile(payment: Any, user: Any, data: dict[str, Any]) -> str:
    if not permissions.is_platform_staff(user):
        raise errors.Forbidden(gettext("Only platform staff can reconcile a payment."))
    changes = reconcile(payment_id=payment.pk)
    failures = [str(change) for change in changes if change.error]
    if failures:
        raise errors.ProviderUnavailable("; ".join(failures), code="reconcile_failed")
    return "; ".join(change.action for change in changes) or gettext("already in line with Stripe")


def _transfers_begun(payment: Any, user: Any, before: set[Any]) -> int | None:
    """What the transfers this staff member's attempt began add up to (None: none)."""
    amounts = (
        payment.operations.filter(kind=MoneyOperationKind.TRANSFER, requested_by=user)
        .exclude(pk__in=before)
        .values_list("amount", flat=True)
    )
    sent = [int(amount) for amount in amounts if amount is not None]
    return sum(sent) if sent else None


@dataclass(frozen=True)
class PaymentAction:
    """One thing staff can do to payments, and how to confirm it."""

    kind: str
    label: StrOrPromise
    explanation: StrOrPromise
    run: Callable[[Any, Any, dict[str, Any]], str]
    lines: Callable[[Any], list[str]] = field(default=lambda payment: [])
    amount: Callable[[Any, dict[str, Any]], int | None] = field(default=lambda payment, data: None)
    form_class: type[NoteForm] = NoteForm
    moves_money: bool = True
    #: Releases of a payment released in parts: the audit trail's amount is
    #: the sum of the transfers this attempt began (known only afterwards).
    counts_transfers: bool = False
    #: ``amount`` is read after the attempt (what it recorded), not before.
    amount_after: bool = False


PAYMENT_ACTIONS: dict[str, PaymentAction] = {
    action.kind: action
    for action in (
        PaymentAction(
            K.RELEASE,
            _("Release"),
            _(
                "The held money goes to the doer (less the platform fee); with manual "
                "capture the authorisation is captured."
            ),
            _release,
            _release_lines,
            _release_amount,
            counts_transfers=True,
        ),
        PaymentAction(
            K.REFUND,
            _("Refund"),
            _(
                "Money goes back to the customer. After release the doer's share is "
                "reversed first; a held manual-capture payment is voided in full."
            ),
            _refund,
            lambda payment: [
                gettext("refundable %(amount)s")
                % {"amount": _money(payment.refundable_amount, payment)}
            ],
            _refund_amount,
            RefundForm,
        ),
        PaymentAction(
            K.CANCEL,
            _("Cancel"),
            _(
                "The payment is canceled before money moved; a held manual-capture "
                "authorisation is voided."
            ),
            _cancel,
            amount=lambda payment, data: int(payment.amount),
        ),
        PaymentAction(
            K.RETRY_TRANSFER,
            _("Retry failed transfer"),
            _(
                "A new transfer of the held money is sent to the doer (a new "
                "idempotency key): only for held payments, or the rest a lost "
                "dispute left held, whose transfer failed."
            ),
            _retry_transfer,
            _release_lines,
            _release_amount,
            counts_transfers=True,
        ),
        PaymentAction(
            K.RECONCILE,
            _("Reconcile"),
            _(
                "The payment's unfinished operations and its PaymentIntent are looked "
                "up at Stripe and applied (what escrow_reconcile does, for this payment "
                "now)."
            ),
            _reconcile,
            # Finishing an unresolved release or refund sends it to Stripe.
            moves_money=True,
        ),
        PaymentAction(
            K.RECORD_OUTSIDE_TRANSFER,
            _("Record a transfer made in Stripe"),
            _(
                "For a payee you paid by hand in the Stripe Dashboard (a transfer Stripe "
                "refused, a split release stopped part-way): the transfer is read from "
                "Stripe and booked as the app's transfer of the share owed, which is then "
                "never sent again. It must go to the payee's connected account, in the "
                "payment's currency, for exactly the amount owed shown here, and must not "
                "be reversed; the payee's open transfer_failed incidents are resolved."
            ),
            _record_outside_transfer,
            _owed_lines,
            _recorded_amount,
            RecordTransferForm,
            # Stripe is read: never inside a request-wide transaction.
            moves_money=True,
            amount_after=True,
        ),
    )
}


# --------------------------------------------------------------------------
# Incident actions
# --------------------------------------------------------------------------


def _resolve(incident: Any, note: str) -> str:
    sent = None
    with transaction.atomic():
        payment = None
        if incident.kind == IncidentKind.CHARGE_DISPUTED:
            # The payment first, as every service locks it before its
            # incidents: whether this is its last hold is read under it.
            payment = lock_payment(incident.payment_id)
        row = type(incident).objects.select_for_update().get(pk=incident.pk)
        if row.resolved_at is not None:
            raise errors.Conflict(
                gettext("Already resolved at %(when)s.")
                % {"when": f"{row.resolved_at:%Y-%m-%d %H:%M}"},
                code="already_resolved",
            )
        if row.kind in RADAR_HOLD_KINDS:
            # An open Radar hold freezes release (services/radar.py) until
            # Stripe closes the review or the warning stops being actionable;
            # resolved by hand it would let the money go while Stripe still
            # has it open, and a resolved hold is never reopened.
            raise errors.Conflict(
                gettext(
                    "Stripe Radar still holds this payment: it is resolved when Stripe "
                    "closes the review or the warning (handle it in the Stripe dashboard)."
                ),
                code="radar_hold_open",
            )
        row.resolved_at = timezone.now()
        fields = ["resolved_at", "updated_at"]
        if row.kind == IncidentKind.CHARGE_DISPUTED:
            # Staff may lift Stripe's charge_disputed hold (having checked the
            # charge in the Dashboard; escrow_reconcile checks it by itself):
            # release and tips' transfers go again. Who did it is the staff
            # action's; why is kept on the hold too, as a dispute's lift is.
            row.message = f"{row.message}\nLifted: resolved by staff ({note or 'no note'})"
            fields.append("message")
        row.save(update_fields=fields)
        if payment is not None:
            # Its last hold, and no dispute freezing the payment: the tips
            # it held go now, as when Stripe closes a payment's last Radar
            # hold (each tip's charge read first, after the commit, with no
            # transaction open), not at the next escrow_reconcile.
            sent = tips.transfer_held_tips_once_unheld(payment)
    if sent:
        # Queued, not sent: each tip is checked after the commit (its charge
        # read; its own dispute, a refund found there refuse it).
        return ngettext(
            "resolved; %(count)d tip it held is sent now unless Stripe's charge "
            "refuses it (see the tip)",
            "resolved; %(count)d tips it held are sent now unless Stripe's charge "
            "refuses them (see each tip)",
            sent,
        ) % {"count": sent}
    return gettext("resolved")


def _annotate(incident: Any, note: str) -> str:
    return gettext("note added")


@dataclass(frozen=True)
class IncidentAction:
    kind: str
    label: StrOrPromise
    explanation: StrOrPromise
    run: Callable[[Any, str], str]


INCIDENT_ACTIONS: dict[str, IncidentAction] = {
    action.kind: action
    for action in (
        IncidentAction(
            K.RESOLVE_INCIDENT,
            _("Resolve"),
            _("The incident is marked resolved now; the note says how."),
            _resolve,
        ),
        IncidentAction(
            K.ANNOTATE_INCIDENT,
            _("Annotate"),
            _("The note is added to the incident's audit trail; it stays open."),
            _annotate,
        ),
    )
}


# --------------------------------------------------------------------------
# The admin side: list actions, per-object buttons, the confirmation page
# --------------------------------------------------------------------------


class StaffActionsMixin:
    """Staff actions for a ModelAdmin: each a list action and a button on the object.

    Subclasses set ``staff_actions`` (kind -> label) and implement
    ``describe`` (the confirmation's lines per object), ``form_for`` and
    ``perform`` (run one attempt on one object, record it, report it).
    """

    staff_actions: dict[str, StrOrPromise] = {}
    change_form_template: Any = "escrow_connect/admin/staff_actions_change_form.html"

    # ModelAdmin provides these.
    model: Any
    admin_site: Any
    message_user: Any
    has_change_permission: Any
    get_object: Any

    def explanation(self, kind: str) -> str:
        raise NotImplementedError

    def describe(self, obj: Any, kind: str) -> list[str]:
        raise NotImplementedError

    def form_for(self, kind: str) -> type[NoteForm]:
        raise NotImplementedError

    def perform(self, request: HttpRequest, obj: Any, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- list actions ----------------------------------------------------

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 asks once per page (ActionLocation.CHANGE_LIST or
        # CHANGE_FORM) and deprecates an override without the parameter; 5.2
        # and 6.0 know only the change list and never pass it. The staff
        # actions are list actions: a change form has its own buttons.
        if action_location is None:
            actions: dict[str, Any] = super().get_actions(request)  # type: ignore[misc]
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[misc]
            if getattr(action_location, "value", action_location) != "CHANGE_LIST":
                return actions
        if not self.has_change_permission(request):
            return actions
        for kind, label in self.staff_actions.items():
            actions[kind] = (self._list_action(kind), kind, f"{label} selected …")
        return actions

    def _list_action(self, kind: str) -> Callable[..., Any]:
        def action(model_admin: Any, request: HttpRequest, queryset: Any) -> Any:
            return self.confirm_or_run(request, list(queryset), kind)

        return action

    # --- the page --------------------------------------------------------

    def confirm_or_run(
        self, request: HttpRequest, objects: list[Any], kind: str, *, single: bool = False
    ) -> HttpResponse | None:
        """The confirmation page, or (on its POST) the action on every object."""
        form_class = self.form_for(kind)
        confirmed = request.method == "POST" and "confirm" in request.POST
        form = form_class(request.POST if confirmed else None, objects=objects)
        if confirmed and form.is_valid():
            for obj in objects:
                self.perform(request, obj, kind, form.cleaned_data)
            return None
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": gettext("%(action)s: are you sure?") % {"action": self.staff_actions[kind]},
            "kind": kind,
            "label": self.staff_actions[kind],
            "explanation": self.explanation(kind),
            "items": [(obj, self.describe(obj, kind)) for obj in objects],
            "form": form,
            "single": single,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, CONFIRMATION_TEMPLATE, context)

    def staff_action_view(self, request: HttpRequest, object_id: str, kind: str) -> HttpResponse:
        """The button on one object's page: confirm, then run and go back."""
        obj = self.get_object(request, object_id)
        if obj is None or kind not in self.staff_actions:
            raise PermissionDenied
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        response = self.confirm_or_run(request, [obj], kind, single=True)
        if response is not None:
            return response
        opts = self.model._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if self.has_change_permission(request):
            extra_context["staff_action_links"] = list(self.staff_actions.items())
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc,no-any-return]

    def get_urls(self) -> list[Any]:
        urls: list[Any] = super().get_urls()  # type: ignore[misc]
        opts = self.model._meta
        act = path(
            "<path:object_id>/staff-action/<str:kind>/",
            self.admin_site.admin_view(self.staff_action_view),
            name=f"{opts.app_label}_{opts.model_name}_staff_action",
        )
        for pattern in urls:
            if getattr(pattern, "name", "") == f"{opts.app_label}_{opts.model_name}_changelist":
                # A host with ATOMIC_REQUESTS would otherwise run the list
                # actions inside the request's transaction.
                transaction.non_atomic_requests(pattern.callback)
        transaction.non_atomic_requests(act.callback)
        return [act, *urls]


class PaymentActionsMixin(StaffActionsMixin):
    staff_actions = {kind: action.label for kind, action in PAYMENT_ACTIONS.items()}

    def explanation(self, kind: str) -> str:
        return str(PAYMENT_ACTIONS[kind].explanation)

    def describe(self, obj: Any, kind: str) -> list[str]:
        return [
            f"amount {_money(obj.amount, obj)}",
            f"refunded {_money(obj.amount_refunded, obj)}",
            obj.get_status_display().lower(),
            *PAYMENT_ACTIONS[kind].lines(obj),
        ]

    def form_for(self, kind: str) -> type[NoteForm]:
        return PAYMENT_ACTIONS[kind].form_class

    def perform(self, request: HttpRequest, obj: Any, kind: str, data: dict[str, Any]) -> None:
        action = PAYMENT_ACTIONS[kind]
        amount = None if action.amount_after else action.amount(obj, data)
        in_parts = action.counts_transfers and obj.released_in_parts and not obj.is_manual_capture
        before = set(obj.operations.values_list("pk", flat=True)) if in_parts else set()
        result = attempt(
            lambda: action.run(obj, request.user, data), moves_money=action.moves_money
        )
        if in_parts:
            amount = _transfers_begun(obj, request.user, before)
        if action.amount_after:
            # Refused: nothing was booked (a row found now is another request's).
            amount = action.amount(obj, data) if result.outcome == O.OK else None
        record(
            request,
            kind,
            result,
            payment=obj,
            account_id=obj.destination_account_id,
            amount=amount,
            currency=obj.currency,
            note=data.get("note", ""),
        )
        report(request, self, gettext("Payment %(id)s") % {"id": obj.pk}, result)


class IncidentActionsMixin(StaffActionsMixin):
    staff_actions = {kind: action.label for kind, action in INCIDENT_ACTIONS.items()}

    def explanation(self, kind: str) -> str:
        return str(INCIDENT_ACTIONS[kind].explanation)

    def describe(self, obj: Any, kind: str) -> list[str]:
        state = "resolved" if obj.resolved_at else "open"
        return [obj.get_kind_display(), obj.code or obj.message[:80], state]

    def form_for(self, kind: str) -> type[NoteForm]:
        return RequiredNoteForm

    def perform(self, request: HttpRequest, obj: Any, kind: str, data: dict[str, Any]) -> None:
        note = data["note"]
        result = attempt(lambda: INCIDENT_ACTIONS[kind].run(obj, note), moves_money=False)
        record(
            request,
            kind,
            result,
            payment=obj.payment,
            incident=obj,
            amount=getattr(obj, "amount", None),
            currency=getattr(obj, "currency", "") or "",
            account_id=getattr(obj, "destination_account_id", ""),
            note=note,
        )
        report(request, self, gettext("Incident %(id)s") % {"id": obj.pk}, result)


class RefreshAccountForm(NoteForm):
    """A refresh, and staff's answer to a lost ``account.application.*`` event.

    Neither box is the default: Stripe refuses a key of another platform or
    mode with the same ``account_invalid``, and may still answer reads of an
    account that disconnected; a person who knows which it is decides.
    """

    deauthorize_if_refused = forms.BooleanField(
        label=_("Mark deauthorized if Stripe refuses access"),
        required=False,
        help_text=_(
            "When Stripe answers account_invalid (the owner disconnected the platform and the "
            "deauthorization event was lost), deauthorize the account as that event would. Only "
            "if other accounts are read fine: a wrong key is refused the same way."
        ),
    )
    reauthorize_if_read = forms.BooleanField(
        label=_("Mark connected again if Stripe reads a deauthorized account"),
        required=False,
        help_text=_(
            "To undo a deauthorization made here by mistake. Stripe may still answer reads of an "
            "account that disconnected: only when you know the platform is connected."
        ),
    )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        boxes = cleaned.get("deauthorize_if_refused") or cleaned.get("reauthorize_if_read")
        if boxes and len(self.objects) != 1:
            # With a wrong key every account is refused alike: one decision
            # for a whole selection would disconnect them all.
            raise forms.ValidationError(
                _("Choose one account to mark deauthorized or connected again.")
            )
        return cleaned

    @staticmethod
    def ticked(data: dict[str, Any]) -> str:
        """The boxes ticked, for the audit trail's message."""
        boxes = ("deauthorize_if_refused", "reauthorize_if_read")
        names = [name for name in boxes if data.get(name)]
        return f" ({', '.join(names)})" if names else ""


class AccountActionsMixin(StaffActionsMixin):
    staff_actions = {K.REFRESH_ACCOUNT: _("Refresh from Stripe")}

    def explanation(self, kind: str) -> str:
        return gettext(
            "The account is read from Stripe now and its status and requirements updated."
        )

    def describe(self, obj: Any, kind: str) -> list[str]:
        return [obj.stripe_account_id or "not created at Stripe", obj.get_status_display()]

    def form_for(self, kind: str) -> type[NoteForm]:
        return RefreshAccountForm

    def perform(self, request: HttpRequest, obj: Any, kind: str, data: dict[str, Any]) -> None:
        def run() -> str:
            if not permissions.is_platform_staff(request.user):
                raise errors.Forbidden(gettext("Only platform staff can refresh an account."))
            if not obj.is_created:
                raise errors.Conflict(
                    gettext("The account is not created at Stripe yet."), code="no_account"
                )
            refreshed = refresh_account(
                obj,
                deauthorize_if_refused=bool(data.get("deauthorize_if_refused")),
                reauthorize_if_read=bool(data.get("reauthorize_if_read")),
            )
            status = refreshed.get_status_display().lower()
            return f"now {status}{RefreshAccountForm.ticked(data)}"

        result = attempt(run, moves_money=False)
        record(request, kind, result, account_id=obj.stripe_account_id, note=data.get("note", ""))
        report(
            request,
            self,
            gettext("Account %(id)s") % {"id": obj.stripe_account_id or obj.pk},
            result,
        )
