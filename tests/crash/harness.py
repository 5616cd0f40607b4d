"""The crash suite's world: a marketplace, the shared Stripe, the server, the books.

One :class:`World` per test. It sets a marketplace up in the test process
(through the package's API and the real webhook endpoint, in-process), then
sends the money call to the gunicorn server over HTTP and kills the worker
where the crash plan blocks it (:meth:`World.crash`). Follow-ups go over HTTP
to the worker gunicorn restarted (a retry, a refund or cancel, the queued
webhooks) or run in the test process (``escrow_reconcile``).

Every answer (in-process or HTTP) is collected in :attr:`World.answers`;
:func:`assert_books_clean` is the one final check of a case, and
:meth:`World.report` what a failing case prints: the steps, every answer,
the app's rows, Stripe's books and the server's log.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from django_escrow_connect import swappable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.simulation import (
    CONNECT_ENDPOINT,
    SimulatedGateway,
    event_endpoint,
)
from django_escrow_connect.testing import assert_books_balanced
from tests.payments.conftest import Marketplace, build_marketplace
from tests.reliability.conftest import assert_money_invariants, stripe_books

from .server import Answer, HttpClient, Server, wait_gone
from .shared_stripe import SharedStripe, shared_stripe

#: Bounds of a crash: the blocked call shows up, the killed worker is gone.
MARKER_TIMEOUT = 15.0
DEATH_TIMEOUT = 10.0

#: Statuses of a payment whose money may have reached the doer.
RELEASED_STATES = frozenset({"released", "partially_refunded"})
#: Statuses of a payment whose money never left the platform.
UNRELEASED_STATES = frozenset({"awaiting_payment", "processing", "held", "canceled", "failed"})


class _NoCapture:
    """``capture(execute=True)``: on-commit callbacks run by themselves (autocommit)."""

    def __call__(self, execute: bool = False) -> _NoCapture:
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class World:
    """One crash case: people, the shared Stripe, the server, every answer."""

    shared: SharedStripe
    server: Server
    market: Marketplace
    answers: list[Answer] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    #: Servers (installations' endpoints) Stripe delivers events to.
    servers: list[Server] = field(default_factory=list)
    #: Answers before this index belong to the set-up (reported only when not 2xx).
    case_start: int = 0

    @classmethod
    def build(cls, shared: SharedStripe, server: Server) -> World:
        with shared.session():
            market = build_marketplace(capture=_NoCapture())
        world = cls(shared=shared, server=server, market=market, servers=[server])
        server.start_case(os.environ.get("PYTEST_CURRENT_TEST", "a test"))
        world.deliver_in_process()  # onboarding events
        return world

    # --- requests ------------------------------------------------------------------

    def url(self, name: str, payment_id: Any = None) -> str:
        return reverse(f"escrow_connect:{name}", args=[str(payment_id)] if payment_id else [])

    def api(
        self, user: Any, name: str, payment_id: Any = None, data: Any = None, *, label: str = ""
    ) -> Answer:
        """POST to the package's API in the test process (set-up)."""
        client = APIClient()
        client.raise_request_exception = False
        client.force_authenticate(user)
        response = client.post(self.url(name, payment_id), data or {}, format="json")
        exc_info = getattr(response, "exc_info", None)
        try:
            body: Any = response.json()
        except (ValueError, TypeError):
            body = response.content.decode(errors="replace")[:500]
        answer = Answer(
            label or f"{name} (in process)",
            response.status_code,
            body,
            error=repr(exc_info[1]) if exc_info else "",
        )
        self.answers.append(answer)
        return answer

    def http(
        self,
        user: Any,
        name: str,
        payment_id: Any = None,
        data: Any = None,
        *,
        server: Server | None = None,
        label: str = "",
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """POST to the package's API over HTTP (a real server process)."""
        server = server or self.server
        client = HttpClient(server, self.answers)
        return client.request(
            "POST",
            self.url(name, payment_id),
            user=user,
            data=data or {},
            headers=headers,
            label=label or f"{name} (http {server.name})",
            timeout=timeout,
        )

    # --- set-up ---------------------------------------------------------------------

    def task(self, amount: int = 10_000) -> Any:
        return self.market.task(amount=amount)

    def create(self, task: Any) -> Any:
        answer = self.api(self.market.customer, "payment-create", data={"task_id": str(task.pk)})
        assert answer.status == 201, answer
        return self.payment(answer.body["payment_id"])

    def pay(self, payment: Any, card: str = "success") -> Any:
        """The customer pays in the browser; Stripe's events reach the endpoint."""
        with self.shared.session():
            SimulatedGateway().confirm_payment_intent(payment.stripe_payment_intent_id, card)
        self.deliver_in_process()
        return self.payment(payment.pk)

    def held_payment(self, amount: int = 10_000) -> Any:
        payment = self.pay(self.create(self.task(amount)))
        assert payment.status == "held", payment.status
        return payment

    def released_payment(self, amount: int = 10_000) -> Any:
        payment = self.held_payment(amount)
        answer = self.api(self.market.customer, "payment-confirm", payment.pk)
        assert answer.status == 200, answer
        self.deliver_in_process()
        payment = self.payment(payment.pk)
        assert payment.status == "released", payment.status
        return payment

    @staticmethod
    def payment(payment_id: Any) -> Any:
        return swappable.load("EscrowPayment").objects.get(pk=payment_id)

    @staticmethod
    def payments_of(task: Any) -> list[Any]:
        return list(swappable.load("EscrowPayment").objects.filter(task=task))

    # --- webhooks -------------------------------------------------------------------

    @staticmethod
    def signed(event: dict[str, Any]) -> tuple[str, bytes, str]:
        """(path, body, Stripe-Signature) of one delivery of ``event``."""
        endpoint = event_endpoint(event)
        name = "CONNECT_WEBHOOK_SECRETS" if endpoint == CONNECT_ENDPOINT else "WEBHOOK_SECRETS"
        secret = settings.ESCROW_CONNECT[name][0]
        payload = json.dumps(event, indent=2).encode()
        url = "stripe-webhook-connect" if endpoint == CONNECT_ENDPOINT else "stripe-webhook"
        return reverse(f"escrow_connect:{url}"), payload, sign_webhook_payload(payload, secret)

    def deliver_in_process(self) -> list[Answer]:
        """Deliver every queued event to the test process's own endpoint (set-up)."""
        events = self.shared.queued_events()
        client = Client(raise_request_exception=False)
        answers = []
        for event in events:
            path, payload, signature = self.signed(event)
            response = client.post(
                path, payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
            )
            answer = Answer(f"webhook {event['type']} (in process)", response.status_code)
            self.answers.append(answer)
            answers.append(answer)
        self.shared.mark_handled([event["id"] for event in events])
        return answers

    def deliver(self, servers: list[Server] | None = None) -> list[Answer]:
        """Stripe delivers every queued event, over HTTP, to every endpoint."""
        events = self.shared.queued_events()
        answers = []
        for server in servers or self.servers:
            client = HttpClient(server, self.answers)
            for event in events:
                path, payload, signature = self.signed(event)
                answers.append(
                    client.request(
                        "POST",
                        path,
                        body=payload,
                        headers={
                            "Content-Type": "application/json",
                            "Stripe-Signature": signature,
                        },
                        label=f"webhook {event['type']} {event['id']} (http {server.name})",
                    )
                )
        self.shared.mark_handled([event["id"] for event in events])
        names = [server.name for server in servers or self.servers]
        self.steps.append(f"delivered {[e['type'] for e in events]} to {names}")
        return answers

    def drop_queued(self) -> list[str]:
        """The queued events never arrive."""
        events = self.shared.queued_events()
        self.shared.mark_handled([event["id"] for event in events])
        return [event["type"] for event in events]

    # --- crashes --------------------------------------------------------------------

    def crash(
        self, method: str, when: str, send: Any, *, server: Server | None = None, skip: int = 0
    ) -> dict[str, Any]:
        """Send a request that blocks at ``method`` (``when``) and SIGKILL the worker.

        ``send`` is called in a thread (it blocks until the worker dies).
        Returns the marker (pid, method, when).
        """
        server = server or self.server
        self.case_start = len(self.answers)
        self.shared.write_plan(method, when, skip=skip)
        server.mark_log(f"crash {method} {when}")
        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        try:
            marker = self.shared.wait_for_marker(MARKER_TIMEOUT)
        except TimeoutError:
            self.shared.clear_plan()
            thread.join(timeout=30)
            raise AssertionError(
                f"{method} never blocked ({when}): the request did not reach the call\n"
                + self.report()
            ) from None
        os.kill(marker["pid"], signal.SIGKILL)
        wait_gone(marker["pid"], DEATH_TIMEOUT)
        thread.join(timeout=DEATH_TIMEOUT)
        assert not thread.is_alive(), "the client is still waiting after the worker died"
        self.steps.append(f"{method}: worker {marker['pid']} killed {when} Stripe acted")
        return marker

    def slow(
        self, method: str, when: str, send: Any, *, server: Server, hold: float = 30.0
    ) -> dict[str, Any]:
        """Stripe answers ``method`` slower than the worker timeout: gunicorn kills it."""
        self.case_start = len(self.answers)
        self.shared.write_plan(method, when, hold=hold)
        server.mark_log(f"slow {method} {when}")
        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        marker = self.shared.wait_for_marker(MARKER_TIMEOUT)
        wait_gone(marker["pid"], server.timeout + DEATH_TIMEOUT)
        thread.join(timeout=DEATH_TIMEOUT)
        assert not thread.is_alive(), "the client is still waiting after the worker died"
        for answer in self.answers[self.case_start :]:
            # gunicorn answers the request of the worker it aborted with its own 500.
            if answer.status == 500 and "Internal Server Error" in str(answer.body):
                answer.worker_timeout = True
        self.steps.append(f"{method}: worker {marker['pid']} timed out {when} Stripe acted")
        return marker

    # --- operators ------------------------------------------------------------------

    def reconcile(self) -> str:
        """``manage.py escrow_reconcile`` in the test process, for fresh rows too."""
        out, err = _Text(), _Text()
        try:
            call_command("escrow_reconcile", older_than=0, stdout=out, stderr=err)
        except CommandError as exc:
            err.write(f"CommandError: {exc}")
        text = (out.text + err.text).strip()
        self.steps.append(f"escrow_reconcile: {text}")
        return text

    # --- books ------------------------------------------------------------------------

    def books(self, payment: Any) -> dict[str, Any]:
        with self.shared.session() as store:
            return stripe_books(store, payment)

    def report(self, payment: Any = None) -> str:
        lines = ["steps:"] + [f"  - {step}" for step in self.steps]
        setup = self.answers[: self.case_start]
        odd = [a for a in setup if a.status is None or a.status >= 300]
        lines.append(f"set-up answers: {len(setup)}, {len(odd)} not 2xx")
        lines += [f"  - {answer}" for answer in odd]
        lines += ["answers:"] + [f"  - {answer}" for answer in self.answers[self.case_start :]]
        if payment is not None:
            lines.append("app: " + describe_payment(payment))
            books = self.books(payment)
            lines.append(
                "stripe: intent {} | transfers {} | reversed {} | refunds {}".format(
                    books["intent"].get("status"),
                    [(t["id"], t["amount"], t["amount_reversed"]) for t in books["transfers"]],
                    books["reversed"],
                    books["refunded"],
                )
            )
        calls = self.shared.money_calls()
        lines.append(
            "money calls: "
            + ", ".join(
                f"{c['method']}@{c['role']}{' (in a transaction)' if c['in_atomic'] else ''}"
                for c in calls
            )
        )
        for server in self.servers:
            lines.append(f"server {server.name} log (tail):\n{server.log_tail(25)}")
        return "\n".join(lines)


class _Text:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def describe_payment(payment: Any) -> str:
    transfers = [
        (t.stripe_transfer_id or "-", t.status, t.amount, t.amount_reversed)
        for t in payment.transfers.all()
    ]
    refunds = [(r.stripe_refund_id or "-", r.status, r.amount) for r in payment.refunds.all()]
    return (
        f"{payment.pk} {payment.status} amount {payment.amount} transferred "
        f"{payment.amount_transferred} reversed {payment.amount_reversed} refunded "
        f"{payment.amount_refunded} | transfers {transfers} | refunds {refunds}"
    )


# --------------------------------------------------------------------------
# The final check of every case
# --------------------------------------------------------------------------


def assert_no_server_error(world: World) -> None:
    errors = [
        str(a)
        for a in world.answers
        if a.status is not None and a.status >= 500 and not a.worker_timeout
    ]
    assert not errors, f"5xx answered: {errors}"


def assert_books_clean(payment: Any) -> dict[str, Any]:
    """The app's books and Stripe's agree for ``payment``, and money moved at most once.

    By the simulated Stripe's own books: at most one transfer, the doer never
    keeps what the customer got back, refunds never exceed the capture; then
    the payment's amounts, status, transfer and refund rows against them.
    Last, ``escrow_audit``'s verdict (:func:`assert_books_balanced`).
    """
    payment = World.payment(payment.pk)
    shared = shared_stripe()
    with shared.session() as store:
        books = stripe_books(store, payment)
    transfers = books["transfers"]
    kept = books["transferred"] - books["reversed"]
    captured = books["charge"].get("amount_captured", 0) if books["charge"] else 0

    # Stripe's books alone (said plainly first; then the reliability suite's own check).
    if payment.released_in_parts:
        # One transfer per (release, payee), named by its metadata.
        pairs = [
            (t["metadata"].get("escrow_release_id"), t["metadata"].get("escrow_payee"))
            for t in transfers
        ]
        assert len(pairs) == len(set(pairs)), f"a payee paid twice for one release: {pairs}"
    else:
        assert len(transfers) <= 1, (
            f"money sent twice: {len(transfers)} transfers {_ids(transfers)}"
        )
    assert kept <= payment.amount - books["refunded"], (
        f"the doer keeps {kept} while the customer got {books['refunded']} of {payment.amount} back"
    )
    assert kept <= payment.amount - payment.platform_fee, f"the doer keeps {kept}, over its share"
    assert books["refunded"] <= captured, f"refunded {books['refunded']}, captured {captured}"
    if not payment.released_in_parts:
        with shared.session() as store:
            assert_money_invariants(store, payment)
    held = payment.amount - payment.amount_released - payment.amount_refunded
    # A lost dispute took its part of what was held (amount_lost).
    assert held == payment.amount_held + payment.amount_lost, (
        "released + refunded + held + lost != charged"
    )
    assert payment.amount_held >= 0
    assert payment.amount_lost >= 0
    intent = books["intent"].get("status")
    sct = not payment.is_manual_capture

    # Rows against Stripe.
    assert payment.amount_refunded == books["refunded"], (
        f"app refunded {payment.amount_refunded}, Stripe refunded {books['refunded']}"
    )
    assert payment.amount_transferred == books["transferred"], (
        f"app transferred {payment.amount_transferred}, Stripe transferred {books['transferred']}"
    )
    if sct:
        assert payment.amount_reversed == books["reversed"], (
            f"app reversed {payment.amount_reversed}, Stripe reversed {books['reversed']}"
        )
        recorded = {
            t.stripe_transfer_id
            for t in payment.transfers.all()
            if t.stripe_transfer_id and t.status != "failed"
        }
        assert recorded == {t["id"] for t in transfers}, (
            f"app's transfers {sorted(recorded)} != Stripe's {[t['id'] for t in transfers]}"
        )
    refunds_recorded = {
        r.stripe_refund_id
        for r in payment.refunds.all()
        if r.stripe_refund_id and r.status not in ("failed", "canceled")
    }
    with shared.session() as store:
        stripe_refunds = {
            r["id"]
            for r in store.refunds.values()
            if r.get("payment_intent") == payment.stripe_payment_intent_id
            and r["status"] in ("pending", "succeeded", "requires_action")
        }
    if not payment.is_manual_capture or payment.status != "canceled":
        assert refunds_recorded == stripe_refunds, (
            f"app's refunds {sorted(refunds_recorded)} != Stripe's {sorted(stripe_refunds)}"
        )

    # The status against Stripe.
    status = payment.status
    if status in RELEASED_STATES and not payment.released_in_parts:
        assert len(transfers) == 1, f"{status} but Stripe has {len(transfers)} transfers"
        assert kept > 0, (
            f"{status} but Stripe's transfer is fully reversed ({books['reversed']}) "
            f"and {books['refunded']} refunded"
        )
        assert intent == "succeeded", f"{status} but the PaymentIntent is {intent}"
    if status == "released" and payment.released_in_parts:
        # Converged: every payee of every release has its one transfer at Stripe.
        made = {
            (t["metadata"].get("escrow_release_id"), t["metadata"].get("escrow_payee"))
            for t in transfers
        }
        for release in payment.releases.all():
            for payee_id, share in release.allocations.items():
                if share > 0:
                    assert (str(release.pk), str(payee_id)) in made, (
                        f"released, but payee {payee_id} of release {release.pk} has no transfer"
                    )
    if status in UNRELEASED_STATES:
        assert transfers == [], (
            f"{status} (never released) but Stripe transferred {books['transferred']} "
            f"{_ids(transfers)}"
        )
    if status == "refunded":
        assert books["refunded"] == payment.amount, (
            f"refunded but Stripe refunded {books['refunded']} of {payment.amount}"
        )
        assert kept == 0, f"refunded but the doer kept {kept}"
    if status == "held":
        expected = "succeeded" if sct else "requires_capture"
        assert intent == expected, f"held but the PaymentIntent is {intent}"
    if status == "canceled" and payment.stripe_payment_intent_id:
        assert intent == "canceled", f"canceled but the PaymentIntent is {intent}"
    if intent == "canceled":
        assert status == "canceled", f"the PaymentIntent is canceled but the payment is {status}"
    # And the package's own oracle: escrow_audit finds no divergence and no
    # money operation left unsettled.
    assert_books_balanced(payment_id=payment.pk)
    return books


def _ids(objects: list[dict[str, Any]]) -> list[str]:
    return [str(o["id"]) for o in objects]


def check_case(world: World, payment: Any, *extra: Any) -> None:
    """No 5xx, the books clean, then ``extra`` checks; on failure, the whole story."""
    try:
        assert_no_server_error(world)
        if payment is not None:
            assert_books_clean(payment)
        for more in extra:
            more()
    except AssertionError as exc:
        current = World.payment(payment.pk) if payment is not None else None
        raise AssertionError(f"{exc}\n\n{world.report(current)}") from None
