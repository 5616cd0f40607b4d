"""Webhook routes: one endpoint per Stripe webhook kind, each with its own secret."""

from django.urls import path

from .views import ConnectWebhookView, PlatformWebhookView

urlpatterns = [
    path("stripe/webhook/", PlatformWebhookView.as_view(), name="stripe-webhook"),
    path(
        "stripe/webhook/connect/",
        ConnectWebhookView.as_view(),
        name="stripe-webhook-connect",
    ),
]
