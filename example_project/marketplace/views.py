"""Server-rendered pages of the example marketplace.

Every action that changes something is a POST that calls
:mod:`marketplace.services` (which calls the package's services) and
redirects back with a message. ``ServiceError`` messages are written for
people, so they are shown as they are.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from django_escrow_connect.api.payments import (
    CustomerDashboardView,
    TaskDoerDashboardView,
    get_visible_payment,
    serialize_payment,
)
from django_escrow_connect.fees import compute_platform_fee
from django_escrow_connect.gateway import get_gateway
from django_escrow_connect.money import format_money
from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.services import errors
from django_escrow_connect.states import PaymentStatus

from . import services
from .demo import DEMO_EMAILS, DEMO_PASSWORD, DEMO_USERS
from .forms import BidForm, LoginForm, OnboardingForm, SignupForm, TaskForm, TipForm
from .models import Bid, Organization, Task, TaskStatus, User

# --------------------------------------------------------------------------
# Accounts (people)
# --------------------------------------------------------------------------


def _demo_login_enabled() -> bool:
    return bool(settings.SIMULATED_STRIPE and settings.DEBUG)


class MarketplaceLoginView(LoginView):
    form_class = LoginForm
    template_name = "registration/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if _demo_login_enabled():
            existing = set(
                User.objects.filter(email__in=DEMO_EMAILS).values_list("email", flat=True)
            )
            context["demo_users"] = [u for u in DEMO_USERS if u.email in existing]
            context["demo_password"] = DEMO_PASSWORD
        return context


@require_POST
def demo_login(request: HttpRequest) -> HttpResponse:
    """One click signs in as a demo user (simulated mode with DEBUG only)."""
    if not _demo_login_enabled():
        raise Http404("Demo login exists only in simulated mode.")
    email = request.POST.get("email", "")
    if email not in DEMO_EMAILS:
        raise Http404("Not a demo user.")
    user = get_object_or_404(User, email=email, is_active=True)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    messages.success(request, f"Signed in as {user} ({email}).")
    return redirect(_safe_next(request) or "home")


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome! Post a task, or bid on one.")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


def _fail(request: HttpRequest, exc: errors.ServiceError) -> None:
    messages.error(request, exc.message)


# --------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------


def home(request: HttpRequest) -> HttpResponse:
    open_tasks = Task.objects.filter(
        status__in=[TaskStatus.CREATED, TaskStatus.BIDDING]
    ).select_related("customer")
    mine: list[Task] = []
    working: list[Task] = []
    if request.user.is_authenticated:
        mine = list(Task.objects.filter(customer=request.user).select_related("customer"))
        org_ids = list(request.user.organizations().values_list("pk", flat=True))
        doer = Q(bids__doer_user=request.user) | Q(bids__doer_organization__in=org_ids)
        working = list(
            Task.objects.filter(doer, bids__accepted=True).select_related("customer").distinct()
        )
    return render(
        request,
        "marketplace/home.html",
        {"open_tasks": open_tasks, "my_tasks": mine, "working_on": working},
    )


@login_required
def task_new(request: HttpRequest) -> HttpResponse:
    form = TaskForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            task = services.post_task(
                request.user, form.cleaned_data["title"], form.cleaned_data["description"]
            )
        except errors.ServiceError as exc:
            _fail(request, exc)
        else:
            messages.success(request, "Task posted. Doers can bid on it now.")
            return redirect(task)
    return render(request, "marketplace/task_new.html", {"form": form})


def _payment_context(payment: Any, bid: Bid | None = None) -> dict[str, Any] | None:
    if payment is None:
        return None
    data = serialize_payment(payment)
    data["is_held"] = payment.status in (PaymentStatus.HELD, PaymentStatus.RELEASING)
    # The API names payees by id; the page shows who they are.
    names: dict[tuple[str, str], Any] = {}
    if bid is not None:
        if bid.doer_user_id is not None:
            names["user", str(bid.doer_user_id)] = bid.doer_user
        else:
            names["organization", str(bid.doer_organization_id)] = bid.doer_organization
        if bid.partner_user_id is not None:
            names["user", str(bid.partner_user_id)] = bid.partner_user
    for payee in data["payees"]:
        payee["name"] = names.get((payee["type"], payee["party_id"]), payee["party_id"])
    return data


def _visible_payment(user: Any, payment: Any) -> Any:
    """``payment`` if the package's API would show it to ``user``, else None.

    The page asks the same function as ``GET /escrow/payments/<id>/``, so the
    page and the API agree: a plain member of the payee organization sees
    neither (only its admins do).
    """
    if payment is None or not user.is_authenticated:
        return None
    try:
        return get_visible_payment(user, payment.pk, details=True)
    except errors.NotFound:
        return None


def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("customer"), pk=pk)
    user = request.user
    bids = list(services.visible_bids(task, user))
    is_customer = user.is_authenticated and task.customer_id == user.pk
    for bid in bids:
        bid.doer_ready = services.doer_can_be_paid(bid) if is_customer else None
    accepted = next((bid for bid in bids if bid.accepted), None)
    is_doer = user.is_authenticated and task.is_doer(user)
    payee_admin = False
    if accepted is not None and user.is_authenticated:
        payee_admin = (
            accepted.doer_user_id == user.pk
            if accepted.doer_user_id is not None
            else accepted.doer_organization.is_admin(user)
        )
    payment = _visible_payment(user, services.current_payment(task))
    can_bid = (
        user.is_authenticated
        and not is_customer
        and task.status in (TaskStatus.CREATED, TaskStatus.BIDDING)
    )
    bid_form = BidForm(user=user) if can_bid else None
    # Funded per milestone: each part's state, and the next one to pay for.
    parts = services.milestone_parts(task) if is_customer or payment is not None else []
    my_readiness = None
    if can_bid:
        account = account_services.get_account(owner_user=user)
        my_readiness = account is not None and account.is_verified
    context = {
        "task": task,
        "bids": bids,
        "accepted_bid": accepted,
        "is_customer": is_customer,
        "is_doer": is_doer,
        "is_payee_admin": payee_admin or (user.is_authenticated and user.is_staff),
        "payment": _payment_context(payment, accepted),
        "payment_obj": payment,
        "milestone_parts": parts,
        "next_milestone": (
            services.next_milestone_to_pay(task)
            if is_customer and task.status in (TaskStatus.BID_ACCEPTED, TaskStatus.IN_PROGRESS)
            else None
        ),
        "can_bid": can_bid,
        "bid_form": bid_form,
        # Tips: listed to whoever sees the payment; the form to the customer only.
        "tips": list(services.task_tips(task)) if is_customer or payment is not None else [],
        "tip_form": _tip_form(task) if is_customer else None,
        "my_payouts_ready": my_readiness,
        "notifications": (
            task.notifications.filter(user=user)[:5] if user.is_authenticated else []
        ),
    }
    return render(request, "marketplace/task_detail.html", context)


def _tip_form(task: Task, data: Any = None) -> TipForm | None:
    """The "Add a tip" form while the task has a released payment, else None."""
    payment = services.tippable_payment(task)
    if payment is None:
        return None
    return TipForm(data, currency=payment.currency)


@login_required
@require_POST
def task_bid(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(Task, pk=pk)
    form = BidForm(request.POST, user=request.user)
    if not form.is_valid():
        for field, problems in form.errors.items():
            label = form.fields[field].label if field in form.fields else ""
            messages.error(request, f"{label or 'Bid'}: {' '.join(problems)}")
        return redirect(task)
    try:
        bid = services.place_bid(
            task.pk,
            request.user,
            amount=form.cleaned_data["amount_minor"],
            currency=form.cleaned_data["currency"],
            organization=form.cleaned_data["organization"],
            message=form.cleaned_data.get("message", ""),
            milestones=form.cleaned_data["milestones"],
            partner=form.cleaned_data["partner"],
            partner_basis_points=form.cleaned_data.get("partner_basis_points"),
            fund_per_milestone=form.cleaned_data.get("fund_per_milestone", False),
        )
    except errors.ServiceError as exc:
        _fail(request, exc)
    else:
        messages.success(request, "Your bid was sent to the customer.")
        if services.tell_partner_to_onboard(bid):
            messages.warning(
                request,
                f"{bid.partner_user} has not set up payouts yet: they were asked to complete "
                "Stripe onboarding. The customer cannot accept this bid until they do.",
            )
    return redirect(task)


@login_required
@require_POST
def bid_accept(request: HttpRequest, pk: int) -> HttpResponse:
    bid = get_object_or_404(Bid.objects.select_related("task"), pk=pk)
    try:
        services.accept_bid(bid.pk, request.user)
    except services.DoerNotReady as exc:
        messages.error(
            request,
            format_html('{} <a href="{}">Payouts set-up</a>', exc.message, exc.onboarding_url),
        )
        return redirect(bid.task)
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect(bid.task)
    messages.success(request, f"You accepted {bid.doer}'s bid. Pay into escrow to get started.")
    return redirect("task-pay", pk=bid.task_id)


# --------------------------------------------------------------------------
# Paying
# --------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def task_pay(request: HttpRequest, pk: int) -> HttpResponse:
    """The payment page: Stripe's Payment Element, or the simulated cards.

    A GET only shows what the customer is about to pay: creating the
    payment and its PaymentIntent is a POST (a link, a prefetch or a
    crawler must not start a payment). In simulated mode the POST picks a
    card and pays; in test mode the POST creates (or resumes) the payment
    and answers with the Payment Element for its client secret, which is
    never stored (the tip page works the same way).
    """
    task = get_object_or_404(Task, pk=pk)
    milestone = _milestone_index(request.POST if request.method == "POST" else request.GET)
    if request.method == "POST" and settings.SIMULATED_STRIPE:
        return _pay_with_simulated_card(request, task, milestone)
    try:
        part = services.payment_part(task.pk, request.user, milestone=milestone)
        start = None
        if request.method == "POST":
            start = services.start_payment(
                task.pk,
                request.user,
                milestone=milestone,
                save_payment_method=request.POST.get("save_card") == "on",
            )
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect(task)
    payment = start.payment if start is not None else part.payment
    if payment is not None:
        amount, currency = payment.amount, payment.currency
        fee, milestone_index = payment.platform_fee, payment.funded_milestone
    else:
        # Nothing created yet: the accepted bid's price and the fee it will bear.
        amount, currency = part.amount or 0, part.currency
        fee, milestone_index = compute_platform_fee(amount, currency), part.milestone or 0
    context: dict[str, Any] = {
        "task": task,
        "bid": part.bid,
        "payment": payment,
        "amount": format_money(amount, currency),
        "fee": format_money(fee, currency),
        "failure": payment.failure_message if payment is not None else "",
        "milestone": milestone_index,
        "milestone_name": part.milestone_name,
    }
    if settings.SIMULATED_STRIPE:
        from django_escrow_connect.simulation import CARDS

        context["cards"] = [
            {"name": name, "number": card.number, "label": card.label}
            for name, card in CARDS.items()
        ]
    elif start is not None:
        # Handed to Stripe.js only; never stored or logged.
        context["client_secret"] = start.client_secret
        context["return_url"] = request.build_absolute_uri(reverse("task-pay-return", args=[pk]))
    response = render(request, "marketplace/task_pay.html", context)
    response["Cache-Control"] = "no-store"
    return response


def _milestone_index(data: Any) -> int | None:
    """The ``milestone`` (1-based) a task funded per milestone pays for; None if not given.

    A malformed value is passed on as 0, which the package refuses
    (``milestone_out_of_range``) with its own message.
    """
    raw = data.get("milestone", "")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return 0


def _pay_again_url(task: Task, milestone: int | None) -> str:
    url = reverse("task-pay", args=[task.pk])
    return f"{url}?milestone={milestone}" if milestone else url


def _pay_with_simulated_card(
    request: HttpRequest, task: Task, milestone: int | None
) -> HttpResponse:
    card = request.POST.get("card", "")
    # Ticked next to the consent text only: an unticked box is not sent.
    save_card = request.POST.get("save_card") == "on"
    try:
        result = services.pay_with_simulated_card(
            task.pk, request.user, card, milestone=milestone, save_payment_method=save_card
        )
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect(task)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect(_pay_again_url(task, milestone))
    if result.outcome == "requires_action":
        return redirect("simulated_stripe:authenticate", payment_intent_id=result.payment_intent_id)
    if result.outcome == "declined":
        messages.error(request, f"Payment declined: {result.message}")
        return redirect(_pay_again_url(task, milestone))
    messages.success(request, result.message)
    return redirect(task)


@login_required
@require_POST
def task_tip(request: HttpRequest, pk: int) -> HttpResponse:
    """The customer adds a tip: charged on the saved card, or confirmed next."""
    task = get_object_or_404(Task, pk=pk)
    if task.customer_id != request.user.pk:
        # Who sees the payment learns they may not tip (403); others, nothing (404).
        if _visible_payment(request.user, services.current_payment(task)) is None:
            raise Http404("No such task.")
        raise PermissionDenied("Only the task's customer can add a tip.")
    form = _tip_form(task, request.POST)
    if form is None:
        messages.error(request, "A tip can be added only once the payment is released.")
        return redirect(task)
    if not form.is_valid():
        for problems in form.errors.values():
            for problem in problems:
                messages.error(request, f"Tip: {problem}")
        return redirect(task)
    try:
        start = services.add_tip(
            task.pk,
            request.user,
            form.cleaned_data["amount"],
            request_key=form.cleaned_data["request_key"],
        )
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect(task)
    tip = start.tip
    if start.confirmation == "off_session":
        messages.success(
            request,
            f"Tip paid with your saved card: {format_money(tip.amount, tip.currency)} "
            "goes to the doer.",
        )
        return redirect(task)
    if tip.failure_message:
        # The saved card needed the customer after all (3-D Secure, decline).
        messages.info(request, f"Your saved card was not charged: {tip.failure_message}")
    if settings.SIMULATED_STRIPE:
        return redirect("task-tip-pay", pk=task.pk, tip_id=tip.pk)
    # Stripe.js confirms the tip with the client secret of this answer only:
    # it is never stored, so the page is rendered now, not after a redirect.
    return _tip_pay_page(request, task, tip, client_secret=start.client_secret)


@login_required
def task_tip_pay(request: HttpRequest, pk: int, tip_id: str) -> HttpResponse:
    """The customer confirms a tip with a simulated card, as on the pay page."""
    task = get_object_or_404(Task, pk=pk)
    try:
        tip = services.customer_tip(task.pk, tip_id, request.user)
    except errors.NotFound as exc:
        raise Http404("No such tip.") from exc
    if request.method == "POST":
        try:
            result = services.pay_tip_with_simulated_card(
                task.pk, tip.pk, request.user, request.POST.get("card", "")
            )
        except errors.ServiceError as exc:
            _fail(request, exc)
            return redirect(task)
        except ValueError as exc:
            messages.error(request, str(exc))
            return redirect("task-tip-pay", pk=task.pk, tip_id=tip.pk)
        if result.outcome == "requires_action":
            return redirect(
                "simulated_stripe:authenticate", payment_intent_id=result.payment_intent_id
            )
        if result.outcome == "declined":
            messages.error(request, f"Tip declined: {result.message}")
            return redirect("task-tip-pay", pk=task.pk, tip_id=tip.pk)
        messages.success(request, result.message)
        return redirect(task)
    if tip.status not in services.TIP_UNPAID:
        messages.info(request, f"This tip is {tip.get_status_display().lower()}.")
        return redirect(task)
    if not settings.SIMULATED_STRIPE:
        # The client secret is not kept: add the tip again to confirm one.
        return redirect(task)
    return _tip_pay_page(request, task, tip)


def _tip_pay_page(
    request: HttpRequest, task: Task, tip: Any, *, client_secret: str | None = None
) -> HttpResponse:
    context: dict[str, Any] = {
        "task": task,
        "tip": tip,
        "amount": format_money(tip.amount, tip.currency),
        "failure": tip.failure_message,
    }
    if settings.SIMULATED_STRIPE:
        from django_escrow_connect.simulation import CARDS

        context["cards"] = [
            {"name": name, "number": card.number, "label": card.label}
            for name, card in CARDS.items()
        ]
    else:
        context["client_secret"] = client_secret
        context["return_url"] = request.build_absolute_uri(
            reverse("task-pay-return", args=[task.pk])
        )
    response = render(request, "marketplace/task_tip_pay.html", context)
    response["Cache-Control"] = "no-store"
    return response


#: What Stripe appends to the return_url after 3-D Secure or a redirect-based
#: payment method. ``payment_intent_client_secret`` must not stay in the URL.
STRIPE_RETURN_PARAMETERS = ("payment_intent", "payment_intent_client_secret", "redirect_status")
PAY_RETURN_SESSION_KEY = "marketplace:pay-return"


@login_required
def task_pay_return(request: HttpRequest, pk: int) -> HttpResponse:
    """Stripe.js sends the customer back here (test mode) after confirming.

    Stripe's redirect carries ``payment_intent_client_secret`` in the query
    string, which browser history, ``Referer`` headers and request logs would
    keep. So the first request only stores the PaymentIntent id and
    ``redirect_status`` in the session and redirects (303) to this same path
    without a query; the clean request does the work.
    """
    task = get_object_or_404(Task, pk=pk, customer=request.user)
    if any(name in request.GET for name in STRIPE_RETURN_PARAMETERS):
        request.session[PAY_RETURN_SESSION_KEY] = {
            "task_id": task.pk,
            "payment_intent": request.GET.get("payment_intent", "")[:255],
            "redirect_status": request.GET.get("redirect_status", "")[:32],
        }
        response = HttpResponseRedirect(request.path, status=303)
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        return response
    returned = request.session.pop(PAY_RETURN_SESSION_KEY, None)
    if not isinstance(returned, dict) or returned.get("task_id") != task.pk:
        return redirect(task)
    intent_id = returned.get("payment_intent", "")
    # Funded per milestone the task has several payments: the one confirmed
    # is the one with this PaymentIntent.
    payment = (
        services.payment_model()
        .objects.filter(task=task, stripe_payment_intent_id=intent_id)
        .first()
        if intent_id
        else None
    )
    if payment is not None:
        # Webhooks (stripe listen) move the payment; reading the intent now
        # only makes the page current if they are slow or not forwarded.
        from django_escrow_connect.services import payment_intents as sync

        with contextlib.suppress(Exception):  # if this fails, the webhook does it
            sync.apply_payment_intent(get_gateway().retrieve_payment_intent(intent_id))
    status = returned.get("redirect_status", "")
    is_tip = (
        payment is None
        and bool(intent_id)
        and services.task_tips(task).filter(stripe_payment_intent_id=intent_id).exists()
    )
    if is_tip:
        # A tip confirmed with Stripe.js: its webhook makes it paid.
        if status == "succeeded":
            messages.success(request, "Tip paid: thank you!")
        elif status == "processing":
            messages.info(request, "Your tip is processing.")
        elif status:
            messages.error(request, "The tip did not go through. Add it again to try another card.")
        return redirect(task)
    if status == "succeeded":
        messages.success(request, "Payment received: the money is held in escrow.")
    elif status == "processing":
        messages.info(request, "Your payment is processing.")
    elif status:
        messages.error(request, "The payment did not go through. Try another card.")
        return redirect("task-pay", pk=pk)
    return redirect(task)


@login_required
@require_POST
def task_complete(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.complete_task(pk, request.user)
    except errors.ServiceError as exc:
        _fail(request, exc)
    else:
        messages.success(request, "Work confirmed: the payment was released to the doer.")
    return redirect("task-detail", pk=pk)


@login_required
@require_POST
def task_release_milestone(request: HttpRequest, pk: int, milestone_id: int) -> HttpResponse:
    """The customer releases one milestone (the package's release, by milestone id)."""
    try:
        services.release_milestone(pk, request.user, milestone_id)
    except errors.ServiceError as exc:
        _fail(request, exc)
    else:
        messages.success(request, "Milestone released: its part was sent to the doer(s).")
    return redirect("task-detail", pk=pk)


@login_required
@require_POST
def task_refund(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        payment = services.refund_task(pk, request.user, reason="requested_by_customer")
    except errors.ServiceError as exc:
        _fail(request, exc)
    else:
        messages.success(
            request,
            f"Refunded {format_money(payment.amount_refunded, payment.currency)} to the customer.",
        )
    return redirect("task-detail", pk=pk)


@login_required
@require_POST
def task_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.cancel_task(pk, request.user)
    except errors.ServiceError as exc:
        _fail(request, exc)
    else:
        messages.success(request, "Task cancelled.")
    return redirect("task-detail", pk=pk)


# --------------------------------------------------------------------------
# Dashboards (the package's dashboard API, rendered as HTML)
# --------------------------------------------------------------------------


def _api_data(view_class: Any, request: HttpRequest) -> tuple[int, Any]:
    response = view_class.as_view()(request)
    return response.status_code, response.data


def _attach_tasks(payments: list[dict[str, Any]]) -> None:
    tasks = Task.objects.in_bulk([int(p["task_id"]) for p in payments])
    for item in payments:
        item["task"] = tasks.get(int(item["task_id"]))


@login_required
def dashboard_doer(request: HttpRequest) -> HttpResponse:
    organizations = list(request.user.administered_organizations())
    selected = None
    org_id = request.GET.get("organization_id")
    if org_id:
        selected = next((org for org in organizations if str(org.pk) == org_id), None)
        if selected is None:
            raise Http404("No such organization.")
    status_code, data = _api_data(TaskDoerDashboardView, request)
    if status_code != 200:
        messages.error(request, data.get("error", {}).get("message", "Dashboard unavailable."))
        data = {"payments": [], "earnings": [], "in_escrow": [], "account": None}
    _attach_tasks(data["payments"])
    return render(
        request,
        "marketplace/dashboard_doer.html",
        {"data": data, "organizations": organizations, "selected": selected},
    )


@login_required
def dashboard_customer(request: HttpRequest) -> HttpResponse:
    status_code, data = _api_data(CustomerDashboardView, request)
    if status_code != 200:
        messages.error(request, data.get("error", {}).get("message", "Dashboard unavailable."))
        data = {"payments": [], "spent": [], "in_escrow": []}
    _attach_tasks(data["payments"])
    return render(request, "marketplace/dashboard_customer.html", {"data": data})


# --------------------------------------------------------------------------
# Onboarding (Stripe Connect)
# --------------------------------------------------------------------------


def _owner(request: HttpRequest, organization_id: str | None) -> tuple[Any, Organization | None]:
    """The signed-in user, or an organization they administer (else 404)."""
    try:
        owner_user, organization = account_services.resolve_owner(request.user, organization_id)
    except errors.ServiceError as exc:
        raise Http404(exc.message) from exc
    return owner_user, organization


@login_required
def onboarding(request: HttpRequest) -> HttpResponse:
    rows = []
    owners: list[tuple[Any, Organization | None]] = [(request.user, None)]
    owners += [(None, org) for org in request.user.administered_organizations()]
    for owner_user, organization in owners:
        account = account_services.get_account(
            owner_user=owner_user, owner_organization=organization
        )
        rows.append(
            {
                "organization": organization,
                "label": organization.name if organization else "You (individual)",
                "account": account,
                "form": OnboardingForm(
                    initial={
                        "organization_id": organization.pk if organization else "",
                        "business_type": "company" if organization else "individual",
                    }
                ),
            }
        )
    return render(request, "marketplace/onboarding.html", {"rows": rows})


def _return_urls(request: HttpRequest, organization: Organization | None) -> tuple[str, str]:
    query = f"?organization_id={organization.pk}" if organization else ""
    refresh = request.build_absolute_uri(reverse("onboarding-refresh")) + query
    back = request.build_absolute_uri(reverse("onboarding-return")) + query
    return refresh, back


@login_required
@require_POST
def onboarding_start(request: HttpRequest) -> HttpResponse:
    form = OnboardingForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a business type.")
        return redirect("onboarding")
    owner_user, organization = _owner(request, form.cleaned_data.get("organization_id") or None)
    try:
        # Outside a transaction: the package commits the account row first.
        account = account_services.ensure_account(
            owner_user=owner_user,
            owner_organization=organization,
            business_type=form.cleaned_data["business_type"],
        )
        refresh_url, return_url = _return_urls(request, organization)
        link = account_services.create_onboarding_link(
            account, refresh_url=refresh_url, return_url=return_url
        )
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect("onboarding")
    # A single-use bearer URL: redirect, never store or log it.
    return HttpResponseRedirect(link.url)


@login_required
def onboarding_refresh(request: HttpRequest) -> HttpResponse:
    """Stripe's refresh_url: the link expired or was used; mint a new one."""
    owner_user, organization = _owner(request, request.GET.get("organization_id"))
    account = account_services.get_account(owner_user=owner_user, owner_organization=organization)
    if account is None:
        return redirect("onboarding")
    refresh_url, return_url = _return_urls(request, organization)
    try:
        link = account_services.create_onboarding_link(
            account, refresh_url=refresh_url, return_url=return_url
        )
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect("onboarding")
    return HttpResponseRedirect(link.url)


@login_required
def onboarding_return(request: HttpRequest) -> HttpResponse:
    """Stripe's return_url: read the account again and say where it stands."""
    owner_user, organization = _owner(request, request.GET.get("organization_id"))
    account = account_services.get_account(owner_user=owner_user, owner_organization=organization)
    if account is None:
        return redirect("onboarding")
    try:
        account = account_services.refresh_account(account)
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect("onboarding")
    if account.is_verified:
        messages.success(request, "Payouts are set up: your Stripe account is verified.")
    else:
        messages.warning(
            request,
            "Stripe still needs information before you can be paid "
            f"(status: {account.get_status_display().lower()}).",
        )
    return redirect("onboarding")


@login_required
@require_POST
def onboarding_dashboard(request: HttpRequest) -> HttpResponse:
    owner_user, organization = _owner(request, request.POST.get("organization_id") or None)
    account = account_services.get_account(owner_user=owner_user, owner_organization=organization)
    try:
        link = account_services.create_dashboard_link(account)
    except errors.ServiceError as exc:
        _fail(request, exc)
        return redirect("onboarding")
    return HttpResponseRedirect(link.url)


#: Stripe's Connect.js, loaded in test mode; simulated mode loads the simulated
#: Stripe's stand-in instead (no network).
CONNECT_JS = "https://connect-js.stripe.com/v1.0/connect.js"
MY_PAYOUTS_COMPONENTS = ["payouts", "notification_banner"]


@login_required
def my_payouts(request: HttpRequest) -> HttpResponse:
    """Stripe's payouts and notification banner, embedded with Connect.js.

    The page only says where the components go: Connect.js asks the
    package's ``POST /escrow/stripe/account-session/`` for a client secret
    (with the page's CSRF token), so no secret is ever rendered here.
    """
    organizations = list(request.user.administered_organizations())
    selected = None
    org_id = request.GET.get("organization_id")
    if org_id:
        selected = next((org for org in organizations if str(org.pk) == org_id), None)
        if selected is None:
            raise Http404("No such organization.")
    owner_user = None if selected else request.user
    account = account_services.get_account(owner_user=owner_user, owner_organization=selected)
    if settings.SIMULATED_STRIPE:
        from django_escrow_connect.simulation.links import connect_js_url

        connect_js = connect_js_url()
    else:
        connect_js = CONNECT_JS
    session_body: dict[str, Any] = {"components": MY_PAYOUTS_COMPONENTS}
    if selected is not None:
        session_body["organization_id"] = str(selected.pk)
    return render(
        request,
        "marketplace/my_payouts.html",
        {
            "account": account if account is not None and account.is_created else None,
            "organizations": organizations,
            "selected": selected,
            "connect_js": connect_js,
            "connect_config": {
                "publishableKey": settings.STRIPE_PUBLISHABLE_KEY,
                "sessionUrl": reverse("escrow_connect:stripe-account-session"),
                "sessionBody": session_body,
            },
        },
    )


# --------------------------------------------------------------------------
# Notifications
# --------------------------------------------------------------------------


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    items = list(request.user.notifications.select_related("task")[:100])
    response = render(request, "marketplace/notifications.html", {"items": items})
    return response


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        request.user.notifications.filter(read_at__isnull=True).update(read_at=timezone.now())
    return redirect("notifications")
