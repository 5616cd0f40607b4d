"""Every ``permission=`` a payment transition declares is enforced, and is the
whole rule of who may ask for it.

For each transition that declares a permission, the service that asks for it
is called by every kind of person, in each state the request is made from.
The service refuses (``Forbidden``: nothing changed, no call to Stripe)
exactly when the declared permission says no, and goes ahead when it says
yes. A permission declared on a transition no service asks for fails here,
and so does a transition with a permission missing from ``REQUESTS``.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.services import errors
from django_escrow_connect.services.payments import (
    cancel_payment,
    refund_payment,
    release_payment,
    retry_payment,
)
from django_escrow_connect.transitions import permission_of

from .conftest import configure, money_calls

ACTORS = ("payer", "payee", "org_admin", "org_member", "other", "staff", "anonymous")


def release_an_amount(payment_id: Any, user: Any) -> Any:
    """A partial release (docs/milestones.md): ``release_part``."""
    return release_payment(payment_id, user, amount=1_000)


#: transition: [(the service that asks for it, the state it is asked in, strategy)]
REQUESTS: dict[str, list[tuple[Any, str, str]]] = {
    "release": [(release_payment, "held", SEPARATE_CHARGES_AND_TRANSFERS)],
    "release_part": [(release_an_amount, "held", SEPARATE_CHARGES_AND_TRANSFERS)],
    "refund": [(refund_payment, "held", SEPARATE_CHARGES_AND_TRANSFERS)],
    "cancel": [
        (cancel_payment, "awaiting_payment", SEPARATE_CHARGES_AND_TRANSFERS),
        # Voiding an authorisation: who may refund decides.
        (cancel_payment, "held", MANUAL_CAPTURE),
    ],
    "retry_payment": [(retry_payment, "failed", SEPARATE_CHARGES_AND_TRANSFERS)],
}

CASES = [
    pytest.param(name, service, state, strategy, actor, id=f"{name}-{state}-{actor}")
    for name, requests in REQUESTS.items()
    for service, state, strategy in requests
    for actor in ACTORS
]


def payment_model() -> Any:
    return swappable.load("EscrowPayment")


def declared_with_permission() -> set[str]:
    model = payment_model()
    return {
        transition.name
        for transition in model._meta.get_field("status").get_all_transitions(model)
        if transition.permission is not None
    }


def test_every_declared_permission_is_asked_by_a_service():
    assert declared_with_permission() == set(REQUESTS)


def user_of(market: Any, actor: str) -> Any:
    return {
        "payer": market.customer,
        "payee": market.doer,
        "org_admin": market.org_admin,
        "org_member": market.org_member,
        "other": market.other,
        "staff": market.staff,
        "anonymous": None,
    }[actor]


def prepare(market: Any, state: str, *, to_org: bool) -> Any:
    if state == "held":
        return market.held_payment(to_org=to_org)
    response = market.create(market.task(to_org=to_org))
    payment = market.payment(response.json()["payment_id"])
    if state == "failed":
        payment = market.pay(payment.pk, card="declined")
    assert payment.status == state
    return payment


def books(payment: Any) -> tuple[Any, ...]:
    payment.refresh_from_db()
    return (
        payment.status,
        payment.amount_refunded,
        payment.amount_transferred,
        payment.updated_at,
        payment.transfers.count(),
        payment.refunds.count(),
        payment.operations.count(),
    )


@pytest.mark.parametrize(("name", "service", "state", "strategy", "actor"), CASES)
def test_the_service_enforces_exactly_the_declared_permission(
    market, sim_stripe, settings, name, service, state, strategy, actor
):
    configure(settings, ESCROW_STRATEGY=strategy)
    payment = prepare(market, state, to_org=actor in ("org_admin", "org_member"))
    user = user_of(market, actor)
    allowed = permission_of(payment_model(), name)(payment, user)
    before = books(payment)
    sim_stripe.calls.clear()

    with market.capture(execute=True):
        if allowed:
            service(payment.pk, user)
        else:
            with pytest.raises(errors.Forbidden):
                service(payment.pk, user)

    if allowed:
        assert books(payment) != before
    else:
        assert books(payment) == before
        assert money_calls(sim_stripe) == []


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_each_permission_both_allows_and_refuses_someone(market, sim_stripe, settings, name):
    """The cases above test both answers of every permission, not just one."""
    answers = set()
    for _, state, strategy in REQUESTS[name]:
        configure(settings, ESCROW_STRATEGY=strategy)
        payment = prepare(market, state, to_org=False)
        for actor in ACTORS:
            answers.add(bool(permission_of(payment_model(), name)(payment, user_of(market, actor))))
    assert answers == {True, False}


def test_a_user_who_may_not_ask_is_refused_whatever_the_state(market, sim_stripe):
    """Who first: the payee confirming a payment not paid yet is 403, not 409."""
    response = market.create(market.task())
    payment = market.payment(response.json()["payment_id"])
    with pytest.raises(errors.Forbidden):
        release_payment(payment.pk, market.doer)
    with pytest.raises(errors.TransitionNotAllowed):
        release_payment(payment.pk, market.customer)


def test_a_user_who_may_not_cancel_is_refused_once_the_payment_is_canceled_too(market, sim_stripe):
    """Who first, also for a payment already canceled: no 200 for someone who may not ask."""
    response = market.create(market.task())
    payment = cancel_payment(response.json()["payment_id"], market.customer)
    assert payment.status == "canceled"
    with pytest.raises(errors.Forbidden):
        cancel_payment(payment.pk, market.other)
    # Who may cancel is answered the payment as it is (a repeat is not an error).
    assert cancel_payment(payment.pk, market.customer).status == "canceled"
