"""The crash matrix, as data: money calls, crash points and follow-up orders.

A case is (money call, crash point, follow-up order):

- the **money call** is one request of the package's public API that makes
  one money-moving gateway call (:data:`CALLS`);
- the **crash point**: the server's worker dies ``before`` Stripe acted
  (Stripe never heard of it) or ``after`` it acted (the answer is lost);
- the **follow-up order** (:data:`ORDERS`) is what happens next, in order:
  ``W`` Stripe's queued webhooks arrive (over HTTP, at the restarted
  server), ``R`` the client retries the same request, ``F`` the other party
  attempts a refund or a cancel, ``C`` ``escrow_reconcile`` runs. Webhooks
  not delivered by a ``W`` never arrive.

:func:`run_case` plays one case and checks it; the test modules only
parametrize it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from tests.payments.conftest import configure

from .harness import World, check_case
from .server import Answer, Server

SCT, MANUAL = SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE


@dataclass
class Scene:
    """What one case works on: the task, and its payment once there is one."""

    task: Any
    payment: Any = None
    #: the answers to the client's retries of the call that crashed
    retries: list[Answer] = field(default_factory=list)
    #: funding per milestone: the milestone the call creates the payment of
    milestone: int | None = None
    #: payments (and their PaymentIntents) of the task made before the call
    earlier: list[Any] = field(default_factory=list)
    #: the answers to the other party's refund or cancel ("F")
    others: list[Answer | None] = field(default_factory=list)


# --- the requests ---------------------------------------------------------------------


def send_create(world: World, scene: Scene, server: Server | None = None) -> Answer:
    data: dict[str, Any] = {"task_id": str(scene.task.pk)}
    if scene.milestone is not None:
        data["milestone"] = scene.milestone
    return world.http(world.market.customer, "payment-create", data=data, server=server)


def send_confirm(world: World, scene: Scene, server: Server | None = None) -> Answer:
    return world.http(world.market.customer, "payment-confirm", scene.payment.pk, server=server)


def send_refund(world: World, scene: Scene, server: Server | None = None) -> Answer:
    return world.http(world.market.doer, "payment-refund", scene.payment.pk, server=server)


def keyed_request(role: str, url: str, amount: int, key: str) -> Callable[..., Answer]:
    """A sender of one request with ``{"amount": amount}`` and an Idempotency-Key:
    every send (the first and each retry) carries the same key."""

    def send(world: World, scene: Scene, server: Server | None = None) -> Answer:
        return world.http(
            getattr(world.market, role),
            url,
            scene.payment.pk,
            data={"amount": amount},
            headers={"Idempotency-Key": key},
            server=server,
        )

    return send


#: The partial refund the keyed case asks for, and the client's key for it.
KEYED_REFUND = 3_000
send_keyed_partial_refund = keyed_request(
    "doer", "payment-refund", KEYED_REFUND, "7d1e4b0a-crash-matrix-refund"
)

#: The release by amount the keyed case asks for (of 10,000 held, 10% fee: a
#: transfer of 3,600), and the client's key for it.
KEYED_RELEASE = 4_000
KEYED_RELEASE_TRANSFER = 3_600
send_keyed_release_amount = keyed_request(
    "customer", "payment-release", KEYED_RELEASE, "5c2f9e61-crash-matrix-release"
)


def send_void(world: World, scene: Scene, server: Server | None = None) -> Answer:
    return world.http(world.market.doer, "payment-cancel", scene.payment.pk, server=server)


def send_release_milestone(world: World, scene: Scene, server: Server | None = None) -> Answer:
    milestone = scene.payment.milestones.order_by("position").first()
    return world.http(
        world.market.customer,
        "payment-release",
        scene.payment.pk,
        data={"milestone_id": milestone.pk},
        server=server,
    )


def send_cancel(world: World, scene: Scene, server: Server | None = None) -> Answer | None:
    return world.http(world.market.customer, "payment-cancel", scene.payment.pk, server=server)


# --- the money calls -------------------------------------------------------------------


@dataclass(frozen=True)
class RestAfterLoss:
    """The release of the rest a partial dispute lost left (the payment stays
    ``dispute_lost``): Stripe's transfers of the payment and its books, made
    or not. Books are (``amount_released``, ``amount_held``, ``amount_lost``)."""

    #: the one transfer Stripe makes for the rest (less its fee)
    transfer: int
    #: the books once that transfer is made
    made: tuple[int, int, int]
    #: the books while it is not (in flight, or looked up and not found by
    #: the other party's refund, which leaves it to the next release request)
    not_made: tuple[int, int, int]
    #: transfers made before the loss (the set-up's), untouched by the case
    earlier: tuple[int, ...] = ()
    #: released in parts: each release's gross, the last one the rest's
    #: (created with the release, before its transfer is sent)
    parts: tuple[int, ...] = ()


@dataclass(frozen=True)
class MoneyCall:
    """One API request that makes one money-moving gateway call."""

    name: str
    #: the gateway method the worker dies in
    method: str
    strategy: str
    #: the payment's state before the call: "task" (none yet), "held", "released";
    #: "held-milestones" (three milestones), "held-split" (two payees),
    #: "released-split" (two payees, both paid), "released-split-3" (three
    #: payees, all paid), "refused-split" (two payees, the doer's transfer
    #: refused, the partner's made), "milestone-1-held" (a task
    #: funded per milestone whose first milestone's payment is held),
    #: "held-partly-lost" (held, 3,000 of it disputed and lost),
    #: "parted-partly-lost" (held, 4,000 released by amount, then 3,000 of
    #: it disputed and lost)
    start: str
    send: Callable[..., Answer]
    #: the refund or cancel the other party attempts afterwards ("F")
    other: Callable[..., Answer | None]
    #: statuses once the call is finished (by a retry or by escrow_reconcile)
    done: frozenset[str]
    #: statuses once the other party's refund or cancel was attempted
    after_other: frozenset[str]
    #: calls of ``method`` that go through before the one the worker dies in
    skip: int = 0
    #: a keyed partial refund: what Stripe refunds, once, however often the
    #: client sends it (it sends it once more after every follow-up order)
    refunded: int | None = None
    #: a keyed release by amount: the one transfer Stripe makes for it, however
    #: often the client sends it (once more after every follow-up order)
    transferred: int | None = None
    #: the release of the rest a partial dispute lost left: what Stripe
    #: transfers for it and what the books say (:class:`RestAfterLoss`)
    rest: RestAfterLoss | None = None
    #: the error code the other party's refund or cancel is always refused
    #: with (nothing moved), if it is
    other_refused: str | None = None

    @property
    def keyed(self) -> bool:
        """The request carries an Idempotency-Key: the client sends it once more at the end."""
        return self.refunded is not None or self.transferred is not None


CALLS = [
    MoneyCall(
        "create", "create_payment_intent", SCT, "task", send_create, send_cancel,
        done=frozenset({"awaiting_payment"}), after_other=frozenset({"canceled"}),
    ),
    MoneyCall(
        "release-transfer", "create_transfer", SCT, "held", send_confirm, send_refund,
        done=frozenset({"released"}), after_other=frozenset({"refunded"}),
    ),
    MoneyCall(
        "release-capture", "capture_payment_intent", MANUAL, "held", send_confirm, send_refund,
        done=frozenset({"released"}), after_other=frozenset({"refunded", "canceled"}),
    ),
    MoneyCall(
        "refund-held", "create_refund", SCT, "held", send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"held", "refunded"}),
    ),
    MoneyCall(
        "refund-released-reversal", "create_transfer_reversal", SCT, "released", send_refund,
        send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"released", "refunded"}),
    ),
    MoneyCall(
        "refund-released-refund", "create_refund", SCT, "released", send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"released", "refunded"}),
    ),
    MoneyCall(
        "cancel-hold", "cancel_payment_intent", MANUAL, "held", send_void, send_refund,
        done=frozenset({"canceled"}), after_other=frozenset({"canceled"}),
    ),
    # A partial release: the first of three milestones.
    MoneyCall(
        "release-milestone", "create_transfer", SCT, "held-milestones", send_release_milestone,
        send_refund,
        done=frozenset({"partially_released"}), after_other=frozenset({"refunded"}),
    ),
    # Funding per milestone: creating milestone 2's payment (the create case
    # above, on a task whose milestone 1 is paid for already).
    MoneyCall(
        "create-milestone-2", "create_payment_intent", SCT, "milestone-1-held", send_create,
        send_cancel,
        done=frozenset({"awaiting_payment"}), after_other=frozenset({"canceled"}),
    ),
    # A split release killed between the two payees' transfers.
    MoneyCall(
        "release-split-second-payee", "create_transfer", SCT, "held-split", send_confirm,
        send_refund,
        done=frozenset({"released"}), after_other=frozenset({"refunded"}), skip=1,
    ),
    # A refund of a released split payment killed in the first payee's
    # reversal: the second reversal and the refund are still to come.
    MoneyCall(
        "refund-split-first-reversal", "create_transfer_reversal", SCT, "released-split",
        send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"released", "refunded"}),
    ),
    # A refund of a released split payment killed in the second payee's reversal.
    MoneyCall(
        "refund-split-second-reversal", "create_transfer_reversal", SCT, "released-split",
        send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"released", "refunded"}), skip=1,
    ),
    # A refund of a released split payment killed in its last step, the refund
    # itself: both reversals are made, the customer is not refunded yet.
    MoneyCall(
        "refund-split-refund", "create_refund", SCT, "released-split", send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"released", "refunded"}),
    ),
    # A refund of a payment released to three payees killed in the middle
    # reversal: one reversal made, one and the refund still to come.
    MoneyCall(
        "refund-split-middle-reversal", "create_transfer_reversal", SCT, "released-split-3",
        send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"released", "refunded"}), skip=1,
    ),
    # A refund after a refused share (the doer's transfer refused, the partner's
    # made) killed in the partner's reversal: the doer's share is never sent.
    MoneyCall(
        "refund-split-refused-share", "create_transfer_reversal", SCT, "refused-split",
        send_refund, send_cancel,
        done=frozenset({"refunded"}), after_other=frozenset({"partially_released", "refunded"}),
    ),
    # A partial refund sent with an Idempotency-Key, killed in the refund
    # itself (the reversal made): its retry with the same key finishes that
    # refund, or answers it once it is finished, and never refunds again.
    MoneyCall(
        "refund-keyed-partial", "create_refund", SCT, "released", send_keyed_partial_refund,
        send_cancel,
        done=frozenset({"partially_refunded"}),
        after_other=frozenset({"released", "partially_refunded"}),
        refunded=KEYED_REFUND,
    ),
    # The rest a partial dispute lost left (7,000 of 10,000), released after
    # the loss: the payment stays dispute_lost. The other party's refund is
    # refused (a lost dispute's charge is not refunded) and leaves it so.
    MoneyCall(
        "release-rest-after-loss", "create_transfer", SCT, "held-partly-lost", send_confirm,
        send_refund,
        done=frozenset({"dispute_lost"}), after_other=frozenset({"dispute_lost"}),
        # 7,000 less its 10 % fee; released at once, it is booked when its
        # transfer is made (record_release): held until then.
        rest=RestAfterLoss(6_300, made=(7_000, 0, 3_000), not_made=(0, 7_000, 3_000)),
        other_refused="transition_not_allowed",
    ),
    # The rest a partial dispute lost left of a payment released in parts
    # (10,000 held, 4,000 released by amount: 3,600 sent; then 3,000 disputed
    # and lost: 3,000 left), released as one more release: one transfer of
    # 2,700 (the fee on 7,000 released in all, 700, less the 400 the first
    # release took). The release is booked when it is made, before its
    # transfer (as any release in parts): the books are the same whether
    # Stripe made it or not, and its release is pending until it is. The
    # worker dies in the rest's transfer: the first release's was made in
    # the set-up, in the test process, before the crash plan was written
    # (only a server takes a plan): skip 0.
    MoneyCall(
        "release-rest-in-parts-after-loss", "create_transfer", SCT, "parted-partly-lost",
        send_confirm, send_refund,
        done=frozenset({"dispute_lost"}), after_other=frozenset({"dispute_lost"}),
        rest=RestAfterLoss(
            2_700, made=(7_000, 0, 3_000), not_made=(7_000, 0, 3_000), earlier=(3_600,),
            parts=(4_000, 3_000),
        ),
        other_refused="transition_not_allowed",
    ),
    # A release by amount sent with an Idempotency-Key, killed in its transfer:
    # its retry with the same key finishes that release, or answers it once
    # it is finished, and never releases again. The other party's refund
    # takes everything back (the doer returns what the release sent).
    MoneyCall(
        "release-keyed-amount", "create_transfer", SCT, "held", send_keyed_release_amount,
        send_refund,
        done=frozenset({"partially_released"}), after_other=frozenset({"refunded"}),
        transferred=KEYED_RELEASE_TRANSFER,
    ),
]  # fmt: skip
BY_NAME = {call.name: call for call in CALLS}
CRASH_POINTS = ("before", "after")

#: Follow-up orders: W webhooks arrive, R the client retries, F a refund or
#: cancel is attempted, C escrow_reconcile runs.
ORDERS: dict[str, tuple[str, ...]] = {
    "retry": ("R",),
    "webhook-retry": ("W", "R"),
    "retry-webhook": ("R", "W"),
    "reconcile": ("C",),
    "webhook-reconcile": ("W", "C"),
    "other": ("F",),
    "webhook-other": ("W", "F"),
}


# --- playing a case ------------------------------------------------------------------------


def set_up(world: World, call: MoneyCall) -> Scene:
    configure(settings, GATEWAY="tests.crash.gateway.CrashGateway", ESCROW_STRATEGY=call.strategy)
    if call.start == "task":
        return Scene(task=world.task())
    if call.start == "milestone-1-held":
        return milestone_one_held(world)
    if call.start in ("held-milestones", "held-split"):
        payment = held_in_parts(world, call.start)
        return Scene(task=payment.task, payment=payment)
    if call.start in ("released-split", "released-split-3"):
        payment = held_in_parts(world, call.start.replace("released", "held"))
        answer = world.api(world.market.customer, "payment-confirm", payment.pk)
        assert answer.status == 200, answer
        world.deliver_in_process()
        payment = world.payment(payment.pk)
        assert payment.status == "released", payment.status
        return Scene(task=payment.task, payment=payment)
    if call.start == "refused-split":
        payment = refused_share(world)
        return Scene(task=payment.task, payment=payment)
    if call.start in ("held-partly-lost", "parted-partly-lost"):
        payment = partly_lost(world, released=4_000 if call.start == "parted-partly-lost" else 0)
        return Scene(task=payment.task, payment=payment)
    payment = world.held_payment() if call.start == "held" else world.released_payment()
    return Scene(task=payment.task, payment=payment)


def partly_lost(world: World, released: int = 0) -> Any:
    """A held payment of 10,000 whose 3,000 disputed were lost: 7,000 still held.

    ``released``: released by amount first (the customer's ``payment-release``,
    its transfer made and its webhooks delivered), so 7,000 less that is held.
    """
    from django_escrow_connect.simulation import SimulatedGateway

    payment = world.held_payment()
    if released:
        answer = world.api(
            world.market.customer, "payment-release", payment.pk, data={"amount": released}
        )
        assert answer.status == 200, answer
        world.deliver_in_process()
    with world.shared.session():
        gateway = SimulatedGateway()
        dispute = gateway.open_dispute(payment.stripe_charge_id, amount=3_000)
        gateway.close_dispute(dispute.id, won=False)
    world.deliver_in_process()
    payment = world.payment(payment.pk)
    books = (payment.status, payment.amount_released, payment.amount_held, payment.amount_lost)
    assert books == ("dispute_lost", released, 7_000 - released, 3_000), books
    return payment


def held_in_parts(world: World, start: str) -> Any:
    """A held payment whose terms have milestones or two payees (set up in process:
    the server never reads terms, only the rows they made)."""
    from django_escrow_connect.terms import MilestoneTerms, PayeeShare
    from tests import factories
    from tests.payments.conftest import stripe_account
    from tests.payments.test_milestones import EXTRA

    configure(
        settings,
        GATEWAY="tests.crash.gateway.CrashGateway",
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
    )
    task = world.task()
    if start == "held-milestones":
        EXTRA[task.pk] = {
            "milestones": [
                MilestoneTerms("Design", 2_000),
                MilestoneTerms("Build", 5_000),
                MilestoneTerms("Launch", 3_000),
            ]
        }
    else:
        # Two payees (60/40), or three (50/30/20) for "held-split-3".
        names = ["partner", "second_partner"] if start == "held-split-3" else ["partner"]
        with world.shared.session():
            partners = [factories.make_user(name) for name in names]
            for partner in partners:
                stripe_account(owner_user=partner)
        world.deliver_in_process()
        points = [5_000, 3_000, 2_000] if len(partners) == 2 else [6_000, 4_000]
        EXTRA[task.pk] = {
            "payees": [
                PayeeShare(user=user, basis_points=share)
                for user, share in zip([world.market.doer, *partners], points, strict=True)
            ]
        }
    payment = world.pay(world.create(task))
    assert payment.status == "held", payment.status
    return payment


def refused_share(world: World) -> Any:
    """A payment split 60/40 between the doer and a partner whose release sent the
    partner's 3,600 but not the doer's 5,400: Stripe refused it (balance_insufficient)."""
    from django_escrow_connect.exceptions import BalanceInsufficient

    payment = held_in_parts(world, "held-split")
    with world.shared.session() as store:
        # One session around the confirm: an injected failure is not shared
        # between processes, it lives in this process's store until the call.
        refusal = BalanceInsufficient(
            "Insufficient funds.", code="balance_insufficient", http_status=400
        )
        store.fail_next("create_transfer", refusal)
        answer = world.api(world.market.customer, "payment-confirm", payment.pk)
    assert answer.status == 409, answer
    world.deliver_in_process()
    payment = world.payment(payment.pk)
    assert payment.status == "partially_released", payment.status
    made = sorted(t.amount for t in payment.transfers.exclude(status="failed"))
    assert made == [3_600], made
    return payment


def milestone_one_held(world: World) -> Scene:
    """A task funded per milestone (tests/crash/terms.py) whose milestone 1 is held;
    the case creates milestone 2's payment."""
    from tests.crash.terms import PER_MILESTONE

    configure(
        settings,
        GATEWAY="tests.crash.gateway.CrashGateway",
        PAYMENT_TERMS="tests.crash.terms.crash_terms",
    )
    task = world.task()
    title = "summary" if hasattr(task, "summary") else "title"  # the swapped host's job
    type(task).objects.filter(pk=task.pk).update(
        **{title: f"{PER_MILESTONE} {getattr(task, title)}"}
    )
    task.refresh_from_db()
    answer = world.api(
        world.market.customer, "payment-create", data={"task_id": str(task.pk), "milestone": 1}
    )
    assert answer.status == 201, answer
    first = world.pay(world.payment(answer.body["payment_id"]))
    assert first.status == "held", first.status
    return Scene(task=task, milestone=2, earlier=[first])


def find_payment(world: World, scene: Scene) -> Any:
    """The payment the case is about (for ``create``: the task's, if any)."""
    if scene.payment is not None:
        return world.payment(scene.payment.pk)
    earlier = {p.pk for p in scene.earlier}
    payments = [p for p in world.payments_of(scene.task) if p.pk not in earlier]
    assert len(payments) <= 1, f"two payments for one task (or milestone): {payments}"
    scene.payment = payments[0] if payments else None
    return scene.payment


def follow_up(world: World, call: MoneyCall, scene: Scene, step: str) -> None:
    if step == "W":
        world.deliver()
    elif step == "R":
        answer = call.send(world, scene)
        world.steps.append(f"the client retried: {answer}")
        scene.retries.append(answer)
        if call.start == "task" and answer.status in (200, 201):
            scene.payment = world.payment(answer.body["payment_id"])
    elif step == "F":
        if find_payment(world, scene) is None:
            world.steps.append("nothing to refund or cancel: the client never got a payment")
            return
        answer = call.other(world, scene)
        scene.others.append(answer)
        world.steps.append(f"refund/cancel attempted: {answer}")
    elif step == "C":
        world.reconcile()
    else:  # pragma: no cover
        raise ValueError(step)


def expected_statuses(call: MoneyCall, order: tuple[str, ...]) -> frozenset[str]:
    decisive = [step for step in order if step in "RCF"][-1]
    return call.after_other if decisive == "F" else call.done


def run_case(
    world: World,
    call: MoneyCall,
    crash: str,
    order: str,
    *,
    slow_server: Server | None = None,
) -> None:
    """Set up, crash (SIGKILL, or gunicorn's timeout with ``slow_server``), follow up, check."""
    scene = set_up(world, call)
    world.steps.append(f"case: {call.name}, worker dies {crash} Stripe acts, then {order}")
    if slow_server is None:
        world.crash(call.method, crash, lambda: call.send(world, scene), skip=call.skip)
    else:
        # Every request of the case goes to the server whose worker times out.
        world.server, world.servers = slow_server, [slow_server]
        slow_server.start_case(f"{call.name} {crash} {order}")
        world.slow(call.method, crash, lambda: call.send(world, scene), server=slow_server)
    for step in ORDERS[order]:
        follow_up(world, call, scene, step)
    if call.keyed:
        # Whatever happened, the client sends the same keyed request once
        # more (its answer lost again): answered, never a second refund or
        # release.
        follow_up(world, call, scene, "R")

    payment = find_payment(world, scene)
    steps = ORDERS[order]

    def status_as_expected() -> None:
        expected = expected_statuses(call, steps)
        if payment is None:
            # create, and the row never survived the crash: acceptable only when
            # nobody asked again and Stripe holds no money for it.
            assert "R" not in steps, "the client retried, and still no payment exists"
            return
        status = world.payment(payment.pk).status
        assert status in expected, f"status {status}, expected one of {sorted(expected)}"

    def one_intent_per_task() -> None:
        earlier = {p.stripe_payment_intent_id for p in scene.earlier}
        with world.shared.session() as store:
            intents = [
                i for i in store.payment_intents.values()
                if i["metadata"].get("task_id") == str(scene.task.pk) and i["id"] not in earlier
            ]  # fmt: skip
        assert len(intents) <= 1, f"{len(intents)} PaymentIntents for one task"
        assert all(i["status"] != "succeeded" for i in intents) or payment is not None, intents
        if payment is not None and "R" in steps:
            current = world.payment(payment.pk)
            assert [i["id"] for i in intents] == [current.stripe_payment_intent_id], (
                f"the payment's intent {current.stripe_payment_intent_id!r} is not Stripe's: "
                f"{[i['id'] for i in intents]}"
            )

    def retries_answered() -> None:
        for answer in scene.retries:
            # A retry of the call that crashed is an ordinary request: done (2xx),
            # or refused because the state moved on (409); never a 5xx or no answer.
            assert answer.status is not None, answer
            assert answer.status < 300 or answer.status == 409, f"the retry: {answer}"

    def refunded_once() -> None:
        if call.refunded is None or payment is None:
            return
        with world.shared.session() as store:
            refunds = [
                r["amount"]
                for r in store.refunds.values()
                if r.get("payment_intent") == payment.stripe_payment_intent_id
            ]
        # The request's one refund, finished by the last retry at the latest.
        assert refunds == [call.refunded], f"Stripe refunded {refunds}, asked {call.refunded}"

    def released_once() -> None:
        if call.transferred is None or payment is None:
            return
        with world.shared.session() as store:
            transfers = [
                t["amount"]
                for t in store.transfers.values()
                if t.get("transfer_group") == payment.transfer_group
            ]
        # The request's one transfer, finished by the last retry at the latest;
        # none only when the refund came first and found Stripe had not made it
        # (then nothing is owed: the refund took the released part back).
        expected = [] if crash == "before" and "F" in steps else [call.transferred]
        assert transfers == expected, f"Stripe transferred {transfers}, expected {expected}"
        releases = [(r.amount, r.status) for r in world.payment(payment.pk).releases.all()]
        assert len(releases) == 1, f"one keyed request made the releases {releases}"
        assert releases[0][0] == KEYED_RELEASE, releases

    def rest_released_once(settled: bool = False) -> None:
        rest = call.rest
        if rest is None or payment is None:
            return
        decisive = [step for step in steps if step in "RCF"][-1]
        with world.shared.session() as store:
            made = [
                (t["amount"], t["amount_reversed"])
                for t in store.transfers.values()
                if t.get("transfer_group") == payment.transfer_group
            ]
        transfers = [amount for amount, _reversed in made]
        earlier = list(rest.earlier)
        current = world.payment(payment.pk)
        books = (current.amount_released, current.amount_held, current.amount_lost)
        # Finished by the retry or escrow_reconcile: the rest, less its fee,
        # transferred once; the 3,000 lost stays lost, and what was sent
        # before the loss stays sent (never reversed). The other party's
        # refund (refused) may come before the release was finished, so
        # nothing may have been sent yet, but never more than once, and the
        # books say what Stripe did.
        allowed = [[*earlier, rest.transfer]]
        if decisive == "F" and not settled:
            allowed.append(earlier)
        assert transfers in allowed, f"Stripe transferred {transfers}, expected one of {allowed}"
        assert all(reversed_ == 0 for _amount, reversed_ in made), f"reversed: {made}"
        sent = len(transfers) > len(earlier)
        expected = rest.made if sent else rest.not_made
        assert books == expected, f"released, held, lost: {books}, Stripe transferred {transfers}"
        if rest.parts:
            # One release per part, the rest's the last: released once its
            # transfer is made, pending (booked, still owed) until then.
            releases = [(r.amount, r.status) for r in current.releases.order_by("position")]
            statuses = ["released"] * (len(rest.parts) - 1) + ["released" if sent else "pending"]
            assert releases == list(zip(rest.parts, statuses, strict=True)), (
                f"releases {releases}, Stripe transferred {transfers}"
            )

    def others_refused() -> None:
        if call.other_refused is None:
            return
        for answer in scene.others:
            assert answer is not None, "refund/cancel: no answer"
            assert answer.status == 409, f"refund/cancel: {answer}"
            assert isinstance(answer.body, dict), answer
            assert answer.body["error"]["code"] == call.other_refused, answer

    check_case(
        world,
        payment,
        retries_answered,
        status_as_expected,
        one_intent_per_task,
        refunded_once,
        released_once,
        rest_released_once,
        others_refused,
    )
    if call.rest is not None and payment is not None:
        settled = functools.partial(rest_released_once, settled=True)
        confirm_the_rest_again(world, call, scene, payment, settled, status_as_expected)


def confirm_the_rest_again(
    world: World, call: MoneyCall, scene: Scene, payment: Any, *checks: Callable[[], None]
) -> None:
    """Whatever the follow-ups left, the customer confirms once more: the rest
    is still the doer's (a refused refund that found its transfer not made
    gave that attempt up, and only a release request sends it), so this
    confirm sends it, once, and answers 200; or, the rest transferred
    already, is refused (409) and sends nothing."""
    assert call.rest is not None
    with world.shared.session() as store:
        before = [
            t["id"]
            for t in store.transfers.values()
            if t.get("transfer_group") == payment.transfer_group
        ]
    made = len(before) > len(call.rest.earlier)
    answer = send_confirm(world, scene)
    world.steps.append(f"the customer confirmed once more: {answer}")

    def answered() -> None:
        if made:
            assert answer.status == 409, f"the rest was transferred, confirmed again: {answer}"
            assert isinstance(answer.body, dict), answer
            assert answer.body["error"]["code"] == "transition_not_allowed", answer
        else:
            assert answer.status == 200, f"the rest was not transferred, confirmed: {answer}"

    check_case(world, payment, answered, *checks)
