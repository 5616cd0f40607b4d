"""The example's simulated-mode pages beyond the package's own.

The package serves Stripe's pages (``django_escrow_connect.simulation.urls``:
onboarding, the Express dashboard, a 3-D Secure challenge). The example adds:

* its own 3-D Secure challenge (``/escrow/simulated/authenticate/<pi>/``,
  listed before the package's), which reports the outcome on the task pages;
* a task page's "simulate a dispute" buttons (the customer's bank opens a
  dispute; the card network decides it).

Each action calls the simulated gateway, which emits the events Stripe
would send, and those go through the package's real webhook pipeline.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import GatewayError
from django_escrow_connect.gateway import get_gateway
from django_escrow_connect.money import format_money
from django_escrow_connect.services import errors

from . import services
from .models import Task


def _gateway() -> Any:
    gateway = get_gateway()
    if not hasattr(gateway, "complete_onboarding"):
        raise Http404("The simulated Stripe pages exist only in simulated mode.")
    return gateway


@login_required
def authenticate(request: HttpRequest, payment_intent_id: str) -> HttpResponse:
    _gateway()
    payment = (
        swappable.load("EscrowPayment")
        .objects.filter(stripe_payment_intent_id=payment_intent_id, payer=request.user)
        .select_related("task")
        .first()
    )
    if payment is None:
        return _authenticate_tip(request, payment_intent_id)
    if request.method == "POST":
        approve = request.POST.get("action") == "approve"
        try:
            result = services.complete_simulated_authentication(
                payment_intent_id, request.user, approve
            )
        except (errors.ServiceError, GatewayError) as exc:
            messages.error(request, str(getattr(exc, "message", exc)))
            return redirect(payment.task)
        if result.outcome == "succeeded":
            messages.success(request, result.message)
            return redirect(payment.task)
        messages.error(request, f"Authentication failed: {result.message}")
        return redirect("task-pay", pk=payment.task_id)
    return render(
        request,
        "simulated/authenticate.html",
        {"payment": payment, "amount": format_money(payment.amount, payment.currency)},
    )


def _authenticate_tip(request: HttpRequest, payment_intent_id: str) -> HttpResponse:
    """The 3-D Secure challenge of a tip the customer confirms with a simulated card."""
    tip = (
        services.tip_model()
        .objects.filter(stripe_payment_intent_id=payment_intent_id, payer=request.user)
        .select_related("payment__task")
        .first()
    )
    if tip is None:
        raise Http404("No such payment.")
    task = tip.payment.task
    if request.method == "POST":
        approve = request.POST.get("action") == "approve"
        try:
            result = services.complete_simulated_authentication(
                payment_intent_id, request.user, approve
            )
        except (errors.ServiceError, GatewayError) as exc:
            messages.error(request, str(getattr(exc, "message", exc)))
            return redirect(task)
        if result.outcome == "succeeded":
            messages.success(request, result.message)
            return redirect(task)
        messages.error(request, f"Authentication failed: {result.message}")
        return redirect("task-tip-pay", pk=task.pk, tip_id=tip.pk)
    return render(
        request,
        "simulated/authenticate.html",
        {"payment": tip.payment, "amount": format_money(tip.amount, tip.currency)},
    )


@login_required
@require_POST
def dispute(request: HttpRequest, task_id: int) -> HttpResponse:
    """The customer's bank opens a dispute, or the card network decides one."""
    gateway = _gateway()
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        raise Http404("No such task.")
    user = request.user
    if not (task.customer_id == user.pk or task.is_doer(user) or user.is_staff):
        raise Http404("No such task.")
    payment = services.current_payment(task)
    if payment is None:
        messages.error(request, "This task has no payment.")
        return redirect(task)
    action = request.POST.get("action")
    try:
        if action == "open":
            gateway.open_dispute(payment.stripe_payment_intent_id, reason="fraudulent")
            messages.warning(request, "Simulated: the customer's bank opened a dispute.")
        elif action in ("won", "lost"):
            dispute_row = payment.disputes.order_by("-created_at").first()
            if dispute_row is None:
                messages.error(request, "No dispute to close.")
            else:
                gateway.close_dispute(dispute_row.stripe_dispute_id, won=action == "won")
                messages.info(request, f"Simulated: the dispute was {action}.")
    except GatewayError as exc:
        messages.error(request, f"Simulated Stripe refused: {exc}")
    return redirect(task)
