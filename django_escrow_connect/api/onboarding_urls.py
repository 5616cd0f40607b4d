"""Connect onboarding routes (namespace ``escrow_connect``).

The views are exempt from ``ATOMIC_REQUESTS``: creating a connected account
commits the local row before Stripe is called, so a crash in between can be
recovered (see :mod:`django_escrow_connect.services.accounts`).

With drf-spectacular installed, the package's OpenAPI document is served at
``openapi/`` (name ``openapi-schema``); see :mod:`django_escrow_connect.api.schema`.
"""

from typing import Any

from django.db import transaction
from django.urls import path

from . import onboarding, schema


def _view(view_class: Any) -> Any:
    return transaction.non_atomic_requests(view_class.as_view())


urlpatterns = [
    path(
        "stripe/onboarding-link/",
        _view(onboarding.OnboardingLinkView),
        name="stripe-onboarding-link",
    ),
    path(
        "stripe/account-status/",
        _view(onboarding.AccountStatusView),
        name="stripe-account-status",
    ),
    path(
        "stripe/dashboard-link/",
        _view(onboarding.DashboardLinkView),
        name="stripe-dashboard-link",
    ),
    path(
        "stripe/account-session/",
        _view(onboarding.AccountSessionView),
        name="stripe-account-session",
    ),
    path(
        "stripe/onboarding/refresh/",
        _view(onboarding.OnboardingRefreshView),
        name="stripe-onboarding-refresh",
    ),
    path(
        "stripe/onboarding/return/",
        _view(onboarding.OnboardingReturnView),
        name="stripe-onboarding-return",
    ),
    *schema.urlpatterns,
]
