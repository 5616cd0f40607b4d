"""Business signals go out after commit only, with their documented
arguments, and a failing receiver never breaks the payment operation."""

from __future__ import annotations

import pytest

from django_escrow_connect import signals

from .conftest import configure


class Recorder:
    def __init__(self):
        self.received = []

    def __call__(self, sender, signal, **kwargs):
        self.received.append((signal, kwargs))

    def names(self):
        by_signal = {value: name for name, value in signals.ALL_SIGNALS.items()}
        return [by_signal[signal] for signal, _ in self.received]


@pytest.fixture
def recorder():
    recorder = Recorder()
    for signal in signals.ALL_SIGNALS.values():
        signal.connect(recorder, weak=False)
    yield recorder
    for signal in signals.ALL_SIGNALS.values():
        signal.disconnect(recorder)


def test_signals_are_sent_on_commit_only(
    market, sim_stripe, recorder, django_capture_on_commit_callbacks
):
    payment = market.held_payment()
    recorder.received.clear()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = market.client(market.customer).post(
            f"/escrow/payments/confirm/{payment.pk}/", {}, format="json"
        )
    assert response.status_code == 200
    assert recorder.received == []  # the transaction has not committed
    for callback in callbacks:
        callback()
    assert recorder.names() == ["payment_released"]
    (_, kwargs) = recorder.received[0]
    assert kwargs["payment"].pk == payment.pk
    assert kwargs["payment"].status == "released"
    assert kwargs["transfer"] is None or kwargs["transfer"].payment_id == payment.pk


def test_a_rolled_back_operation_sends_nothing(market, sim_stripe, recorder):
    payment = market.held_payment()
    recorder.received.clear()
    # The account cannot receive transfers: the release is refused and rolled back.
    market.doer_account.capabilities = {"transfers": "inactive"}
    market.doer_account.save()
    response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "account_not_ready"
    assert recorder.received == []


def test_a_refund_stripe_refuses_sends_refund_failed(market, sim_stripe, settings, recorder):
    """After a release the reversal stays made: the customer is owed money now
    on the platform's balance, and only the requester saw the 409."""
    from django_escrow_connect.exceptions import InvalidRequest

    configure(settings, ESCROW_STRATEGY="separate_charges_and_transfers")
    payment = market.released_payment()
    recorder.received.clear()
    sim_stripe.fail_next(
        "create_refund",
        InvalidRequest(
            "Charge expired for refund.", code="charge_expired_for_refund", http_status=400
        ),
    )
    response = market.post(market.doer, "payment-refund", {}, payment_id=payment.pk)
    assert response.status_code == 409
    assert recorder.names() == ["refund_failed"]
    (_, kwargs) = recorder.received[0]
    assert kwargs["payment"].pk == payment.pk
    assert kwargs["payment"].amount_reversed == 9_000
    assert (kwargs["refund"].status, kwargs["refund"].failure_reason) == (
        "failed",
        "charge_expired_for_refund",
    )


def test_the_lifecycle_sends_each_signal_with_its_arguments(market, sim_stripe, settings, recorder):
    configure(settings, ESCROW_STRATEGY="separate_charges_and_transfers")
    body = market.create(market.task()).json()
    market.pay(body["payment_id"], card="declined")
    market.post(market.customer, "payment-retry", payment_id=body["payment_id"])
    market.pay(body["payment_id"])
    market.post(market.doer, "payment-refund", {"amount": 1_000}, payment_id=body["payment_id"])
    market.post(market.customer, "payment-confirm", payment_id=body["payment_id"])
    assert recorder.names() == [
        "payment_required",
        "payment_failed",
        "payment_held",
        "payment_refunded",
        "payment_released",
    ]
    sent = dict(zip(recorder.names(), (kw for _, kw in recorder.received), strict=True))
    assert sent["payment_required"]["client_secret"] == body["client_secret"]
    assert sent["payment_failed"]["incident"].kind == "payment_failed"
    assert sent["payment_refunded"]["refund"].amount == 1_000
    assert sent["payment_released"]["transfer"].amount == 8_100
    assert all(kwargs["payment"].pk is not None for kwargs in sent.values())


def test_a_failing_receiver_does_not_break_the_operation(market, sim_stripe, caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    payment = market.held_payment()
    signals.payment_released.connect(broken, weak=False)
    try:
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    finally:
        signals.payment_released.disconnect(broken)
    assert response.status_code == 200
    assert market.payment(payment.pk).status == "released"
    assert "escrow signal receiver failed" in caplog.text


def test_docs_list_every_signal():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "signals.md").read_text()
    missing = [name for name in signals.ALL_SIGNALS if f"| `{name}` |" not in doc]
    assert not missing, f"docs/signals.md does not document {missing}"
