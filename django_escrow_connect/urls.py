"""The package's URLconf. In the host: ``path("escrow/", include("django_escrow_connect.urls"))``.

Each area owns its own module of routes; this file only gathers them.
"""

from django.urls import include, path

app_name = "escrow_connect"

urlpatterns = [
    path("", include("django_escrow_connect.api.onboarding_urls")),
    path("", include("django_escrow_connect.api.payment_urls")),
    path("", include("django_escrow_connect.webhooks.urls")),
]
