"""dj-stripe's webhook URL (``djstripe/webhook/<uuid>/``) plus the floor view."""

from django.urls import include, path

from benchmarks.floor import floor_view

urlpatterns = [
    path("djstripe/", include("djstripe.urls", namespace="djstripe")),
    path("bench/floor/", floor_view, name="bench-floor"),
]
