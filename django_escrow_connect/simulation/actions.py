"""Simulated actions of the other parties: the customer pays and authenticates, the seller
onboards or disconnects, the bank disputes, Stripe settles refunds and pays out.

:class:`~.gateway.SimulatedGateway` inherits them, so ``gateway.confirm_payment_intent(...)``
keeps working; this module is their home. They are fault-injectable
(:meth:`~.store.SimulatedStripe.fail_next`) but not recorded in ``calls``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..exceptions import (
    BalanceInsufficient,
    InvalidRequest,
)
from ..gateway.arguments import require_id as _require_id
from ..gateway.types import (
    AccountSnapshot,
    DisputeSnapshot,
    PaymentIntentSnapshot,
    PayoutSnapshot,
    RefundSnapshot,
)
from .cards import (
    _PAYING_SCENARIOS,
    _SCENARIO_BY_NUMBER,
    CARDS,
)
from .links import authentication_url
from .movements import (
    authorize,
    decline,
    dispute_charge,
    emit_account_changes,
    withdraw_disputed,
)
from .objects import (
    JSON,
    _balance_transaction,
    _bank_account,
    _card_number,
    _requirements,
    new_id,
)
from .rules import (
    _CONFIRMABLE,
    _OPEN_INQUIRY_STATUSES,
    unexpected_state,
)

if TYPE_CHECKING:
    from .store import SimulatedStripe


class SimulatedActions:
    """What the customer, the seller and Stripe do on their own (not gateway calls)."""

    store: SimulatedStripe

    def complete_onboarding(self, account_id: str) -> AccountSnapshot:
        """The seller finished onboarding: the account is verified and can receive transfers.

        Emits ``account.updated`` and one ``capability.updated`` per capability
        (Connect events), unless the account already was in that state.
        """
        s = self.store

        def action() -> JSON:
            account = s.account(account_id)
            now = s.now()
            before = copy.deepcopy(account)
            if not account["external_accounts"]["data"]:
                account["external_accounts"]["data"].append(_bank_account(account))
                account["external_accounts"]["total_count"] = 1
            account.update(
                details_submitted=True,
                # A recipient account (no card_payments) cannot process charges.
                charges_enabled="card_payments" in account["capabilities"],
                payouts_enabled=True,
                requirements=_requirements([]),
                future_requirements=_requirements([]),
            )
            if account["tos_acceptance"].get("date") is None:
                # Accepted once: onboarding again does not move the date (nor, with a
                # clock that crossed a second, emit an account.updated for it).
                account["tos_acceptance"].update(date=now, ip="127.0.0.1", user_agent="simulated")
            account["business_profile"].update(
                mcc="5734", url="https://seller.example", product_description="Simulated"
            )
            changed_capabilities = [
                name for name, status in account["capabilities"].items() if status != "active"
            ]
            account["capabilities"] = {name: "active" for name in account["capabilities"]}
            emit_account_changes(self.store, account, before, changed_capabilities)
            return account

        response = s.execute(
            "complete_onboarding",
            {"account_id": account_id},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return AccountSnapshot.from_dict(response)

    def require_information(
        self,
        account_id: str,
        currently_due: Sequence[str] = ("individual.verification.document",),
        *,
        disabled_reason: str | None = "requirements.past_due",
    ) -> AccountSnapshot:
        """Stripe needs more information: transfers and payouts are disabled until provided."""
        s = self.store

        def action() -> JSON:
            account = s.account(account_id)
            before = copy.deepcopy(account)
            due = list(currently_due)
            past_due = due if disabled_reason == "requirements.past_due" else []
            account.update(
                payouts_enabled=False,
                charges_enabled=False,
                requirements=_requirements(due, past_due=past_due, disabled_reason=disabled_reason),
            )
            changed = [name for name, st in account["capabilities"].items() if st != "inactive"]
            account["capabilities"] = {name: "inactive" for name in account["capabilities"]}
            emit_account_changes(self.store, account, before, changed)
            return account

        response = s.execute(
            "require_information",
            {"account_id": account_id, "currently_due": list(currently_due)},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return AccountSnapshot.from_dict(response)

    def deauthorize(self, account_id: str) -> None:
        """The seller disconnected the platform: emits ``account.application.deauthorized``.

        Afterwards every request about the account fails with
        :class:`GatewayPermissionDenied` (``account_invalid``), as on Stripe.
        """
        s = self.store

        def action() -> None:
            s.account(account_id)
            s.deauthorized.add(account_id)
            application = {
                "id": "ca_simulated_escrow_connect",
                "object": "application",
                "livemode": False,
                "name": "django-escrow-connect (simulated)",
            }
            s.emit("account.application.deauthorized", application, account=account_id)

        s.execute(
            "deauthorize",
            {"account_id": account_id},
            action,
            logged=False,
            stripe_initiated=True,
        )

    def confirm_payment_intent(self, payment_intent_id: str, card: str) -> PaymentIntentSnapshot:
        """The customer pays with ``card`` (a number or a :data:`CARDS` name), as Stripe.js would.

        Not part of the gateway protocol (a simulated checkout page calls it).
        Like Stripe.js, a decline is not raised: the returned intent is back
        in ``requires_payment_method`` with ``last_payment_error`` set.

        - ``4242424242424242``: succeeds (``succeeded``, or ``requires_capture``
          with manual capture);
        - ``4000000000000002``: declined, ``card_declined`` / ``generic_decline``;
        - ``4000002500003155``: ``requires_action`` until :meth:`complete_authentication`;
        - ``4000000000000259``: succeeds, then a fraud dispute opens once captured;
        - any other number: declined as a live card used in test mode.
        """
        _require_id(payment_intent_id, "payment_intent_id")
        s = self.store
        number = _card_number(card)

        def action() -> JSON:
            intent = s.get(s.payment_intents, "payment_intent", payment_intent_id, "intent")
            if intent["status"] not in _CONFIRMABLE:
                raise unexpected_state(self.store, intent, "confirmed", _CONFIRMABLE)
            scenario = _SCENARIO_BY_NUMBER.get(number)
            intent["payment_method"] = new_id("pm")
            intent["last_payment_error"] = None
            intent["next_action"] = None
            if scenario in _PAYING_SCENARIOS:
                authorize(self.store, intent, number)
            elif scenario == "authentication_required":
                s._pending_cards[intent["id"]] = number
                intent["status"] = "requires_action"
                intent["next_action"] = {
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {
                        "type": "three_d_secure_redirect",
                        "stripe_js": authentication_url(intent["id"]),
                    },
                }
                s.emit("payment_intent.requires_action", intent)
            elif scenario == "declined":
                decline(self.store, intent, number, "generic_decline", "Your card was declined.")
            else:
                decline(
                    self.store,
                    intent,
                    number,
                    "test_mode_live_card",
                    "Your card was declined. Your request was in test mode, but used a "
                    "non test (live) card.",
                )
            return intent

        response = s.execute(
            "confirm_payment_intent",
            {"payment_intent_id": payment_intent_id, "card": number[-4:]},
            action,
            logged=False,
        )
        return PaymentIntentSnapshot.from_dict(response)

    def complete_authentication(
        self, payment_intent_id: str, succeed: bool = True
    ) -> PaymentIntentSnapshot:
        """The customer passes (or fails) 3-D Secure for an intent in ``requires_action``."""
        _require_id(payment_intent_id, "payment_intent_id")
        s = self.store

        def action() -> JSON:
            intent = s.get(s.payment_intents, "payment_intent", payment_intent_id, "intent")
            if intent["status"] != "requires_action":
                raise unexpected_state(self.store, intent, "authenticated", ("requires_action",))
            number = s._pending_cards.pop(intent["id"], CARDS["authentication_required"].number)
            intent["next_action"] = None
            if succeed:
                authorize(self.store, intent, number, authenticated=True)
            else:
                intent.update(
                    status="requires_payment_method",
                    payment_method=None,
                    last_payment_error={
                        "code": "payment_intent_authentication_failure",
                        "decline_code": None,
                        "doc_url": "https://docs.stripe.com/error-codes/"
                        "payment-intent-authentication-failure",
                        "message": "The provided PaymentMethod has failed authentication. "
                        "You can provide payment_method_data or a new PaymentMethod to "
                        "attempt to fulfill this PaymentIntent again.",
                        "param": None,
                        "type": "invalid_request_error",
                    },
                )
                s.emit("payment_intent.payment_failed", intent)
            return intent

        response = s.execute(
            "complete_authentication",
            {"payment_intent_id": payment_intent_id, "succeed": succeed},
            action,
            logged=False,
        )
        return PaymentIntentSnapshot.from_dict(response)

    def settle_refund(self, refund_id: str, *, succeed: bool | None = None) -> RefundSnapshot:
        """The card network settles a refund: ``refund.updated`` or ``refund.failed``.

        By default a refund ends as its card says (:data:`CARDS`:
        ``refund_pending`` succeeds, ``refund_fails`` fails); ``succeed``
        overrides that. A pending refund can succeed or fail; a succeeded
        one can still fail (live cards do, when the card was closed). A
        failed refund gives its amount back to the charge and its money back
        to the platform's balance; a transfer reversed for it stays reversed.
        Each change also emits ``charge.refund.updated``.
        """
        s = self.store

        def action() -> JSON:
            refund = s.get(s.refunds, "refund", refund_id, "refund")
            planned = s._unsettled_refunds.pop(refund_id, None)
            if succeed is None:
                target = planned or "succeeded"
            else:
                target = "succeeded" if succeed else "failed"
            allowed = ("pending",) if target == "succeeded" else ("pending", "succeeded")
            if refund["status"] not in allowed:
                raise s.error(
                    InvalidRequest,
                    f"Refund {refund_id} is {refund['status']} and cannot become {target}.",
                    param="refund",
                )
            previous = {"status": refund["status"], "pending_reason": refund["pending_reason"]}
            refund.update(status=target, pending_reason=None)
            if target == "failed":
                previous.update(failure_reason=None, failure_balance_transaction=None)
                refund.update(
                    failure_reason="expired_or_canceled_card",
                    failure_balance_transaction=new_id("txn"),
                )
                charge = s.charges[refund["charge"]]
                charge["amount_refunded"] -= refund["amount"]
                charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
                s._credit_available(refund["currency"], refund["amount"])
                s.emit("refund.failed", refund, previous_attributes=previous, automatic=True)
            else:
                s.emit("refund.updated", refund, previous_attributes=previous, automatic=True)
            s.emit("charge.refund.updated", refund, previous_attributes=previous, automatic=True)
            return refund

        response = s.execute(
            "settle_refund",
            {"refund_id": refund_id, "succeed": succeed},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return RefundSnapshot.from_dict(response)

    def settle_refunds(self) -> int:
        """Settle every refund still due to change, as its card says; returns how many."""
        with self.store.lock:
            due = list(self.store._unsettled_refunds)
        for refund_id in due:
            self.settle_refund(refund_id)
        return len(due)

    def open_dispute(
        self,
        charge_or_intent: str,
        *,
        reason: str = "fraudulent",
        inquiry: bool = False,
        amount: int | None = None,
    ) -> DisputeSnapshot:
        """The customer disputes a captured charge (given by ``ch_...`` or ``pi_...`` id).

        ``amount``: a part of the charge (a partial dispute); all of what
        was captured and not refunded when omitted.
        ``inquiry=True``: the issuer only asks questions first
        (``warning_needs_response``; nothing is withdrawn). A refund closes an
        inquiry (``warning_closed``); :meth:`close_dispute` closes it
        (``won=True``) or escalates it to a chargeback (``won=False``).
        """
        s = self.store

        def action() -> JSON:
            charge_id = charge_or_intent
            if charge_or_intent.startswith("pi_"):
                intent = s.get(s.payment_intents, "payment_intent", charge_or_intent, "intent")
                charge_id = intent["latest_charge"] or ""
            charge = s.get(s.charges, "charge", charge_id, "charge")
            if not charge["captured"] or charge["disputed"]:
                raise s.error(
                    InvalidRequest,
                    f"Charge {charge_id} is not captured or is already disputed.",
                    param="charge",
                )
            left = charge["amount_captured"] - charge["amount_refunded"]
            if amount is not None and not 0 < amount <= left:
                raise s.error(
                    InvalidRequest,
                    f"A dispute of charge {charge_id} is between 1 and {left}.",
                    param="amount",
                )
            return dispute_charge(self.store, charge, reason, inquiry=inquiry, amount=amount)

        response = s.execute(
            "open_dispute",
            {"charge": charge_or_intent, "reason": reason, "inquiry": inquiry, "amount": amount},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return DisputeSnapshot.from_dict(response)

    def appeal_dispute(self, dispute_id: str, *, submitted: bool = False) -> DisputeSnapshot:
        """The platform appeals a lost dispute (API version ``2026-10-28.endive``).

        ``lost`` becomes ``appeal_needs_response`` (``submitted=False``) or
        ``appeal_under_review`` (the appeal's evidence is in; also from
        ``appeal_needs_response``), with ``charge.dispute.updated``. The
        network then decides with :meth:`close_dispute`. Only a lost dispute
        can be appealed, and only once.
        """
        s = self.store
        target = "appeal_under_review" if submitted else "appeal_needs_response"

        def action() -> JSON:
            dispute = s.get(s.disputes, "dispute", dispute_id, "dispute")
            allowed = ("lost", "appeal_needs_response") if submitted else ("lost",)
            if dispute["status"] not in allowed or (
                dispute["status"] == "lost" and dispute_id in s._appealed_disputes
            ):
                raise s.error(
                    InvalidRequest,
                    f"Dispute {dispute_id} cannot be appealed ({dispute['status']}).",
                    param="dispute",
                )
            s._appealed_disputes.add(dispute_id)
            dispute["status"] = target
            s.emit("charge.dispute.updated", dispute, automatic=True)
            return dispute

        response = s.execute(
            "appeal_dispute",
            {"dispute_id": dispute_id, "submitted": submitted},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return DisputeSnapshot.from_dict(response)

    def close_dispute(self, dispute_id: str, won: bool) -> DisputeSnapshot:
        """The card network decided: ``charge.dispute.closed`` (+ ``funds_reinstated`` if won).

        Also decides an appeal (:meth:`appeal_dispute`): won reinstates the
        funds; lost is final.
        """
        s = self.store

        def action() -> JSON:
            dispute = s.get(s.disputes, "dispute", dispute_id, "dispute")
            if dispute["status"] in ("won", "lost", "warning_closed", "prevented"):
                raise s.error(
                    InvalidRequest,
                    f"Dispute {dispute_id} is already closed ({dispute['status']}).",
                    param="dispute",
                )
            if dispute["status"] in _OPEN_INQUIRY_STATUSES:
                if won:
                    dispute.update(status="warning_closed", is_charge_refundable=False)
                    s.emit("charge.dispute.closed", dispute, automatic=True)
                else:
                    # The inquiry becomes a chargeback: now the money is withdrawn.
                    withdraw_disputed(self.store, dispute)
                    dispute.update(status="needs_response", is_charge_refundable=False)
                    dispute["payment_method_details"]["card"]["case_type"] = "chargeback"
                    s.emit("charge.dispute.updated", dispute, automatic=True)
                    s.emit("charge.dispute.funds_withdrawn", dispute, automatic=True)
                return dispute
            dispute["status"] = "won" if won else "lost"
            if won:
                dispute["balance_transactions"].append(
                    _balance_transaction(
                        amount=dispute["amount"],
                        fee=0,
                        currency=dispute["currency"],
                        source=dispute["id"],
                        description=f"Chargeback reversal for {dispute['charge']}",
                        now=s.now(),
                    )
                )
                s._credit_available(dispute["currency"], dispute["amount"])
            s.emit("charge.dispute.closed", dispute, automatic=True)
            if won:
                s.emit("charge.dispute.funds_reinstated", dispute, automatic=True)
            return dispute

        response = s.execute(
            "close_dispute",
            {"dispute_id": dispute_id, "won": won},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return DisputeSnapshot.from_dict(response)

    def create_payout(
        self, account_id: str, amount: int | None = None, *, fail: bool = False
    ) -> PayoutSnapshot:
        """The connected account is paid out to its bank (``payout.paid`` / ``payout.failed``).

        Money paid out can no longer be reversed from the account's balance.
        """
        s = self.store

        def action() -> JSON:
            account = s.account(account_id)
            balances = s.balances.get(account_id, {})
            currency = account["default_currency"] or "usd"
            balance = balances.get(currency, 0)
            payout_amount = balance if amount is None else amount
            if payout_amount <= 0 or payout_amount > balance:
                raise s.error(
                    BalanceInsufficient,
                    f"The account's {currency} balance ({balance}) cannot cover a payout of "
                    f"{payout_amount}.",
                    code="balance_insufficient",
                    param="amount",
                )
            now = s.now()
            payout: JSON = {
                "id": new_id("po"),
                "object": "payout",
                "amount": payout_amount,
                "arrival_date": now + 2 * 24 * 3600,
                "automatic": True,
                "balance_transaction": new_id("txn"),
                "created": now,
                "currency": currency,
                "description": "STRIPE PAYOUT",
                "destination": new_id("ba"),
                "failure_balance_transaction": None,
                "failure_code": None,
                "failure_message": None,
                "livemode": False,
                "metadata": {},
                "method": "standard",
                "source_type": "card",
                "statement_descriptor": None,
                "status": "in_transit",
                "type": "bank_account",
            }
            s.payouts[payout["id"]] = payout
            s._owners[payout["id"]] = account_id
            s.emit("payout.created", payout, account=account_id)
            if fail:
                payout.update(
                    status="failed",
                    failure_code="account_closed",
                    failure_message="The bank account has been closed.",
                    failure_balance_transaction=new_id("txn"),
                )
                s.emit("payout.failed", payout, account=account_id)
            else:
                payout["status"] = "paid"
                s.credit(account_id, currency, -payout_amount)
                s.emit("payout.paid", payout, account=account_id)
            return payout

        response = s.execute(
            "create_payout",
            {"account_id": account_id, "amount": amount, "fail": fail},
            action,
            logged=False,
            stripe_initiated=True,
        )
        return PayoutSnapshot.from_dict(response)

    def resend_event(self, event_id: str) -> bool:
        """Deliver a stored event again, as Stripe's retries and duplicates do."""
        return self.store.redeliver(event_id)


# --- object builders --------------------------------------------------------------------
