from django import template

from django_escrow_connect.money import format_money

register = template.Library()


@register.filter
def money(amount: int, currency: str) -> str:
    """``{{ amount|money:currency }}``: minor units as "1,234.56 USD"."""
    try:
        return format_money(int(amount), currency)
    except (TypeError, ValueError):
        return ""
