"""The simulated Stripe's pages, included at ``escrow/simulated/`` in simulated mode.

The paths are the ones the simulated gateway's links use
(``/escrow/simulated/onboarding/<acct>/`` and friends).
"""

from django.urls import path

from . import simulated_views

app_name = "simulated_stripe"

urlpatterns = [
    path("onboarding/<str:account_id>/", simulated_views.onboarding, name="onboarding"),
    path(
        "authenticate/<str:payment_intent_id>/",
        simulated_views.authenticate,
        name="authenticate",
    ),
    path("dashboard/<str:account_id>/", simulated_views.dashboard, name="dashboard"),
]
