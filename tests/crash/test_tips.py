"""Tips survive a worker SIGKILLed mid-call, on PostgreSQL.

Two money calls of a tip, each killed ``before`` Stripe acted and ``after``
it acted (the answer lost):

- ``tip-intent``: the customer's ``POST payments/{id}/tips/`` dies in
  ``create_payment_intent``;
- ``tip-transfer``: the webhook delivery of the tip's
  ``payment_intent.succeeded`` dies in ``create_transfer`` (the transfer runs
  once the event's transaction committed).

Then Stripe's queued webhooks arrive (``W``), the client or staff retries
(``R``) or ``escrow_reconcile`` runs (``C``). After each case: no 5xx, at most
one PaymentIntent per tip and never a charge without the customer, at most one
transfer per tip, never more than its charge; the tip row agrees with Stripe;
the payment's own books are untouched (``escrow_audit``).

``keyed-tip``: the same ``POST payments/{id}/tips/`` with an
``Idempotency-Key`` dies in ``create_payment_intent``; every retry (and one
more after the follow-ups, whatever they were) sends the same key. Each
answer is that one tip; the customer pays it with the client secret of the
last answer, and Stripe holds exactly one tip charge and one tip transfer.
:func:`run_keyed_tip` is shared with the off-session case
(``test_saved_payment_methods``).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse

from django_escrow_connect import swappable
from django_escrow_connect.simulation import SimulatedGateway
from tests.payments.conftest import configure

from .harness import World, check_case
from .server import Answer, HttpClient

pytestmark = pytest.mark.django_db(transaction=True)

TIP = 700
ORDERS = {
    "retry": ("R",),
    "webhook-retry": ("W", "R"),
    "reconcile": ("C",),
    "webhook-reconcile": ("W", "C"),
}


def Tip() -> Any:
    return swappable.load("EscrowTip")


def post(
    world: World,
    user: Any,
    path: str,
    data: Any = None,
    label: str = "",
    headers: dict[str, str] | None = None,
) -> Answer:
    return HttpClient(world.server, world.answers).request(
        "POST", path, user=user, data=data or {}, headers=headers, label=label or f"{path} (http)"
    )


def tips_url(payment: Any) -> str:
    return reverse("escrow_connect:payment-tips", args=[str(payment.pk)])


def tip_books(world: World, payment: Any) -> dict[str, Any]:
    """Stripe's tip objects for ``payment``: intents, captured charges, transfers."""
    with world.shared.session() as store:
        intents = [
            dict(i)
            for i in store.payment_intents.values()
            if i["metadata"].get("escrow_tip_id")
            and i["metadata"].get("escrow_payment_id") == str(payment.pk)
        ]
        ids = {i["id"] for i in intents}
        charges = [
            dict(c)
            for c in store.charges.values()
            if c.get("payment_intent") in ids and c.get("status") == "succeeded"
        ]
        transfers = [
            dict(t)
            for t in store.transfers.values()
            if t["metadata"].get("escrow_tip_id")
            and t["metadata"].get("escrow_payment_id") == str(payment.pk)
        ]
    return {"intents": intents, "charges": charges, "transfers": transfers}


def assert_tips_clean(world: World, payment: Any) -> None:
    books = tip_books(world, payment)
    by_tip: dict[str, list[Any]] = {}
    for intent in books["intents"]:
        by_tip.setdefault(intent["metadata"]["escrow_tip_id"], []).append(intent)
    assert all(len(v) == 1 for v in by_tip.values()), f"two PaymentIntents for a tip: {by_tip}"
    charged = {
        i["metadata"]["escrow_tip_id"]: sum(
            c["amount"] for c in books["charges"] if c["payment_intent"] == i["id"]
        )
        for i in books["intents"]
    }
    transferred: dict[str, int] = {}
    for t in books["transfers"]:
        tip_id = t["metadata"]["escrow_tip_id"]
        transferred[tip_id] = transferred.get(tip_id, 0) + t["amount"]
    for tip_id, amount in transferred.items():
        assert amount <= charged.get(tip_id, 0), f"tip {tip_id}: sent {amount}, charged {charged}"
    for tip in Tip().objects.filter(payment=payment):
        sent = [t for t in books["transfers"] if t["metadata"]["escrow_tip_id"] == str(tip.pk)]
        assert len(sent) <= 1, f"tip {tip.pk} transferred {len(sent)} times"
        live = {t.stripe_transfer_id for t in tip.transfers.exclude(status="failed")}
        if tip.status == "transferred":
            assert len(sent) == 1, (tip.status, sent)
            assert {t["id"] for t in sent} == live, (sent, live)
        if tip.status in ("awaiting_payment", "processing", "failed", "canceled"):
            assert not sent, f"tip {tip.pk} is {tip.status} but Stripe transferred {sent}"
            assert not charged.get(str(tip.pk)), f"tip {tip.pk} is {tip.status} but was charged"


# --- tip-intent ----------------------------------------------------------------------


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
def test_tip_intent_crash(world: World, crash: str, order: str) -> None:
    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})
    payment = world.released_payment()
    customer = world.market.customer
    world.steps.append(f"case: tip-intent, worker dies {crash} Stripe acts, then {order}")
    world.crash(
        "create_payment_intent",
        crash,
        lambda: post(world, customer, tips_url(payment), {"amount": TIP}, "tip (crashing)"),
    )
    retries: list[Answer] = []
    for step in ORDERS[order]:
        if step == "W":
            world.deliver()
        elif step == "R":
            answer = post(world, customer, tips_url(payment), {"amount": TIP}, "tip again")
            retries.append(answer)
            world.steps.append(f"the customer tipped again: {answer}")
        else:
            world.reconcile()

    def tips_settled() -> None:
        tips = list(Tip().objects.filter(payment=payment).order_by("created_at"))
        crashed = tips[0] if tips else None
        assert crashed is not None, "the crashed request left no tip"
        if "C" in ORDERS[order]:
            # Finished with the same key: the intent Stripe made, or made now.
            assert crashed.status == "awaiting_payment", crashed.status
        else:
            # The next tip settled the crashed one first: given up (nothing was
            # charged, the customer never had its client secret) or finished.
            assert crashed.status in ("canceled", "awaiting_payment"), crashed.status
        for answer in retries:
            assert answer.status == 201, answer
        # The same request again while the crashed tip is unconfirmed
        # (retried first) finishes and answers that tip; once a webhook
        # settled it, a new request is a new tip.
        new = {a.body["id"] for a in retries} - {str(crashed.pk)}
        assert len(tips) == 1 + len(new)
        if ORDERS[order][0] == "R":
            assert [a.body["id"] for a in retries] == [str(crashed.pk)]
            assert retries[0].body["client_secret"]

    check_case(world, payment, lambda: assert_tips_clean(world, payment), tips_settled)


# --- tip-transfer ----------------------------------------------------------------------


def tip_on_a_released_payment(world: World) -> tuple[Any, Any]:
    """A released payment and a tip of ``TIP`` on it, its PaymentIntent made."""
    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})
    payment = world.released_payment()
    answer = world.api(world.market.customer, "payment-tips", payment.pk, {"amount": TIP})
    assert answer.status == 201, answer
    return payment, Tip().objects.get(pk=answer.body["id"])


def check_tip_sent_once(world: World, payment: Any, tip: Any) -> None:
    """The case's checks: the books are clean and the tip went out exactly once."""

    def tip_transferred_once() -> None:
        current = Tip().objects.get(pk=tip.pk)
        assert current.status == "transferred", current.status
        assert current.transfers.filter(status="created").count() == 1

    check_case(world, payment, lambda: assert_tips_clean(world, payment), tip_transferred_once)


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
def test_tip_transfer_crash(world: World, crash: str, order: str) -> None:
    payment, tip = tip_on_a_released_payment(world)
    with world.shared.session():
        SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
    world.steps.append(f"case: tip-transfer, worker dies {crash} Stripe acts, then {order}")
    # Stripe delivers the tip's payment_intent.succeeded; its transfer dies.
    world.crash("create_transfer", crash, world.deliver)
    retry = reverse(
        "escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), str(tip.pk)]
    )
    for step in ORDERS[order]:
        if step == "W":
            world.deliver()
        elif step == "R":
            answer = post(world, world.market.staff, retry, label="staff retries the transfer")
            world.steps.append(f"staff retried the tip transfer: {answer}")
            assert answer.status in (200, 409), answer
        else:
            world.reconcile()

    check_tip_sent_once(world, payment, tip)


# --- tip-transfer-after-loss ---------------------------------------------------------

#: What follows staff's crashed send: never staff again (their decision is kept).
AFTER_LOSS_ORDERS = {"reconcile": ("C",), "webhook-reconcile": ("W", "C")}


@pytest.mark.parametrize("order", list(AFTER_LOSS_ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
def test_tip_sent_by_staff_after_a_lost_dispute_crash(world: World, crash: str, order: str) -> None:
    """Staff send a tip the payment's lost dispute held; the worker dies in
    ``create_transfer``. Their decision is on the transfer's operation:
    ``escrow_reconcile`` finishes it with its key, once, without staff."""
    payment, tip = tip_on_a_released_payment(world)
    with world.shared.session():
        dispute = SimulatedGateway().open_dispute(payment.stripe_charge_id)
    world.deliver_in_process()
    with world.shared.session():
        SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
    world.deliver_in_process()
    with world.shared.session():
        SimulatedGateway().close_dispute(dispute.id, won=False)
    world.deliver_in_process()
    assert (world.payment(payment.pk).status, Tip().objects.get(pk=tip.pk).status) == (
        "dispute_lost",
        "paid",
    )
    world.steps.append(
        f"case: tip-transfer-after-loss, worker dies {crash} Stripe acts, then {order}"
    )
    retry = reverse(
        "escrow_connect:payment-tip-retry-transfer", args=[str(payment.pk), str(tip.pk)]
    )
    world.crash(
        "create_transfer",
        crash,
        lambda: post(world, world.market.staff, retry, label="staff sends the tip anyway"),
    )
    for step in AFTER_LOSS_ORDERS[order]:
        if step == "W":
            world.deliver()
        else:
            world.reconcile()

    check_tip_sent_once(world, payment, tip)


# --- keyed-tip ----------------------------------------------------------------------

#: The client's key for the keyed tip request.
TIP_KEY = "9a4d2c7e-crash-tip"


def send_keyed_tip(world: World, payment: Any, label: str) -> Answer:
    return post(
        world,
        world.market.customer,
        tips_url(payment),
        {"amount": TIP},
        label,
        headers={"Idempotency-Key": TIP_KEY},
    )


def run_keyed_tip(
    world: World, payment: Any, method: str, crash: str, order: str, *, off_session: bool
) -> None:
    """A keyed tip killed in ``method``, followed up, sent once more; then checked.

    On-session the customer then confirms the tip's PaymentIntent with the
    client secret of the last answer (Stripe's events arrive); off-session
    the saved card was charged, and the keyed requests alone must have
    transferred the tip.
    """
    world.steps.append(
        f"case: keyed tip, worker dies in {method} {crash} Stripe acts, then {order}"
    )
    world.crash(method, crash, lambda: send_keyed_tip(world, payment, "keyed tip (crashing)"))
    answers: list[Answer] = []
    for step in [*ORDERS[order], "R"]:
        # The last "R": whatever happened, the client sends the same keyed
        # request once more (its answer lost again).
        if step == "W":
            world.deliver()
        elif step == "R":
            answer = send_keyed_tip(world, payment, "keyed tip again")
            answers.append(answer)
            world.steps.append(f"the customer sent the keyed tip again: {answer}")
        else:
            world.reconcile()
    tips = list(Tip().objects.filter(payment=payment).order_by("created_at"))
    last = answers[-1]
    if not off_session and last.status == 201 and last.body.get("client_secret") and tips:
        # The customer pays the tip the answer names, in the browser.
        tip = Tip().objects.get(pk=last.body["id"])
        with world.shared.session():
            SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
        world.deliver()

    def one_tip_charged_and_transferred_once() -> None:
        for answer in answers:
            assert answer.status == 201, answer
        # One key, one tip: every answer is the tip the crashed request began.
        assert len(tips) == 1, f"one keyed request made {len(tips)} tips"
        (tip,) = tips
        assert {a.body["id"] for a in answers} == {str(tip.pk)}, answers
        if off_session:
            assert all(a.body["confirmation"] == "off_session" for a in answers), answers
        else:
            assert last.body["client_secret"].startswith(f"{tip.stripe_payment_intent_id}_"), last
        books = tip_books(world, payment)
        assert [c["amount"] for c in books["charges"]] == [TIP], f"charges {books['charges']}"
        assert [t["amount"] for t in books["transfers"]] == [TIP], f"sent {books['transfers']}"
        current = Tip().objects.get(pk=tip.pk)
        assert current.status == "transferred", current.status
        assert current.transfers.filter(status="created").count() == 1

    check_case(
        world,
        payment,
        lambda: assert_tips_clean(world, payment),
        one_tip_charged_and_transferred_once,
    )


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("crash", ["before", "after"])
def test_keyed_tip_crash(world: World, crash: str, order: str) -> None:
    configure(settings, TIP_MAX_AMOUNT={"usd": 10_000})
    payment = world.released_payment()
    run_keyed_tip(world, payment, "create_payment_intent", crash, order, off_session=False)
