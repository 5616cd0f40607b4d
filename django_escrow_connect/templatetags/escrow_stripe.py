"""The Stripe publishable key for templates that load Stripe.js or Connect.js.

``{% load escrow_stripe %}`` then ``{% stripe_publishable_key %}`` renders
``ESCROW_CONNECT["STRIPE_PUBLISHABLE_KEY"]`` (``pk_...``; empty when not
set), escaped like any variable. In a script, pass it through
``json_script``: ``{% stripe_publishable_key as key %}{{ key|json_script:"stripe-key" }}``.
"""

from __future__ import annotations

from django import template

from ..conf import escrow_settings

register = template.Library()


@register.simple_tag
def stripe_publishable_key() -> str:
    """The publishable key (never the secret key), or ""."""
    return str(escrow_settings.STRIPE_PUBLISHABLE_KEY or "")
