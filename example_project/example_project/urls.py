from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The package: onboarding and payment API, dashboards, webhook endpoints.
    path("escrow/", include("django_escrow_connect.urls")),
    # The example's own JSON API (post a task, bid, accept a bid).
    path("api/", include("marketplace.api_urls")),
    path("", include("marketplace.urls")),
]

if settings.SIMULATED_STRIPE:
    # Pages of the simulated Stripe (onboarding, 3-D Secure, Express dashboard),
    # at the paths the simulated gateway's links point to: the package's, after
    # the example's own 3-D Secure page, which takes precedence.
    urlpatterns[2:2] = [
        path("escrow/simulated/", include("marketplace.simulated_urls")),
        path("escrow/simulated/", include("django_escrow_connect.simulation.urls")),
    ]
