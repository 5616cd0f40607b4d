from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("escrow/", include("django_escrow_connect.urls")),
    # The simulated Stripe's pages, where its links point.
    path("escrow/simulated/", include("django_escrow_connect.simulation.urls")),
]
