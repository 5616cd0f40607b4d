"""A refund version 0.1 left, whose reversal Stripe refuses, survives a
worker SIGKILLed mid-request, on PostgreSQL.

The set-up is what 0.1 left (docs/recovery.md, "escrow_reconcile"): a
payment released since (separate charges and transfers) with a Refund row
``pending``, no Stripe id, its key in no journal entry; 0.1 may have made
that refund at Stripe (``made``: under its key, with the payment's
``metadata[escrow_payment_id]``, its answer and events lost) or not
(``not-made``). The doer has paid everything out, so Stripe refuses the
reversal of their share. The doer's refund of that very amount (no key)
finishes it:

- ``lookup``: the worker dies in ``list_refunds``, the lookup of 0.1's
  refund once the refusal committed (its incident, and the refund journaled
  to be looked up only);
- ``reversal``: the worker dies in ``create_transfer_reversal`` itself,
  ``before`` Stripe refused it or ``after`` (the refusal lost).

Then the matrix's follow-ups (:data:`.cases.ORDERS`: the client retries,
webhooks arrive, ``escrow_reconcile`` runs, the other party cancels). After
each case: no reversal made and no refund sent by the app, whoever asked;
the row settled from Stripe's facts (``succeeded`` with 0.1's refund when it
exists, ``failed`` when not), by whichever follow-up came first (the other
party's cancel too: it settles what the payment left unresolved before its
own check); one ``reversal_failed`` incident, open, saying 0.1's refund was
made when it was; the books clean (``escrow_audit``); one more
``escrow_reconcile`` run moves nothing.

0.1's refund is 1,000 of 10,000: made, the doer keeps 9,000 (their share,
the platform refunded the customer from its fee), so the books stay
balanced and :func:`.harness.check_case` applies as to every case.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from tests.payments.conftest import configure
from tests.payments.test_recovery import left_by_0_1, made_by_0_1

from .cases import ORDERS, SCT, MoneyCall, Scene, follow_up, send_cancel
from .harness import World, check_case
from .server import Answer, Server

pytestmark = pytest.mark.django_db(transaction=True)

#: 0.1's refund (of a 10,000 payment released: 9,000 transferred).
LEGACY = 1_000


def send_legacy_refund(world: World, scene: Scene, server: Server | None = None) -> Answer:
    """The doer's refund of 0.1's amount without a key: finishes that refund."""
    return world.http(
        world.market.doer,
        "payment-refund",
        scene.payment.pk,
        data={"amount": LEGACY},
        server=server,
    )


def legacy_call(method: str) -> MoneyCall:
    """The request, as the matrix's follow-ups play it (``R`` sends it again, ``F`` cancels)."""
    return MoneyCall(
        f"legacy-refund-{method}",
        method,
        SCT,
        "released",
        send_legacy_refund,
        send_cancel,
        done=frozenset({"released", "partially_refunded"}),
        after_other=frozenset({"released", "partially_refunded"}),
    )


def set_up(world: World, made: bool) -> tuple[Scene, Any, Any]:
    """A released payment, 0.1's refund row, 0.1's refund at Stripe if ``made``,
    the doer's balance empty. Returns the scene, the row, 0.1's refund (or None)."""
    configure(settings, GATEWAY="tests.crash.gateway.CrashGateway", ESCROW_STRATEGY=SCT)
    payment = world.released_payment()
    row = left_by_0_1(payment, LEGACY)
    with world.shared.session() as store:
        at_stripe = made_by_0_1(world.market, payment, LEGACY) if made else None
        store.balances[world.market.doer_account.stripe_account_id]["usd"] = 0
    # 0.1's answer was lost, and its events with it.
    world.drop_queued()
    return Scene(task=payment.task, payment=payment), row, at_stripe


def stripe_side(world: World, payment: Any) -> tuple[list[int], int, int]:
    """Stripe's refunds of the payment, the reversals of its transfer, and the
    transfer's reversed amount."""
    with world.shared.session() as store:
        refunds = sorted(
            r["amount"]
            for r in store.refunds.values()
            if r.get("payment_intent") == payment.stripe_payment_intent_id
        )
        transfers = [
            t for t in store.transfers.values() if t["transfer_group"] == payment.transfer_group
        ]
        ids = {t["id"] for t in transfers}
        reversals = [r for r in store.reversals.values() if r.get("transfer") in ids]
        return refunds, len(reversals), sum(t["amount_reversed"] for t in transfers)


def money_calls(world: World, method: str) -> int:
    return sum(1 for c in world.shared.money_calls() if c["method"] == method)


def run_legacy_case(world: World, method: str, crash: str, order: str, made: bool) -> None:
    scene, row, at_stripe = set_up(world, made)
    call = legacy_call(method)
    world.steps.append(
        f"case: 0.1's refund {'made' if made else 'not made'}, its reversal refused; "
        f"worker dies in {method} {crash} Stripe acts, then {order}"
    )
    reversals_before = money_calls(world, "create_transfer_reversal")
    world.crash(method, crash, lambda: call.send(world, scene))
    steps = ORDERS[order]
    for step in steps:
        follow_up(world, call, scene, step)
    payment = scene.payment

    def nothing_moved_by_the_app() -> None:
        refunds, reversals, reversed_ = stripe_side(world, payment)
        assert (reversals, reversed_) == (0, 0), f"reversed {reversed_} in {reversals}"
        assert refunds == ([LEGACY] if made else []), f"Stripe refunded {refunds}"
        calls = [c["method"] for c in world.shared.money_calls()]
        assert "create_refund" not in calls, f"the app sent a refund: {calls}"
        tried = money_calls(world, "create_transfer_reversal") - reversals_before
        if method == "list_refunds":
            # The refusal committed before the crash: never tried again.
            assert tried == 1, f"{tried} reversal calls"
        else:
            # The killed one, and at most once more under its key.
            assert 1 <= tried <= 2, f"{tried} reversal calls"

    def row_settled_from_stripe() -> None:
        row.refresh_from_db()
        if made:
            assert (row.status, row.stripe_refund_id) == ("succeeded", at_stripe.id), row.status
        else:
            assert (row.status, row.stripe_refund_id, row.failure_reason) == (
                "failed",
                "",
                "reversal_failed: balance_insufficient",
            ), (row.status, row.failure_reason)
        current = World.payment(payment.pk)
        expected = ("partially_refunded", LEGACY) if made else ("released", 0)
        assert (current.status, current.amount_refunded) == expected, current.status

    def one_incident() -> None:
        incidents = list(World.payment(payment.pk).transfer_incidents.all())
        assert [(i.kind, i.resolved_at) for i in incidents] == [("reversal_failed", None)], [
            (i.kind, i.message) for i in incidents
        ]
        noted = "was made at Stripe all the same" in incidents[0].message
        assert noted == made, incidents[0].message

    def retries_answered() -> None:
        # A retry is answered by Stripe's facts: 200 once 0.1's refund is
        # found (it is this request's refund), 409 reversal_failed when it is
        # not; 503 operation_pending only while Stripe cannot be asked.
        for answer in [a for a in world.answers[world.case_start :] if "payment-refund" in a.label]:
            if answer.status is None:
                continue  # the request whose worker was killed
            if made and answer.status == 200:
                continue
            assert answer.status == 409, answer
            assert isinstance(answer.body, dict), answer
            assert answer.body["error"]["code"] == "reversal_failed", answer

    check_case(
        world,
        payment,
        nothing_moved_by_the_app,
        row_settled_from_stripe,
        one_incident,
        retries_answered,
    )
    # Settled: one more run asks Stripe nothing that moves money.
    before = len(world.shared.money_calls())
    world.reconcile()
    check_case(
        world,
        payment,
        lambda: assert_no_more_money_calls(world, before),
        row_settled_from_stripe,
        one_incident,
    )


def assert_no_more_money_calls(world: World, before: int) -> None:
    calls = world.shared.money_calls()[before:]
    assert calls == [], f"money calls after it was settled: {calls}"


@pytest.mark.parametrize("made", [True, False], ids=["made", "not-made"])
@pytest.mark.parametrize("order", ["retry", "webhook-retry", "reconcile", "other"])
def test_killed_in_the_lookup_after_the_refusal(world, order, made):
    run_legacy_case(world, "list_refunds", "before", order, made)


@pytest.mark.parametrize(
    ("crash", "order", "made"),
    [
        ("before", "retry", True),
        ("after", "retry", False),
        ("before", "reconcile", False),
        ("after", "reconcile", True),
    ],
)
def test_killed_in_the_refused_reversal(world, crash, order, made):
    run_legacy_case(world, "create_transfer_reversal", crash, order, made)
