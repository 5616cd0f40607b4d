"""Shared set-up for the payment tests: the simulated Stripe, the people of a
marketplace, and helpers that drive the API the way a browser would.

Every test gets a fresh :data:`simulated_stripe` (configured through
``ESCROW_CONNECT["GATEWAY"]``) whose events are handed to
:func:`apply_payment_intent` for ``payment_intent.*`` (the same function the
webhook handlers call), so paying with a test card moves the payment exactly
as Stripe's webhook would. Other event types are ignored here: the webhook
suite tests them. Events are delivered on commit, so every helper runs its
request inside ``django_capture_on_commit_callbacks(execute=True)``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from django_escrow_connect import simulation as simulated
from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.gateway.types import PaymentIntentSnapshot
from django_escrow_connect.services.payment_intents import apply_payment_intent
from django_escrow_connect.services.tips import apply_tip_payment_intent
from django_escrow_connect.simulation import SimulatedGateway, simulated_stripe
from tests import factories
from tests.stripe_vcr import form_body_matcher, stripe_headers_matcher

#: The simulated gateway, checking that no money call runs inside a transaction.
SIMULATED_GATEWAY = "tests.checked_gateway.TransactionCheckingGateway"
STRATEGIES = (SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE)
#: Calls that move money or create objects at Stripe (the rest only read).
MONEY_CALLS = (
    "create_payment_intent",
    "capture_payment_intent",
    "cancel_payment_intent",
    "create_transfer",
    "create_transfer_reversal",
    "create_refund",
)


def payment_intent_sink(endpoint: str, payload: bytes, signature: str) -> None:
    """Apply ``payment_intent.*`` events as the webhook handler does."""
    event = json.loads(payload)
    if event["type"].startswith("payment_intent."):
        snapshot = PaymentIntentSnapshot.from_dict(event["data"]["object"])
        if snapshot.metadata.get("escrow_tip_id"):
            # A tip's PaymentIntent, routed as the webhook handler does.
            apply_tip_payment_intent(snapshot, event_id=event["id"])
            return
        apply_payment_intent(snapshot, event_id=event["id"])


def configure(settings: Any, **overrides: Any) -> None:
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": SIMULATED_GATEWAY,
        **overrides,
    }


@pytest.fixture
def sim_stripe(settings: Any) -> Iterator[simulated.SimulatedStripe]:
    """The simulated Stripe, empty, with events applied like webhooks."""
    configure(settings)
    simulated.reset()
    previous = simulated.set_event_sink(payment_intent_sink)
    yield simulated_stripe
    simulated.set_event_sink(previous)
    undelivered = list(simulated_stripe.undelivered)
    simulated.reset()
    assert not undelivered, f"events the sink failed on: {undelivered}"


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest, settings: Any, sim_stripe: Any) -> str:
    """Run the test once per escrow strategy."""
    configure(settings, ESCROW_STRATEGY=request.param)
    return str(request.param)


_account_seq = itertools.count(1)


def stripe_account(owner_user: Any = None, owner_organization: Any = None) -> Any:
    """A connected account that exists (onboarded) in the simulated Stripe, and its row."""
    gateway = SimulatedGateway()
    account = gateway.create_account(
        idempotency_key=f"test-account-{next(_account_seq)}",
        country="US",
        email=None,
        business_type="individual" if owner_user is not None else "company",
        metadata={},
    )
    gateway.complete_onboarding(account.id)
    return factories.make_account(
        owner_user=owner_user, owner_organization=owner_organization, stripe_account_id=account.id
    )


@dataclass
class Marketplace:
    """The people of one marketplace, and helpers to act as them."""

    capture: Any
    customer: Any
    doer: Any
    org_admin: Any
    org_member: Any
    organization: Any
    other: Any
    staff: Any
    doer_account: Any
    org_account: Any
    clients: dict[Any, APIClient] = field(default_factory=dict)

    # --- tasks and payments -------------------------------------------------

    def task(self, *, to_org: bool = False, amount: int = 10_000, currency: str = "usd") -> Any:
        payee = {"payee_organization": self.organization} if to_org else {"payee_user": self.doer}
        return factories.make_task(self.customer, amount=amount, currency=currency, **payee)

    def create(self, task: Any, user: Any = "customer", **body: Any) -> Any:
        """POST payments/create/ as ``user`` (None: anonymous)."""
        user = self.customer if user == "customer" else user
        return self.post(user, "payment-create", {"task_id": str(task.pk), **body})

    def pay(self, payment_id: Any, card: str = "success") -> Any:
        """The customer pays with a test card in the browser (Stripe.js)."""
        payment = self.payment(payment_id)
        with self.capture(execute=True):
            SimulatedGateway().confirm_payment_intent(payment.stripe_payment_intent_id, card)
        return self.payment(payment_id)

    def held_payment(
        self, *, to_org: bool = False, amount: int = 10_000, currency: str = "usd"
    ) -> Any:
        response = self.create(self.task(to_org=to_org, amount=amount, currency=currency))
        assert response.status_code == 201, response.content
        payment = self.pay(response.json()["payment_id"])
        assert payment.status == "held"
        return payment

    def released_payment(
        self, *, to_org: bool = False, amount: int = 10_000, currency: str = "usd"
    ) -> Any:
        payment = self.held_payment(to_org=to_org, amount=amount, currency=currency)
        response = self.post(self.customer, "payment-confirm", payment_id=payment.pk)
        assert response.status_code == 200, response.content
        return self.payment(payment.pk)

    def capture_in_dashboard(
        self,
        payment: Any,
        amount: int,
        *,
        webhook: bool = True,
        application_fee_amount: int | None = None,
    ) -> Any:
        """Staff capture ``amount`` of a manual-capture hold in the Stripe
        dashboard, outside the app; its webhooks are delivered unless
        ``webhook=False``. The payment, read again."""
        with self.capture(execute=webhook):
            SimulatedGateway().capture_payment_intent(
                payment.stripe_payment_intent_id,
                idempotency_key="dashboard-capture",
                amount_to_capture=amount,
                application_fee_amount=application_fee_amount,
            )
        return self.payment(payment.pk)

    @staticmethod
    def payment(payment_id: Any) -> Any:
        return swappable.load("EscrowPayment").objects.get(pk=payment_id)

    # --- HTTP -------------------------------------------------------------------

    def client(self, user: Any) -> APIClient:
        if user not in self.clients:
            client = APIClient()
            if user is not None:
                client.force_authenticate(user)
            self.clients[user] = client
        return self.clients[user]

    def post(
        self,
        user: Any,
        name: str,
        data: Any = None,
        *,
        payment_id: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        url = reverse(f"escrow_connect:{name}", args=[str(payment_id)] if payment_id else [])
        with self.capture(execute=True):
            return self.client(user).post(
                url, data if data is not None else {}, format="json", headers=headers
            )

    def get(self, user: Any, name: str, *, payment_id: Any = None, **params: Any) -> Any:
        url = reverse(f"escrow_connect:{name}", args=[str(payment_id)] if payment_id else [])
        return self.client(user).get(url, params)


@pytest.fixture
def market(db: Any, sim_stripe: Any, django_capture_on_commit_callbacks: Any) -> Marketplace:
    return build_marketplace(capture=django_capture_on_commit_callbacks)


def build_marketplace(capture: Any) -> Marketplace:
    """The people of a marketplace, each doer with an onboarded connected account.

    ``capture`` runs on-commit callbacks (pytest-django's fixture in tests; a
    no-op in autocommit, as the benchmark runs).
    """
    customer = factories.make_user("customer")
    doer = factories.make_user("doer")
    org_admin = factories.make_user("orgadmin")
    org_member = factories.make_user("orgmember")
    organization = factories.make_organization(admins=(org_admin,), members=(org_member,))
    return Marketplace(
        capture=capture,
        customer=customer,
        doer=doer,
        org_admin=org_admin,
        org_member=org_member,
        organization=organization,
        other=factories.make_user("other"),
        staff=factories.make_user("staff", staff=True),
        doer_account=stripe_account(owner_user=doer),
        org_account=stripe_account(owner_organization=organization),
    )


def calls(store: Any, *names: str) -> list[str]:
    """The names of the gateway calls made so far (only ``names``, if given)."""
    return [name for name, _ in store.calls if not names or name in names]


def money_calls(store: Any) -> list[str]:
    return calls(store, *MONEY_CALLS)


def auto_release_dry_run(market: Marketplace, store: Any) -> str:
    """``escrow_auto_release --dry-run``'s output, once proven read-only:
    not one Stripe call (reads included), not one row written."""
    out = StringIO()
    store.calls.clear()
    with CaptureQueriesContext(connection) as queries, market.capture(execute=True):
        call_command("escrow_auto_release", "--dry-run", stdout=out, stderr=out)
    writes = [q["sql"] for q in queries if q["sql"].split(None, 1)[0].upper() in WRITES]
    assert writes == []
    assert calls(store) == []
    return out.getvalue()


def auto_release_run(market: Marketplace) -> str:
    """``escrow_auto_release``'s output, for a run that must not fail (no ``CommandError``)."""
    out = StringIO()
    with market.capture(execute=True):
        call_command("escrow_auto_release", stdout=out, stderr=out)
    return out.getvalue()


def age(payment: Any, **fields: Any) -> None:
    """Move a payment's timestamps into the past (as if time had passed)."""
    swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(**fields)


def due_manual_hold(market: Marketplace, settings: Any, **changes: Any) -> Any:
    """A manual-capture hold due for both periodic jobs (held 30 days, its
    authorisation lapsing within the hour), under ``changes`` to the settings."""
    configure(settings, ESCROW_STRATEGY=MANUAL_CAPTURE, **changes)
    payment = market.held_payment()
    age(
        payment,
        held_at=timezone.now() - timedelta(days=30),
        capture_before=timezone.now() + timedelta(hours=1),
    )
    return payment


def second_release_raises(market: Marketplace, monkeypatch: Any) -> tuple[Any, Any]:
    """Two payments due (held 30 days, holds lapsing within hours), the
    first older; a bug (``ValueError``) in the scheduled jobs' release of
    the second. Returns both."""

    first, second = market.held_payment(), market.held_payment()
    for hours, payment in enumerate((first, second), start=1):
        swappable.load("EscrowPayment").objects.filter(pk=payment.pk).update(
            held_at=timezone.now() - timedelta(days=30, hours=-hours),
            capture_before=timezone.now() + timedelta(hours=hours),
        )
    release_raises_for(second, monkeypatch)
    return first, second


def release_raises_for(payment: Any, monkeypatch: Any) -> None:
    """A bug (``ValueError``) in the scheduled jobs' release of ``payment`` only."""
    from django_escrow_connect.services import schedules

    real_release = schedules.release_payment

    def release_with_a_bug(payment_id: Any, **kwargs: Any) -> Any:
        if payment_id == payment.pk:
            raise ValueError("a bug in the release")
        return real_release(payment_id, **kwargs)

    monkeypatch.setattr(schedules, "release_payment", release_with_a_bug)


def second_lost_outcome_raises(market: Marketplace, monkeypatch: Any) -> tuple[Any, Any]:
    """Two payments whose PaymentIntents succeeded and whose webhooks were
    lost (``awaiting_payment``, the first untouched longer); a bug
    (``ValueError``) in reconcile's look-up of the second. Returns both."""
    from django_escrow_connect.services import reconcile

    payments = []
    for hours in (2, 1):
        payment = market.payment(market.create(market.task()).json()["payment_id"])
        with market.capture(execute=False):  # the webhook is lost
            SimulatedGateway().confirm_payment_intent(payment.stripe_payment_intent_id, "success")
        age(payment, updated_at=timezone.now() - timedelta(hours=hours))
        payments.append(payment)
    first, second = payments
    real_sync = reconcile.sync_intent

    def sync_with_a_bug(payment: Any, dry_run: bool) -> Any:
        if payment.pk == second.pk:
            raise ValueError("a bug in the look-up")
        return real_sync(payment, dry_run)

    monkeypatch.setattr(reconcile, "sync_intent", sync_with_a_bug)
    return first, second


#: The SQL statements that write.
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def assert_terms_refused(
    market: Marketplace, sim_stripe: Any, caplog: Any, task: Any, reason: str, **body: Any
) -> None:
    """Creating ``task``'s payment whose terms hold a value a user typed that
    cannot be paid (``InvalidTerms``): the customer gets ``409
    no_payment_terms`` saying ``reason``, a stranger ``404``; an error is
    logged; no payment is written and Stripe is not called (not a 500)."""
    with caplog.at_level("ERROR", logger="django_escrow_connect.payments"):
        response = market.create(task, **body)
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "no_payment_terms"
    assert "cannot be paid as it stands" in error["message"]
    assert reason in error["message"]
    assert any("its terms are invalid" in r.getMessage() for r in caplog.records)
    assert market.create(task, user=market.other, **body).status_code == 404
    assert not swappable.load("EscrowPayment").objects.filter(task_id=task.pk).exists()
    assert not swappable.load("MoneyOperation").objects.filter(payment__task_id=task.pk).exists()
    assert money_calls(sim_stripe) == []


# --- cassettes (tests/cassettes/payments/) -----------------------------------------
#
# A payment's id is derived from its task (uuid5 of the task's model and pk),
# and the task's pk depends on the host (integer or UUID) and on the order the
# tests run in. These matchers compare Stripe requests with every UUID (with
# or without dashes) and ``metadata[task_id]`` normalised, so one cassette
# serves both test hosts; everything else must match exactly.


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("escrow_form_body", form_body_matcher(normalise=True))
    vcr.register_matcher("escrow_stripe_headers", stripe_headers_matcher(normalise=True))
