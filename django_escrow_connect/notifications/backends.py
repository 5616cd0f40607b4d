"""Notification backends shipped with the package.

A backend is any class with ``send(event: str, /, **kwargs)`` (``event``
positional-only: ``webhook_processing_failed`` passes an ``event=`` argument). Subclass
:class:`BaseBackend` and name it in ``ESCROW_CONNECT["NOTIFICATION_BACKENDS"]``.
Backends run after commit; an exception is logged and swallowed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils import translation

from ..conf import escrow_settings

__all__ = [
    "BaseBackend",
    "EmailBackend",
    "LoggingBackend",
    "describe",
    "user_language",
]

logger = logging.getLogger("django_escrow_connect.events")


class BaseBackend:
    """A notification backend: one method per signal it handles."""

    def send(self, event: str, /, **kwargs: Any) -> None:
        raise NotImplementedError


def describe(**kwargs: Any) -> dict[str, Any]:
    """Identifiers safe to log: ids and states, never secrets or card data."""
    fields: dict[str, Any] = {}
    payment = kwargs.get("payment")
    if payment is not None:
        fields.update(
            payment_id=str(payment.pk),
            payment_status=payment.status,
            amount=payment.amount,
            currency=payment.currency,
        )
    account = kwargs.get("account")
    if account is not None:
        fields.update(connected_account=account.stripe_account_id, account_status=account.status)
    for name in ("refund", "dispute", "transfer", "incident", "milestone", "payee", "tip"):
        obj = kwargs.get(name)
        if obj is not None:
            fields[f"{name}_id"] = str(obj.pk)
    return fields


class LoggingBackend(BaseBackend):
    """Writes one structured log line per business event."""

    def send(self, event: str, /, **kwargs: Any) -> None:
        logger.info("escrow event %s", event, extra={"escrow_event": event, **describe(**kwargs)})


class EmailBackend(BaseBackend):
    """Emails the people concerned, using templates the host may override.

    Templates: ``escrow_connect/email/<event>_subject.txt`` and
    ``escrow_connect/email/<event>.txt``; events without templates are skipped.
    Recipients: the payer and the payee user for payment events, the owner for
    account events (users without an email address are skipped).

    Each recipient reads the email in their language
    (``ESCROW_CONNECT["RECIPIENT_LANGUAGE"]``, else ``settings.LANGUAGE_CODE``):
    one email per language, so people sharing a language share an email.
    """

    def send(self, event: str, /, **kwargs: Any) -> None:
        for language, recipients in sorted(self._recipients_by_language(event, **kwargs).items()):
            # Notifications run after the commit of whoever caused them; that
            # request's language is the actor's, not the recipient's.
            with translation.override(language):
                self._send_one(event, sorted(recipients), **kwargs)

    def _send_one(self, event: str, recipients: list[str], /, **kwargs: Any) -> None:
        context = {"event": event, **kwargs}
        try:
            subject = render_to_string(f"escrow_connect/email/{event}_subject.txt", context)
            body = render_to_string(f"escrow_connect/email/{event}.txt", context)
        except TemplateDoesNotExist:
            return
        # Only Django 6.1+ knows ``using``; the system check refuses
        # EMAIL_MAILER on older versions, so it is passed only when set.
        mailer = escrow_settings.EMAIL_MAILER
        options: dict[str, Any] = {"using": mailer} if mailer else {}
        send_mail(
            " ".join(subject.split()),
            body,
            getattr(settings, "DEFAULT_FROM_EMAIL", None),
            recipients,
            **options,
        )

    def _recipients_by_language(self, event: str, /, **kwargs: Any) -> dict[str, set[str]]:
        default = settings.LANGUAGE_CODE
        groups: dict[str, set[str]] = {}
        if type(self).recipients is not EmailBackend.recipients:
            # A subclass chose the addresses itself: no users, no languages.
            emails = {email for email in self.recipients(event, **kwargs) if email}
            return {default: emails} if emails else {}
        hook = escrow_settings.RECIPIENT_LANGUAGE
        for person in self.people(event, **kwargs):
            email = _email_of(person)
            if email:
                language = (hook(person) if hook is not None else None) or default
                groups.setdefault(language, set()).add(email)
        return groups

    def people(self, event: str, /, **kwargs: Any) -> list[Any]:
        """The users an event concerns (override to add or drop some)."""
        people: list[Any] = []
        payment = kwargs.get("payment")
        if payment is not None:
            people += [payment.payer, payment.payee_user]
        payee = kwargs.get("payee")
        if payee is not None and getattr(payee, "user", None) not in people:
            # One of several payees of a split payment (payee_transfer_failed).
            people.append(payee.user)
        account = kwargs.get("account")
        if account is not None:
            people.append(account.owner_user)
        return [person for person in people if person is not None]

    def recipients(self, event: str, /, **kwargs: Any) -> list[str]:
        """The addresses an event is sent to; overriding it sends in ``LANGUAGE_CODE``."""
        return [_email_of(person) for person in self.people(event, **kwargs)]


def user_language(user: Any) -> str | None:
    """The default ``RECIPIENT_LANGUAGE``: the user's ``language`` attribute, if any."""
    return getattr(user, "language", None) or None


def _email_of(user: Any) -> str:
    field = user.get_email_field_name() if hasattr(user, "get_email_field_name") else "email"
    return str(getattr(user, field, "") or "")
