"""Business signals go out after commit only, with their documented
arguments, and a failing receiver never breaks the payment operation."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]
#: The main argument of each table of docs/signals.md, said once above it.
MAIN_ARGUMENTS = {"payment", "account", "event"}


def documented_signals() -> dict[str, str]:
    """``{signal: its row}`` of the tables of docs/signals.md."""
    doc = (ROOT / "docs" / "signals.md").read_text()
    return dict(re.findall(r"^\| `(\w+)` \|(.*)$", doc, flags=re.M))


def sent_arguments() -> dict[str, set[str]]:
    """``{signal: keyword arguments}`` of every ``notify()``/``deliver()`` in the package."""
    sent: dict[str, set[str]] = {}
    for path in (ROOT / "django_escrow_connect").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("notify", "deliver")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = {kw.arg for kw in node.keywords if kw.arg is not None}
                sent.setdefault(str(node.args[0].value), set()).update(names)
    return sent


def test_docs_list_exactly_the_signals_there_are() -> None:
    documented = documented_signals()
    assert sorted(documented) == sorted(signals.ALL_SIGNALS)
    # Every signal is sent somewhere (the scan sees the package's calls).
    assert sorted(sent_arguments()) == sorted(signals.ALL_SIGNALS)


def test_docs_name_every_argument_a_signal_is_sent_with() -> None:
    documented = documented_signals()
    undocumented = {
        (name, arg)
        for name, args in sent_arguments().items()
        for arg in args - MAIN_ARGUMENTS
        if f"`{arg}`" not in documented.get(name, "")
    }
    assert not undocumented, f"docs/signals.md does not name the arguments {sorted(undocumented)}"
