"""Off-session tips: the payer's consent saves the card, a later tip is charged on it
without the customer, and Stripe's refusals fall back to the customer confirming."""

from __future__ import annotations

import io

import pytest
import stripe
from django.urls import reverse

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import GatewayError
from django_escrow_connect.gateway.stripe_gateway import translate_error
from django_escrow_connect.gateway.types import PaymentIntentSnapshot
from django_escrow_connect.services import errors, saved_methods
from django_escrow_connect.simulation import SimulatedGateway, simulated_stripe

from .conftest import build_marketplace, configure

TIP_LIMIT = 5_000


@pytest.fixture
def market(db, escrow_stripe, settings, django_capture_on_commit_callbacks):
    configure(settings, TIP_MAX_AMOUNT={"usd": TIP_LIMIT}, SAVE_PAYMENT_METHODS=True)
    return build_marketplace(capture=django_capture_on_commit_callbacks)


def Tip():
    return swappable.load("EscrowTip")


def Operation():
    return swappable.load("MoneyOperation")


def calls(name):
    return [args for n, args in simulated_stripe.calls if n == name]


def saved_payment(market, *, card="success"):
    """A released payment whose payer agreed to save the card."""
    response = market.create(market.task(), save_payment_method=True)
    assert response.status_code == 201, response.content
    payment = market.pay(response.json()["payment_id"], card)
    assert payment.status == "held"
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 200, response.content
    return market.payment(payment.pk)


def add_tip(market, payment, amount=500, key=None, *, events=True):
    """``events=False``: Stripe's events for the request are not delivered (yet)."""
    url = reverse("escrow_connect:payment-tips", args=[str(payment.pk)])
    headers = {"Idempotency-Key": key} if key is not None else None
    with market.capture(execute=events):
        return market.client(market.customer).post(
            url, {"amount": amount}, format="json", headers=headers
        )


def withdraw(market, payment, user=None):
    url = reverse("escrow_connect:payment-saved-payment-method", args=[str(payment.pk)])
    with market.capture(execute=True):
        return market.client(user or market.customer).delete(url)


# --------------------------------------------------------------------------
# Consent and the Customer
# --------------------------------------------------------------------------


def test_consent_creates_a_customer_and_saves_the_card(market):
    payment = saved_payment(market)

    assert payment.payment_method_consent_at is not None
    assert payment.stripe_customer_id.startswith("cus_")
    # payment_intent.succeeded named the card Stripe saved to that Customer.
    assert payment.saved_payment_method_id.startswith("pm_")
    assert simulated_stripe.payment_methods[payment.saved_payment_method_id]["customer"] == (
        payment.stripe_customer_id
    )
    (request,) = [c for c in calls("create_payment_intent") if c.get("customer")]
    assert request["customer"] == payment.stripe_customer_id
    assert request["setup_future_usage"] == "off_session"
    operation = Operation().objects.get(payment=payment, kind="customer")
    assert operation.status == "succeeded"
    assert operation.stripe_object_id == payment.stripe_customer_id
    assert operation.idempotency_key.endswith(f":payment:{payment.pk}:customer:0")


def test_without_consent_the_payment_intent_request_is_unchanged(market):
    response = market.create(market.task())
    assert response.status_code == 201, response.content
    payment = market.pay(response.json()["payment_id"])
    assert calls("create_customer") == []
    (request,) = calls("create_payment_intent")
    assert "customer" not in request
    assert "setup_future_usage" not in request
    assert payment.payment_method_consent_at is None
    assert payment.saved_payment_method_id == ""


def test_the_payer_s_later_payment_reuses_their_customer(market):
    first = saved_payment(market)
    second = saved_payment(market)
    assert len(calls("create_customer")) == 1
    assert second.stripe_customer_id == first.stripe_customer_id
    assert second.saved_payment_method_id not in ("", first.saved_payment_method_id)


def test_consent_is_refused_when_the_platform_does_not_save_cards(market, settings):
    configure(settings, SAVE_PAYMENT_METHODS=False)
    response = market.create(market.task(), save_payment_method=True)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "saving_payment_methods_off"
    assert calls("create_customer") == calls("create_payment_intent") == []


def test_a_refused_customer_closes_the_payment(market):
    from django_escrow_connect.exceptions import InvalidRequest

    simulated_stripe.fail_next(
        "create_customer", InvalidRequest("Invalid request.", http_status=400)
    )
    response = market.create(market.task(), save_payment_method=True)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "provider_error"
    payment = swappable.load("EscrowPayment").objects.get()
    assert payment.status == "canceled"
    assert calls("create_payment_intent") == []


# --------------------------------------------------------------------------
# Tips charged off-session
# --------------------------------------------------------------------------


def test_a_tip_is_charged_on_the_saved_card_without_the_customer(market):
    payment = saved_payment(market)

    response = add_tip(market, payment, 700)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["confirmation"] == "off_session"
    assert body["client_secret"] is None
    tip = Tip().objects.get(pk=body["id"])
    assert tip.status == "transferred"
    assert [t.amount for t in tip.transfers.all()] == [700]
    request = calls("create_payment_intent")[-1]
    assert request["customer"] == payment.stripe_customer_id
    assert request["payment_method"] == payment.saved_payment_method_id
    assert request["off_session"] is True
    assert request["confirm"] is True


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_authenticationRequired", "authentication_required"),
        ("pm_card_chargeDeclined", "card_declined"),
    ],
)
def test_a_refused_off_session_tip_falls_back_to_the_customer(market, method, code):
    payment = saved_payment(market)
    # Stripe's test PaymentMethods for these outcomes, as the saved card.
    type(payment).objects.filter(pk=payment.pk).update(saved_payment_method_id=method)

    response = add_tip(market, payment, 300)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["confirmation"] == "customer"
    assert body["client_secret"]
    tip = Tip().objects.get(pk=body["id"])
    # The PaymentIntent Stripe made (carried by the 402) is the tip's.
    assert tip.stripe_payment_intent_id == body["client_secret"].split("_secret_")[0]
    assert tip.status == "failed"
    assert tip.failure_code == code
    operation = Operation().objects.get(idempotency_key=tip.intent_idempotency_key)
    assert operation.status == "succeeded"

    # The customer confirms that same PaymentIntent on-session.
    with market.capture(execute=True):
        SimulatedGateway().confirm_payment_intent(tip.stripe_payment_intent_id, "success")
    tip.refresh_from_db()
    assert tip.status == "transferred"


def test_a_withdrawn_consent_makes_tips_customer_present_again(market):
    payment = saved_payment(market)
    method = payment.saved_payment_method_id

    response = withdraw(market, payment)

    assert response.status_code == 204, response.content
    payment.refresh_from_db()
    assert payment.payment_method_consent_withdrawn_at is not None
    assert payment.saved_payment_method_id == ""
    assert simulated_stripe.payment_methods[method]["customer"] is None
    # Repeating it is harmless, and calls Stripe no more.
    assert withdraw(market, payment).status_code == 204
    assert len(calls("detach_payment_method")) == 1

    body = add_tip(market, payment, 200).json()
    assert body["confirmation"] == "customer"
    assert body["client_secret"]
    assert "off_session" not in calls("create_payment_intent")[-1]


def test_only_the_payer_withdraws_and_only_a_saving_payment(market):
    payment = saved_payment(market)
    assert withdraw(market, payment, user=market.doer).status_code == 403
    plain = market.released_payment()
    response = withdraw(market, plain)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_saved_payment_method"


def test_staff_who_are_not_active_may_not_withdraw_through_the_service(market):
    # The API shows them no payment (404); the service, which hosts call too,
    # asks the same question: platform staff means active staff.
    payment = saved_payment(market)
    market.staff.is_active = False
    market.staff.save(update_fields=["is_active"])
    with pytest.raises(errors.Forbidden):
        saved_methods.withdraw_saved_payment_method(payment.pk, market.staff)
    payment.refresh_from_db()
    assert payment.payment_method_consent_withdrawn_at is None


def test_a_failed_detach_is_sent_again_by_the_next_withdrawal(market):
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment = saved_payment(market)
    simulated_stripe.fail_next(
        "detach_payment_method", TemporarilyUnavailable("down", http_status=500)
    )
    assert withdraw(market, payment).status_code == 503
    payment.refresh_from_db()
    # No tip is charged off-session from the moment consent is withdrawn.
    assert payment.payment_method_consent_withdrawn_at is not None
    assert payment.off_session_payment_method == ""
    assert payment.saved_payment_method_id
    assert withdraw(market, payment).status_code == 204
    payment.refresh_from_db()
    assert payment.saved_payment_method_id == ""


# --------------------------------------------------------------------------
# Stripe's facts: payment_intent.succeeded records the saved card once
# --------------------------------------------------------------------------


def _intent(payment, **changes):
    fields = {
        "id": payment.stripe_payment_intent_id,
        "status": "succeeded",
        "amount": payment.amount,
        "currency": payment.currency,
        "customer": payment.stripe_customer_id,
        "setup_future_usage": "off_session",
        "payment_method": "pm_other",
    }
    fields.update(changes)
    return PaymentIntentSnapshot(**fields)


def test_a_repeated_or_late_event_does_not_replace_the_saved_card(market):
    from django_escrow_connect.services.payment_intents import apply_payment_intent

    payment = saved_payment(market)
    saved = payment.saved_payment_method_id
    apply_payment_intent(_intent(payment))
    payment.refresh_from_db()
    assert payment.saved_payment_method_id == saved


def test_the_card_is_recorded_only_with_consent_and_the_payment_s_customer(market):
    payment = saved_payment(market)
    type(payment).objects.filter(pk=payment.pk).update(saved_payment_method_id="")
    payment.refresh_from_db()
    assert not saved_methods.record_saved_payment_method(
        payment, _intent(payment, customer="cus_x")
    )
    assert not saved_methods.record_saved_payment_method(
        payment, _intent(payment, setup_future_usage=None)
    )
    payment.payment_method_consent_withdrawn_at = payment.payment_method_consent_at
    assert not saved_methods.record_saved_payment_method(payment, _intent(payment))
    payment.payment_method_consent_withdrawn_at = None
    assert saved_methods.record_saved_payment_method(payment, _intent(payment))
    assert payment.saved_payment_method_id == "pm_other"


def test_off_session_tip_query_budget(market):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    payment = saved_payment(market)
    with CaptureQueriesContext(connection) as queries:
        assert add_tip(market, payment, 100).json()["confirmation"] == "off_session"
    # Measured 89 (SQLite, savepoints included). More than a customer-present
    # tip (30, test_tips): the answer is the payment, so the transfer starts
    # at once (its journal phases and row), and this fixture delivers the
    # events Stripe sends during the call (payment_intent.*, charge.*,
    # transfer.*) to the webhook endpoint in the same request.
    assert len(queries) <= 100, f"{len(queries)} queries"


def test_openapi_documents_the_saved_payment_method_endpoint():
    pytest.importorskip("drf_spectacular")
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]
    assert "delete" in paths["/escrow/payments/{payment_id}/saved-payment-method/"]
    tip = paths["/escrow/payments/{payment_id}/tips/"]["post"]["responses"]["201"]
    ref = tip["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "confirmation" in schema["components"]["schemas"][ref]["properties"]


# --------------------------------------------------------------------------
# An off-session tip whose answer was lost
# --------------------------------------------------------------------------


def _tip_intents(store, state="succeeded"):
    return [
        i
        for i in store.payment_intents.values()
        if i["metadata"].get("escrow_tip_id") and i["status"] == state
    ]


def test_a_tip_whose_answer_was_lost_is_answered_not_refused(market, escrow_stripe):
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment = saved_payment(market)
    # Stripe charged the card, then the connection dropped: the answer is unknown.
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=True,
    )

    response = add_tip(market, payment, 400)

    # Not a 503 inviting the customer to add the tip again (a second charge):
    # the tip exists, and Stripe's answer arrives by itself.
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["confirmation"] == "off_session"
    assert body["client_secret"] is None
    assert body["status"] == "awaiting_payment"
    (tip,) = Tip().objects.all()
    assert body["id"] == str(tip.pk)
    assert tip.status == "transferred"  # payment_intent.succeeded, then the transfer
    assert len(_tip_intents(escrow_stripe.store)) == 1


def test_the_same_tip_asked_again_before_stripe_confirmed_it_is_charged_once(market, escrow_stripe):
    import json

    from django_escrow_connect import simulation
    from django_escrow_connect.exceptions import TemporarilyUnavailable
    from django_escrow_connect.webhooks.receiver import receive

    payment = saved_payment(market)
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=True,
    )

    def slow_tip_events(endpoint, payload, signature):
        if json.loads(payload)["type"].startswith(("payment_intent.", "charge.")):
            return None  # not delivered yet
        return receive(endpoint, payload, signature)

    previous = simulation.set_event_sink(slow_tip_events)
    try:
        first = add_tip(market, payment, 400)
        # The customer asks again (a double click, a client retry after a
        # dropped connection) while the charge is unconfirmed.
        again = add_tip(market, payment, 400)
    finally:
        simulation.set_event_sink(previous)

    assert first.status_code == again.status_code == 201, (first.content, again.content)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["confirmation"] == "off_session"
    (tip,) = Tip().objects.all()
    # The same key again: Stripe answered with the charge it made the first time.
    assert tip.status == "transferred"
    assert len(_tip_intents(escrow_stripe.store)) == 1
    assert [t.amount for t in tip.transfers.all()] == [400]


def test_a_tip_stripe_charged_is_found_when_its_answer_and_events_are_lost(
    market, escrow_stripe, escrow_deliver
):
    """Stripe charged the saved card; its answer was lost and its events are
    late. A day later the key may be forgotten and the PaymentIntent cannot
    be looked up by it: escrow_reconcile finds it among the Customer's
    PaymentIntents instead of giving the tip up, and the late event changes
    nothing more."""
    import json
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from django_escrow_connect import simulation
    from django_escrow_connect.exceptions import TemporarilyUnavailable
    from django_escrow_connect.webhooks.receiver import receive

    payment = saved_payment(market)
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=True,
    )
    held_back = []

    def late_tip_events(endpoint, payload, signature):
        event = json.loads(payload)
        if event["type"].startswith(("payment_intent.", "charge.")):
            held_back.append(event)  # Stripe retries these later
            return None
        return receive(endpoint, payload, signature)

    previous = simulation.set_event_sink(late_tip_events)
    try:
        assert add_tip(market, payment, 400).status_code == 201
    finally:
        simulation.set_event_sink(previous)
    Operation().objects.filter(kind="tip_intent").update(
        created_at=timezone.now() - timedelta(hours=25),
        lease_expires_at=timezone.now() - timedelta(hours=24),
    )
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=io.StringIO())
    (tip,) = Tip().objects.all()
    (charged,) = _tip_intents(escrow_stripe.store)
    assert (tip.status, tip.stripe_payment_intent_id) == ("transferred", charged["id"])
    assert calls("list_payment_intents")[-1]["customer"] == payment.stripe_customer_id
    assert Operation().objects.get(kind="tip_intent").status == "succeeded"

    # Stripe's retried event says what was already learnt.
    (succeeded,) = [e for e in held_back if e["type"] == "payment_intent.succeeded"]
    assert escrow_deliver(succeeded).status_code == 200
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert [t.amount for t in tip.transfers.all()] == [400]


def test_an_off_session_tip_stripe_never_made_is_given_up_after_the_key_window(
    market, escrow_stripe
):
    """The request never reached Stripe (refused before it acted): a day later
    the Customer has no such PaymentIntent, so the tip is given up; nothing
    was charged."""
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment = saved_payment(market)
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=False,
    )
    assert add_tip(market, payment, 400).status_code == 201
    Operation().objects.filter(kind="tip_intent").update(
        created_at=timezone.now() - timedelta(hours=25),
        lease_expires_at=timezone.now() - timedelta(hours=24),
    )
    with market.capture(execute=True):
        call_command("escrow_reconcile", "--payment", str(payment.pk), stdout=io.StringIO())
    (tip,) = Tip().objects.all()
    assert (tip.status, tip.failure_code) == ("canceled", "not_made")
    assert _tip_intents(escrow_stripe.store) == []
    assert calls("list_payment_intents")


def test_a_tip_retried_after_stripes_stored_5xx_is_not_given_up_within_its_lease(
    market, escrow_stripe
):
    """Stripe answered a 5xx to the saved card's charge (stored under the key:
    sending it again only replays the error), and may still be making the
    PaymentIntent. The client's retry at once finds none listed yet: the tip
    stays pending, not given up for a second tip that would charge the card
    again."""
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment = saved_payment(market)
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("Stripe had a problem", http_status=500),
        after_effect=False,
    )
    first = add_tip(market, payment, 400, key="tip-5xx", events=False)
    assert first.status_code == 201, first.content

    again = add_tip(market, payment, 400, key="tip-5xx")

    assert again.status_code == 201, again.content
    assert (again.json()["id"], again.json()["confirmation"]) == (
        first.json()["id"],
        "off_session",
    )
    assert calls("list_payment_intents")  # looked up, and not concluded from it
    (tip,) = Tip().objects.all()
    assert tip.status == "awaiting_payment"
    tip_calls = [c for c in calls("create_payment_intent") if c["metadata"].get("escrow_tip_id")]
    assert len(tip_calls) == 1


def test_an_off_session_tip_sent_again_with_its_key_charges_the_card_once(market, escrow_stripe):
    """The answer to a charged tip is lost (a 502 from a proxy); the client
    retries with the same Idempotency-Key: that tip, not a second charge."""
    payment = saved_payment(market)
    first = add_tip(market, payment, 400, key="tip-4f1c")
    assert first.status_code == 201, first.content

    again = add_tip(market, payment, 400, key="tip-4f1c")

    assert again.status_code == 201, again.content
    body = again.json()
    assert (body["id"], body["confirmation"], body["client_secret"]) == (
        first.json()["id"],
        "off_session",
        None,
    )
    assert len(_tip_intents(escrow_stripe.store)) == 1
    assert len(calls("create_payment_intent")) == 2  # the payment's own and the tip's
    (tip,) = Tip().objects.all()
    assert tip.status == "transferred"


def test_a_keyed_off_session_tip_whose_answer_was_lost_is_finished_with_its_stripe_key(
    market, escrow_stripe
):
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    payment = saved_payment(market)
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=True,
    )
    first = add_tip(market, payment, 400, key="tip-lost")
    assert first.status_code == 201, first.content

    later = add_tip(market, payment, 400, key="tip-lost")
    assert later.status_code == 201, later.content
    assert later.json()["id"] == first.json()["id"]
    tip_calls = [c for c in calls("create_payment_intent") if c["metadata"].get("escrow_tip_id")]
    assert len({c["metadata"]["escrow_operation"] for c in tip_calls}) == 1
    assert len(_tip_intents(escrow_stripe.store)) == 1
    assert Tip().objects.count() == 1


def a_proxys_502_as_translated() -> GatewayError:
    """What the gateway makes of a proxy's HTML 502, built as stripe-python builds it."""
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    headers = {"Server": "nginx", "Content-Type": "text/html"}
    # stripe-python passes the headers of a body that is not JSON as json_body.
    answer = stripe.APIError(
        f"Invalid response body from API: {page} (HTTP response code was 502)", page, 502, headers
    )
    return translate_error(answer)


def test_a_proxys_502_after_an_off_session_tip_was_charged_charges_it_once(market):
    # The proxy's page says nothing of what Stripe did: here Stripe charged
    # the card, and its events are late. Read as Stripe's own stored 5xx, the
    # tip was given up and the customer's retry charged a second PaymentIntent.
    payment = saved_payment(market)
    simulated_stripe.fail_next(
        "create_payment_intent", a_proxys_502_as_translated(), after_effect=True
    )

    first = add_tip(market, payment, 700, key="tip-click-1", events=False)
    again = add_tip(market, payment, 700, key="tip-click-1")

    # Outcome unknown, the same key is sent again and Stripe's stored success read.
    assert (first.status_code, again.status_code) == (201, 201), (first.content, again.content)
    assert again.json()["id"] == first.json()["id"]
    charged = [i for i in simulated_stripe.payment_intents.values() if i["amount"] == 700]
    assert [i["status"] for i in charged] == ["succeeded"]
    tips = Tip().objects.filter(payment=payment)
    assert [(t.status, t.stripe_payment_intent_id) for t in tips] == [
        ("transferred", charged[0]["id"])
    ]


@pytest.mark.parametrize("request_next", ["another tip", "a staff refund", "the same tip"])
def test_stripe_refusing_an_off_session_tips_amount_answers_only_that_tip(
    market, escrow_stripe, request_next
):
    """An off-session tip whose answer was lost is finished by whichever
    request next waits for the payment (its key: Stripe may have charged).
    Stripe then refusing its amount is committed with the tip, canceled, and
    is the answer to the tip's own request (sent again, with or without its
    Idempotency-Key: 400 amount_too_small), not to another tip or a refund,
    which go on."""
    from django_escrow_connect.exceptions import InvalidRequest, TemporarilyUnavailable

    payment = saved_payment(market)
    escrow_stripe.store.fail_next(
        "create_payment_intent", TemporarilyUnavailable("timeout", http_status=None)
    )
    assert add_tip(market, payment, 60, key="tip-60").status_code == 201
    refusal = "Amount must convert to at least 50 cents. $0.60 converts to approximately €0.48."
    escrow_stripe.store.fail_next(
        "create_payment_intent",
        InvalidRequest(refusal, code="amount_too_small", http_status=400),
    )

    if request_next == "another tip":
        response = add_tip(market, payment, 600)
        assert response.status_code == 201, response.content
        assert Tip().objects.get(amount=600).status == "transferred"
    elif request_next == "a staff refund":
        response = market.post(
            market.staff, "payment-refund", {"amount": 1000}, payment_id=payment.pk
        )
        assert response.status_code == 200, response.content
        assert market.payment(payment.pk).amount_refunded == 1000
    else:
        response = add_tip(market, payment, 60)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "amount_too_small"

    tip = Tip().objects.get(amount=60)
    assert (tip.status, tip.failure_code) == ("canceled", "amount_too_small")
    replay = add_tip(market, payment, 60, key="tip-60")
    assert replay.status_code == 400, replay.content
    assert replay.json()["error"]["code"] == "amount_too_small"
    assert refusal in replay.json()["error"]["message"]
