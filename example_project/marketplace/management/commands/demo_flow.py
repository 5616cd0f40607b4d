"""``manage.py demo_flow``: the whole escrow story, headless, against the simulated gateway.

Runs the happy path and the main unhappy paths through the same services the
web pages use, prints every state change of the task and its payment, and
checks each one. Anything unexpected (a wrong state, a webhook that failed
or was refused, an exception) ends the command with a non-zero exit status,
so it doubles as a smoke test::

    python example_project/manage.py demo_flow

Each run creates its own people (``flow-<run>-...@demo-flow.example``) and
tasks, so it can run against the demo database; afterwards they can be
inspected in the web pages too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import BalanceInsufficient
from django_escrow_connect.gateway import get_gateway
from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.services import errors
from django_escrow_connect.states import AccountStatus, WebhookEventStatus
from django_escrow_connect.states import PaymentStatus as P

from ... import services
from ...models import Membership, Notification, Organization, Task, TaskStatus, User
from ...simulated_state import simulated_session


class FlowFailed(Exception):
    pass


class Command(BaseCommand):
    help = (
        "Run the escrow happy path and unhappy paths headlessly against the simulated "
        "gateway, printing each state change; exits non-zero on anything unexpected."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--only",
            action="append",
            default=None,
            metavar="SCENARIO",
            help="Run only this scenario (repeatable): " + ", ".join(SCENARIOS),
        )

    def handle(self, *args: Any, only: list[str] | None = None, **options: Any) -> None:
        if not settings.SIMULATED_STRIPE or not hasattr(get_gateway(), "confirm_payment_intent"):
            raise CommandError(
                "demo_flow needs simulated mode (unset STRIPE_SECRET_KEY): it plays the "
                "customer's card and Stripe itself."
            )
        from django.db import connection

        if Task._meta.db_table not in connection.introspection.table_names():
            raise CommandError(
                "The database is not migrated: run `manage.py migrate` first "
                "(bash scripts/run-example.sh does it)."
            )
        unknown = sorted(set(only or ()) - set(SCENARIOS))
        if unknown:
            raise CommandError(f"Unknown scenario(s): {', '.join(unknown)}")
        verbosity = int(options.get("verbosity", 1))
        if verbosity < 2:
            # The package logs every webhook at INFO (and the refusals the flow provokes
            # at WARNING); the flow prints its own story.
            logging.getLogger("django_escrow_connect").setLevel(logging.ERROR)
        self.flow = Flow(self.stdout.write, self.style)
        with simulated_session():
            try:
                self.flow.run(only or list(SCENARIOS))
            except FlowFailed as exc:
                raise CommandError(f"demo_flow FAILED: {exc}") from None
            except errors.ServiceError as exc:
                raise CommandError(
                    f"demo_flow FAILED: unexpected {exc.code}: {exc.message}"
                ) from None
        self.stdout.write(self.style.SUCCESS(f"demo_flow: all {self.flow.checks} checks passed."))


class Flow:
    def __init__(self, write: Callable[[str], Any], style: Any) -> None:
        self.write = write
        self.style = style
        self.run_id = uuid.uuid4().hex[:6]
        self.checks = 0
        self.gateway = get_gateway()
        self.store = self.gateway.store
        self._seen: dict[str, tuple[str, str]] = {}

    # -- helpers -------------------------------------------------------------------

    def person(self, role: str) -> User:
        return User.objects.create_user(
            f"flow-{self.run_id}-{role}@demo-flow.example",
            None,
            name=f"{role.replace('-', ' ').title()} ({self.run_id})",
        )

    def verified(self, business_type: str = "individual", **owner: Any) -> Any:
        account = account_services.ensure_account(business_type=business_type, **owner)
        self.gateway.complete_onboarding(account.stripe_account_id)
        account.refresh_from_db()
        self.expect("doer's account", account.status, AccountStatus.VERIFIED)
        return account

    def expect(self, what: str, actual: Any, expected: Any) -> None:
        self.checks += 1
        if actual != expected:
            raise FlowFailed(f"{what}: expected {expected!r}, got {actual!r}")

    def show(self, task: Task, note: str = "") -> tuple[str, str]:
        """Print the task's and payment's state when they changed."""
        task.refresh_from_db()
        payment = services.current_payment(task)
        state = (task.status, payment.status if payment else "-")
        before = self._seen.get(str(task.pk))
        if before != state:
            old = f"{before[0]} / {before[1]}" if before else "new"
            self.write(f"    task {task.status:<13} payment {state[1]:<18} (was {old}) {note}")
            self._seen[str(task.pk)] = state
        return state

    def state(self, task: Task, task_status: str, payment_status: str, note: str = "") -> None:
        actual = self.show(task, note)
        self.expect(f"task {task.pk} state", actual, (task_status, payment_status))

    def refused(self, what: str, call: Callable[[], Any], code: str) -> errors.ServiceError:
        try:
            call()
        except errors.ServiceError as exc:
            self.expect(f"{what} refusal code", exc.code, code)
            self.write(f"    refused as expected ({exc.code}): {exc.message}")
            return exc
        raise FlowFailed(f"{what} should have been refused ({code})")

    def notified(self, user: Any, kind: str, task: Task) -> None:
        found = Notification.objects.filter(user=user, kind=kind, task=task).exists()
        self.expect(f"notification {kind!r} for {user}", found, True)

    def accepted_task(self, customer: Any, doer: Any, title: str, amount: int = 5000) -> Task:
        task = services.post_task(customer, f"{title} [{self.run_id}]")
        self.state(task, TaskStatus.CREATED, "-", "posted")
        bid = services.place_bid(task.pk, doer, amount=amount, currency="usd")
        self.state(task, TaskStatus.BIDDING, "-", f"bid {bid.formatted_amount}")
        services.accept_bid(bid.pk, customer)
        self.state(task, TaskStatus.BID_ACCEPTED, "-", "bid accepted")
        return task

    def pay(self, task: Task, card: str, expected_outcome: str) -> services.CardOutcome:
        result = services.pay_with_simulated_card(task.pk, task.customer, card)
        self.expect(f"paying with {card!r}", result.outcome, expected_outcome)
        return result

    # -- the story ---------------------------------------------------------------

    def run(self, names: list[str]) -> None:
        self.events_before = len(self.store.events)
        self.undelivered_before = len(self.store.undelivered)
        WebhookEvent = swappable.load("WebhookEvent")
        self.failed_before = set(
            WebhookEvent.objects.filter(status=WebhookEventStatus.FAILED).values_list(
                "pk", flat=True
            )
        )
        self.write(f"demo_flow run {self.run_id}")
        self.customer = self.person("customer")
        self.doer = self.person("doer")
        self.verified(owner_user=self.doer)
        for name in names:
            self.write(self.style.MIGRATE_HEADING(f"\n== {name}: {SCENARIOS[name][1]}"))
            SCENARIOS[name][0](self)
        self.check_webhooks()

    def check_webhooks(self) -> None:
        WebhookEvent = swappable.load("WebhookEvent")
        events = len(self.store.events) - self.events_before
        failed = WebhookEvent.objects.filter(status=WebhookEventStatus.FAILED).exclude(
            pk__in=self.failed_before
        )
        undelivered = self.store.undelivered[self.undelivered_before :]
        self.write(f"\n{events} simulated Stripe events went through the webhook pipeline.")
        for row in failed:
            self.write(f"    FAILED webhook {row.type}: {row.last_error[:200]}")
        for item in undelivered:
            self.write(f"    UNDELIVERED {item.event_id}: {item.reason}")
        self.expect("failed webhook events", failed.count(), 0)
        self.expect("undelivered webhook events", len(undelivered), 0)

    def happy_path(self) -> None:
        task = self.accepted_task(self.customer, self.doer, "Paint the fence", amount=12000)
        self.pay(task, "success", "succeeded")
        self.state(task, TaskStatus.IN_PROGRESS, P.HELD, "paid with 4242...: held in escrow")
        self.notified(self.customer, Notification.Kind.PAYMENT_HELD, task)
        self.notified(self.doer, Notification.Kind.PAYMENT_HELD, task)
        services.complete_task(task.pk, self.customer)
        self.state(task, TaskStatus.COMPLETED, P.RELEASED, "customer confirmed: released")
        payment = services.current_payment(task)
        self.expect("platform fee (10 %)", payment.platform_fee, 1200)
        self.expect("amount sent to the doer", payment.amount_transferred, 10800)
        self.notified(self.doer, Notification.Kind.PAYMENT_RELEASED, task)

    def unverified_doer(self) -> None:
        newbie = self.person("newbie")
        task = services.post_task(self.customer, f"Wash the car [{self.run_id}]")
        bid = services.place_bid(task.pk, newbie, amount=3000, currency="usd")
        self.refused(
            "accepting a doer without a verified account",
            lambda: services.accept_bid(bid.pk, self.customer),
            "doer_not_verified",
        )
        self.notified(newbie, Notification.Kind.ONBOARDING_NEEDED, task)
        self.verified(owner_user=newbie)
        services.accept_bid(bid.pk, self.customer)
        self.state(task, TaskStatus.BID_ACCEPTED, "-", "accepted after onboarding")

    def decline_then_success(self) -> None:
        task = self.accepted_task(self.customer, self.doer, "Mow the lawn")
        result = self.pay(task, "declined", "declined")
        self.state(task, TaskStatus.BID_ACCEPTED, P.FAILED, f"declined: {result.message}")
        self.notified(self.customer, Notification.Kind.PAYMENT_FAILED, task)
        self.pay(task, "success", "succeeded")
        self.state(task, TaskStatus.IN_PROGRESS, P.HELD, "second card: held")

    def authentication(self) -> None:
        task = self.accepted_task(self.customer, self.doer, "Clean the windows")
        result = self.pay(task, "authentication_required", "requires_action")
        self.state(task, TaskStatus.BID_ACCEPTED, P.AWAITING_PAYMENT, "3-D Secure asked")
        services.complete_simulated_authentication(result.payment_intent_id, self.customer, False)
        self.state(task, TaskStatus.BID_ACCEPTED, P.FAILED, "authentication failed")
        result = self.pay(task, "authentication_required", "requires_action")
        services.complete_simulated_authentication(result.payment_intent_id, self.customer, True)
        self.state(task, TaskStatus.IN_PROGRESS, P.HELD, "authenticated: held")

    def refund_after_release(self) -> None:
        task = self.accepted_task(self.customer, self.doer, "Assemble a bookshelf", amount=8000)
        self.pay(task, "success", "succeeded")
        services.complete_task(task.pk, self.customer)
        self.state(task, TaskStatus.COMPLETED, P.RELEASED, "released")
        self.refused(
            "a refund asked by the customer",
            lambda: services.refund_task(task.pk, self.customer),
            "forbidden",
        )
        payment = services.refund_task(task.pk, self.doer, reason="requested_by_customer")
        self.state(task, TaskStatus.COMPLETED, P.REFUNDED, "doer refunded (transfer reversed)")
        self.expect("amount reversed from the doer", payment.amount_reversed, 7200)
        self.expect("amount refunded", payment.amount_refunded, 8000)
        task.refresh_from_db()
        self.expect("task payment status", task.payment_status, "refunded")
        self.notified(self.customer, Notification.Kind.PAYMENT_REFUNDED, task)

    def dispute(self) -> None:
        task = self.accepted_task(self.customer, self.doer, "Tile the bathroom", amount=20000)
        self.pay(task, "disputed", "succeeded")
        self.state(task, TaskStatus.IN_PROGRESS, P.DISPUTED, "paid, then disputed by the bank")
        self.notified(self.doer, Notification.Kind.DISPUTE, task)
        self.refused(
            "releasing a disputed payment",
            lambda: services.complete_task(task.pk, self.customer),
            "transition_not_allowed",
        )
        payment = services.current_payment(task)
        dispute = payment.disputes.get()
        self.gateway.close_dispute(dispute.stripe_dispute_id, won=True)
        self.state(task, TaskStatus.IN_PROGRESS, P.HELD, "dispute won: held again")
        services.complete_task(task.pk, self.customer)
        self.state(task, TaskStatus.COMPLETED, P.RELEASED, "released after the dispute")

        lost = self.accepted_task(self.customer, self.doer, "Fix the roof", amount=15000)
        self.pay(lost, "disputed", "succeeded")
        self.state(lost, TaskStatus.IN_PROGRESS, P.DISPUTED, "disputed")
        dispute = services.current_payment(lost).disputes.get()
        self.gateway.close_dispute(dispute.stripe_dispute_id, won=False)
        self.state(lost, TaskStatus.CANCELLED, P.DISPUTE_LOST, "dispute lost: task cancelled")

    def transfer_failure(self) -> None:
        task = self.accepted_task(self.customer, self.doer, "Move a piano", amount=30000)
        self.pay(task, "success", "succeeded")
        self.store.fail_next(
            "create_transfer",
            BalanceInsufficient(
                "Insufficient funds in the platform's balance (simulated).",
                code="balance_insufficient",
                http_status=400,
            ),
        )
        self.refused(
            "a release Stripe refuses",
            lambda: services.complete_task(task.pk, self.customer),
            "release_failed",
        )
        self.state(task, TaskStatus.IN_PROGRESS, P.HELD, "transfer failed: still held")
        self.notified(self.customer, Notification.Kind.TRANSFER_FAILED, task)
        services.complete_task(task.pk, self.customer)
        self.state(task, TaskStatus.COMPLETED, P.RELEASED, "retried: released")
        payment = services.current_payment(task)
        self.expect("transfers tried", payment.transfers.count(), 2)

    def deauthorization(self) -> None:
        leaver = self.person("leaver")
        account = self.verified(owner_user=leaver)
        paid = self.accepted_task(self.customer, leaver, "Walk the dog", amount=4000)
        self.pay(paid, "success", "succeeded")
        self.state(paid, TaskStatus.IN_PROGRESS, P.HELD, "held")
        unpaid = self.accepted_task(self.customer, leaver, "Feed the cat", amount=2500)
        self.gateway.deauthorize(account.stripe_account_id)
        account.refresh_from_db()
        self.expect("account after deauthorization", account.status, AccountStatus.DEAUTHORIZED)
        self.write(f"    doer disconnected {account.stripe_account_id}")
        self.state(paid, TaskStatus.CANCELLED, P.REFUNDED, "cancelled, money refunded")
        self.state(unpaid, TaskStatus.CANCELLED, "-", "cancelled before payment")
        self.notified(self.customer, Notification.Kind.ACCOUNT_DEAUTHORIZED, paid)
        self.expect(
            "doer told about the disconnection",
            Notification.objects.filter(
                user=leaver, kind=Notification.Kind.ACCOUNT_DEAUTHORIZED
            ).exists(),
            True,
        )

    def organization(self) -> None:
        admin, member = self.person("org-admin"), self.person("org-member")
        org = Organization.objects.create(name=f"Flow Team {self.run_id}")
        Membership.objects.create(organization=org, user=admin, role=Membership.Role.ADMIN)
        Membership.objects.create(organization=org, user=member, role=Membership.Role.MEMBER)
        self.verified(owner_organization=org, business_type="company")
        task = services.post_task(self.customer, f"Build a website [{self.run_id}]")
        bid = services.place_bid(task.pk, member, amount=50000, currency="usd", organization=org)
        services.accept_bid(bid.pk, self.customer)
        self.pay(task, "success", "succeeded")
        services.complete_task(task.pk, self.customer)
        self.state(task, TaskStatus.COMPLETED, P.RELEASED, "organization paid")
        payment = services.current_payment(task)
        self.expect("payee organization", payment.payee_organization_id, org.pk)
        self.notified(admin, Notification.Kind.PAYMENT_RELEASED, task)


SCENARIOS: dict[str, tuple[Callable[[Flow], None], str]] = {
    "happy_path": (Flow.happy_path, "post, bid, accept, pay, complete, release"),
    "unverified_doer": (Flow.unverified_doer, "accepting needs a verified doer"),
    "decline_then_success": (Flow.decline_then_success, "a declined card, then a good one"),
    "authentication": (Flow.authentication, "3-D Secure failed, then passed"),
    "refund_after_release": (Flow.refund_after_release, "reverse the transfer, then refund"),
    "dispute": (Flow.dispute, "a dispute freezes the release; won and lost"),
    "transfer_failure": (Flow.transfer_failure, "Stripe refuses the transfer; retry"),
    "deauthorization": (Flow.deauthorization, "the doer disconnects: open tasks cancelled"),
    "organization": (Flow.organization, "an organization is paid through its admins' account"),
}
