"""``manage.py seed_demo``: demo people, an organization and tasks in several states.

Idempotent: people, the organization and each task are created only when
missing, so running it again changes nothing. ``--reset`` empties the
database (and the simulated Stripe) first.

Everything goes through the same services as the web pages: in simulated
mode the tasks are really bid on, accepted, paid with a simulated card and
released, so the webhook pipeline has run for each of them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from django_escrow_connect.gateway import get_gateway
from django_escrow_connect.services import accounts as account_services

from ... import services
from ...demo import DEMO_PASSWORD, DEMO_USERS
from ...models import Membership, Organization, Task, User
from ...simulated_state import simulated_session, state_file

ORGANIZATION = "Acme Studio"

MILESTONE_TASK = "Build a small online shop"
#: Dana Doer and Pia Partner bid as a team: Pia gets 40 % of each release's net.
TEAM_PARTNER_BASIS_POINTS = 4_000
MILESTONES = (("Design", 6_000), ("Build", 9_000), ("Launch", 5_000))

#: (title, description, how far it goes, who does it)
TASKS = (
    (
        "Design a logo for a bakery",
        "Something warm and friendly; vector files please.",
        "created",
        None,
    ),
    (
        "Fix the contact form on my website",
        "The form on example.com/contact does not send e-mails any more.",
        "bidding",
        None,
    ),
    (
        "Write 10 product descriptions",
        "About 80 words each, for an online tea shop.",
        "bid_accepted",
        "doer",
    ),
    ("Translate a brochure into Spanish", "Four pages, marketing tone.", "in_progress", "org"),
    ("Photograph 20 products", "White background, square crops.", "completed", "doer"),
    (
        MILESTONE_TASK,
        "Design, build and launch; paid milestone by milestone.",
        "in_progress",
        "team",
    ),
)


class Command(BaseCommand):
    help = "Create demo users, an organization and tasks in various states (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Empty the database (and the simulated Stripe) before seeding.",
        )

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        if int(options.get("verbosity", 1)) < 2:
            # The package logs every webhook at INFO; this command lists what it made.
            logging.getLogger("django_escrow_connect").setLevel(logging.WARNING)
        if reset:
            call_command("flush", interactive=False, verbosity=0)
            if settings.SIMULATED_STRIPE:
                from django_escrow_connect.simulation import reset as reset_simulated

                current = state_file()
                if current is not None:
                    current.forget()
                reset_simulated()
            self.stdout.write("Database emptied.")
        with simulated_session():
            self.seed()

    # ------------------------------------------------------------------

    def seed(self) -> None:
        people = {}
        for demo in DEMO_USERS:
            user = User.objects.filter(email=demo.email).first()
            if user is None:
                user = User.objects.create_user(
                    demo.email,
                    DEMO_PASSWORD,
                    name=demo.name,
                    is_staff=demo.email.startswith("staff@"),
                    is_superuser=demo.email.startswith("staff@"),
                )
                self.stdout.write(f"  user {demo.email} ({demo.role})")
            people[demo.email.split("@")[0]] = user
        acme, created = Organization.objects.get_or_create(name=ORGANIZATION)
        if created:
            self.stdout.write(f"  organization {ORGANIZATION}")
        Membership.objects.get_or_create(
            organization=acme, user=people["admin"], defaults={"role": Membership.Role.ADMIN}
        )
        Membership.objects.get_or_create(
            organization=acme, user=people["member"], defaults={"role": Membership.Role.MEMBER}
        )

        if settings.SIMULATED_STRIPE:
            self._check_simulated_state()
            self._verified_account(owner_user=people["doer"], business_type="individual")
            self._verified_account(owner_user=people["partner"], business_type="individual")
            self._verified_account(owner_organization=acme, business_type="company")
        else:
            self.stdout.write(
                "  Stripe test mode: no accounts are onboarded for you; use the Payouts page."
            )

        customer = people["customer"]
        for title, description, target, doer in TASKS:
            if Task.objects.filter(customer=customer, title=title).exists():
                continue
            if not settings.SIMULATED_STRIPE and target not in ("created", "bidding"):
                continue
            task = services.post_task(customer, title, description)
            self._advance(task, target, doer, people, acme)
            task.refresh_from_db()
            self.stdout.write(f"  task “{title}”: {task.status} / {task.payment_status}")
        self.stdout.write(
            self.style.SUCCESS("Demo data ready. Password of every demo user: ") + DEMO_PASSWORD
        )

    def _verified_account(self, **owner: Any) -> None:
        account = account_services.ensure_account(**owner)
        if not account.is_verified and not account.is_deauthorized:
            get_gateway().complete_onboarding(account.stripe_account_id)
            account.refresh_from_db()
        label = owner.get("owner_user") or owner.get("owner_organization")
        self.stdout.write(
            f"  Stripe account {account.stripe_account_id} of {label}: {account.status}"
        )

    def _check_simulated_state(self) -> None:
        from django_escrow_connect import swappable
        from django_escrow_connect.simulation import simulated_stripe

        known = set(simulated_stripe.accounts)
        lost = (
            swappable.load("ConnectedAccount")
            .objects.exclude(stripe_account_id="")
            .exclude(stripe_account_id__in=known)
            .count()
        )
        if lost:
            self.stderr.write(
                self.style.WARNING(
                    f"{lost} connected account(s) in the database are unknown to the simulated "
                    "Stripe (its state file was deleted?). Run `seed_demo --reset` to start over."
                )
            )

    def _advance(
        self, task: Task, target: str, doer: str | None, people: dict[str, Any], acme: Any
    ) -> None:
        if target == "created":
            return
        if doer == "team":
            bid = services.place_bid(
                task.pk,
                people["doer"],
                amount=sum(amount for _, amount in MILESTONES),
                currency="usd",
                message="Pia and I, in three milestones.",
                milestones=list(MILESTONES),
                partner=people["partner"],
                partner_basis_points=TEAM_PARTNER_BASIS_POINTS,
            )
            services.accept_bid(bid.pk, task.customer)
            services.pay_with_simulated_card(task.pk, task.customer, "success")
            return
        services.place_bid(
            task.pk, people["newbie"], amount=9500, currency="usd", message="I can start today."
        )
        doer_bid = services.place_bid(
            task.pk,
            people["doer"],
            amount=12000,
            currency="usd",
            message="Done within three days.",
        )
        org_bid = services.place_bid(
            task.pk,
            people["member"],
            amount=15000,
            currency="usd",
            organization=acme,
            message="Our team has done this many times.",
        )
        if target == "bidding":
            return
        bid = org_bid if doer == "org" else doer_bid
        services.accept_bid(bid.pk, task.customer)
        if target == "bid_accepted":
            return
        services.pay_with_simulated_card(task.pk, task.customer, "success")
        if target == "in_progress":
            return
        services.complete_task(task.pk, task.customer)
