"""Stripe's own pages, played by the simulated gateway (simulated mode only).

The simulated gateway's links point here:

* an account link's ``url`` -> ``/escrow/simulated/onboarding/<acct>/``
  (Stripe-hosted onboarding);
* a PaymentIntent's 3-D Secure ``next_action`` ->
  ``/escrow/simulated/authenticate/<pi>/`` (the bank's challenge);
* a login link's ``url`` -> ``/escrow/simulated/dashboard/<acct>/``
  (the Express dashboard), where the doer can also disconnect the platform.

Each action calls the simulated gateway, which emits the events Stripe
would send, and those go through the package's real webhook pipeline.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from django_escrow_connect import permissions, swappable
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


def _own_account(request: HttpRequest, account_id: str) -> Any:
    """The connected account ``account_id`` if the signed-in user may manage it."""
    account = (
        swappable.load("ConnectedAccount").objects.filter(stripe_account_id=account_id).first()
    )
    if account is None:
        raise Http404("No such account.")
    user = request.user
    if account.owner_user_id is not None:
        allowed = account.owner_user_id == user.pk
    else:
        allowed = permissions.is_organization_admin(user, account.owner_organization)
    if not allowed:
        raise Http404("No such account.")
    return account


@login_required
def onboarding(request: HttpRequest, account_id: str) -> HttpResponse:
    gateway = _gateway()
    account = _own_account(request, account_id)
    link = gateway.latest_account_link(account_id) or {}
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "complete":
            try:
                gateway.complete_onboarding(account_id)
            except GatewayError as exc:
                messages.error(request, f"Simulated Stripe refused: {exc}")
                return redirect("onboarding")
            target = link.get("return_url")
        else:  # "leave": like an expired link, Stripe sends people to refresh_url
            target = link.get("refresh_url")
        return HttpResponseRedirect(target or "/onboarding/")
    owner = account.owner_organization or account.owner_user
    return render(
        request,
        "simulated/onboarding.html",
        {"account": account, "owner": owner, "link": link},
    )


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
        raise Http404("No such payment.")
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


@login_required
def dashboard(request: HttpRequest, account_id: str) -> HttpResponse:
    gateway = _gateway()
    account = _own_account(request, account_id)
    store = gateway.store
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "payout":
                gateway.create_payout(account_id)
                messages.success(request, "Simulated payout sent to the bank account.")
            elif action == "deauthorize":
                gateway.deauthorize(account_id)
                messages.warning(request, "You disconnected the marketplace from your account.")
                return redirect("onboarding")
        except GatewayError as exc:
            messages.error(request, f"Simulated Stripe refused: {exc}")
        return redirect("simulated_stripe:dashboard", account_id=account_id)
    with store.lock:
        balances = dict(store.balances.get(account_id, {}))
        transfers = [t for t in store.transfers.values() if t.get("destination") == account_id]
        payouts = [p for p in store.payouts.values() if store._owners.get(p["id"]) == account_id]
    return render(
        request,
        "simulated/dashboard.html",
        {
            "account": account,
            "balances": [format_money(amount, cur) for cur, amount in sorted(balances.items())],
            "transfers": [
                {
                    "id": t["id"],
                    "amount": format_money(t["amount"], t["currency"]),
                    "reversed": format_money(t.get("amount_reversed", 0), t["currency"]),
                }
                for t in reversed(transfers)
            ],
            "payouts": [
                {
                    "id": p["id"],
                    "amount": format_money(p["amount"], p["currency"]),
                    "status": p["status"],
                }
                for p in reversed(payouts)
            ],
        },
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
