from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def marketplace(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    unread = 0
    if user is not None and user.is_authenticated:
        unread = user.notifications.filter(read_at__isnull=True).count()
    return {
        "simulated_mode": settings.SIMULATED_STRIPE,
        "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
        "unread_notifications": unread,
    }
