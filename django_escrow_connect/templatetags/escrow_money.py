"""Template filters for amounts in minor units (used by the e-mail templates).

``{% load escrow_money %}{{ payment.amount|money:payment.currency }}`` renders
``100.00 USD`` (see :func:`django_escrow_connect.money.format_money`).
"""

from __future__ import annotations

from typing import Any

from django import template

from ..money import format_money

register = template.Library()


@register.filter
def money(amount: Any, currency: Any) -> str:
    """``amount`` (int, minor units) in ``currency``, e.g. ``1,234.56 USD``; "" if unusable."""
    try:
        return format_money(int(amount), str(currency))
    except (TypeError, ValueError):
        return ""
