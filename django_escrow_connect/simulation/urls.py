"""The simulated Stripe's pages, for a host in simulated mode.

``path("escrow/simulated/", include("django_escrow_connect.simulation.urls"))``:
the prefix the simulated links fall back to when these URLs are not included
(see :mod:`.links`, which reverses them by these names).
"""

from django.urls import path

from . import views
from .links import NAMESPACE

app_name = NAMESPACE

urlpatterns = [
    path("onboarding/<str:account_id>/", views.onboarding, name="onboarding"),
    path("dashboard/<str:account_id>/", views.dashboard, name="dashboard"),
    path("authenticate/<str:payment_intent_id>/", views.authenticate, name="authenticate"),
    path("connect-js/", views.connect_js, name="connect-js"),
    path("embedded-component/", views.embedded_component, name="embedded-component"),
]
