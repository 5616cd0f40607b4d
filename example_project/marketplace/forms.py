from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, BaseUserCreationForm
from django.core.validators import MaxLengthValidator

from django_escrow_connect.money import (
    MAX_CHARGE_AMOUNT,
    InvalidAmount,
    format_money,
    to_minor_units,
)

from .models import Task, User

#: Longest task description accepted, in the pages and the API.
DESCRIPTION_MAX_LENGTH = 5000

CURRENCIES = [("usd", "USD"), ("eur", "EUR"), ("gbp", "GBP")]


class SignupForm(BaseUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")


class LoginForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True}))


class TaskForm(forms.ModelForm):
    class Meta:
        model = Task
        fields = ("title", "description")
        widgets = {"description": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The model's TextField is unbounded; the form is not (same as the API).
        self.fields["description"].max_length = DESCRIPTION_MAX_LENGTH
        self.fields["description"].validators.append(MaxLengthValidator(DESCRIPTION_MAX_LENGTH))


class BidForm(forms.Form):
    """A bid in major units ("25.00"), converted exactly to minor units."""

    amount = forms.CharField(
        label="Your price", max_length=20, widget=forms.TextInput(attrs={"placeholder": "120.00"})
    )
    currency = forms.ChoiceField(choices=CURRENCIES, initial="usd")
    bid_as = forms.ChoiceField(label="Bid as", choices=[("me", "Myself")])
    message = forms.CharField(max_length=300, required=False, widget=forms.TextInput())

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organizations = {str(org.pk): org for org in (user.organizations() if user else [])}
        self.fields["bid_as"].choices = [("me", "Myself")] + [
            (pk, f"{org.name} (organization)") for pk, org in self.organizations.items()
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        raw, currency = data.get("amount"), data.get("currency")
        if raw and currency:
            try:
                minor = to_minor_units(raw.replace(",", ""), currency)
            except (InvalidAmount, TypeError, ValueError) as exc:
                self.add_error("amount", str(exc))
            else:
                if minor <= 0:
                    self.add_error("amount", "The price must be positive.")
                elif minor > MAX_CHARGE_AMOUNT:
                    self.add_error(
                        "amount",
                        f"The price can be at most {format_money(MAX_CHARGE_AMOUNT, currency)}.",
                    )
                data["amount_minor"] = minor
        data["organization"] = self.organizations.get(data.get("bid_as") or "")
        return data


class OnboardingForm(forms.Form):
    business_type = forms.ChoiceField(
        choices=[("individual", "Individual"), ("company", "Company")], initial="individual"
    )
    organization_id = forms.CharField(required=False, widget=forms.HiddenInput())
