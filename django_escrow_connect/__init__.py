"""Escrow payments for Django marketplaces on Stripe Connect."""

__version__ = "0.1.0"
