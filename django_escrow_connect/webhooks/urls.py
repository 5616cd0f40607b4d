"""Webhook routes: one endpoint per kind of Stripe delivery (platform, Connect, thin).

Each has its own signing secrets.
"""

from django.urls import path

from .views import ConnectWebhookView, PlatformWebhookView, ThinWebhookView

urlpatterns = [
    path("stripe/webhook/", PlatformWebhookView.as_view(), name="stripe-webhook"),
    path(
        "stripe/webhook/connect/",
        ConnectWebhookView.as_view(),
        name="stripe-webhook-connect",
    ),
    path("stripe/webhook/thin/", ThinWebhookView.as_view(), name="stripe-webhook-thin"),
]
