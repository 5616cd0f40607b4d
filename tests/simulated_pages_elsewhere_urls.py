"""A URLconf mounting the simulated Stripe's pages at another prefix."""

from django.urls import include, path

urlpatterns = [
    path("escrow/", include("django_escrow_connect.urls")),
    path("stripe-sim/", include("django_escrow_connect.simulation.urls")),
]
