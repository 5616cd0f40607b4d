"""A host that swaps what it can: email users without username, UUID task
keys, its own team model, and a payment model with an extra field."""

import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models

from django_escrow_connect.base.models import AbstractEscrowPayment, EscrowTaskMixin
from django_escrow_connect.terms import EscrowTerms, TermsUnavailable


class MemberManager(BaseUserManager):
    def create_user(self, email, password=None, **extra):
        member = self.model(email=self.normalize_email(email), **extra)
        member.set_password(password)
        member.save(using=self._db)
        return member

    def create_superuser(self, email, password=None, **extra):
        return self.create_user(email, password, is_staff=True, is_superuser=True, **extra)


class Member(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    objects = MemberManager()


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    label = models.CharField(max_length=100)
    admins = models.ManyToManyField(Member, related_name="administered_teams", blank=True)
    members = models.ManyToManyField(Member, related_name="teams", blank=True)


def is_team_admin(user, team) -> bool:
    return team.admins.filter(pk=user.pk).exists()


def administered_teams(user):
    return Team.objects.filter(admins=user)


class Job(EscrowTaskMixin, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    summary = models.CharField(max_length=100)
    client = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="jobs")
    worker = models.ForeignKey(
        Member, null=True, blank=True, on_delete=models.CASCADE, related_name="work"
    )
    worker_team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE)
    price = models.BigIntegerField(null=True, blank=True)
    price_currency = models.CharField(max_length=3, default="eur")

    def get_escrow_terms(self) -> EscrowTerms:
        if self.price is None or (self.worker_id is None and self.worker_team_id is None):
            raise TermsUnavailable("The job has no agreed price and worker.", payer=self.client)
        return EscrowTerms(
            payer=self.client,
            amount=self.price,
            currency=self.price_currency,
            payee_user=self.worker,
            payee_organization=self.worker_team,
            description=self.summary,
        )


class TrackedEscrowPayment(AbstractEscrowPayment):
    """The host's payment model: the library's, plus an accounting reference."""

    ledger_reference = models.CharField(max_length=64, blank=True)

    class Meta(AbstractEscrowPayment.Meta):
        abstract = False
