"""Stripe's own pages, played by the simulated Stripe (development and demos only).

Include them where the simulated links point (:mod:`.links`)::

    path("escrow/simulated/", include("django_escrow_connect.simulation.urls"))

* ``onboarding/<acct>/``: Stripe-hosted onboarding (an account link's ``url``);
  finishing it completes the account, leaving it follows the link's ``refresh_url``;
* ``dashboard/<acct>/``: the Express dashboard (a login link's ``url``), where
  the account's owner pays out or disconnects the platform;
* ``authenticate/<pi>/``: the bank's 3-D Secure challenge;
* ``connect-js/``: a stand-in for Stripe's Connect.js (``StripeConnect.init``,
  ``loadConnectAndInitialize``), so pages with embedded components work offline;
* ``embedded-component/``: what the stand-in renders inside a component, for
  the account of an AccountSession's client secret (its only credential, as
  with Stripe: it is sent in a POST body, never in a URL).

Each action calls the simulated gateway, which emits the events Stripe would
send. The pages answer 404 unless the configured gateway is the simulated
one, and show an account only to whoever may manage it (its owner, or an
admin of its organization) and a payment only to its payer. Templates live
under ``escrow_connect/simulation/``; a host overrides ``base.html`` there to
frame them in its own layout.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .. import permissions, swappable
from ..exceptions import GatewayError
from ..gateway import get_gateway
from ..money import format_money
from .gateway import SimulatedGateway
from .links import NAMESPACE, embedded_component_url

__all__ = ["authenticate", "connect_js", "dashboard", "embedded_component", "onboarding"]


def _simulated_gateway() -> SimulatedGateway:
    gateway = get_gateway()
    if not isinstance(gateway, SimulatedGateway):
        raise Http404("The simulated Stripe pages exist only with the simulated gateway.")
    return gateway


def _check_id(object_id: str, what: str) -> None:
    """404 for an id in the URL with a NUL (no Stripe id has one).

    PostgreSQL refuses a NUL in any text it is sent: looking such an id up
    was a 500, not the page's 404.
    """
    if "\x00" in object_id:
        raise Http404(f"No such {what}.")


def _managed_account(request: HttpRequest, account_id: str) -> Any:
    """The connected account ``account_id`` if the signed-in user may manage it."""
    _check_id(account_id, "account")
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


def _refused(request: HttpRequest, exc: GatewayError) -> None:
    messages.error(request, f"Simulated Stripe refused: {exc}", fail_silently=True)


@login_required
def onboarding(request: HttpRequest, account_id: str) -> HttpResponse:
    """Stripe-hosted onboarding: finish it (``action=complete``) or leave it."""
    gateway = _simulated_gateway()
    account = _managed_account(request, account_id)
    link = gateway.latest_account_link(account_id) or {}
    if request.method == "POST":
        if request.POST.get("action") == "complete":
            try:
                gateway.complete_onboarding(account_id)
            except GatewayError as exc:
                _refused(request, exc)
                return redirect(f"{NAMESPACE}:onboarding", account_id=account_id)
            target = link.get("return_url")
        else:  # "leave": like an expired link, Stripe sends people to refresh_url
            target = link.get("refresh_url")
        return HttpResponseRedirect(target or request.path)
    owner = account.owner_organization or account.owner_user
    return render(
        request,
        "escrow_connect/simulation/onboarding.html",
        {"account": account, "owner": owner, "link": link},
    )


@login_required
def dashboard(request: HttpRequest, account_id: str) -> HttpResponse:
    """The Express dashboard: balance, transfers, payouts; pay out or disconnect."""
    gateway = _simulated_gateway()
    account = _managed_account(request, account_id)
    store = gateway.store
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "payout":
                gateway.create_payout(account_id)
                messages.success(
                    request, "Simulated payout sent to the bank account.", fail_silently=True
                )
            elif action == "deauthorize":
                gateway.deauthorize(account_id)
                messages.warning(
                    request, "You disconnected the platform from your account.", fail_silently=True
                )
        except GatewayError as exc:
            _refused(request, exc)
        return redirect(f"{NAMESPACE}:dashboard", account_id=account_id)
    with store.lock:
        balances = dict(store.balances.get(account_id, {}))
        transfers = [t for t in store.transfers.values() if t.get("destination") == account_id]
        payouts = store.payouts_of(account_id)
        disconnected = account_id in store.deauthorized
    return render(
        request,
        "escrow_connect/simulation/dashboard.html",
        {
            "account": account,
            "disconnected": disconnected,
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
def authenticate(request: HttpRequest, payment_intent_id: str) -> HttpResponse:
    """The bank's 3-D Secure challenge: pass it (``action=approve``) or fail it.

    Afterwards the customer goes to ``next`` (a safe URL on this site) if
    given, else the page shows the payment's new status.
    """
    gateway = _simulated_gateway()
    _check_id(payment_intent_id, "payment")
    payment = (
        swappable.load("EscrowPayment")
        .objects.filter(stripe_payment_intent_id=payment_intent_id, payer=request.user)
        .first()
    )
    if payment is None:
        raise Http404("No such payment.")
    context: dict[str, Any] = {
        "payment": payment,
        "amount": format_money(payment.amount, payment.currency),
        "next": request.GET.get("next") or request.POST.get("next") or "",
    }
    if request.method == "POST":
        try:
            intent = gateway.complete_authentication(
                payment_intent_id, succeed=request.POST.get("action") == "approve"
            )
        except GatewayError as exc:
            _refused(request, exc)
            return redirect(f"{NAMESPACE}:authenticate", payment_intent_id=payment_intent_id)
        target = context["next"]
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return HttpResponseRedirect(target)
        context["status"] = intent.status
    return render(request, "escrow_connect/simulation/authenticate.html", context)


# --------------------------------------------------------------------------
# Connect embedded components (a stand-in for Stripe's Connect.js)
# --------------------------------------------------------------------------


@require_GET
def connect_js(request: HttpRequest) -> HttpResponse:
    """The stand-in Connect.js: the page's own code runs unchanged against it."""
    _simulated_gateway()
    script = render_to_string(
        "escrow_connect/simulation/connect.js",
        {"component_url": json.dumps(embedded_component_url())},
    )
    response = HttpResponse(script, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def _component_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"message": message}}, status=status)


@csrf_exempt  # Authenticated by the session's client secret, not by cookies (like Stripe).
@require_POST
def embedded_component(request: HttpRequest) -> HttpResponse:
    """The content of one embedded component, for the account the client secret opens.

    Body: ``{"client_secret": ..., "component": "payouts"}`` (Connect.js's
    names, ``notification-banner``, or Stripe's API names). Answers 401 for
    an unknown or expired secret and 403 for a component the session did not
    enable, as Connect.js shows a load error then.
    """
    gateway = _simulated_gateway()
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return HttpResponseBadRequest("Not JSON.")
    if not isinstance(body, dict):
        return HttpResponseBadRequest("Not a JSON object.")
    session = gateway.account_session(str(body.get("client_secret") or ""))
    if session is None:
        return _component_error("This account session is unknown or has expired.", 401)
    component = str(body.get("component") or "").replace("-", "_")
    if component not in session["components"]:
        return _component_error(
            f"The account session does not enable the {component or '(none)'} component.", 403
        )
    account_id = session["account"]
    store = gateway.store
    with store.lock:
        try:
            account = store.account(account_id)
        except GatewayError as exc:  # disconnected from the platform since
            return _component_error(str(exc), 403)
        balances = dict(store.balances.get(account_id, {}))
        requirements = account.get("requirements") or {}
        due = sorted(
            set(requirements.get("currently_due") or []) | set(requirements.get("past_due") or [])
        )
    payouts = store.payouts_of(account_id)
    features = session["components"][component]
    html = render_to_string(
        "escrow_connect/simulation/embedded_component.html",
        {
            "component": component,
            "account_id": account_id,
            "features": sorted(features.items()),
            "balances": [format_money(amount, cur) for cur, amount in sorted(balances.items())],
            "payouts": [
                {
                    "id": p["id"],
                    "amount": format_money(p["amount"], p["currency"]),
                    "status": p["status"],
                }
                for p in reversed(payouts)
            ],
            "due": due,
            "details_submitted": account.get("details_submitted"),
        },
        request=request,
    )
    answer: dict[str, Any] = {"component": component, "html": html}
    if component == "notification_banner":
        # What Connect.js passes to setOnNotificationsChange.
        answer["notifications"] = {"total": len(due), "actionRequired": len(due)}
    return JsonResponse(answer)
