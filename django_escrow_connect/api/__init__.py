"""The package's REST API (DRF), included from ``django_escrow_connect.urls``."""
