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


@register.filter
def percent_of_basis_points(basis_points: int) -> str:
    """``{{ 6000|percent_of_basis_points }}``: a payee's share as "60 %" (10000 = 100 %)."""
    try:
        return f"{int(basis_points) / 100:g} %"
    except (TypeError, ValueError):
        return ""
