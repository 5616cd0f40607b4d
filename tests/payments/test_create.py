"""Creating a payment: the amount and the parties come from the task, never
from the request."""

from __future__ import annotations

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.exceptions import InvalidRequest
from django_escrow_connect.money import MAX_CHARGE_AMOUNT
from django_escrow_connect.services import errors, outcomes
from django_escrow_connect.services import payments as payment_services
from django_escrow_connect.services.operations import Outcome
from django_escrow_connect.terms import FUND_PER_MILESTONE, FUND_UP_FRONT, TermsUnavailable
from tests import factories

from .conftest import assert_terms_refused, configure, money_calls
from .test_milestones import EXTRA, split  # noqa: F401  (fixtures)


def payments_of(task):
    return swappable.load("EscrowPayment").objects.filter(task_id=task.pk)


def test_the_amount_the_customer_saw_is_checked_against_the_task(market, sim_stripe):
    task = market.task(amount=10_000)
    assert market.create(task, amount=10_000).status_code == 201


@pytest.mark.parametrize("amount", [1, 9_999, 10_001, 1_000_000])
def test_a_tampered_amount_is_refused(market, sim_stripe, amount):
    task = market.task(amount=10_000)
    response = market.create(task, amount=amount)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "amount_mismatch"
    assert not payments_of(task).exists()
    assert money_calls(sim_stripe) == []


@pytest.mark.parametrize(
    "amount",
    # More digits than any amount has, a string of them past Python's
    # 4300-digit int() limit included.
    [0, -5, 100.5, "100.00", "abc", True, None, [1], "9" * 20, "9" * 5000],
)
def test_an_amount_that_is_not_a_positive_integer_is_invalid(market, sim_stripe, amount):
    task = market.task()
    response = market.create(task, amount=amount)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "amount" in error["fields"]
    assert not payments_of(task).exists()


@pytest.mark.parametrize(
    "extra",
    [{"currency": "jpy"}, {"payee": "someone"}, {"payee_user": 1}, {"platform_fee": 0}],
)
def test_fields_the_server_decides_are_refused(market, sim_stripe, extra):
    task = market.task()
    response = market.create(task, **extra)
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(extra)
    assert not payments_of(task).exists()
    assert money_calls(sim_stripe) == []


def test_a_later_price_change_does_not_change_an_open_payment(market, sim_stripe):
    task = market.task(amount=10_000)
    first = market.create(task).json()
    factories.set_task_price(task, 12_000)
    response = market.create(task, amount=10_000)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "amount_mismatch"
    assert market.payment(first["payment_id"]).amount == 10_000


@pytest.mark.parametrize("body", [{"amount": 12_000}, {}])
def test_the_open_payment_at_the_old_price_is_not_handed_back(market, sim_stripe, body):
    """The price changed while the payment awaits payment: 409, not the old PaymentIntent."""
    task = market.task(amount=10_000)
    first = market.create(task).json()
    # At the same price the open payment is the answer (200, same payment).
    again = market.create(task, amount=10_000)
    assert (again.status_code, again.json()["payment_id"]) == (200, first["payment_id"])
    factories.set_task_price(task, 12_000)
    sim_stripe.calls.clear()
    response = market.create(task, **body)
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "terms_changed"
    assert "100.00 USD, now 120.00 USD" in error["message"]
    assert sim_stripe.calls == []
    assert market.payment(first["payment_id"]).status == "awaiting_payment"

    # Cancelling the open payment lets the customer pay the new price.
    market.post(market.customer, "payment-cancel", payment_id=first["payment_id"])
    sim_stripe.calls.clear()
    response = market.create(task, amount=12_000)
    assert response.status_code == 201, response.content
    assert response.json()["amount"] == 12_000
    assert response.json()["payment_id"] != first["payment_id"]
    assert [name for name, _ in sim_stripe.calls] == ["create_payment_intent"]


def failed_payment(market, task):
    """The task's payment, declined at the first attempt: ``failed``."""
    body = market.create(task).json()
    payment = market.pay(body["payment_id"], card="declined")
    assert payment.status == "failed"
    return payment


def retry(market, payment, user=None):
    return market.post(user or market.customer, "payment-retry", payment_id=payment.pk)


class TestRetryAfterTheTermsChanged:
    """A retry confirms the same PaymentIntent at its amount: only on the same terms."""

    def test_a_retry_at_the_old_price_is_refused(self, market, sim_stripe):
        task = market.task(amount=10_000)
        payment = failed_payment(market, task)
        factories.set_task_price(task, 12_000)
        sim_stripe.calls.clear()
        response = retry(market, payment)
        assert response.status_code == 409, response.content
        error = response.json()["error"]
        assert error["code"] == "terms_changed"
        assert "100.00 USD, now 120.00 USD" in error["message"]
        assert sim_stripe.calls == []
        assert market.payment(payment.pk).status == "failed"

        # Cancelling it lets the customer pay the new price.
        canceled = market.post(market.customer, "payment-cancel", payment_id=payment.pk)
        assert canceled.status_code == 200, canceled.content
        response = market.create(task, amount=12_000)
        assert response.status_code == 201, response.content
        assert market.pay(response.json()["payment_id"]).amount == 12_000

    def test_a_retry_at_the_same_price_pays(self, market, sim_stripe):
        task = market.task(amount=10_000)
        payment = failed_payment(market, task)
        factories.set_task_price(task, 10_000)
        response = retry(market, payment)
        assert response.status_code == 200, response.content
        assert market.pay(payment.pk).status == "held"

    def test_a_retry_when_the_task_cannot_be_paid_any_more_is_refused(self, market, sim_stripe):
        task = market.task(amount=10_000)
        payment = failed_payment(market, task)
        factories.withdraw_terms(task)
        response = retry(market, payment)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "no_payment_terms"
        assert market.payment(payment.pk).status == "failed"

    @pytest.mark.usefixtures("split")
    def test_a_retry_when_a_milestone_a_user_typed_cannot_be_paid_is_refused(
        self, market, sim_stripe, caplog
    ):
        task = market.task(amount=10_000)
        EXTRA[task.pk] = {"typed_milestones": [("Design", "2000"), ("Build", "8000")]}
        payment = failed_payment(market, task)
        EXTRA[task.pk] = {"typed_milestones": [("Design", "2000"), ("", "8000")]}
        sim_stripe.calls.clear()
        with caplog.at_level("ERROR", logger="django_escrow_connect.payments"):
            response = retry(market, payment)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "no_payment_terms"
        assert "Milestone 2 has no name." in response.json()["error"]["message"]
        assert any("its terms are invalid" in r.getMessage() for r in caplog.records)
        assert market.payment(payment.pk).status == "failed"
        assert sim_stripe.calls == []

    def test_after_the_task_changed_hands_neither_customer_pays_on_the_old_payment(
        self, market, sim_stripe
    ):
        task = market.task(amount=10_000)
        payment = failed_payment(market, task)
        factories.set_task_customer(task, market.other)
        sim_stripe.calls.clear()

        # The earlier customer may not pay for a task that is no longer theirs.
        response = retry(market, payment)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "terms_changed"
        # The new customer is told why, not refused as a stranger (403).
        response = market.create(task, user=market.other)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "terms_changed"
        assert "another customer" in response.json()["error"]["message"]
        assert sim_stripe.calls == []
        assert market.payment(payment.pk).status == "failed"

        # Once the earlier customer cancels it, the new one pays.
        canceled = market.post(market.customer, "payment-cancel", payment_id=payment.pk)
        assert canceled.status_code == 200, canceled.content
        response = market.create(task, user=market.other)
        assert response.status_code == 201, response.content
        assert market.payment(response.json()["payment_id"]).payer_id == market.other.pk

    def test_a_task_paid_by_its_earlier_customer_is_already_paid_for_the_new_one(
        self, market, sim_stripe
    ):
        payment = market.held_payment()
        factories.set_task_customer(payment.task, market.other)
        response = market.create(payment.task, user=market.other)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "already_paid"


def test_the_customer_is_told_why_a_task_cannot_be_paid_yet(market, sim_stripe):
    """The hook names the payer: only they learn there is no accepted bid (409)."""
    task = factories.make_task(market.customer, amount=None)
    response = market.create(task)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_payment_terms"
    assert market.create(task, user=market.other).status_code == 404


@pytest.mark.parametrize(
    ("amount", "currency", "why"),
    [
        (123_450, "isk", "whole units"),
        (12_345, "kwd", "must end in 0"),
        (0, "usd", "positive"),
        (1_000, "u$d", "Invalid currency code 'u$d'"),
        (49, "usd", "at least 0.50 USD, Stripe's smallest charge; got 0.49 USD"),
        (1, "gbp", "at least 0.30 GBP"),
        (49, "jpy", "at least 50 JPY, Stripe's smallest charge; got 49 JPY"),
        (MAX_CHARGE_AMOUNT + 1, "usd", "at most 999,999.99 USD, Stripe's largest charge"),
        # Twelve digits in IDR, not thirteen.
        (10**12, "idr", "at most 9,999,999,999.99 IDR, Stripe's largest charge"),
    ],
)
def test_a_price_stripe_cannot_charge_is_a_409_for_the_customer(
    market, sim_stripe, caplog, amount, currency, why
):
    """A price typed by a user and not validated by the host (1,234.50 kr):
    the customer is told why, a stranger gets 404, nothing is written or sent."""
    task = market.task(amount=amount, currency=currency)
    assert_terms_refused(market, sim_stripe, caplog, task, why)


@pytest.mark.parametrize(
    ("currency", "milestones", "why"),
    [
        (
            "usd",
            [("Design", "0"), ("Build", "10000")],
            "Milestone 'Design': amount must be positive, got 0",
        ),
        ("usd", [("Design", "-1000"), ("Build", "11000")], "Milestone 'Design': Amount must not"),
        ("kwd", [("Design", "2345"), ("Build", "7655")], "Milestone 'Design': KWD amounts"),
        ("usd", [("", "2000"), ("Build", "8000")], "Milestone 1 has no name."),
        (
            "usd",
            [("Design", "2000"), ("Build", "7000")],
            "The milestones add up to 9000, not to the amount 10000.",
        ),
        ("usd", [("Design", "2000"), ("  ", "8000")], "Milestone 2 has no name."),
        (
            "usd",
            [("Design", "2000", "0"), ("Build", "8000")],
            "Milestone 'Design': the delay before its automatic release must be positive, "
            "got 0:00:00.",
        ),
        (
            "usd",
            [("Design", "2000"), ("Build", "8000", "-3")],
            "Milestone 'Build': the delay before its automatic release must be positive, "
            "got -3 days, 0:00:00.",
        ),
    ],
)
@pytest.mark.parametrize(
    ("funding", "body"), [(FUND_UP_FRONT, {}), (FUND_PER_MILESTONE, {"milestone": 1})]
)
@pytest.mark.usefixtures("split")
def test_a_milestone_a_user_typed_that_cannot_be_paid_is_a_409_for_the_customer(
    market, sim_stripe, caplog, currency, milestones, why, funding, body
):
    """A milestone's price, name or auto-release delay typed by a user and
    not validated by the host: as for the task's price, the customer is told
    which milestone and why, a stranger gets 404, nothing is written or sent
    (not a 500)."""
    task = market.task(amount=10_000, currency=currency)
    EXTRA[task.pk] = {"typed_milestones": milestones, "funding": funding}
    assert_terms_refused(market, sim_stripe, caplog, task, why, **body)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (50, "usd"),
        (30, "gbp"),
        (50, "jpy"),
        (MAX_CHARGE_AMOUNT, "usd"),
        # Stripe takes up to twelve digits in IDR: Rp 1,500,000.00 is nine.
        (150_000_000, "idr"),
        (10**12 - 1, "idr"),
    ],
)
def test_a_price_from_stripes_smallest_to_its_largest_charge_is_paid(
    market, sim_stripe, amount, currency
):
    task = market.task(amount=amount, currency=currency)
    response = market.create(task)
    assert response.status_code == 201, response.content
    payment = market.pay(response.json()["payment_id"])
    assert (payment.status, payment.amount, payment.currency) == ("held", amount, currency)


@pytest.mark.usefixtures("split")
def test_a_milestone_below_stripes_smallest_charge_is_refused_only_when_charged_alone(
    market, sim_stripe, caplog
):
    """Funded per milestone, each milestone is a charge of its own: one below
    Stripe's minimum is refused before anything is written. Funded up front,
    the same milestone is only ever transferred: the task is paid."""
    milestones = [("Deposit", "40"), ("Build", "9960")]
    task = market.task(amount=10_000)
    EXTRA[task.pk] = {"typed_milestones": milestones, "funding": FUND_PER_MILESTONE}
    # The customer is told which amount cannot be charged: the milestone's, not the price.
    why = (
        "Milestone 1 ('Deposit') cannot be paid as it stands: The amount must be at least "
        "0.50 USD, Stripe's smallest charge; got 0.40 USD"
    )
    assert_terms_refused(market, sim_stripe, caplog, task, why, milestone=1)

    EXTRA[task.pk] = {"typed_milestones": milestones, "funding": FUND_UP_FRONT}
    response = market.create(task)
    assert response.status_code == 201, response.content


#: What Stripe answers when the charge, converted to the currency the
#: platform settles in, is below (or above) its bound there: a definitive
#: refusal, nothing created (``invalid_request_error``, HTTP 400).
STRIPE_REFUSES_THE_AMOUNT = {
    "amount_too_small": (
        "Amount must convert to at least 50 cents. $0.60 converts to approximately \u20ac0.48."
    ),
    "amount_too_large": "Amount must be no more than $999,999.99.",
}


def stripe_refuses_the_amount(code: str = "amount_too_small") -> InvalidRequest:
    return InvalidRequest(
        STRIPE_REFUSES_THE_AMOUNT[code],
        code=code,
        param="amount",
        http_status=400,
        error_type="invalid_request_error",
    )


@pytest.mark.parametrize("code", sorted(STRIPE_REFUSES_THE_AMOUNT))
def test_a_price_stripe_refuses_to_charge_is_a_409_and_payable_at_a_new_price(
    market, sim_stripe, code
):
    """The table passed the price, but Stripe applies its bounds in the
    platform's settlement currency: its refusal is final (no PaymentIntent),
    so the payment is closed, its operation failed, and the customer is told
    the price cannot be charged (409 no_payment_terms, as the early check),
    not a generic Stripe error. Paying again at another price works."""
    task = market.task(amount=60)
    sim_stripe.fail_next("create_payment_intent", stripe_refuses_the_amount(code))
    response = market.create(task)

    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "no_payment_terms"
    assert "cannot be charged by Stripe" in error["message"]
    assert STRIPE_REFUSES_THE_AMOUNT[code] in error["message"]
    (payment,) = payments_of(task)
    assert (payment.status, payment.failure_code, payment.stripe_payment_intent_id) == (
        "canceled",
        code,
        "",
    )
    (operation,) = payment.operations.all()
    assert (operation.kind, operation.status, operation.error_code) == (
        "payment_intent",
        "failed",
        code,
    )

    factories.set_task_price(task, 10_000)
    again = market.create(task)
    assert again.status_code == 201, again.content
    assert market.pay(again.json()["payment_id"]).status == "held"


def test_the_hosts_minimum_for_a_currency_is_checked_before_anything_is_written(
    market, sim_stripe, settings, caplog
):
    """MIN_CHARGE_AMOUNTS: USD charges settled in another currency need more
    than Stripe's 0.50 USD; the host says so, and a price below it is the
    early 409, nothing written or sent. Other currencies keep Stripe's table."""
    configure(settings, MIN_CHARGE_AMOUNTS={"usd": 70})
    task = market.task(amount=60)
    why = "at least 0.70 USD, Stripe's smallest charge; got 0.60 USD"
    assert_terms_refused(market, sim_stripe, caplog, task, why)

    assert market.create(market.task(amount=50, currency="eur")).status_code == 201
    factories.set_task_price(task, 70)
    assert market.create(task).status_code == 201


def test_a_minimum_set_below_stripes_is_refused_by_stripe_and_answered_as_such(
    market, sim_stripe, settings
):
    """A host minimum below what Stripe takes only moves the refusal to
    Stripe: answered as Stripe's own (409 no_payment_terms), the payment closed."""
    configure(settings, MIN_CHARGE_AMOUNTS={"usd": 30})
    task = market.task(amount=40)
    response = market.create(task)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "no_payment_terms"
    assert "0.40 USD, cannot be charged by Stripe" in response.json()["error"]["message"]
    (payment,) = payments_of(task)
    assert (payment.status, payment.failure_code) == ("canceled", "amount_too_small")


@pytest.mark.parametrize("minimum", [10**8, 0, "70"])
def test_a_minimum_manage_py_check_refuses_is_ignored_for_stripes(
    market, sim_stripe, settings, minimum
):
    """An entry E063 refuses (above Stripe's largest charge: every price
    refused; not a positive int), should the project run anyway, is not
    applied: Stripe's table stands for that currency."""
    configure(settings, MIN_CHARGE_AMOUNTS={"usd": minimum})
    assert market.create(market.task(amount=5_000)).status_code == 201
    response = market.create(market.task(amount=40))
    assert response.status_code == 409, response.content
    assert "at least 0.50 USD" in response.json()["error"]["message"]


@pytest.mark.usefixtures("split")
def test_a_milestone_stripe_refuses_to_charge_is_named_as_the_early_check_names_it(
    market, sim_stripe
):
    """Funded on its own, a milestone Stripe refuses for its amount is named
    as the early check names it: its number and its name."""
    task = market.task(amount=10_000)
    milestones = [("Deposit", "60"), ("Build", "9940")]
    EXTRA[task.pk] = {"typed_milestones": milestones, "funding": FUND_PER_MILESTONE}
    sim_stripe.fail_next("create_payment_intent", stripe_refuses_the_amount())

    response = market.create(task, milestone=1)

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "no_payment_terms"
    assert response.json()["error"]["message"].startswith(
        "Milestone 1 ('Deposit'), 0.60 USD, cannot be charged by Stripe"
    )


def test_a_second_pay_waiting_for_a_refused_amount_is_told_the_price_cannot_be_charged(
    market, sim_stripe, monkeypatch
):
    """Two "pay" clicks at once: the second finds the first's payment and
    waits for its call to Stripe. Stripe refusing the amount, the second is
    answered as the first (409 no_payment_terms), not "start it again",
    which would be refused the same way."""
    task = market.task(amount=60)
    answers = {}

    def second_click_during_the_call(operation):
        def first_answer_arrives(seconds):
            if "first" not in answers:
                try:
                    outcomes.apply_outcome(operation, Outcome(error=stripe_refuses_the_amount()))
                except errors.Conflict as exc:
                    answers["first"] = exc.code

        monkeypatch.setattr(outcomes.time, "sleep", first_answer_arrives)
        answers["second"] = market.create(task)
        raise ConnectionAbortedError("the first request ends here")

    monkeypatch.setattr(payment_services.operations, "send", second_click_during_the_call)
    with pytest.raises(ConnectionAbortedError):
        payment_services.create_payment(task.pk, market.customer)

    assert answers["first"] == "no_payment_terms"
    second = answers["second"]
    assert second.status_code == 409, second.content
    assert second.json()["error"]["code"] == "no_payment_terms"
    assert "0.60 USD, cannot be charged by Stripe" in second.json()["error"]["message"]
    (payment,) = payments_of(task)
    assert (payment.status, payment.failure_code) == ("canceled", "amount_too_small")


def terms_without_a_payer(task):
    raise TermsUnavailable("Not yet.")


def test_terms_unavailable_without_a_payer_is_a_404_for_everyone(market, sim_stripe, settings):
    configure(settings, PAYMENT_TERMS=f"{__name__}.terms_without_a_payer")
    task = market.task()
    for user in (market.customer, market.other):
        response = market.create(task, user=user)
        assert response.status_code == 404, response.content
        assert response.json()["error"] == {"code": "not_found", "message": "No such task."}


def test_paying_for_ones_own_task_is_refused(market, sim_stripe):
    task = factories.make_task(market.customer, payee_user=market.customer)
    response = market.create(task)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "self_payment"
    assert not payments_of(task).exists()
    assert money_calls(sim_stripe) == []


def test_a_task_without_an_accepted_offer_cannot_be_paid(market, sim_stripe):
    task = factories.make_task(market.customer, amount=None)
    response = market.create(task)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_payment_terms"


def test_a_doer_without_a_ready_account_cannot_be_paid(market, sim_stripe):
    newcomer = factories.make_user("newcomer")
    factories.make_account(owner_user=newcomer, ready=False)
    task = factories.make_task(market.customer, payee_user=newcomer)
    response = market.create(task)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "account_not_ready"
    assert money_calls(sim_stripe) == []


@pytest.mark.parametrize("task_id", ["not-a-key", "00000000-0000-0000-0000-000000000000", "0"])
def test_an_unknown_or_malformed_task_is_404(market, sim_stripe, task_id):
    response = market.post(market.customer, "payment-create", {"task_id": task_id})
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body", [[], "task", {"task_id": ""}, {}])
def test_a_malformed_body_is_400(market, sim_stripe, body):
    response = market.post(market.customer, "payment-create", body)
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"error"}


def test_a_stripe_outage_keeps_the_intent_and_a_retry_creates_once(market, sim_stripe):
    from django_escrow_connect.exceptions import TemporarilyUnavailable

    task = market.task()
    sim_stripe.fail_next(
        "create_payment_intent",
        TemporarilyUnavailable("timeout", http_status=None),
        after_effect=True,
    )
    response = market.create(task)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "operation_pending"
    # The payment and its journal entry were committed before Stripe was
    # called, so the intent's own event (payment_intent.created) found them
    # and recorded the PaymentIntent the lost answer named. That is this
    # module's sink, which applies every payment_intent.* event: the webhook
    # pipeline ignores payment_intent.created (test_recovery.py, the drill
    # of a lost creation, finishes it with escrow_reconcile instead).
    (payment,) = payments_of(task)
    assert payment.stripe_payment_intent_id in sim_stripe.payment_intents
    assert list(payment.operations.values_list("kind", "status")) == [
        ("payment_intent", "succeeded")
    ]

    response = market.create(task)
    assert response.status_code == 200, response.content
    # The same key: Stripe answered with the intent it made the first time.
    assert len(sim_stripe.payment_intents) == 1
    (payment,) = payments_of(task)
    assert payment.stripe_payment_intent_id in sim_stripe.payment_intents
