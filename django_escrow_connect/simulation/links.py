"""Links to the simulated Stripe pages (an account link's or a login link's ``url``)."""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse


def onboarding_url(account_id: str) -> str:
    """Path of the simulated onboarding page of ``account_id`` (an account link's ``url``)."""
    try:
        return reverse("escrow_connect:simulated-onboarding", args=[account_id])
    except NoReverseMatch:
        return f"/escrow/simulated/onboarding/{account_id}/"


def dashboard_url(account_id: str) -> str:
    """Path of the simulated Express Dashboard of ``account_id`` (a login link's ``url``)."""
    try:
        return reverse("escrow_connect:simulated-dashboard", args=[account_id])
    except NoReverseMatch:
        return f"/escrow/simulated/dashboard/{account_id}/"
