"""The plain gateway types parse Stripe's JSON (e.g. a webhook's data.object)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from django_escrow_connect.gateway import types
from django_escrow_connect.gateway.types import (
    AccountSnapshot,
    ChargeSnapshot,
    DisputeSnapshot,
    PaymentIntentSnapshot,
    PayoutSnapshot,
    RefundSnapshot,
    TransferReversalSnapshot,
    TransferSnapshot,
)


def utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def test_the_types_module_does_not_import_stripe():
    source = Path(types.__file__).read_text(encoding="utf-8")
    assert "import stripe" not in source


def test_snapshots_are_frozen():
    payout = PayoutSnapshot(id="po_1", amount=100, currency="usd", status="paid")
    with pytest.raises(dataclasses.FrozenInstanceError):
        payout.status = "failed"  # type: ignore[misc]


def test_account_requirements_and_capabilities():
    account = AccountSnapshot.from_dict(
        {
            "id": "acct_1QzR8tQm5HwJ3uVe",
            "object": "account",
            "business_type": None,
            "capabilities": {"transfers": "pending", "card_payments": "active"},
            "charges_enabled": True,
            "country": "DE",
            "default_currency": "eur",
            "details_submitted": True,
            "email": None,
            "metadata": {"owner_id": 7},
            "payouts_enabled": False,
            "requirements": {
                "currently_due": ["external_account"],
                "disabled_reason": "requirements.pending_verification",
                "eventually_due": ["external_account", "individual.id_number"],
                "past_due": ["external_account"],
            },
        }
    )
    assert account.capabilities == {"transfers": "pending", "card_payments": "active"}
    assert not account.transfers_active
    assert account.currently_due == ("external_account",)
    assert account.past_due == ("external_account",)
    assert account.eventually_due == ("external_account", "individual.id_number")
    assert account.disabled_reason == "requirements.pending_verification"
    assert account.metadata == {"owner_id": "7"}
    assert account.business_type is None


def test_an_account_without_requirements_has_nothing_due():
    account = AccountSnapshot.from_dict({"id": "acct_1", "object": "account", "requirements": None})
    assert account.currently_due == account.eventually_due == account.past_due == ()
    assert account.capabilities == {}


def test_payment_intent_reduces_an_expanded_charge_to_its_id_and_reads_the_deadline():
    intent = PaymentIntentSnapshot.from_dict(
        {
            "id": "pi_1",
            "object": "payment_intent",
            "amount": 20000,
            "amount_capturable": 20000,
            "amount_received": 0,
            "capture_method": "manual",
            "currency": "usd",
            "latest_charge": {
                "id": "ch_1",
                "object": "charge",
                "payment_method_details": {"card": {"capture_before": 1794215645}, "type": "card"},
            },
            "status": "requires_capture",
        }
    )
    assert intent.latest_charge == "ch_1"
    assert intent.capture_before == utc(1794215645)
    assert intent.capture_before.tzinfo is timezone.utc


def test_payment_intent_with_a_charge_id_has_no_known_deadline():
    intent = PaymentIntentSnapshot.from_dict(
        {
            "id": "pi_1",
            "amount": 1,
            "currency": "usd",
            "status": "succeeded",
            "latest_charge": "ch_1",
        }
    )
    assert intent.latest_charge == "ch_1"
    assert intent.capture_before is None


def test_payment_intent_keeps_the_last_payment_error_fields():
    intent = PaymentIntentSnapshot.from_dict(
        {
            "id": "pi_1",
            "amount": 1,
            "currency": "usd",
            "status": "requires_payment_method",
            "last_payment_error": {
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                "message": "Your card has insufficient funds.",
                "payment_method": {"id": "pm_1", "object": "payment_method"},
                "type": "card_error",
            },
        }
    )
    assert intent.last_payment_error == {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
        "type": "card_error",
    }


def test_charge_with_null_balance_transaction_and_a_capture_deadline():
    charge = ChargeSnapshot.from_dict(
        {
            "id": "ch_1",
            "object": "charge",
            "amount": 5000,
            "amount_captured": 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "currency": "usd",
            "disputed": False,
            "payment_intent": {"id": "pi_1", "object": "payment_intent"},
            "payment_method_details": {"card": {"capture_before": 1794215645}, "type": "card"},
            "refunded": False,
        }
    )
    assert charge.balance_transaction is None
    assert charge.payment_intent == "pi_1"
    assert charge.capture_before == utc(1794215645)


def test_destination_charge_fee_and_transfer():
    charge = ChargeSnapshot.from_dict(
        {
            "id": "ch_2",
            "object": "charge",
            "amount": 10000,
            "amount_captured": 10000,
            "amount_refunded": 4000,
            "application_fee": {"id": "fee_1", "object": "application_fee", "amount": 1000},
            "application_fee_amount": 1000,
            "currency": "usd",
            "payment_intent": "pi_2",
            "transfer": "tr_1",
            "transfer_group": "escrow-1",
        }
    )
    assert (charge.application_fee_amount, charge.application_fee) == (1000, "fee_1")
    assert (charge.transfer, charge.transfer_group) == ("tr_1", "escrow-1")
    platform = ChargeSnapshot.from_dict(
        {
            "id": "ch_3",
            "object": "charge",
            "amount": 500,
            "currency": "usd",
            "application_fee": None,
            "application_fee_amount": None,
            "transfer": None,
        }
    )
    assert platform.application_fee_amount is None
    assert platform.application_fee is None
    assert platform.transfer is None


def test_transfer_reduces_expanded_destination_and_source():
    transfer = TransferSnapshot.from_dict(
        {
            "id": "tr_1",
            "object": "transfer",
            "amount": 100,
            "amount_reversed": 100,
            "currency": "usd",
            "destination": {"id": "acct_1", "object": "account"},
            "source_transaction": {"id": "ch_1", "object": "charge"},
            "reversed": True,
            "transfer_group": None,
        }
    )
    assert (transfer.destination, transfer.source_transaction) == ("acct_1", "ch_1")
    assert transfer.reversed


def test_refund_without_failure_reason():
    refund = RefundSnapshot.from_dict(
        {"id": "re_1", "object": "refund", "amount": 1, "currency": "usd", "status": "pending"}
    )
    assert refund.failure_reason is None
    assert refund.metadata == {}


def test_reversal_dispute_and_payout():
    reversal = TransferReversalSnapshot.from_dict(
        {
            "id": "trr_1",
            "object": "transfer_reversal",
            "amount": 5,
            "currency": "usd",
            "transfer": "tr_1",
        }
    )
    dispute = DisputeSnapshot.from_dict(
        {
            "id": "dp_1",
            "object": "dispute",
            "amount": 5,
            "charge": "ch_1",
            "currency": "usd",
            "evidence_details": {"due_by": None},
            "payment_intent": None,
            "reason": "fraudulent",
            "status": "lost",
        }
    )
    payout = PayoutSnapshot.from_dict(
        {
            "id": "po_1",
            "object": "payout",
            "amount": 9250,
            "currency": "usd",
            "failure_code": "account_closed",
            "failure_message": "The bank account has been closed.",
            "status": "failed",
        }
    )
    assert reversal.transfer == "tr_1"
    assert dispute.evidence_due_by is None
    assert dispute.payment_intent is None
    assert payout.failure_code == "account_closed"


@pytest.mark.parametrize(
    ("cls", "data", "match"),
    [
        (TransferSnapshot, {"id": "ch_1", "object": "charge", "currency": "usd"}, "transfer"),
        (RefundSnapshot, {"object": "refund", "amount": 1, "currency": "usd"}, "id"),
        (
            PayoutSnapshot,
            {"id": "po_1", "amount": "100", "currency": "usd", "status": "paid"},
            "integer",
        ),
        (
            DisputeSnapshot,
            {
                "id": "dp_1",
                "amount": 1,
                "currency": "usd",
                "status": "lost",
                "evidence_details": {"due_by": "soon"},
            },
            "timestamp",
        ),
    ],
)
def test_malformed_objects_raise_value_error(cls, data, match):
    with pytest.raises(ValueError, match=match):
        cls.from_dict(data)


#: The smallest object each snapshot with a currency reads (its other fields optional).
MINIMAL_WITH_CURRENCY = {
    PaymentIntentSnapshot: {"id": "pi_1", "object": "payment_intent", "status": "succeeded"},
    ChargeSnapshot: {"id": "ch_1", "object": "charge"},
    TransferSnapshot: {"id": "tr_1", "object": "transfer"},
    TransferReversalSnapshot: {"id": "trr_1", "object": "transfer_reversal", "transfer": "tr_1"},
    RefundSnapshot: {"id": "re_1", "object": "refund"},
    DisputeSnapshot: {"id": "dp_1", "object": "dispute", "status": "lost"},
    PayoutSnapshot: {"id": "po_1", "object": "payout", "status": "paid"},
}


@pytest.mark.parametrize("cls", list(MINIMAL_WITH_CURRENCY), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(("sent", "read"), [("usd", "usd"), ("USD", "usd"), ("jpy", "jpy")])
def test_a_currency_is_read_as_three_lower_case_letters(cls, sent, read):
    assert cls.from_dict({**MINIMAL_WITH_CURRENCY[cls], "currency": sent}).currency == read


@pytest.mark.parametrize("cls", list(MINIMAL_WITH_CURRENCY), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("sent", ["usdx", "us", "", "u$d", None, 840])
def test_a_currency_that_is_not_three_letters_is_unreadable(cls, sent):
    """No currency column holds it (a check constraint, varchar(3)): the event
    is recorded failed and answered 200, not a 500 on every delivery."""
    with pytest.raises(ValueError, match="currency"):
        cls.from_dict({**MINIMAL_WITH_CURRENCY[cls], "currency": sent})
