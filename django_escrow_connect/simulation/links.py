"""Links to the simulated Stripe's pages, served by :mod:`.urls`.

An account link's ``url``, a login link's ``url`` and a 3-D Secure
``next_action`` point at them, and a page embedding Connect components loads
the stand-in Connect.js from :func:`connect_js_url`. When the host has not included
``django_escrow_connect.simulation.urls`` the links fall back to the paths
the documentation mounts it at (``/escrow/simulated/``).
"""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse

#: The URL namespace of :mod:`django_escrow_connect.simulation.urls`.
NAMESPACE = "escrow_simulation"
DEFAULT_PREFIX = "/escrow/simulated/"


def _page(name: str, object_id: str | None = None) -> str:
    args = [object_id] if object_id is not None else []
    try:
        return reverse(f"{NAMESPACE}:{name}", args=args)
    except NoReverseMatch:
        return f"{DEFAULT_PREFIX}{name}/" + (f"{object_id}/" if object_id is not None else "")


def onboarding_url(account_id: str) -> str:
    """Path of the simulated onboarding page of ``account_id`` (an account link's ``url``)."""
    return _page("onboarding", account_id)


def dashboard_url(account_id: str) -> str:
    """Path of the simulated Express Dashboard of ``account_id`` (a login link's ``url``)."""
    return _page("dashboard", account_id)


def authentication_url(payment_intent_id: str) -> str:
    """Path of the simulated 3-D Secure challenge of ``payment_intent_id``."""
    return _page("authenticate", payment_intent_id)


def connect_js_url() -> str:
    """Path of the stand-in Connect.js, served instead of Stripe's in simulated mode."""
    return _page("connect-js")


def embedded_component_url() -> str:
    """Where the stand-in Connect.js fetches a component's content (POST, client secret)."""
    return _page("embedded-component")
