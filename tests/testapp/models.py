"""An ordinary host: Django's user, integer keys, organizations with admins."""

from django.conf import settings
from django.db import models

from django_escrow_connect.base.models import EscrowTaskMixin
from django_escrow_connect.terms import EscrowTerms, TermsUnavailable


class Organization(models.Model):
    title = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership")

    def __str__(self) -> str:
        return self.title


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    is_admin = models.BooleanField(default=False)


def is_organization_admin(user, organization) -> bool:
    return Membership.objects.filter(organization=organization, user=user, is_admin=True).exists()


def administered_organizations(user):
    """The predicate above as a queryset (ESCROW_CONNECT["ADMINISTERED_ORGANIZATIONS"])."""
    return Organization.objects.filter(membership__user=user, membership__is_admin=True)


class Task(EscrowTaskMixin, models.Model):
    title = models.CharField(max_length=100)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posted_tasks"
    )

    def __str__(self) -> str:
        return self.title

    def get_escrow_terms(self) -> EscrowTerms:
        bid = self.bids.filter(accepted=True).first()
        if bid is None:
            raise TermsUnavailable("The task has no accepted bid.", payer=self.customer)
        return EscrowTerms(
            payer=self.customer,
            amount=bid.amount,
            currency=bid.currency,
            payee_user=bid.doer_user,
            payee_organization=bid.doer_organization,
            description=self.title,
        )


class Bid(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="bids")
    doer_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    doer_organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE
    )
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    accepted = models.BooleanField(default=False)
