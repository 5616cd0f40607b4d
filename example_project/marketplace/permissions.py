"""The host's answer to the package's question "who administers an organization?"

Named in ``ESCROW_CONNECT["ORGANIZATION_ADMIN_PREDICATE"]`` (per organization)
and ``ESCROW_CONNECT["ADMINISTERED_ORGANIZATIONS"]`` (the same rule as a
queryset, so the package finds a payment in one scoped query): organization
admins manage its connected account and see its payments. The predicate is
written with the queryset, so the two cannot disagree.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet


def administered_organizations(user: Any) -> QuerySet[Any]:
    from .models import Membership, Organization

    if not getattr(user, "is_authenticated", False):
        return Organization.objects.none()
    return Organization.objects.filter(
        memberships__user_id=user.pk, memberships__role=Membership.Role.ADMIN
    )


def is_organization_admin(user: Any, organization: Any) -> bool:
    if organization is None:
        return False
    return administered_organizations(user).filter(pk=organization.pk).exists()
