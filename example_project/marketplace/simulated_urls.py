"""The example's own simulated 3-D Secure page, at ``escrow/simulated/authenticate/<pi>/``.

Included just before the package's simulated pages
(``django_escrow_connect.simulation.urls``: onboarding, Express dashboard and
a generic 3-D Secure page), so this one takes precedence: after the
challenge it reports the payment's outcome on the task's pages.
"""

from django.urls import path

from . import simulated_views

app_name = "simulated_stripe"

urlpatterns = [
    path(
        "authenticate/<str:payment_intent_id>/",
        simulated_views.authenticate,
        name="authenticate",
    ),
]
