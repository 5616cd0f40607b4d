"""An email backend that records which MAILERS alias (Django 6.1+) sent each message."""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.mail.backends.base import BaseEmailBackend


class AliasRecordingBackend(BaseEmailBackend):
    sent: ClassVar[list[tuple[str, Any]]] = []

    def send_messages(self, email_messages: Any) -> int:
        for message in email_messages:
            AliasRecordingBackend.sent.append((getattr(self, "alias", None), message))
        return len(email_messages)
