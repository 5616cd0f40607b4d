"""Transfers, reversals and refunds, as the PaymentGateway protocol asks Stripe for them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..exceptions import (
    BalanceInsufficient,
    InvalidRequest,
)
from ..gateway.arguments import require_amount as _require_amount
from ..gateway.arguments import require_id as _require_id
from ..gateway.types import (
    RefundReason,
    RefundSnapshot,
    TransferReversalSnapshot,
    TransferSnapshot,
)
from .movements import (
    new_transfer,
    record_reversal,
    source_available,
)
from .objects import (
    JSON,
    _newest_first,
    _proportion,
    _refund_application_fee,
    new_id,
)
from .rules import (
    _OPEN_INQUIRY_STATUSES,
    _REFUND_REASONS,
    _REFUNDABLE_DISPUTE_STATUSES,
    check_reversible,
    check_same_region,
    check_transfers_capability,
)

if TYPE_CHECKING:
    from .store import SimulatedStripe


class SimulatedTransfers:
    """The gateway's transfers, reversals and refunds."""

    store: SimulatedStripe

    def create_transfer(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str | None,
        transfer_group: str,
        metadata: Mapping[str, str],
    ) -> TransferSnapshot:
        """A transfer to a connected account.

        With ``source_transaction`` (a charge id, as the package always sends)
        it is funded by that charge, even while the charge's money is still
        pending. Without it (allowed here as on Stripe, though not by the
        gateway protocol), it needs the platform's *available* balance:
        ``balance_insufficient`` until card payments have settled
        (:meth:`SimulatedStripe.advance_time`, :meth:`SimulatedStripe.make_funds_available`).
        """
        _require_amount(amount, "amount")
        _require_id(destination, "destination")
        if source_transaction is not None:
            _require_id(source_transaction, "source_transaction")
        s = self.store
        currency = currency.lower()
        params = {
            "amount": amount,
            "currency": currency,
            "destination": destination,
            "source_transaction": source_transaction,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
        }

        def action() -> JSON:
            account = s.account(destination, "destination")
            check_transfers_capability(self.store, account, "destination")
            check_same_region(self.store, account, "destination", recipient_ok=True)
            # Funded from the platform's available balance, or from a charge.
            if source_transaction is None:
                available = s.platform_available.get(currency, 0)
                if amount > available:
                    raise s.error(
                        BalanceInsufficient,
                        "You have insufficient available funds in your Stripe account. Try "
                        "adding funds directly to your available balance by creating Charges "
                        "using the 4000000000000077 test card, or pass `source_transaction` to "
                        f"fund the transfer from a charge (available: {available} {currency}).",
                        code="balance_insufficient",
                        param="amount",
                    )
            else:
                charge = s.get(s.charges, "charge", source_transaction, "source_transaction")
                if charge["status"] != "succeeded" or not charge["captured"]:
                    raise s.error(
                        InvalidRequest,
                        f"The source_transaction {source_transaction} has not been captured; "
                        "only a captured charge can fund a transfer.",
                        param="source_transaction",
                    )
                if charge["currency"] != currency:
                    raise s.error(
                        InvalidRequest,
                        f"The currency of the transfer ({currency}) must match the currency "
                        f"of the source_transaction ({charge['currency']}).",
                        param="currency",
                    )
                available = source_available(self.store, charge)
                if amount > available:
                    raise s.error(
                        BalanceInsufficient,
                        f"Insufficient funds: the transfer amount ({amount}) exceeds what the "
                        f"source_transaction {source_transaction} can still cover ({available}).",
                        code="balance_insufficient",
                        param="amount",
                    )
            transfer = new_transfer(
                self.store,
                amount=amount,
                currency=currency,
                destination=destination,
                source_transaction=source_transaction,
                transfer_group=transfer_group or None,
                metadata=metadata,
            )
            s.emit("transfer.created", transfer)
            return transfer

        response = s.execute_idempotent("create_transfer", params, idempotency_key, action)
        return TransferSnapshot.from_dict(response)

    def retrieve_transfer(self, transfer_id: str) -> TransferSnapshot:
        _require_id(transfer_id, "transfer_id")
        s = self.store
        response = s.execute(
            "retrieve_transfer",
            {"transfer_id": transfer_id},
            lambda: s.get(s.transfers, "transfer", transfer_id, "transfer"),
        )
        return TransferSnapshot.from_dict(response)

    def list_transfers(self, *, transfer_group: str) -> list[TransferSnapshot]:
        s = self.store

        def action() -> list[JSON]:
            found = [t for t in s.transfers.values() if t["transfer_group"] == transfer_group]
            return _newest_first(found)

        response = s.execute("list_transfers", {"transfer_group": transfer_group}, action)
        return [TransferSnapshot.from_dict(t) for t in response]

    def create_transfer_reversal(
        self,
        *,
        transfer_id: str,
        idempotency_key: str,
        amount: int | None,
        metadata: Mapping[str, str],
    ) -> TransferReversalSnapshot:
        _require_id(transfer_id, "transfer_id")
        if amount is not None:
            _require_amount(amount, "amount")
        s = self.store
        params = {"transfer_id": transfer_id, "amount": amount, "metadata": dict(metadata)}

        def action() -> JSON:
            transfer = s.get(s.transfers, "transfer", transfer_id, "id")
            remaining = transfer["amount"] - transfer["amount_reversed"]
            if remaining <= 0:
                raise s.error(
                    InvalidRequest,
                    f"Transfer {transfer_id} has already been fully reversed.",
                    param="amount",
                )
            reversal_amount = remaining if amount is None else amount
            if reversal_amount > remaining:
                raise s.error(
                    InvalidRequest,
                    f"The reversal amount ({reversal_amount}) is greater than the amount "
                    f"of the transfer that has not been reversed ({remaining}).",
                    code="amount_too_large",
                    param="amount",
                )
            check_reversible(self.store, transfer, reversal_amount)
            reversal = record_reversal(
                self.store, transfer, reversal_amount, metadata, source_refund=None
            )
            s.emit("transfer.reversed", transfer)
            return reversal

        response = s.execute_idempotent("create_transfer_reversal", params, idempotency_key, action)
        return TransferReversalSnapshot.from_dict(response)

    def create_refund(
        self,
        *,
        idempotency_key: str,
        payment_intent: str,
        amount: int | None,
        metadata: Mapping[str, str],
        reason: RefundReason | None = None,
        reverse_transfer: bool = False,
        refund_application_fee: bool = False,
    ) -> RefundSnapshot:
        _require_id(payment_intent, "payment_intent")
        if amount is not None:
            _require_amount(amount, "amount")
        s = self.store
        params = {
            "payment_intent": payment_intent,
            "amount": amount,
            "metadata": dict(metadata),
            "reason": reason,
            "reverse_transfer": bool(reverse_transfer),
            "refund_application_fee": bool(refund_application_fee),
        }

        def validate() -> None:
            if reason is not None and reason not in _REFUND_REASONS:
                raise s.error(InvalidRequest, f"Invalid reason: {reason!r}", param="reason")

        def action() -> JSON:
            intent = s.get(s.payment_intents, "payment_intent", payment_intent, "payment_intent")
            if intent["status"] != "succeeded" or not intent["latest_charge"]:
                hint = (
                    " Cancel it to release the authorisation instead."
                    if intent["status"] == "requires_capture"
                    else ""
                )
                raise s.error(
                    InvalidRequest,
                    f"PaymentIntent {payment_intent} has no captured charge to refund (status "
                    f"{intent['status']}).{hint}",
                    code="payment_intent_unexpected_state",
                    param="payment_intent",
                )
            charge = s.charges[intent["latest_charge"]]
            disputes = [d for d in s.disputes.values() if d["charge"] == charge["id"]]
            # An inquiry does not stop a refund (the refund closes it); a
            # chargeback, open or lost, does.
            if any(d["status"] not in _REFUNDABLE_DISPUTE_STATUSES for d in disputes):
                raise s.error(
                    InvalidRequest,
                    f"Charge {charge['id']} has been charged back; it cannot be refunded.",
                    code="charge_disputed",
                )
            refundable = charge["amount_captured"] - charge["amount_refunded"]
            if refundable <= 0:
                raise s.error(
                    InvalidRequest,
                    f"Charge {charge['id']} has already been refunded.",
                    code="charge_already_refunded",
                )
            refund_amount = refundable if amount is None else amount
            if refund_amount > refundable:
                raise s.error(
                    InvalidRequest,
                    f"Refund amount ({refund_amount}) is greater than unrefunded amount on "
                    f"charge ({refundable}).",
                    code="amount_too_large",
                    param="amount",
                )
            full = refund_amount == refundable
            transfer: JSON | None = None
            reversal_amount = 0
            if reverse_transfer:
                if not charge.get("transfer"):
                    raise s.error(
                        InvalidRequest,
                        "reverse_transfer can only be used when refunding a destination "
                        "charge (one created with transfer_data[destination]).",
                        param="reverse_transfer",
                    )
                transfer = s.transfers[charge["transfer"]]
                remaining = transfer["amount"] - transfer["amount_reversed"]
                share = _proportion(transfer["amount"], refund_amount, charge["amount_captured"])
                reversal_amount = remaining if full else min(remaining, share)
            fee_object: JSON | None = None
            fee_refund = 0
            if refund_application_fee:
                if not charge.get("application_fee"):
                    raise s.error(
                        InvalidRequest,
                        "refund_application_fee can only be used on a charge with an "
                        "application fee.",
                        param="refund_application_fee",
                    )
                fee_object = s.application_fees[charge["application_fee"]]
                fee_remaining = fee_object["amount"] - fee_object["amount_refunded"]
                share = _proportion(fee_object["amount"], refund_amount, charge["amount_captured"])
                fee_refund = fee_remaining if full else min(fee_remaining, share)
            if transfer is not None and reversal_amount:
                # The fee refund goes back to the connected account, which
                # pays the reversal from it and its balance.
                returned = fee_refund if fee_object is not None else 0
                check_reversible(self.store, transfer, reversal_amount - returned)

            refund_id = new_id("re")
            behaviour = s._async_refunds.get(charge["id"])
            reversal: JSON | None = None
            if fee_object is not None and fee_refund:
                _refund_application_fee(fee_object, fee_refund, s.now())
                s.credit(fee_object["account"], fee_object["currency"], fee_refund)
                s._debit_platform(fee_object["currency"], fee_refund, charge=charge["id"])
            if transfer is not None and reversal_amount:
                reversal = record_reversal(
                    self.store, transfer, reversal_amount, {}, source_refund=refund_id
                )
            refund: JSON = {
                "id": refund_id,
                "object": "refund",
                "amount": refund_amount,
                "balance_transaction": new_id("txn"),
                "charge": charge["id"],
                "created": s.now(),
                "currency": charge["currency"],
                "destination_details": {
                    "card": {
                        "reference_status": "pending",
                        "reference_type": "acquirer_reference_number",
                        "type": "refund",
                    },
                    "type": "card",
                },
                "failure_balance_transaction": None,
                "failure_reason": None,
                "livemode": False,
                "metadata": dict(metadata),
                "payment_intent": intent["id"],
                "pending_reason": "processing" if behaviour == "refund_pending" else None,
                "reason": reason,
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": "pending" if behaviour == "refund_pending" else "succeeded",
                "transfer_reversal": reversal["id"] if reversal else None,
            }
            if behaviour is not None:
                s._unsettled_refunds[refund_id] = (
                    "succeeded" if behaviour == "refund_pending" else "failed"
                )
            s.refunds[refund_id] = refund
            s._debit_platform(charge["currency"], refund_amount, charge=charge["id"])
            charge["amount_refunded"] += refund_amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
            s.emit("refund.created", refund)
            s.emit("charge.refunded", charge)
            for dispute in disputes:
                if dispute["status"] in _OPEN_INQUIRY_STATUSES:
                    dispute["status"] = "warning_closed"
                    dispute["is_charge_refundable"] = False
                    s.emit("charge.dispute.closed", dispute)
            if transfer is not None and reversal is not None:
                s.emit("transfer.reversed", transfer)
            if fee_object is not None and fee_refund:
                s.emit("application_fee.refunded", fee_object)
            return refund

        response = s.execute_idempotent(
            "create_refund", params, idempotency_key, action, validate=validate
        )
        return RefundSnapshot.from_dict(response)

    def retrieve_refund(self, refund_id: str) -> RefundSnapshot:
        _require_id(refund_id, "refund_id")
        s = self.store
        response = s.execute(
            "retrieve_refund",
            {"refund_id": refund_id},
            lambda: s.get(s.refunds, "refund", refund_id, "refund"),
        )
        return RefundSnapshot.from_dict(response)

    def list_refunds(self, *, payment_intent: str) -> list[RefundSnapshot]:
        _require_id(payment_intent, "payment_intent")
        s = self.store

        def action() -> list[JSON]:
            s.get(s.payment_intents, "payment_intent", payment_intent, "payment_intent")
            found = [r for r in s.refunds.values() if r["payment_intent"] == payment_intent]
            return _newest_first(found)

        response = s.execute("list_refunds", {"payment_intent": payment_intent}, action)
        return [RefundSnapshot.from_dict(r) for r in response]
