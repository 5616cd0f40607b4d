"""Stripe failures at every gateway call of every use case, and crashes.

One table of use cases (:data:`USE_CASES`), each naming the gateway call it
makes, how to put a payment (or account) in the state the call needs, the
request to send, and what "done exactly once" means in the simulated
Stripe's own books. Every use case is then run against:

- every Stripe failure (:data:`FAILURES`: 402, 400 balance_insufficient,
  409 idempotency/lock,
  429 with and without ``Stripe-Should-Retry``, 500, 503, a timeout) raised
  *before* Stripe acted: the API answers the right 4xx/503, never 500;
  nothing half-written; the same request afterwards succeeds, once;
- a transient failure raised *after* Stripe acted (the answer was lost),
  recovered by retrying the request or by ``manage.py escrow_reconcile``;
- a process crash right after the gateway call, before the commit (an
  exception from the first write that follows it), recovered by retrying.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.urls import reverse

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.exceptions import (
    BalanceInsufficient,
    CardDeclined,
    GatewayError,
    IdempotencyConflict,
    RateLimited,
    TemporarilyUnavailable,
)

from .conftest import assert_money_invariants, configure, stripe_books

pytestmark = pytest.mark.django_db


class Crash(Exception):
    """The process died here (raised from a patched write)."""


# --------------------------------------------------------------------------
# Failures Stripe can answer with, as the real gateway translates them
# --------------------------------------------------------------------------

FAILURES: dict[str, Callable[[], GatewayError]] = {
    "402-card_declined": lambda: CardDeclined(
        "Your card was declined.", code="card_declined", http_status=402, error_type="card_error"
    ),
    "400-balance_insufficient": lambda: BalanceInsufficient(
        "Insufficient funds in Stripe account.", code="balance_insufficient", http_status=400
    ),
    "409-idempotency_error": lambda: IdempotencyConflict(
        "There is currently another in-progress request using this Stripe token.",
        http_status=409,
        error_type="idempotency_error",
    ),
    "409-lock_timeout": lambda: TemporarilyUnavailable(
        "This object cannot be accessed right now.", code="lock_timeout", http_status=409
    ),
    "429": lambda: RateLimited("Too many requests.", code="rate_limit", http_status=429),
    "429-should-retry": lambda: RateLimited(
        "Too many requests.", code="rate_limit", http_status=429, should_retry=True
    ),
    "500": lambda: TemporarilyUnavailable(
        "Internal error.", http_status=500, error_type="api_error"
    ),
    "503": lambda: TemporarilyUnavailable("Service unavailable.", http_status=503),
    "timeout": lambda: TemporarilyUnavailable("Request timed out.", should_retry=True),
}
TRANSIENT = {name for name, make in FAILURES.items() if make().is_transient}


# --------------------------------------------------------------------------
# Use cases
# --------------------------------------------------------------------------


@dataclass
class UseCase:
    """One use case at one gateway call."""

    name: str
    method: str
    strategy: str
    #: market -> context (whatever ``act``/``check`` need)
    setup: Callable[[Any], dict[str, Any]]
    #: (market, context) -> response
    act: Callable[[Any, dict[str, Any]], Any]
    #: (market, context, stripe) -> None: asserts "done, exactly once"
    check_done: Callable[[Any, dict[str, Any], Any], None]
    #: (market, context, stripe) -> None: asserts "nothing done" after a refusal
    check_untouched: Callable[[Any, dict[str, Any], Any], None]
    #: the status a card decline (402) is answered with
    refused_status: int = 402
    #: dotted path of the first write after the gateway call, patched to crash
    crash_at: str | None = None
    #: escrow_reconcile finishes the operation after a lost answer
    reconciles: bool = False


def post(market: Any, user: Any, name: str, payment_id: Any = None, body: Any = None) -> Any:
    return market.post(user, name, body or {}, payment_id=payment_id)


def payment_of(market: Any, ctx: dict[str, Any]) -> Any:
    return market.payment(ctx["payment"].pk)


# --- create ------------------------------------------------------------------


def setup_create(market: Any) -> dict[str, Any]:
    return {"task": market.task()}


def act_create(market: Any, ctx: dict[str, Any]) -> Any:
    return market.create(ctx["task"])


def intents_for(sim_stripe: Any, task: Any) -> list[dict[str, Any]]:
    return [
        i
        for i in sim_stripe.payment_intents.values()
        if i["metadata"].get("task_id") == str(task.pk)
    ]


def payments_for(task: Any) -> Any:
    return swappable.load("EscrowPayment").objects.filter(task=task)


def create_done(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    [intent] = intents_for(sim_stripe, ctx["task"])
    # A creation Stripe refused leaves its payment canceled (with its journal
    # entry): the retry started a new one.
    [payment] = payments_for(ctx["task"]).exclude(status="canceled")
    assert payment.stripe_payment_intent_id == intent["id"]
    assert payment.status == "awaiting_payment"


def create_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    # The payment and its journal entry are committed before the call; no
    # PaymentIntent exists, so no money can move.
    assert all(not p.stripe_payment_intent_id for p in payments_for(ctx["task"]))
    assert intents_for(sim_stripe, ctx["task"]) == []


# --- release -------------------------------------------------------------------


def setup_held(market: Any) -> dict[str, Any]:
    return {"payment": market.held_payment()}


def act_release(market: Any, ctx: dict[str, Any]) -> Any:
    return post(market, market.customer, "payment-confirm", ctx["payment"].pk)


def release_done(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    payment = payment_of(market, ctx)
    assert payment.status == "released"
    books = assert_money_invariants(sim_stripe, payment)
    assert len(books["transfers"]) == 1
    assert (
        books["transferred"] == payment.amount_transferred == payment.amount - payment.platform_fee
    )
    assert books["intent"]["status"] == "succeeded"


def release_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    payment = payment_of(market, ctx)
    # releasing: the outcome of the call is recorded as unknown (by design).
    assert payment.status in ("held", "releasing")
    assert payment.amount_transferred == 0
    assert stripe_books(sim_stripe, payment)["transfers"] == []


# --- refund before release -------------------------------------------------------


def act_refund(market: Any, ctx: dict[str, Any]) -> Any:
    return post(market, market.doer, "payment-refund", ctx["payment"].pk)


def refund_done(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    payment = payment_of(market, ctx)
    assert payment.status == "refunded"
    books = assert_money_invariants(sim_stripe, payment)
    assert books["refunded"] == payment.amount_refunded == payment.amount
    succeeded = [
        r for r in sim_stripe.refunds.values() if r["payment_intent"] == books["intent"]["id"]
    ]
    assert [r["status"] for r in succeeded if r["status"] != "failed"] == ["succeeded"]
    assert books["transferred"] == books["reversed"] == payment.amount_reversed


def refund_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    payment = payment_of(market, ctx)
    assert payment.amount_refunded == 0
    assert payment.status in ("held", "released")
    assert stripe_books(sim_stripe, payment)["refunded"] == 0


# --- refund after release (reversal, then refund) ----------------------------------


def setup_released(market: Any) -> dict[str, Any]:
    return {"payment": market.released_payment()}


def reversal_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    refund_untouched(market, ctx, sim_stripe)
    payment = payment_of(market, ctx)
    assert payment.status == "released"
    assert payment.amount_reversed == stripe_books(sim_stripe, payment)["reversed"] == 0


# --- cancel ----------------------------------------------------------------------


def setup_awaiting(market: Any) -> dict[str, Any]:
    response = market.create(market.task())
    assert response.status_code == 201, response.content
    return {"payment": market.payment(response.json()["payment_id"])}


def act_cancel(market: Any, ctx: dict[str, Any]) -> Any:
    return post(market, market.customer, "payment-cancel", ctx["payment"].pk)


def cancel_done(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    payment = payment_of(market, ctx)
    assert payment.status == "canceled"
    assert stripe_books(sim_stripe, payment)["intent"]["status"] == "canceled"


def cancel_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    payment = payment_of(market, ctx)
    assert payment.status == ctx["payment"].status
    assert stripe_books(sim_stripe, payment)["intent"]["status"] != "canceled"


def act_void(market: Any, ctx: dict[str, Any]) -> Any:
    return post(market, market.doer, "payment-cancel", ctx["payment"].pk)


# --- onboarding ---------------------------------------------------------------------


def setup_new_seller(market: Any) -> dict[str, Any]:
    from tests import factories

    return {"seller": factories.make_user("seller")}


def act_onboard(market: Any, ctx: dict[str, Any]) -> Any:
    url = reverse("escrow_connect:stripe-onboarding-link")
    return market.client(ctx["seller"]).post(url, {"account_type": "individual"}, format="json")


def seller_accounts(ctx: dict[str, Any]) -> Any:
    return swappable.load("ConnectedAccount")._default_manager.filter(owner_user=ctx["seller"])


def onboard_done(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    [account] = seller_accounts(ctx)
    owned = [
        a
        for a in sim_stripe.accounts.values()
        if a["metadata"].get("escrow_owner", "").endswith(f":{ctx['seller'].pk}")
    ]
    assert [a["id"] for a in owned] == [account.stripe_account_id]


def onboard_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    # The row with its idempotency key may exist (stored before the call);
    # a Stripe account may not.
    assert all(not a.stripe_account_id for a in seller_accounts(ctx))


def link_untouched(market: Any, ctx: dict[str, Any], sim_stripe: Any) -> None:
    # The account exists (one); only the link is missing.
    onboard_done(market, ctx, sim_stripe)


SCT, MANUAL = SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE
#: The journal's kind of operation each money call is.
KIND_OF = {
    "create_payment_intent": "payment_intent",
    "create_transfer": "transfer",
    "capture_payment_intent": "capture",
    "create_transfer_reversal": "reversal",
    "create_refund": "refund",
    "cancel_payment_intent": "cancel",
}
#: Phase 3 of every money operation: committing what Stripe answered.
COMMIT_OUTCOME = "django_escrow_connect.services.outcomes.apply_outcome"

USE_CASES = [
    UseCase(
        "create", "create_payment_intent", SCT, setup_create, act_create,
        create_done, create_untouched, crash_at=COMMIT_OUTCOME,
    ),
    UseCase(
        "release-sct", "create_transfer", SCT, setup_held, act_release,
        release_done, release_untouched, refused_status=409,
        crash_at=COMMIT_OUTCOME, reconciles=True,
    ),
    UseCase(
        "release-manual", "capture_payment_intent", MANUAL, setup_held, act_release,
        release_done, release_untouched, refused_status=409,
        crash_at=COMMIT_OUTCOME, reconciles=True,
    ),
    UseCase(
        "refund-held", "create_refund", SCT, setup_held, act_refund,
        refund_done, refund_untouched,
        crash_at=COMMIT_OUTCOME, reconciles=True,
    ),
    UseCase(
        "refund-released-reversal", "create_transfer_reversal", SCT, setup_released, act_refund,
        refund_done, reversal_untouched, refused_status=409,
        crash_at=COMMIT_OUTCOME,
    ),
    UseCase(
        "refund-released-refund", "create_refund", SCT, setup_released, act_refund,
        refund_done, refund_untouched,
        crash_at=COMMIT_OUTCOME, reconciles=True,
    ),
    UseCase(
        "cancel", "cancel_payment_intent", SCT, setup_awaiting, act_cancel,
        cancel_done, cancel_untouched, crash_at=COMMIT_OUTCOME,
    ),
    UseCase(
        "void-manual", "cancel_payment_intent", MANUAL, setup_held, act_void,
        cancel_done, cancel_untouched, crash_at=COMMIT_OUTCOME,
    ),
    UseCase(
        "onboarding-account", "create_account", SCT, setup_new_seller, act_onboard,
        onboard_done, onboard_untouched,
        crash_at="django_escrow_connect.services.accounts._settle_status",
    ),
    UseCase(
        "onboarding-link", "create_account_link", SCT, setup_new_seller, act_onboard,
        onboard_done, link_untouched,
    ),
]  # fmt: skip
BY_NAME = {case.name: case for case in USE_CASES}


ALL = [case.name for case in USE_CASES]
#: Use cases whose lost answer leaves a committed "outcome unknown" to reconcile.
RECONCILABLE = [case.name for case in USE_CASES if case.reconciles]
#: Use cases that write something after the gateway call (a crash point exists).
CRASHABLE = [case.name for case in USE_CASES if case.crash_at]


@pytest.fixture
def case(request: pytest.FixtureRequest) -> UseCase:
    return BY_NAME[request.param]


@pytest.fixture
def scene(settings: Any, market: Any, case: UseCase) -> dict[str, Any]:
    configure(settings, ESCROW_STRATEGY=case.strategy)
    return case.setup(market)


def expected_status(case: UseCase, failure: str) -> set[int]:
    if failure in TRANSIENT:
        return {503}
    if failure.startswith("402"):
        return {case.refused_status}
    return {409}  # any other definite refusal: the state does not allow it now


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL, indirect=True)
@pytest.mark.parametrize("failure", list(FAILURES))
def test_stripe_failure_is_answered_cleanly_and_a_retry_succeeds_once(
    sim_stripe, market, case, scene, failure
):
    sim_stripe.fail_next(case.method, FAILURES[failure]())

    response = case.act(market, scene)

    assert response.status_code in expected_status(case, failure), response.content
    error = response.json()["error"]
    assert error["code"]
    assert "sk_test" not in response.content.decode()
    case.check_untouched(market, scene, sim_stripe)

    retry = case.act(market, scene)
    assert retry.status_code in (200, 201), retry.content
    case.check_done(market, scene, sim_stripe)
    # And once more: nothing moves twice.
    again = case.act(market, scene)
    assert again.status_code < 500, again.content
    case.check_done(market, scene, sim_stripe)


@pytest.mark.parametrize(
    ("case", "recovery"),
    [(name, "retry") for name in ALL] + [(name, "reconcile") for name in RECONCILABLE],
    indirect=["case"],
)
def test_lost_answer_after_stripe_acted_is_recovered_once(
    sim_stripe, market, case, scene, recovery
):
    """Stripe acted, the answer was lost (a timeout after the effect).

    Where nothing was committed (the use case rolled back), only a retry can
    finish it; where "outcome unknown" was committed, reconcile can too.
    """
    sim_stripe.fail_next(
        case.method, TemporarilyUnavailable("Read timed out.", should_retry=True), after_effect=True
    )

    response = case.act(market, scene)
    assert response.status_code == 503, response.content

    if recovery == "retry":
        retry = case.act(market, scene)
        # 409 only when the object's own webhook already finished the
        # operation (a refunded payment cannot be refunded again).
        assert retry.status_code in (200, 201, 409), retry.content
    else:
        with market.capture(execute=True):
            call_command("escrow_reconcile", older_than=0, stdout=_Sink(), stderr=_Sink())
    case.check_done(market, scene, sim_stripe)


@pytest.mark.parametrize("case", CRASHABLE, indirect=True)
def test_crash_between_stripe_call_and_commit_is_recovered_by_a_retry(
    sim_stripe, market, case, scene
):
    """The process dies after Stripe answered, before the transaction commits.

    (The onboarding link is not stored: nothing is written after its call.)
    """
    calls_before = sim_stripe.call_count(case.method)
    if case.crash_at == COMMIT_OUTCOME:
        # Crash when committing the outcome of this case's own call (a refund
        # after release commits its reversal's outcome first).
        from django_escrow_connect.services import outcomes

        real = outcomes.apply_outcome

        def crash_for_this_call(operation: Any, outcome: Any) -> None:
            if operation.kind == KIND_OF[case.method]:
                raise Crash("killed")
            real(operation, outcome)

        patcher = mock.patch(case.crash_at, side_effect=crash_for_this_call)
    else:
        patcher = mock.patch(case.crash_at, side_effect=Crash("killed"))
    with patcher, pytest.raises(Crash):
        case.act(market, scene)
    assert sim_stripe.call_count(case.method) == calls_before + 1  # Stripe did act

    retry = case.act(market, scene)
    # 409 only when the object's own webhook already finished the operation
    # (a refunded payment cannot be refunded again).
    assert retry.status_code in (200, 201, 409), retry.content
    case.check_done(market, scene, sim_stripe)


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass
