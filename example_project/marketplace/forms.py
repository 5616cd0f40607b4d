from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, BaseUserCreationForm
from django.core.validators import MaxLengthValidator

from django_escrow_connect.money import (
    InvalidAmount,
    format_money,
    max_charge_amount,
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


#: How many milestone rows the bid form offers (rows left empty are ignored).
BID_MILESTONE_ROWS = 4


class BidForm(forms.Form):
    """A bid in major units ("25.00"), converted exactly to minor units.

    Optionally in milestones (name and price rows adding up to the bid: the
    customer releases them one by one) and with one team partner, named by
    email and paid ``partner_basis_points`` of each release's net.
    """

    amount = forms.CharField(
        label="Your price", max_length=20, widget=forms.TextInput(attrs={"placeholder": "120.00"})
    )
    currency = forms.ChoiceField(choices=CURRENCIES, initial="usd")
    bid_as = forms.ChoiceField(label="Bid as", choices=[("me", "Myself")])
    message = forms.CharField(max_length=300, required=False, widget=forms.TextInput())
    fund_per_milestone = forms.BooleanField(
        label="Fund per milestone",
        required=False,
        help_text="The customer pays each milestone when it comes up, not the whole price "
        "up front.",
    )
    partner_email = forms.EmailField(
        label="Team partner (email, optional)",
        required=False,
        help_text="Someone with an account here, paid a share of each release.",
    )
    partner_basis_points = forms.IntegerField(
        label="Partner's share (basis points: 4000 = 40 %)",
        required=False,
        min_value=1,
        max_value=9999,
    )

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.organizations = {str(org.pk): org for org in (user.organizations() if user else [])}
        self.fields["bid_as"].choices = [("me", "Myself")] + [
            (pk, f"{org.name} (organization)") for pk, org in self.organizations.items()
        ]
        for row in range(1, BID_MILESTONE_ROWS + 1):
            self.fields[f"milestone_{row}_name"] = forms.CharField(
                label=f"Milestone {row} (optional)", max_length=80, required=False
            )
            self.fields[f"milestone_{row}_amount"] = forms.CharField(
                label=f"Milestone {row} price", max_length=20, required=False
            )

    def main_fields(self) -> list[Any]:
        return [self[name] for name in ("amount", "currency", "bid_as", "message")]

    def partner_fields(self) -> list[Any]:
        return [self["partner_email"], self["partner_basis_points"]]

    def milestone_rows(self) -> list[tuple[Any, Any]]:
        """The (name, price) bound fields, for the template's table."""
        return [
            (self[f"milestone_{row}_name"], self[f"milestone_{row}_amount"])
            for row in range(1, BID_MILESTONE_ROWS + 1)
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        raw, currency = data.get("amount"), data.get("currency")
        minor = None
        if raw and currency:
            minor = self._minor_units("amount", raw, currency)
            if minor is not None:
                if minor <= 0:
                    self.add_error("amount", "The price must be positive.")
                elif minor > max_charge_amount(currency):
                    maximum = format_money(max_charge_amount(currency), currency)
                    self.add_error("amount", f"The price can be at most {maximum}.")
                data["amount_minor"] = minor
        data["organization"] = self.organizations.get(data.get("bid_as") or "")
        data["milestones"] = self._clean_milestones(data, minor, currency)
        if data.get("fund_per_milestone") and not data["milestones"]:
            self.add_error("fund_per_milestone", "Funding per milestone needs milestones.")
        data["partner"] = self._clean_partner(data)
        return data

    def _minor_units(self, field: str, raw: str, currency: str) -> int | None:
        try:
            return to_minor_units(raw.replace(",", ""), currency)
        except (InvalidAmount, TypeError, ValueError) as exc:
            self.add_error(field, str(exc))
            return None

    def _clean_milestones(
        self, data: dict[str, Any], amount: int | None, currency: str | None
    ) -> list[tuple[str, int]]:
        """Filled rows as (name, minor units); they must add up to the bid exactly."""
        milestones: list[tuple[str, int]] = []
        for row in range(1, BID_MILESTONE_ROWS + 1):
            name = (data.get(f"milestone_{row}_name") or "").strip()
            raw = (data.get(f"milestone_{row}_amount") or "").strip()
            if not name and not raw:
                continue
            if not name or not raw:
                self.add_error(
                    f"milestone_{row}_name", "A milestone needs both a name and a price."
                )
                continue
            if not currency:
                continue
            part = self._minor_units(f"milestone_{row}_amount", raw, currency)
            if part is None:
                continue
            if part <= 0:
                self.add_error(f"milestone_{row}_amount", "A milestone's price must be positive.")
                continue
            milestones.append((name, part))
        if milestones and amount is not None and not self.errors:
            total = sum(part for _, part in milestones)
            if total != amount:
                self.add_error(
                    None,
                    f"The milestones add up to {format_money(total, currency or '')}, "
                    f"not the bid's {format_money(amount, currency or '')}.",
                )
        return milestones

    def _clean_partner(self, data: dict[str, Any]) -> User | None:
        email = data.get("partner_email")
        points = data.get("partner_basis_points")
        if not email:
            if points is not None:
                self.add_error("partner_email", "Name the partner who gets this share.")
            return None
        partner = User.objects.filter(email__iexact=email, is_active=True).first()
        if partner is None:
            self.add_error(
                "partner_email", "Nobody has an account with this email: ask them to sign up."
            )
            return None
        if self.user is not None and partner.pk == self.user.pk:
            self.add_error("partner_email", "Your partner must be someone else.")
            return None
        if points is None:
            self.add_error("partner_basis_points", "Give the partner's share.")
        return partner


class OnboardingForm(forms.Form):
    business_type = forms.ChoiceField(
        choices=[("individual", "Individual"), ("company", "Company")], initial="individual"
    )
    organization_id = forms.CharField(required=False, widget=forms.HiddenInput())


class TipForm(forms.Form):
    """A tip in the payment's currency, major units ("5.00"), converted exactly to minor units.

    Only the format is checked here: the bound (``TIP_MAX_AMOUNT``) is the
    package's, and its refusal is shown as it words it.
    """

    amount = forms.CharField(
        label="Tip", max_length=20, widget=forms.TextInput(attrs={"placeholder": "5.00"})
    )
    # One key per rendering of the form (one user action): a browser that
    # sends the same POST again (a reload after a timeout) sends the same
    # key, and the package answers that tip instead of charging a second one
    # (docs/payments.md, "Retrying a request safely").
    request_key = forms.CharField(
        required=False, max_length=255, widget=forms.HiddenInput, initial=lambda: uuid.uuid4().hex
    )

    def __init__(self, *args: Any, currency: str = "usd", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.currency_code = currency.upper()

    def clean_amount(self) -> int:
        raw = self.cleaned_data["amount"].strip().replace(",", "")
        try:
            minor = to_minor_units(raw, self.currency)
        except (InvalidAmount, TypeError, ValueError) as exc:
            raise forms.ValidationError(str(exc)) from exc
        if minor <= 0:
            raise forms.ValidationError("A tip must be positive.")
        return minor
