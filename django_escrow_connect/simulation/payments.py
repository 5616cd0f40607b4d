"""PaymentIntents and charges, as the PaymentGateway protocol asks Stripe for them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from ..exceptions import (
    CardDeclined,
    InvalidRequest,
)
from ..gateway.arguments import require_amount as _require_amount
from ..gateway.arguments import require_id as _require_id
from ..gateway.basegateway import check_saved_payment_method_arguments
from ..gateway.types import (
    CancellationReason,
    CaptureMethod,
    ChargeSnapshot,
    CustomerSnapshot,
    DisputeSnapshot,
    PaymentIntentSnapshot,
    PaymentMethodSnapshot,
    SetupFutureUsage,
)
from .cards import _PAYING_SCENARIOS, _SCENARIO_BY_NUMBER, CARDS
from .movements import (
    authorize,
    capture,
    decline,
)
from .objects import (
    JSON,
    _newest_first,
    _payment_intent_object,
    new_id,
)
from .rules import (
    _CANCELABLE,
    _CANCELLATION_REASONS,
    _CAPTURE_METHODS,
    MAX_AMOUNT,
    MAXIMUM_CHARGE,
    MINIMUM_CHARGE,
    check_same_region,
    check_settlement_merchant,
    check_transfers_capability,
    unexpected_state,
)

if TYPE_CHECKING:
    from .store import SimulatedStripe


class SimulatedPayments:
    """The gateway's PaymentIntent, charge and dispute lookups and changes."""

    store: SimulatedStripe

    def create_payment_intent(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        transfer_group: str,
        metadata: Mapping[str, str],
        capture_method: CaptureMethod,
        destination: str | None = None,
        application_fee_amount: int | None = None,
        description: str | None = None,
        receipt_email: str | None = None,
        on_behalf_of: str | None = None,
        customer: str | None = None,
        setup_future_usage: SetupFutureUsage | None = None,
        payment_method: str | None = None,
        off_session: bool = False,
        confirm: bool = False,
    ) -> PaymentIntentSnapshot:
        _require_amount(amount, "amount")
        check_saved_payment_method_arguments(
            customer=customer,
            setup_future_usage=setup_future_usage,
            payment_method=payment_method,
            off_session=off_session,
            confirm=confirm,
        )
        if destination is not None:
            _require_id(destination, "destination")
        if on_behalf_of is not None:
            _require_id(on_behalf_of, "on_behalf_of")
        if application_fee_amount is not None:
            _require_amount(application_fee_amount, "application_fee_amount", allow_zero=True)
        s = self.store
        currency = currency.lower()
        params = {
            "amount": amount,
            "currency": currency,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
            "capture_method": capture_method,
            "destination": destination,
            "application_fee_amount": application_fee_amount,
            "description": description,
            "receipt_email": receipt_email,
            "on_behalf_of": on_behalf_of,
        }
        # Only what was asked: the requests of 0.x (no saved card) fingerprint as before.
        for name, value in (
            ("customer", customer),
            ("setup_future_usage", setup_future_usage),
            ("payment_method", payment_method),
            ("off_session", off_session or None),
            ("confirm", confirm or None),
        ):
            if value is not None:
                params[name] = value

        def validate() -> None:
            if capture_method not in _CAPTURE_METHODS:
                raise s.error(
                    InvalidRequest,
                    f"Invalid capture_method: must be one of {', '.join(_CAPTURE_METHODS)}",
                    param="capture_method",
                )
            minimum = MINIMUM_CHARGE.get(currency, 1)
            if amount < minimum:
                raise s.error(
                    InvalidRequest,
                    f"Amount must be at least {minimum} {currency} (minor units).",
                    code="amount_too_small",
                    param="amount",
                )
            maximum = MAXIMUM_CHARGE.get(currency, MAX_AMOUNT)
            if amount > maximum:
                raise s.error(
                    InvalidRequest,
                    f"Amount must be no more than {maximum}.",
                    code="amount_too_large",
                    param="amount",
                )
            if application_fee_amount is not None:
                if destination is None:
                    raise s.error(
                        InvalidRequest,
                        "Can only apply an application_fee_amount when the PaymentIntent is "
                        "attempting a direct payment (using an OAuth key or Stripe-Account "
                        "header) or destination payment (using `transfer_data[destination]`).",
                        param="application_fee_amount",
                    )
                if application_fee_amount > amount:
                    raise s.error(
                        InvalidRequest,
                        "application_fee_amount cannot be greater than amount.",
                        param="application_fee_amount",
                    )

        def action() -> JSON:
            if on_behalf_of is not None:
                check_settlement_merchant(self.store, s.account(on_behalf_of, "on_behalf_of"))
            if destination is not None:
                account = s.account(destination, "transfer_data[destination]")
                check_transfers_capability(self.store, account, "transfer_data[destination]")
                if on_behalf_of is None:
                    check_same_region(self.store, account, "transfer_data[destination]")
            pi_id = new_id("pi")
            intent = _payment_intent_object(
                pi_id,
                amount=amount,
                currency=currency,
                capture_method=capture_method,
                transfer_group=transfer_group or None,
                metadata=metadata,
                destination=destination,
                application_fee_amount=application_fee_amount,
                description=description,
                receipt_email=receipt_email,
                created=s.now(),
            )
            intent["on_behalf_of"] = on_behalf_of
            if customer is not None:
                s.get(s.customers, "customer", customer, "customer")
                intent["customer"] = customer
                intent["setup_future_usage"] = setup_future_usage
            s.payment_intents[pi_id] = intent
            s.emit("payment_intent.created", intent)
            if confirm and payment_method is not None and customer is not None:
                charge_saved_payment_method(s, intent, payment_method, customer)
            return intent

        response = s.execute_idempotent(
            "create_payment_intent", params, idempotency_key, action, validate=validate
        )
        return PaymentIntentSnapshot.from_dict(response)

    def create_customer(
        self, *, idempotency_key: str, metadata: Mapping[str, str], description: str | None = None
    ) -> CustomerSnapshot:
        s = self.store
        params = {"metadata": dict(metadata), "description": description}

        def action() -> JSON:
            customer: JSON = {
                "id": new_id("cus", 14),
                "object": "customer",
                "created": s.now(),
                "description": description,
                "email": None,
                "livemode": False,
                "metadata": dict(metadata),
                "name": None,
            }
            s.customers[customer["id"]] = customer
            return customer

        response = s.execute_idempotent("create_customer", params, idempotency_key, action)
        return CustomerSnapshot.from_dict(response)

    def detach_payment_method(self, payment_method_id: str) -> PaymentMethodSnapshot:
        _require_id(payment_method_id, "payment_method_id")
        s = self.store

        def action() -> JSON:
            method = s.get(s.payment_methods, "payment_method", payment_method_id, "payment_method")
            if method.get("customer") is None:
                raise s.error(
                    InvalidRequest,
                    "The payment method you provided is not attached to a customer so "
                    "detachment is impossible.",
                    code="payment_method_unexpected_state",
                )
            method["customer"] = None
            return method

        response = s.execute(
            "detach_payment_method", {"payment_method_id": payment_method_id}, action
        )
        return PaymentMethodSnapshot.from_dict(response)

    def retrieve_payment_intent(
        self, payment_intent_id: str, *, expand_charge: bool = False
    ) -> PaymentIntentSnapshot:
        _require_id(payment_intent_id, "payment_intent_id")
        s = self.store

        def action() -> JSON:
            intent = copy.deepcopy(
                s.get(s.payment_intents, "payment_intent", payment_intent_id, "intent")
            )
            if expand_charge and intent["latest_charge"]:
                intent["latest_charge"] = copy.deepcopy(s.charges[intent["latest_charge"]])
            return intent

        params = {"payment_intent_id": payment_intent_id, "expand_charge": expand_charge}
        return PaymentIntentSnapshot.from_dict(s.execute("retrieve_payment_intent", params, action))

    def list_payment_intents(
        self, *, customer: str, created_gte: datetime
    ) -> list[PaymentIntentSnapshot]:
        _require_id(customer, "customer")
        s = self.store
        since = int(created_gte.timestamp())

        def action() -> list[JSON]:
            found = [
                copy.deepcopy(i)
                for i in s.payment_intents.values()
                if i.get("customer") == customer and i["created"] >= since
            ]
            return _newest_first(found)

        params = {"customer": customer, "created_gte": since}
        response = s.execute("list_payment_intents", params, action)
        return [PaymentIntentSnapshot.from_dict(i) for i in response]

    def capture_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        amount_to_capture: int | None = None,
        application_fee_amount: int | None = None,
    ) -> PaymentIntentSnapshot:
        _require_id(payment_intent_id, "payment_intent_id")
        if amount_to_capture is not None:
            _require_amount(amount_to_capture, "amount_to_capture")
        if application_fee_amount is not None:
            _require_amount(application_fee_amount, "application_fee_amount", allow_zero=True)
        s = self.store
        params = {
            "payment_intent_id": payment_intent_id,
            "amount_to_capture": amount_to_capture,
            "application_fee_amount": application_fee_amount,
        }

        def action() -> JSON:
            intent = s.get(s.payment_intents, "payment_intent", payment_intent_id, "intent")
            if intent["status"] != "requires_capture":
                raise unexpected_state(self.store, intent, "captured", ("requires_capture",))
            amount = intent["amount_capturable"] if amount_to_capture is None else amount_to_capture
            if amount > intent["amount_capturable"]:
                raise s.error(
                    InvalidRequest,
                    f"The amount to capture ({amount}) is greater than the amount capturable "
                    f"({intent['amount_capturable']}).",
                    code="amount_too_large",
                    param="amount_to_capture",
                )
            fee = intent["application_fee_amount"]
            if application_fee_amount is not None:
                if intent["transfer_data"] is None:
                    raise s.error(
                        InvalidRequest,
                        "Can only apply an application_fee_amount to a destination payment "
                        "(using `transfer_data[destination]`).",
                        param="application_fee_amount",
                    )
                fee = application_fee_amount
            if fee is not None and fee > amount:
                raise s.error(
                    InvalidRequest,
                    "application_fee_amount cannot be greater than the amount captured.",
                    param="application_fee_amount",
                )
            charge = s.charges[intent["latest_charge"]]
            if intent["transfer_data"] is not None:
                destination = s.account(intent["transfer_data"]["destination"], "destination")
                check_transfers_capability(self.store, destination, "transfer_data[destination]")
            intent["application_fee_amount"] = fee
            capture(self.store, intent, charge, amount, manual=True)
            return intent

        response = s.execute_idempotent("capture_payment_intent", params, idempotency_key, action)
        return PaymentIntentSnapshot.from_dict(response)

    def cancel_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        cancellation_reason: CancellationReason | None = None,
    ) -> PaymentIntentSnapshot:
        _require_id(payment_intent_id, "payment_intent_id")
        s = self.store
        params = {
            "payment_intent_id": payment_intent_id,
            "cancellation_reason": cancellation_reason,
        }

        def validate() -> None:
            if cancellation_reason is not None and cancellation_reason not in _CANCELLATION_REASONS:
                raise s.error(
                    InvalidRequest,
                    f"Invalid cancellation_reason: {cancellation_reason!r}",
                    param="cancellation_reason",
                )

        def action() -> JSON:
            intent = s.get(s.payment_intents, "payment_intent", payment_intent_id, "intent")
            if intent["status"] not in _CANCELABLE:
                raise unexpected_state(self.store, intent, "canceled", _CANCELABLE)
            # The authorisation (if any) is released; since API 2025-03-31.basil
            # this creates no refund and leaves the charge's refund fields alone.
            intent.update(
                status="canceled",
                canceled_at=s.now(),
                cancellation_reason=cancellation_reason,
                amount_capturable=0,
                next_action=None,
            )
            s._pending_cards.pop(intent["id"], None)
            s.emit("payment_intent.canceled", intent)
            return intent

        response = s.execute_idempotent(
            "cancel_payment_intent", params, idempotency_key, action, validate=validate
        )
        return PaymentIntentSnapshot.from_dict(response)

    def retrieve_charge(
        self, charge_id: str, *, stripe_account: str | None = None
    ) -> ChargeSnapshot:
        _require_id(charge_id, "charge_id")
        if stripe_account is not None:
            _require_id(stripe_account, "stripe_account")
        s = self.store

        def action() -> JSON:
            if stripe_account is None:
                return s.get(s.charges, "charge", charge_id, "charge")
            s.account(stripe_account)
            charge = s.charges.get(charge_id)
            if charge is None or s._owners.get(charge_id) != stripe_account:
                raise s.missing("charge", charge_id, "charge")
            return charge

        params = {"charge_id": charge_id, "stripe_account": stripe_account}
        return ChargeSnapshot.from_dict(s.execute("retrieve_charge", params, action))

    def retrieve_dispute(self, dispute_id: str) -> DisputeSnapshot:
        _require_id(dispute_id, "dispute_id")
        s = self.store
        response = s.execute(
            "retrieve_dispute",
            {"dispute_id": dispute_id},
            lambda: s.get(s.disputes, "dispute", dispute_id, "dispute"),
        )
        return DisputeSnapshot.from_dict(response)


#: Stripe's test PaymentMethods (``pm_card_*``) that can be charged off-session
#: without a checkout first, and the card each one stands for.
TEST_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_visa": CARDS["success"].number,
    # Stripe's 4000 0027 6000 3184: authentication on every payment, off-session too.
    "pm_card_authenticationRequired": "4000002760003184",
    "pm_card_chargeDeclined": CARDS["declined"].number,
    "pm_card_visa_chargeDeclined": CARDS["declined"].number,
}


def charge_saved_payment_method(
    s: SimulatedStripe, intent: JSON, payment_method: str, customer: str
) -> None:
    """``confirm=True, off_session=True`` with a saved card: charged now, or a card error.

    As on Stripe, a card that needs its holder (``authentication_required``)
    or a decline leaves the PaymentIntent in ``requires_payment_method`` and
    the 402 error carries it (``error.payment_intent``): the customer can
    confirm it on-session.
    """
    number = TEST_PAYMENT_METHODS.get(payment_method)
    if number is None:
        method = s.get(s.payment_methods, "payment_method", payment_method, "payment_method")
        if method.get("customer") != customer:
            raise s.error(
                InvalidRequest,
                f"The provided PaymentMethod {payment_method} does not belong to the "
                f"Customer {customer}.",
                param="payment_method",
            )
        number = s._payment_method_cards.get(payment_method, CARDS["success"].number)
    intent["payment_method"] = payment_method
    scenario = _SCENARIO_BY_NUMBER.get(number)
    if scenario in _PAYING_SCENARIOS or scenario == "authentication_required":
        # A card set up with 3-D Secure (4000 0025 0000 3155) is exempt off-session.
        authorize(s, intent, number)
        intent["payment_method"] = payment_method
        return
    if number == TEST_PAYMENT_METHODS["pm_card_authenticationRequired"]:
        message = "Your card was declined. This transaction requires authentication."
        intent.update(
            status="requires_payment_method",
            last_payment_error={
                "code": "authentication_required",
                "decline_code": "authentication_required",
                "doc_url": "https://docs.stripe.com/error-codes/authentication-required",
                "message": message,
                "param": None,
                "payment_method": {"id": payment_method, "object": "payment_method"},
                "type": "card_error",
            },
        )
        s.emit("payment_intent.payment_failed", intent)
        code, decline_code = "authentication_required", "authentication_required"
    else:
        message = "Your card was declined."
        decline(s, intent, number, "generic_decline", message)
        code, decline_code = "card_declined", "generic_decline"
    error = s.error(CardDeclined, message, code=code, http_status=402, error_type="card_error")
    error.decline_code = decline_code
    error.payment_intent = PaymentIntentSnapshot.from_dict(intent)
    raise error
