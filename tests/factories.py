"""Host-neutral factories: the same tests run against ``tests.testapp`` (an
ordinary host) and ``tests.swappedapp`` (everything swapped). Tests create
people, organizations, tasks and accounts only through these functions.

The package's rows come from the public kit, :mod:`django_escrow_connect.factories`;
people, organizations and tasks are the test hosts' own models."""

from __future__ import annotations

import itertools
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable

_seq = itertools.count(1)
HOST = settings.ESCROW_TEST_HOST


def make_user(name: str | None = None, *, staff: bool = False, password: str = "pw") -> Any:
    name = name or f"user{next(_seq)}"
    User = get_user_model()
    email = f"{name}-{next(_seq)}@example.com"
    if HOST == "swappedapp":
        return User.objects.create_user(email=email, password=password, is_staff=staff)
    return User.objects.create_user(
        username=f"{name}-{next(_seq)}", email=email, password=password, is_staff=staff
    )


def make_organization(*, admins: tuple[Any, ...] = (), members: tuple[Any, ...] = ()) -> Any:
    Organization = swappable.load("Organization")
    if HOST == "swappedapp":
        team = Organization.objects.create(label=f"team {next(_seq)}")
        team.admins.add(*admins)
        team.members.add(*admins, *members)
        return team
    from tests.testapp.models import Membership

    org = Organization.objects.create(title=f"org {next(_seq)}")
    for user in admins:
        Membership.objects.create(organization=org, user=user, is_admin=True)
    for user in members:
        Membership.objects.create(organization=org, user=user, is_admin=False)
    return org


def make_task(
    customer: Any,
    *,
    payee_user: Any = None,
    payee_organization: Any = None,
    amount: int | None = 10_000,
    currency: str = "usd",
) -> Any:
    """A task whose terms say ``customer`` pays ``amount`` to the payee.

    With neither payee nor amount the task has no terms yet (no accepted bid).
    """
    Task = swappable.load("Task")
    if HOST == "swappedapp":
        return Task.objects.create(
            summary=f"job {next(_seq)}",
            client=customer,
            worker=payee_user,
            worker_team=payee_organization,
            price=amount if (payee_user or payee_organization) else None,
            price_currency=currency,
        )
    from tests.testapp.models import Bid

    task = Task.objects.create(title=f"task {next(_seq)}", customer=customer)
    if (payee_user or payee_organization) and amount is not None:
        Bid.objects.create(
            task=task,
            doer_user=payee_user,
            doer_organization=payee_organization,
            amount=amount,
            currency=currency,
            accepted=True,
        )
    return task


def set_task_price(task: Any, amount: int) -> None:
    """Change the agreed amount after the fact (as a host might)."""
    if HOST == "swappedapp":
        # An update, not save(): the instance's payment status may be stale.
        type(task).objects.filter(pk=task.pk).update(price=amount)
    else:
        task.bids.filter(accepted=True).update(amount=amount)


def set_task_customer(task: Any, user: Any) -> None:
    """Hand the task to another customer after the fact (as a host might)."""
    field = "client" if HOST == "swappedapp" else "customer"
    # An update, not save(): the instance's payment status may be stale.
    type(task).objects.filter(pk=task.pk).update(**{field: user})


def withdraw_terms(task: Any) -> None:
    """Take the task's price away (no accepted bid): its terms are unavailable."""
    if HOST == "swappedapp":
        type(task).objects.filter(pk=task.pk).update(price=None)
    else:
        task.bids.filter(accepted=True).update(accepted=False)


def make_account(
    *,
    owner_user: Any = None,
    owner_organization: Any = None,
    stripe_account_id: str | None = None,
    ready: bool = True,
) -> Any:
    """A connected account row; ``ready`` means verified and able to receive."""
    return kit.make_account(
        owner_user=owner_user,
        owner_organization=owner_organization,
        stripe_account_id=stripe_account_id or f"acct_1Test{next(_seq):011d}",
        ready=ready,
    )
