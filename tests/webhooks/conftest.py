"""Shared set-up for the webhook tests: signed deliveries through a
CSRF-enforcing client, payments in a given state, and the signals sent."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.signals import ALL_SIGNALS
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import pipeline
from tests import factories
from tests.webhooks import stripe_objects as so

PLATFORM_SECRET = "whsec_platform_test_secret"
CONNECT_SECRET = "whsec_connect_test_secret"
THIN_SECRET = "whsec_thin_test_secret"
SECRETS = {
    WebhookEndpoint.PLATFORM: PLATFORM_SECRET,
    WebhookEndpoint.CONNECT: CONNECT_SECRET,
    WebhookEndpoint.THIN: THIN_SECRET,
}
URL_NAMES = {
    WebhookEndpoint.PLATFORM: "escrow_connect:stripe-webhook",
    WebhookEndpoint.CONNECT: "escrow_connect:stripe-webhook-connect",
    WebhookEndpoint.THIN: "escrow_connect:stripe-webhook-thin",
}


def url_for(endpoint: str) -> str:
    return reverse(URL_NAMES[endpoint])


def events() -> Any:
    return swappable.load("WebhookEvent").objects


@dataclass
class Delivery:
    """Posts signed events the way Stripe does, through a CSRF-enforcing client."""

    client: Client
    capture: Any

    def post(
        self,
        endpoint: str,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        sign: bool = True,
        **extra: Any,
    ) -> Any:
        payload = body if isinstance(body, bytes) else so.encode(body)
        headers = dict(extra)
        if signature is not None:
            headers["HTTP_STRIPE_SIGNATURE"] = signature
        elif sign:
            headers["HTTP_STRIPE_SIGNATURE"] = sign_webhook_payload(
                payload, secret or SECRETS[endpoint], timestamp
            )
        with self.capture(execute=True):
            return self.client.post(
                url_for(endpoint), data=payload, content_type="application/json", **headers
            )

    def platform(self, evt: dict[str, Any], **kwargs: Any) -> Any:
        return self.post(WebhookEndpoint.PLATFORM, evt, **kwargs)

    def connect(self, evt: dict[str, Any], **kwargs: Any) -> Any:
        return self.post(WebhookEndpoint.CONNECT, evt, **kwargs)

    def retry_deferred(self, rounds: int = 5) -> None:
        """What the reconcile command does, until nothing is left to retry."""
        for _ in range(rounds):
            with self.capture(execute=True):
                counts = pipeline.process_deferred()
            if not counts or set(counts) <= {"deferred"}:
                return


@pytest.fixture
def deliver(db: Any, django_capture_on_commit_callbacks: Any) -> Delivery:
    return Delivery(Client(enforce_csrf_checks=True), django_capture_on_commit_callbacks)


@dataclass
class Sent:
    """Every escrow signal sent during a test, in order."""

    log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _ in self.log]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for sent, kwargs in self.log if sent == name]


@pytest.fixture
def sent() -> Iterator[Sent]:
    record = Sent()
    receivers = {}
    for name, signal in ALL_SIGNALS.items():

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            record.log.append((_name, kwargs))

        receivers[name] = receiver
        signal.connect(receiver, weak=False)
    yield record
    for name, signal in ALL_SIGNALS.items():
        signal.disconnect(receivers[name])


@dataclass
class Scene:
    customer: Any
    doer: Any
    account: Any
    task: Any
    payment: Any

    def refresh(self) -> Any:
        self.payment = swappable.load("EscrowPayment").objects.get(pk=self.payment.pk)
        return self.payment


@pytest.fixture
def make_payment(db: Any) -> Callable[..., Scene]:
    """A payment in ``status`` for a fresh customer, doer and connected account."""

    def make(
        status: str = "awaiting_payment",
        *,
        strategy: str = SEPARATE_CHARGES_AND_TRANSFERS,
        amount: int = 10_000,
        currency: str = "usd",
        platform_fee: int = 1_000,
        with_charge: bool | None = None,
        **fields: Any,
    ) -> Scene:
        customer = factories.make_user("customer")
        doer = factories.make_user("doer")
        account = factories.make_account(owner_user=doer)
        task = factories.make_task(customer, payee_user=doer, amount=amount, currency=currency)
        payment_id = uuid.uuid4()
        funded = status not in ("awaiting_payment", "processing", "failed")
        if with_charge is None:
            with_charge = funded
        values: dict[str, Any] = {
            "id": payment_id,
            "task": task,
            "payer": customer,
            "payee_user": doer,
            "destination_account_id": account.stripe_account_id,
            "currency": currency,
            "amount": amount,
            "platform_fee": platform_fee,
            "strategy": strategy,
            "status": status,
            "stripe_payment_intent_id": so.new_id("pi"),
            "stripe_charge_id": so.new_id("ch") if with_charge else "",
            "transfer_group": f"escrow_{payment_id.hex}",
            "intent_idempotency_key": f"test:{payment_id}",
        }
        values.update(fields)
        payment = swappable.load("EscrowPayment").objects.create(**values)
        return Scene(customer, doer, account, task, payment)

    return make


MANUAL = MANUAL_CAPTURE
SCT = SEPARATE_CHARGES_AND_TRANSFERS


def intent_for(scene: Scene, status: str, **overrides: Any) -> dict[str, Any]:
    """The PaymentIntent of ``scene`` as Stripe would send it, in ``status``."""
    payment = scene.payment
    manual = payment.strategy == MANUAL_CAPTURE
    values: dict[str, Any] = {
        "id": payment.stripe_payment_intent_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": status,
        "capture_method": "manual" if manual else "automatic_async",
        "metadata": {
            "escrow_payment_id": str(payment.pk),
            "task_id": str(payment.task_id),
            "transfer_group": payment.transfer_group,
        },
        "transfer_group": payment.transfer_group,
    }
    if status in ("succeeded", "requires_capture"):
        values["latest_charge"] = payment.stripe_charge_id or so.new_id("ch")
        values["amount_received"] = payment.amount if status == "succeeded" else 0
        values["amount_capturable"] = payment.amount if status == "requires_capture" else 0
    values.update(overrides)
    return so.payment_intent(**values)


SIMULATED_GATEWAY = "django_escrow_connect.simulation.SimulatedGateway"


@pytest.fixture
def sim_stripe(settings: Any) -> Iterator[Any]:
    """The simulated Stripe as the gateway, empty; its own events are collected,
    not delivered, so each test delivers exactly the events it builds."""
    from django_escrow_connect import simulation as simulated

    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "GATEWAY": SIMULATED_GATEWAY}
    simulated.reset()
    previous = simulated.set_event_sink(simulated.EventCollector())
    yield simulated.simulated_stripe
    simulated.set_event_sink(previous)
    simulated.reset()


@pytest.fixture
def reads_checked(sim_stripe: Any, monkeypatch: Any) -> Any:
    """:func:`sim_stripe`, whose catch-up reads (``WEBHOOK_READS``) raise
    ``ReadInTransaction`` when called with a transaction open: the event then
    fails, with that error as its ``last_error``."""
    from django_escrow_connect.simulation import SimulatedGateway
    from tests.checked_gateway import WEBHOOK_READS, ReadInTransaction, outside_transactions

    for name in WEBHOOK_READS:
        method = outside_transactions(getattr(SimulatedGateway, name), ReadInTransaction)
        monkeypatch.setattr(SimulatedGateway, name, method)
    return sim_stripe


def task_backends() -> str:
    """The module of Django's task backends (``django.tasks``, or the django-tasks backport)."""
    try:
        import django.tasks as tasks_framework
    except ImportError:  # Django 5.2
        import django_tasks as tasks_framework  # type: ignore[no-redef, unused-ignore]
    return f"{tasks_framework.__name__}.backends"


def status_history(scene: Scene) -> tuple[str, str]:
    """The payment's and the task's state, fresh from the database."""
    payment = scene.refresh()
    task = swappable.load("Task").objects.get(pk=scene.task.pk)
    return payment.status, task.payment_status


_account_keys = itertools.count(1)


def simulated_account(*, onboarded: bool = True) -> str:
    """A connected account in the simulated Stripe (its events go to the current sink)."""
    from django_escrow_connect.simulation import SimulatedGateway

    gateway = SimulatedGateway()
    created = gateway.create_account(
        idempotency_key=f"test-webhooks-account-{next(_account_keys)}",
        country="US",
        email=None,
        business_type="individual",
        metadata={},
    )
    if onboarded:
        gateway.complete_onboarding(created.id)
    return created.id


def shortcut_taken(event_type: str, endpoint: str = "platform") -> bool:
    """Whether a new event of this type takes the one-statement shortcut here
    (PostgreSQL and a handler with one; see django_escrow_connect/webhooks/shortcuts.py)."""
    from django.db import connection

    from django_escrow_connect.webhooks.registry import shortcut_for

    return connection.vendor == "postgresql" and shortcut_for(event_type, endpoint) is not None


@contextmanager
def fsm_listener(model: str = "EscrowPayment") -> Iterator[list[str]]:
    """A host's django-fsm ``post_transition`` receiver on ``model``: the
    package then takes the locked read (the usual path), not a conditional
    ``UPDATE`` or a shortcut. Yields the transitions it saw."""
    from django_fsm.signals import post_transition

    seen: list[str] = []

    def on_transition(sender: Any, instance: Any, name: str, **kwargs: Any) -> None:
        seen.append(name)

    sender = swappable.load(model)
    post_transition.connect(on_transition, sender=sender, weak=False)
    try:
        yield seen
    finally:
        post_transition.disconnect(on_transition, sender=sender)
