"""pytest fixtures for a host's tests: the simulated Stripe behind the real pipeline.

Installed with the package as the ``pytest11`` entry point ``escrow_connect``,
so pytest loads it in every project that has the package installed. It is
inert until used: it defines fixtures (all named ``escrow_*``), no autouse
fixture, no hook, and imports nothing from Django at import time (pytest
loads it before Django is configured). A test opts in by asking for a
fixture; ``-p no:escrow_connect`` removes it. With plugin autoloading off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), enable it with
``-p django_escrow_connect.pytest_plugin``. Needs pytest-django.

- :func:`escrow_stripe`: the simulated Stripe, empty, its events delivered
  to the package's webhook receiver, signed; yields an :class:`EscrowStripe`.
- :func:`escrow_onboarded_account`: makes a verified connected account for
  an owner, through the onboarding service and the simulated onboarding.
- :func:`escrow_held_payment`: makes a payment for a task through
  ``create_payment`` and pays it with the simulated success card.
- :func:`escrow_deliver`: delivers a Stripe event (a dict) to the receiver.
- :func:`escrow_books_balanced`: the books audit as an assertion.

See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

__all__ = [
    "EscrowStripe",
    "escrow_books_balanced",
    "escrow_deliver",
    "escrow_held_payment",
    "escrow_onboarded_account",
    "escrow_stripe",
]


def _sim() -> ModuleType:
    """The simulated Stripe's public module (the one place the kit names it).

    Imported when a fixture runs, not with the plugin: pytest loads the
    plugin before Django's settings exist.
    """
    from django_escrow_connect import simulation

    return simulation


class EscrowStripe:
    """The simulated Stripe of one test (what :func:`escrow_stripe` yields).

    Events the simulated Stripe emits go to the package's real webhook
    receiver, signed with the endpoint's secret. Inside a test's transaction
    (pytest-django's ``db``) they are delivered when the transaction commits,
    which a test's never does: run the action inside :meth:`events`, which
    runs the on-commit callbacks as a real commit would. Under
    ``transactional_db`` they are delivered at once.
    """

    def __init__(self, capture_on_commit: Callable[..., Any]) -> None:
        self._capture = capture_on_commit
        sim = _sim()
        #: The process-wide simulated Stripe store (objects, events, clock, faults).
        self.store: Any = sim.simulated_stripe
        #: The gateway the package uses, with the simulation calls (pay, onboard, dispute).
        self.gateway: Any = sim.SimulatedGateway()
        #: The test cards by scenario name (``"success"``, ``"declined"``, ...).
        self.cards: dict[str, Any] = dict(sim.CARDS)

    @contextlib.contextmanager
    def events(self) -> Iterator[None]:
        """Deliver the events (and run the other on-commit work) of the block when it ends."""
        with self._capture(execute=True):
            yield

    def complete_onboarding(self, account: Any) -> Any:
        """The owner finishes onboarding at Stripe; returns the account row, refreshed."""
        with self.events():
            self.gateway.complete_onboarding(account.stripe_account_id)
        account.refresh_from_db()
        return account

    def pay(self, payment: Any, card: str = "success") -> Any:
        """The customer pays ``payment`` with ``card`` (a name of :attr:`cards` or a number)."""
        with self.events():
            self.gateway.confirm_payment_intent(payment.stripe_payment_intent_id, card)
        payment.refresh_from_db()
        return payment

    @property
    def undelivered(self) -> list[Any]:
        """Events the receiver refused or failed on (checked empty after the test)."""
        return list(self.store.undelivered)


@pytest.fixture
def escrow_stripe(settings: Any, django_capture_on_commit_callbacks: Any) -> Iterator[EscrowStripe]:
    """The simulated Stripe, empty, behind the package's real webhook pipeline.

    Sets ``ESCROW_CONNECT["GATEWAY"]`` to the simulated gateway for the
    test (and a signing secret per endpoint if the host configured none),
    resets the simulated store before and after, and fails the test if an
    event was refused by the receiver.
    """
    from django_escrow_connect.checks import SIMULATED_GATEWAY

    sim = _sim()
    configured = dict(getattr(settings, "ESCROW_CONNECT", None) or {})
    configured["GATEWAY"] = SIMULATED_GATEWAY
    for name in ("WEBHOOK_SECRETS", "CONNECT_WEBHOOK_SECRETS"):
        if not configured.get(name):
            configured[name] = [sim.SIMULATED_WEBHOOK_SECRET]
    settings.ESCROW_CONNECT = configured
    sim.reset()
    # None: the default sink, the package's own receiver.
    previous = sim.set_event_sink(None)
    try:
        helper = EscrowStripe(django_capture_on_commit_callbacks)
        yield helper
        undelivered = helper.undelivered
    finally:
        sim.set_event_sink(previous)
        sim.reset()
    assert not undelivered, f"simulated events the webhook receiver refused: {undelivered}"


@pytest.fixture
def escrow_onboarded_account(escrow_stripe: EscrowStripe, db: Any) -> Callable[..., Any]:
    """Make a verified connected account: ``make(owner_user=...)`` or ``(owner_organization=...)``.

    Goes through the package's onboarding service (``ensure_account``) and the
    simulated onboarding, so the row was created and updated by the real
    code and webhook; returns the account row, able to receive transfers.
    """
    from django_escrow_connect.services.accounts import ensure_account

    def make(
        owner_user: Any = None, owner_organization: Any = None, *, business_type: str = ""
    ) -> Any:
        kind = business_type or ("individual" if owner_user is not None else "company")
        with escrow_stripe.events():
            account = ensure_account(
                owner_user=owner_user, owner_organization=owner_organization, business_type=kind
            )
        account = escrow_stripe.complete_onboarding(account)
        if not account.can_transfer:
            raise AssertionError(f"{account} cannot receive transfers after onboarding")
        return account

    return make


@pytest.fixture
def escrow_held_payment(escrow_stripe: EscrowStripe, db: Any) -> Callable[..., Any]:
    """Make a held payment: ``make(task, payer, card="success")``.

    Creates the payment through ``services.payments.create_payment`` (the
    task's terms decide amount and payee; the payee needs an onboarded
    account) and pays it with ``card``; returns the payment row, ``held``.
    """
    from django_escrow_connect.services.payments import create_payment

    def make(task: Any, payer: Any, *, card: str = "success") -> Any:
        with escrow_stripe.events():
            payment = create_payment(task.pk, payer).payment
        payment = escrow_stripe.pay(payment, card)
        if payment.status != "held":
            raise AssertionError(f"payment {payment.pk} is {payment.status}, not held")
        return payment

    return make


@pytest.fixture
def escrow_deliver(escrow_stripe: EscrowStripe) -> Callable[..., Any]:
    """Deliver a Stripe event (a dict) to the webhook receiver: ``deliver(event)``.

    Signed with the endpoint's secret (Connect when the event has an
    ``account``); returns the receiver's answer (``status_code`` 200 when
    it took the event).
    """
    from django_escrow_connect.conf import escrow_settings
    from django_escrow_connect.gateway.signing import sign_webhook_payload
    from django_escrow_connect.webhooks.receiver import receive

    def deliver(event: dict[str, Any]) -> Any:
        connect = bool(event.get("account"))
        endpoint = "connect" if connect else "platform"
        secrets = (
            escrow_settings.CONNECT_WEBHOOK_SECRETS if connect else escrow_settings.WEBHOOK_SECRETS
        )
        payload = json.dumps(event).encode("utf-8")
        signature = sign_webhook_payload(payload, secrets[0])
        with escrow_stripe.events():
            return receive(endpoint, payload, signature)

    return deliver


@pytest.fixture
def escrow_books_balanced(db: Any) -> Callable[..., Any]:
    """The books audit as an assertion: ``escrow_books_balanced(**kwargs)``.

    :func:`django_escrow_connect.testing.assert_books_balanced`: raises
    ``AssertionError`` listing divergences between the rows and Stripe.
    """
    from django_escrow_connect.testing import assert_books_balanced

    return assert_books_balanced
