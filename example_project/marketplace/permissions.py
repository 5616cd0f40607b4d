"""The host's answer to the package's question "who administers an organization?"

Named in ``ESCROW_CONNECT["ORGANIZATION_ADMIN_PREDICATE"]``: organization
admins manage its connected account and see its payments.
"""

from __future__ import annotations

from typing import Any


def is_organization_admin(user: Any, organization: Any) -> bool:
    from .models import Membership

    if not getattr(user, "is_authenticated", False) or organization is None:
        return False
    return Membership.objects.filter(
        organization_id=organization.pk, user_id=user.pk, role=Membership.Role.ADMIN
    ).exists()
