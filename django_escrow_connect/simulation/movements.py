"""What happens to Stripe's objects and balances when money moves.

Shared by the gateway methods and the simulated actions; each runs inside a
request of the store (its lock held, its events collected).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .cards import (
    _SCENARIO_BY_NUMBER,
)
from .objects import (
    JSON,
    _application_fee_object,
    _balance_transaction,
    _capability_object,
    _charge_object,
    _list,
    new_id,
)
from .rules import (
    AUTHORIZATION_VALIDITY_SECONDS,
    DISPUTE_EVIDENCE_SECONDS,
    DISPUTE_FEE,
)

if TYPE_CHECKING:
    from .store import SimulatedStripe


def authorize(
    s: SimulatedStripe, intent: JSON, number: str, *, authenticated: bool = False
) -> None:
    """The card was authorised: a charge exists; capture now unless manual."""
    manual = intent["capture_method"] == "manual"
    charge = _charge_object(intent, number, s.now(), authenticated=authenticated)
    if manual:
        charge["payment_method_details"]["card"]["capture_before"] = (
            s.now() + AUTHORIZATION_VALIDITY_SECONDS
        )
    s.charges[charge["id"]] = charge
    intent["latest_charge"] = charge["id"]
    intent["payment_method"] = charge["payment_method"]
    if intent.get("setup_future_usage") and intent.get("customer"):
        save_payment_method(s, charge["payment_method"], intent["customer"], number)
    scenario = _SCENARIO_BY_NUMBER.get(number)
    if scenario == "disputed":
        s._dispute_on_capture.add(charge["id"])
    if scenario in ("refund_pending", "refund_fails"):
        s._async_refunds[charge["id"]] = scenario
    if manual:
        intent.update(status="requires_capture", amount_capturable=intent["amount"])
        s.emit("charge.succeeded", charge)
        s.emit("payment_intent.amount_capturable_updated", intent)
    else:
        capture(s, intent, charge, intent["amount"], manual=False)


def save_payment_method(s: SimulatedStripe, method_id: str, customer: str, number: str) -> JSON:
    """Stripe attaches the card of a PaymentIntent with ``setup_future_usage`` to its customer."""
    method: JSON = {
        "id": method_id,
        "object": "payment_method",
        "type": "card",
        "customer": customer,
        "card": {"brand": "visa", "last4": number[-4:], "exp_month": 12, "exp_year": 2034},
        "created": s.now(),
        "livemode": False,
        "metadata": {},
    }
    s.payment_methods[method_id] = method
    s._payment_method_cards[method_id] = number
    return method


def capture(s: SimulatedStripe, intent: JSON, charge: JSON, amount: int, *, manual: bool) -> None:
    charge.update(
        captured=True,
        amount_captured=amount,
        balance_transaction=new_id("txn"),
        application_fee_amount=intent["application_fee_amount"],
    )
    s._add_pending(charge, amount)
    intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
    transfer: JSON | None = None
    if intent["transfer_data"] is not None:
        # Destination charge: Stripe moves the whole amount to the account
        # and takes the application fee back from it.
        fee = intent["application_fee_amount"] or 0
        destination = intent["transfer_data"]["destination"]
        transfer = new_transfer(
            s,
            amount=amount,
            currency=charge["currency"],
            destination=destination,
            source_transaction=charge["id"],
            transfer_group=intent["transfer_group"],
            metadata={},
        )
        charge["transfer"] = transfer["id"]
        if fee:
            fee_object = _application_fee_object(charge, destination, fee, s.now())
            s.application_fees[fee_object["id"]] = fee_object
            charge["application_fee"] = fee_object["id"]
            s.credit(destination, charge["currency"], -fee)
            s._add_pending(charge, fee)
    if manual:
        s.emit("charge.captured", charge)
    else:
        s.emit("charge.succeeded", charge)
    s.emit("payment_intent.succeeded", intent)
    if transfer is not None:
        s.emit("transfer.created", transfer)
    if charge.get("application_fee"):
        s.emit("application_fee.created", s.application_fees[charge["application_fee"]])
    if charge["id"] in s._dispute_on_capture:
        s._dispute_on_capture.discard(charge["id"])
        dispute_charge(s, charge, "fraudulent")


def decline(s: SimulatedStripe, intent: JSON, number: str, decline_code: str, message: str) -> None:
    charge = _charge_object(intent, number, s.now())
    charge.update(
        status="failed",
        paid=False,
        captured=False,
        amount_captured=0,
        balance_transaction=None,
        failure_code="card_declined",
        failure_message=message,
        outcome={
            "network_status": "declined_by_network",
            "reason": decline_code,
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        },
    )
    s.charges[charge["id"]] = charge
    intent.update(
        status="requires_payment_method",
        latest_charge=charge["id"],
        payment_method=None,
        last_payment_error={
            "charge": charge["id"],
            "code": "card_declined",
            "decline_code": decline_code,
            "doc_url": "https://docs.stripe.com/error-codes/card-declined",
            "message": message,
            "param": None,
            "type": "card_error",
        },
    )
    s.emit("charge.failed", charge)
    s.emit("payment_intent.payment_failed", intent)


def new_transfer(
    s: SimulatedStripe,
    *,
    amount: int,
    currency: str,
    destination: str,
    source_transaction: str | None,
    transfer_group: str | None,
    metadata: Mapping[str, str],
) -> JSON:
    now = s.now()
    transfer_id = new_id("tr")
    payment_id = new_id("py")
    transfer: JSON = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "balance_transaction": new_id("txn"),
        "created": now,
        "currency": currency,
        "description": None,
        "destination": destination,
        "destination_payment": payment_id,
        "livemode": False,
        "metadata": dict(metadata),
        "reversals": _list([], f"/v1/transfers/{transfer_id}/reversals"),
        "reversed": False,
        "source_transaction": source_transaction,
        "source_type": "card",
        "transfer_group": transfer_group,
    }
    s.transfers[transfer_id] = transfer
    # The payment the connected account receives (a charge on its account).
    s.charges[payment_id] = {
        "id": payment_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "balance_transaction": new_id("txn"),
        "captured": True,
        "created": now,
        "currency": currency,
        "disputed": False,
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": None,
        "payment_method_details": {"stripe_account": {}, "type": "stripe_account"},
        "refunded": False,
        "source_transfer": transfer_id,
        "status": "succeeded",
        "transfer_group": transfer_group,
    }
    s._owners[payment_id] = destination
    s.credit(destination, currency, amount)
    s._debit_platform(currency, amount, charge=source_transaction)
    return transfer


def source_available(s: SimulatedStripe, charge: JSON) -> int:
    """What a charge can still fund: captured, less refunds and net transfers from it."""
    transferred = sum(
        t["amount"] - t["amount_reversed"]
        for t in s.transfers.values()
        if t["source_transaction"] == charge["id"]
    )
    return int(charge["amount_captured"] - charge["amount_refunded"] - transferred)


def record_reversal(
    s: SimulatedStripe,
    transfer: JSON,
    amount: int,
    metadata: Mapping[str, str],
    *,
    source_refund: str | None,
    reversal_id: str | None = None,
) -> JSON:
    reversal: JSON = {
        "id": reversal_id or new_id("trr"),
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "created": s.now(),
        "currency": transfer["currency"],
        "destination_payment_refund": new_id("pyr"),
        "livemode": False,
        "metadata": dict(metadata),
        "source_refund": source_refund,
        "transfer": transfer["id"],
    }
    s.reversals[reversal["id"]] = reversal
    transfer["amount_reversed"] += amount
    transfer["reversed"] = transfer["amount_reversed"] >= transfer["amount"]
    reversals = transfer["reversals"]
    reversals["data"].insert(0, copy.deepcopy(reversal))
    reversals["total_count"] = len(reversals["data"])
    payment = s.charges.get(transfer["destination_payment"])
    if payment is not None:
        payment["amount_refunded"] += amount
        payment["refunded"] = payment["amount_refunded"] >= payment["amount"]
    s.credit(transfer["destination"], transfer["currency"], -amount)
    s._credit_available(transfer["currency"], amount)
    return reversal


def withdraw_disputed(s: SimulatedStripe, dispute: JSON) -> None:
    """A chargeback takes the disputed amount and the dispute fee from the platform."""
    dispute["balance_transactions"].append(
        _balance_transaction(
            amount=-dispute["amount"],
            fee=DISPUTE_FEE,
            currency=dispute["currency"],
            source=dispute["id"],
            description=f"Chargeback withdrawal for {dispute['charge']}",
            now=s.now(),
        )
    )
    s._credit_available(dispute["currency"], -(dispute["amount"] + DISPUTE_FEE))


def dispute_charge(
    s: SimulatedStripe,
    charge: JSON,
    reason: str,
    *,
    inquiry: bool = False,
    amount: int | None = None,
) -> JSON:
    now = s.now()
    dispute_id = new_id("dp")
    if amount is None:
        amount = charge["amount_captured"] - charge["amount_refunded"]
    dispute: JSON = {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "evidence": {
            "customer_communication": None,
            "product_description": None,
            "receipt": None,
            "service_date": None,
            "service_documentation": None,
            "uncategorized_text": None,
        },
        "evidence_details": {
            "due_by": now + DISPUTE_EVIDENCE_SECONDS,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": inquiry,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": {
            "card": {
                "brand": "visa",
                "case_type": "inquiry" if inquiry else "chargeback",
                "network_reason_code": "10.4",
            },
            "type": "card",
        },
        "reason": reason,
        "status": "warning_needs_response" if inquiry else "needs_response",
    }
    s.disputes[dispute_id] = dispute
    charge["disputed"] = True
    if not inquiry:
        withdraw_disputed(s, dispute)
    s.emit("charge.dispute.created", dispute, automatic=True)
    if not inquiry:
        s.emit("charge.dispute.funds_withdrawn", dispute, automatic=True)
    return dispute


def emit_account_changes(
    s: SimulatedStripe, account: JSON, before: JSON, capabilities: Sequence[str]
) -> None:
    previous = {key: value for key, value in before.items() if account.get(key) != value}
    if not previous:
        return
    account_id = account["id"]
    if account_id in s.v2_accounts:
        # Accounts v2 changes are announced only as thin events.
        if "requirements" in previous or "details_submitted" in previous:
            s.emit_thin("v2.core.account[requirements].updated", account_id)
        if capabilities:
            s.emit_thin(
                "v2.core.account[configuration.recipient].capability_status_updated", account_id
            )
        return
    s.emit("account.updated", account, account=account_id, previous_attributes=previous)
    for name in capabilities:
        s.emit(
            "capability.updated",
            _capability_object(account, name),
            account=account_id,
            previous_attributes={"status": before["capabilities"].get(name)},
        )
