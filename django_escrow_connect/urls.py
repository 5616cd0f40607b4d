"""The package's URLconf: ``path("escrow/", include("django_escrow_connect.urls"))``."""

from django.urls import path  # noqa: F401

app_name = "escrow_connect"

urlpatterns: list = []
