"""One lifecycle per escrow strategy through the real :class:`StripeGateway`,
replayed from hand-authored cassettes (``tests/cassettes/payments/``).

The services, the API and ``escrow_reconcile`` talk to the real gateway and
stripe-python; only HTTP is replayed. Each request must match a cassette
entry on method, path, query, form body and the Idempotency-Key,
Stripe-Version and Stripe-Account headers, with payment UUIDs and the task id
normalised (see ``form_pairs`` in tests/stripe_vcr.py), and every entry must be
played. The customer's card payment happens in the browser, so its outcome
reaches the app the way a lost webhook is recovered: ``escrow_reconcile``
retrieves the PaymentIntent.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime
from datetime import timezone as dt_timezone
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms.models import model_to_dict
from rest_framework.test import APIClient

from django_escrow_connect import swappable
from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.terms import EscrowTerms, terms_from_task
from tests import factories
from tests.stripe_vcr import (
    FILTER_HEADERS,
    answer_from_a_proxy,
    api_key,
    error_answer,
    garble,
    record_mode,
)

CASSETTE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cassettes", "payments")
ACCOUNT = "acct_1QzR8tQm5HwJ3uVe"
DESCRIPTION = "Logo design for Bloom & Co"


def fixed_terms(task: Any) -> EscrowTerms:
    """The task's terms with a fixed description (factories number task titles)."""
    return dataclasses.replace(terms_from_task(task), description=DESCRIPTION)


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    return {
        # ESCROW_CONNECT_RECORD=all re-records, 1 records missing cassettes only
        # (see docs/cassettes.md); default: replay only.
        "record_mode": record_mode(),
        "match_on": ["method", "path", "query", "escrow_form_body", "escrow_stripe_headers"],
        "filter_headers": FILTER_HEADERS,
        "decode_compressed_response": True,
    }


@pytest.fixture(scope="module")
def vcr_cassette_dir() -> str:
    return CASSETTE_DIR


@pytest.fixture
def real_gateway(settings: Any) -> None:
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": "django_escrow_connect.gateway.stripe_gateway.StripeGateway",
        "STRIPE_SECRET_KEY": api_key(),
        "STRIPE_MAX_NETWORK_RETRIES": 0,
        "PAYMENT_TERMS": "tests.payments.test_stripe_cassettes.fixed_terms",
    }


def strategy_setting(settings: Any, strategy: str) -> None:
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "ESCROW_STRATEGY": strategy}


class Lifecycle:
    def __init__(self, capture: Any) -> None:
        self.capture = capture
        self.customer = factories.make_user("customer")
        self.doer = factories.make_user("doer")
        factories.make_account(owner_user=self.doer, stripe_account_id=ACCOUNT)
        self.task = factories.make_task(self.customer, payee_user=self.doer, amount=10_000)

    def post(self, user: Any, url: str, data: Any = None) -> Any:
        client = APIClient()
        client.force_authenticate(user)
        with self.capture(execute=True):
            return client.post(url, data or {}, format="json")

    def reconcile(self, payment_id: str) -> str:
        out = StringIO()
        with self.capture(execute=True):
            call_command("escrow_reconcile", "--payment", payment_id, stdout=out)
        return out.getvalue()


def payment(payment_id: str) -> Any:
    return swappable.load("EscrowPayment").objects.get(pk=payment_id)


@pytest.mark.vcr
@pytest.mark.default_cassette("lifecycle_separate_charges_and_transfers")
def test_separate_charges_and_transfers(
    db, settings, real_gateway, vcr, django_capture_on_commit_callbacks
):
    strategy_setting(settings, SEPARATE_CHARGES_AND_TRANSFERS)
    life = Lifecycle(django_capture_on_commit_callbacks)

    created = life.post(life.customer, "/escrow/payments/create/", {"task_id": str(life.task.pk)})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["client_secret"] == "pi_3RaB4cPk9xR2vLq70kTq2Wd1_secret_Hq3Zr8LmVb6XnT1pKc4YsW9Ed"
    payment_id = body["payment_id"]
    assert payment(payment_id).stripe_payment_intent_id == "pi_3RaB4cPk9xR2vLq70kTq2Wd1"

    # The customer paid in the browser; the PaymentIntent says so.
    assert f"{payment_id}: awaiting_payment -> held" in life.reconcile(payment_id)
    assert payment(payment_id).stripe_charge_id == "ch_3RaB4cPk9xR2vLq70w8Xn5Pj"

    released = life.post(life.customer, f"/escrow/payments/confirm/{payment_id}/")
    assert released.status_code == 200, released.content
    assert released.json()["status"] == "released"
    (transfer,) = released.json()["transfers"]
    assert transfer["stripe_transfer_id"] == "tr_1RaC7dPk9xR2vLq7Kp4Wm2Tz"
    assert transfer["amount"] == 9_000

    refunded = life.post(
        life.doer,
        f"/escrow/payments/{payment_id}/refund/",
        {"amount": 5_000, "reason": "requested_by_customer"},
    )
    assert refunded.status_code == 200, refunded.content
    done = payment(payment_id)
    assert done.status == "partially_refunded"
    assert (done.amount_refunded, done.amount_reversed) == (5_000, 4_500)
    assert done.refunds.get().stripe_refund_id == "re_3RaB4cPk9xR2vLq70Zc7Rt2M"
    assert done.transfer_reversals.get().stripe_reversal_id == "trr_1RaD2ePk9xR2vLq7Vn3Qx8Lb"

    assert vcr.play_count == 5
    assert vcr.all_played


@pytest.mark.vcr
@pytest.mark.default_cassette("lifecycle_manual_capture")
def test_manual_capture(db, settings, real_gateway, vcr, django_capture_on_commit_callbacks):
    strategy_setting(settings, MANUAL_CAPTURE)
    life = Lifecycle(django_capture_on_commit_callbacks)

    created = life.post(life.customer, "/escrow/payments/create/", {"task_id": str(life.task.pk)})
    assert created.status_code == 201, created.content
    payment_id = created.json()["payment_id"]

    assert f"{payment_id}: awaiting_payment -> held" in life.reconcile(payment_id)
    held = payment(payment_id)
    # capture_before from the expanded charge: Stripe's deadline, not a guess.
    assert held.capture_before == datetime(2026, 11, 10, 9, 24, 5, tzinfo=dt_timezone.utc)

    released = life.post(life.customer, f"/escrow/payments/confirm/{payment_id}/")
    assert released.status_code == 200, released.content
    assert released.json()["status"] == "released"
    assert released.json()["amount_transferred"] == 9_000

    refunded = life.post(life.doer, f"/escrow/payments/{payment_id}/refund/", {"amount": 4_000})
    assert refunded.status_code == 200, refunded.content
    assert payment(payment_id).status == "partially_refunded"
    assert payment(payment_id).refunds.get().stripe_refund_id == "re_3RbE5fPk9xR2vLq71Ld8Vu3N"

    assert vcr.play_count == 4
    assert vcr.all_played


# --- answers the gateway cannot read --------------------------------------------------
# Stripe's answer, garbled on its way in (Stripe itself cannot be made to send
# it): replay only.

#: The lifecycle's PaymentIntent and Transfer in another shape (fields
#: missing, the amount a string), and a proxy's page where Stripe's JSON should be.
CHANGED_SHAPE = (
    b'{"id": "pi_3RaB4cPk9xR2vLq70kTq2Wd1", "object": "payment_intent", "amount": "10000"}'
)
HTML_PAGE = b"<html><body>502 Bad Gateway</body></html>"
#: An error answer whose ``error`` stripe-python cannot read.
MALFORMED_ERROR = b'{"error": null}'
TRANSFER_CHANGED_SHAPE = (
    b'{"id": "tr_1RaC7dPk9xR2vLq7Kp4Wm2Tz", "object": "transfer", "amount": "9000"}'
)


def operations_of(payment_id: str) -> list[tuple[str, str, str]]:
    return [
        (op.kind, op.status, op.idempotency_key)
        for op in swappable.load("MoneyOperation").objects.filter(payment_id=payment_id)
    ]


@pytest.mark.vcr(
    os.path.join(os.path.dirname(CASSETTE_DIR), "gateway", "accounts_retrieve.yaml"),
    record_mode="none",
)
def test_an_unreadable_account_answer_is_a_503_and_writes_nothing(
    db, settings, real_gateway, vcr, django_capture_on_commit_callbacks
):
    garble(vcr, 0, b'{"status": "ok", "message": "Service is running"}')
    life = Lifecycle(django_capture_on_commit_callbacks)
    account = swappable.load("ConnectedAccount").objects.get(owner_user=life.doer)
    client = APIClient()
    client.force_authenticate(life.doer)

    response = client.get("/escrow/stripe/account-status/", {"refresh": "1"})

    # What a Stripe outage answers: retry later, not a 500.
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "provider_unavailable"
    after = swappable.load("ConnectedAccount").objects.get(pk=account.pk)
    assert model_to_dict(after) == model_to_dict(account)
    assert after.updated_at == account.updated_at
    assert vcr.all_played


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("payment_intent_sent_twice")
@pytest.mark.parametrize(
    "unreadable",
    [
        lambda vcr: garble(vcr, 0, CHANGED_SHAPE),
        lambda vcr: garble(vcr, 0, HTML_PAGE, "text/html"),
        # stripe-python itself fails on an ``error`` that is no object.
        lambda vcr: error_answer(vcr, 0, 400, MALFORMED_ERROR),
    ],
    ids=["changed_shape", "html_page", "malformed_error"],
)
def test_an_unreadable_money_answer_is_unknown_and_the_same_key_converges(
    db, settings, real_gateway, vcr, django_capture_on_commit_callbacks, unreadable
):
    unreadable(vcr)
    strategy_setting(settings, SEPARATE_CHARGES_AND_TRANSFERS)
    life = Lifecycle(django_capture_on_commit_callbacks)
    pay = {"task_id": str(life.task.pk)}

    first = life.post(life.customer, "/escrow/payments/create/", pay)

    # Stripe made the PaymentIntent: as after a timeout, the outcome is
    # unknown and the operation keeps its key (never "refused").
    assert first.status_code == 503, first.content
    assert first.json()["error"]["code"] == "operation_pending"
    (created,) = swappable.load("EscrowPayment").objects.all()
    payment_id = str(created.pk)
    ((kind, status, key),) = operations_of(payment_id)
    assert (kind, status) == ("payment_intent", "unknown")
    assert (created.status, created.stripe_payment_intent_id) == ("awaiting_payment", "")

    # Paying again sends the same request with the same key (the cassette
    # demands it): Stripe replays its one PaymentIntent.
    again = life.post(life.customer, "/escrow/payments/create/", pay)

    assert again.status_code == 201, again.content
    assert again.json()["payment_id"] == payment_id
    assert again.json()["client_secret"].startswith("pi_3RaB4cPk9xR2vLq70kTq2Wd1_secret_")
    assert payment(payment_id).stripe_payment_intent_id == "pi_3RaB4cPk9xR2vLq70kTq2Wd1"
    assert operations_of(payment_id) == [("payment_intent", "succeeded", key)]
    assert vcr.play_count == 3
    assert vcr.all_played


@pytest.mark.vcr(os.path.join(CASSETTE_DIR, "lifecycle_manual_capture.yaml"), record_mode="none")
@pytest.mark.default_cassette("lifecycle_separate_charges_and_transfers")
def test_reconcile_reports_an_unreadable_lookup_and_goes_on_with_the_others(
    db, settings, real_gateway, vcr, django_capture_on_commit_callbacks
):
    life = Lifecycle(django_capture_on_commit_callbacks)
    strategy_setting(settings, SEPARATE_CHARGES_AND_TRANSFERS)
    garbled = life.post(life.customer, "/escrow/payments/create/", {"task_id": str(life.task.pk)})
    garbled_id = garbled.json()["payment_id"]
    strategy_setting(settings, MANUAL_CAPTURE)
    task = factories.make_task(life.customer, payee_user=life.doer, amount=10_000)
    readable = life.post(life.customer, "/escrow/payments/create/", {"task_id": str(task.pk)})
    readable_id = readable.json()["payment_id"]
    (lookup,) = [
        i
        for i, (request, _) in enumerate(vcr.data)
        if request.method == "GET" and request.path.endswith("/pi_3RaB4cPk9xR2vLq70kTq2Wd1")
    ]
    garble(vcr, lookup, HTML_PAGE, "text/html")
    out, err = StringIO(), StringIO()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError):
        call_command("escrow_reconcile", "--older-than", "0", stdout=out, stderr=err)

    # The unreadable lookup is that payment's failure (exit status 1, as when
    # Stripe is down); the next payment is still brought up to date.
    assert f"{garbled_id}: look up the PaymentIntent failed (Stripe's answer could not be read" in (
        err.getvalue()
    )
    assert payment(garbled_id).status == "awaiting_payment"
    assert f"{readable_id}: awaiting_payment -> held" in out.getvalue()
    assert payment(readable_id).status == "held"
    assert vcr.play_count == 4


def transfers_of(payment_id: str) -> list[tuple[str, str]]:
    return [(t.status, t.stripe_transfer_id) for t in payment(payment_id).transfers.all()]


@pytest.mark.vcr(record_mode="none")
@pytest.mark.default_cassette("transfer_sent_twice")
@pytest.mark.parametrize(
    "unreadable",
    [
        lambda vcr: garble(vcr, 2, TRANSFER_CHANGED_SHAPE),
        lambda vcr: garble(vcr, 2, HTML_PAGE, "text/html"),
        # A WAF's refusal may come after Stripe acted: no refusal of Stripe's.
        lambda vcr: answer_from_a_proxy(vcr, 2, 403, b"<html><body>Forbidden</body></html>"),
        lambda vcr: error_answer(vcr, 2, 500, MALFORMED_ERROR),
    ],
    ids=["changed_shape", "html_page", "proxy_403", "malformed_error"],
)
def test_an_unreadable_transfer_answer_is_a_timeout_and_the_retry_makes_one_transfer(
    db, settings, real_gateway, vcr, django_capture_on_commit_callbacks, unreadable
):
    unreadable(vcr)
    strategy_setting(settings, SEPARATE_CHARGES_AND_TRANSFERS)
    life = Lifecycle(django_capture_on_commit_callbacks)
    created = life.post(life.customer, "/escrow/payments/create/", {"task_id": str(life.task.pk)})
    payment_id = created.json()["payment_id"]
    assert f"{payment_id}: awaiting_payment -> held" in life.reconcile(payment_id)
    confirm = f"/escrow/payments/confirm/{payment_id}/"

    first = life.post(life.customer, confirm)

    # Stripe made the transfer: the client hears what a timeout answers, and
    # the release waits under its key (a refusal would give it a new one).
    assert first.status_code == 503, first.content
    assert first.json()["error"]["code"] == "operation_pending"
    assert payment(payment_id).status == "releasing"
    assert transfers_of(payment_id) == [("pending", "")]
    (key,) = [k for kind, status, k in operations_of(payment_id) if kind == "transfer"]
    assert ("transfer", "unknown", key) in operations_of(payment_id)

    # Confirming again sends the same request with the same key (the
    # cassette demands it): Stripe replays its one transfer.
    again = life.post(life.customer, confirm)

    assert again.status_code == 200, again.content
    assert again.json()["status"] == "released"
    (transfer,) = again.json()["transfers"]
    assert (transfer["stripe_transfer_id"], transfer["amount"]) == (
        "tr_1RaC7dPk9xR2vLq7Kp4Wm2Tz",
        9_000,
    )
    assert ("transfer", "succeeded", key) in operations_of(payment_id)
    assert vcr.play_count == 4
    assert vcr.all_played
