"""A conformance test kit for payment gateways.

Subclass :class:`GatewayConformance` in your test suite, implement its hooks
and your test runner runs every ``test_*`` method against your gateway::

    from django_escrow_connect.gateway.conformance import GatewayConformance

    class TestMyGateway(GatewayConformance):          # pytest
        def make_gateway(self):
            return MyGateway(api_key="test")

        def complete_onboarding(self, gateway, account_id):
            ...  # make the account able to receive transfers

        def pay(self, gateway, payment_intent_id):
            ...  # confirm it with your provider's test card

Mix it into ``unittest.TestCase`` (or Django's ``SimpleTestCase``) the same
way. The kit exercises the gateway only through
:class:`~django_escrow_connect.gateway.base.PaymentGateway`: arguments
refused before any request, results as the snapshot types of
:mod:`.types`, idempotency keys honoured, failures as
:class:`~django_escrow_connect.exceptions.GatewayError` subclasses and
webhooks verified. Failures are ``AssertionError`` with a message naming
what the gateway did instead. The kit needs no pytest; it does not import
``stripe``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from ..exceptions import (
    EscrowConnectError,
    IdempotencyConflict,
    ResourceMissing,
    SignatureVerificationFailed,
)
from .base import AccountsV2Gateway, PaymentGateway
from .signing import sign_webhook_payload
from .types import (
    AccountLinkResult,
    AccountSessionResult,
    AccountSnapshot,
    CaptureMethod,
    ChargeSnapshot,
    CustomerSnapshot,
    LoginLinkResult,
    PaymentIntentSnapshot,
    RefundSnapshot,
    TransferReversalSnapshot,
    TransferSnapshot,
)

__all__ = ["AccountsV2Conformance", "GatewayConformance"]

#: Keys every gateway must refuse: blank, whitespace, too long, not a string.
BAD_IDEMPOTENCY_KEYS: tuple[Any, ...] = ("", "   ", "k" * 256, None)
#: Amounts refused with TypeError (bool is an int to Python, never to money).
NOT_INT_AMOUNTS: tuple[Any, ...] = (True, 10.0, "1000", None)
#: Amounts refused with ValueError.
NOT_POSITIVE_AMOUNTS: tuple[int, ...] = (0, -1)
WEBHOOK_SECRET = "whsec_conformance_kit"
_DEFAULT: Any = object()


class GatewayConformance:
    """Tests of the behaviour every PaymentGateway shares; subclass and fill in the hooks."""

    #: Country of the connected accounts the kit creates.
    country: str = "US"
    #: Currency of the payments the kit creates (the accounts must accept it).
    currency: str = "usd"
    #: Amount, in minor units, of each payment the kit creates.
    amount: int = 2_000

    # --- hooks -------------------------------------------------------------------

    def make_gateway(self) -> PaymentGateway:
        """A gateway instance talking to a test environment (called once per test)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_gateway()")

    def complete_onboarding(self, gateway: PaymentGateway, account_id: str) -> None:
        """Make the new connected account ``account_id`` able to receive transfers."""
        raise NotImplementedError(f"{type(self).__name__} must implement complete_onboarding()")

    def pay(self, gateway: PaymentGateway, payment_intent_id: str) -> None:
        """Confirm the PaymentIntent with a card that succeeds, as the customer would."""
        raise NotImplementedError(f"{type(self).__name__} must implement pay()")

    def provider_call_count(self, gateway: PaymentGateway) -> int | None:
        """How many requests the gateway has made, if it can tell (None: not checked).

        When given, a refused argument must leave it unchanged: the refusal
        happened before any request.
        """
        return None

    # --- helpers -----------------------------------------------------------------

    @property
    def gateway(self) -> PaymentGateway:
        found = self.__dict__.get("_conformance_gateway")
        if found is None:
            found = self.__dict__["_conformance_gateway"] = self.make_gateway()
        return found

    def new_key(self) -> str:
        """A fresh idempotency key (unique across runs, so a real test mode never replays)."""
        return f"conformance-{uuid.uuid4().hex}"

    @contextmanager
    def refused(self, *errors: type[BaseException], what: str) -> Iterator[None]:
        """Assert the block raises one of ``errors`` before any request."""
        before = self.provider_call_count(self.gateway)
        try:
            yield
        except errors:
            pass
        except Exception as exc:
            names = " or ".join(e.__name__ for e in errors)
            raise AssertionError(f"{what}: expected {names}, got {exc!r}") from exc
        else:
            names = " or ".join(e.__name__ for e in errors)
            raise AssertionError(f"{what}: expected {names}, nothing was raised")
        after = self.provider_call_count(self.gateway)
        if before != after:
            raise AssertionError(f"{what}: refused only after a request reached the provider")

    def expect_error(
        self, error: type[EscrowConnectError], call: Callable[[], object], what: str
    ) -> EscrowConnectError:
        """Assert ``call`` raises ``error`` (a GatewayError, or a webhook refusal)."""
        try:
            call()
        except error as exc:
            return exc
        except Exception as exc:
            raise AssertionError(f"{what}: expected {error.__name__}, got {exc!r}") from exc
        raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")

    def expect_type(self, value: object, expected: type, what: str) -> None:
        if type(value) is not expected:
            raise AssertionError(
                f"{what} returned {type(value).__name__}, not {expected.__name__}: {value!r}"
            )

    def create_account(self, *, key: str | None = None, email: str = "seller@example.com") -> Any:
        return self.gateway.create_account(
            idempotency_key=key or self.new_key(),
            country=self.country,
            email=email,
            business_type="individual",
            metadata={"conformance": "1"},
            capabilities=("transfers", "card_payments"),
        )

    def onboarded_account(self) -> str:
        account = self.create_account()
        self.complete_onboarding(self.gateway, account.id)
        return str(account.id)

    def create_payment_intent(
        self,
        *,
        key: Any = _DEFAULT,
        amount: Any = _DEFAULT,
        capture_method: CaptureMethod = "automatic",
        transfer_group: str = "conformance",
    ) -> Any:
        return self.gateway.create_payment_intent(
            idempotency_key=self.new_key() if key is _DEFAULT else key,
            amount=self.amount if amount is _DEFAULT else amount,
            currency=self.currency,
            transfer_group=transfer_group,
            metadata={"conformance": "1"},
            capture_method=capture_method,
        )

    def paid_payment_intent(
        self, *, capture_method: CaptureMethod = "automatic", transfer_group: str = "conformance"
    ) -> PaymentIntentSnapshot:
        intent = self.create_payment_intent(
            capture_method=capture_method, transfer_group=transfer_group
        )
        self.pay(self.gateway, intent.id)
        paid = self.gateway.retrieve_payment_intent(intent.id)
        self.expect_type(paid, PaymentIntentSnapshot, "retrieve_payment_intent")
        return paid

    # --- arguments are refused before any request ----------------------------------

    def test_every_idempotent_call_refuses_a_bad_idempotency_key(self) -> None:
        g = self.gateway
        calls: dict[str, Callable[[Any], object]] = {
            "create_account": lambda k: g.create_account(
                idempotency_key=k,
                country=self.country,
                email=None,
                business_type=None,
                metadata={},
            ),
            "create_payment_intent": lambda k: self.create_payment_intent(key=k),
            "capture_payment_intent": lambda k: g.capture_payment_intent(
                "pi_conformance", idempotency_key=k
            ),
            "cancel_payment_intent": lambda k: g.cancel_payment_intent(
                "pi_conformance", idempotency_key=k
            ),
            "create_transfer": lambda k: g.create_transfer(
                idempotency_key=k,
                amount=self.amount,
                currency=self.currency,
                destination="acct_conformance",
                source_transaction="ch_conformance",
                transfer_group="conformance",
                metadata={},
            ),
            "create_transfer_reversal": lambda k: g.create_transfer_reversal(
                transfer_id="tr_conformance", idempotency_key=k, amount=None, metadata={}
            ),
            "create_refund": lambda k: g.create_refund(
                idempotency_key=k, payment_intent="pi_conformance", amount=None, metadata={}
            ),
            "create_customer": lambda k: g.create_customer(idempotency_key=k, metadata={}),
        }
        for name, call in calls.items():
            for bad in BAD_IDEMPOTENCY_KEYS:
                with self.refused(ValueError, what=f"{name}(idempotency_key={bad!r})"):
                    call(bad)

    def test_amounts_must_be_positive_integers_in_minor_units(self) -> None:
        g = self.gateway
        for bad in NOT_INT_AMOUNTS:
            with self.refused(TypeError, what=f"create_payment_intent(amount={bad!r})"):
                self.create_payment_intent(amount=bad)
        for bad in NOT_POSITIVE_AMOUNTS:
            with self.refused(ValueError, what=f"create_payment_intent(amount={bad!r})"):
                self.create_payment_intent(amount=bad)
        for bad in (*NOT_INT_AMOUNTS[:3], *NOT_POSITIVE_AMOUNTS):
            error = TypeError if bad in NOT_INT_AMOUNTS[:3] else ValueError
            with self.refused(error, what=f"create_transfer(amount={bad!r})"):
                g.create_transfer(
                    idempotency_key=self.new_key(),
                    amount=bad,
                    currency=self.currency,
                    destination="acct_conformance",
                    source_transaction="ch_conformance",
                    transfer_group="conformance",
                    metadata={},
                )
            with self.refused(error, what=f"create_refund(amount={bad!r})"):
                g.create_refund(
                    idempotency_key=self.new_key(),
                    payment_intent="pi_conformance",
                    amount=bad,
                    metadata={},
                )
            with self.refused(error, what=f"capture_payment_intent(amount_to_capture={bad!r})"):
                g.capture_payment_intent(
                    "pi_conformance", idempotency_key=self.new_key(), amount_to_capture=bad
                )

    def test_ids_must_not_be_blank(self) -> None:
        g = self.gateway
        calls: dict[str, Callable[[str], object]] = {
            "retrieve_account": g.retrieve_account,
            "retrieve_payment_intent": g.retrieve_payment_intent,
            "retrieve_charge": g.retrieve_charge,
            "retrieve_dispute": g.retrieve_dispute,
            "retrieve_transfer": g.retrieve_transfer,
            "retrieve_refund": g.retrieve_refund,
            "retrieve_event": g.retrieve_event,
            "create_login_link": lambda i: g.create_login_link(account_id=i),
            "list_refunds": lambda i: g.list_refunds(payment_intent=i),
        }
        for name, call in calls.items():
            for blank in ("", "  "):
                with self.refused(ValueError, what=f"{name}({blank!r})"):
                    call(blank)

    def test_capabilities_and_service_agreement_are_checked(self) -> None:
        g = self.gateway
        for capabilities, error in (("transfers", TypeError), ((), ValueError)):
            with self.refused(error, what=f"create_account(capabilities={capabilities!r})"):
                g.create_account(
                    idempotency_key=self.new_key(),
                    country=self.country,
                    email=None,
                    business_type=None,
                    metadata={},
                    capabilities=capabilities,
                )
        with self.refused(ValueError, what="create_account(service_agreement='partial')"):
            g.create_account(
                idempotency_key=self.new_key(),
                country=self.country,
                email=None,
                business_type=None,
                metadata={},
                service_agreement="partial",  # type: ignore[arg-type]
            )

    # --- results are snapshots; keys are honoured ------------------------------------

    def test_create_account_answers_a_repeated_key_with_the_same_account(self) -> None:
        key = self.new_key()
        account = self.create_account(key=key)
        self.expect_type(account, AccountSnapshot, "create_account")
        again = self.create_account(key=key)
        if again.id != account.id:
            raise AssertionError(
                f"create_account with the same key created {again.id} after {account.id}"
            )
        self.expect_error(
            IdempotencyConflict,
            lambda: self.create_account(key=key, email="someone-else@example.com"),
            "create_account with a used key and other parameters",
        )
        fetched = self.gateway.retrieve_account(account.id)
        self.expect_type(fetched, AccountSnapshot, "retrieve_account")
        if fetched.id != account.id:
            raise AssertionError(f"retrieve_account({account.id!r}) returned {fetched.id}")
        listed = self.gateway.list_accounts(
            created_gte=datetime.now(timezone.utc) - timedelta(hours=1)
        )
        if not isinstance(listed, list) or account.id not in {a.id for a in listed}:
            raise AssertionError(f"list_accounts does not list the new account {account.id}")
        for item in listed:
            self.expect_type(item, AccountSnapshot, "list_accounts (an item)")

    def test_create_payment_intent_answers_a_repeated_key_with_the_same_intent(self) -> None:
        key = self.new_key()
        intent = self.create_payment_intent(key=key)
        self.expect_type(intent, PaymentIntentSnapshot, "create_payment_intent")
        if intent.amount != self.amount or intent.currency != self.currency:
            raise AssertionError(
                f"create_payment_intent answered {intent.amount} {intent.currency}, "
                f"asked for {self.amount} {self.currency}"
            )
        again = self.create_payment_intent(key=key)
        if again.id != intent.id:
            raise AssertionError(
                f"create_payment_intent with the same key created {again.id} after {intent.id}"
            )
        self.expect_error(
            IdempotencyConflict,
            lambda: self.create_payment_intent(key=key, amount=self.amount + 1),
            "create_payment_intent with a used key and another amount",
        )

    def test_saved_card_arguments_are_refused_before_a_request(self) -> None:
        g = self.gateway
        refused: dict[str, dict[str, Any]] = {
            "setup_future_usage without customer": {"setup_future_usage": "off_session"},
            "off_session without confirm": {
                "customer": "cus_conformance",
                "payment_method": "pm_conformance",
                "off_session": True,
            },
            "off_session without payment_method": {
                "customer": "cus_conformance",
                "off_session": True,
                "confirm": True,
            },
            "confirm without payment_method": {"confirm": True},
        }
        for what, extra in refused.items():
            with self.refused(ValueError, what=f"create_payment_intent({what})"):
                g.create_payment_intent(
                    idempotency_key=self.new_key(),
                    amount=self.amount,
                    currency=self.currency,
                    transfer_group="conformance",
                    metadata={},
                    capture_method="automatic",
                    **extra,
                )
        with self.refused(ValueError, TypeError, what="detach_payment_method('')"):
            g.detach_payment_method("")

    def test_create_customer_answers_a_repeated_key_with_the_same_customer(self) -> None:
        key = self.new_key()
        customer = self.gateway.create_customer(idempotency_key=key, metadata={"conformance": "1"})
        self.expect_type(customer, CustomerSnapshot, "create_customer")
        again = self.gateway.create_customer(idempotency_key=key, metadata={"conformance": "1"})
        if again.id != customer.id:
            raise AssertionError(
                f"create_customer with the same key created {again.id} after {customer.id}"
            )
        intent = self.gateway.create_payment_intent(
            idempotency_key=self.new_key(),
            amount=self.amount,
            currency=self.currency,
            transfer_group="conformance",
            metadata={},
            capture_method="automatic",
            customer=customer.id,
            setup_future_usage="off_session",
        )
        if intent.customer != customer.id or intent.setup_future_usage != "off_session":
            raise AssertionError(
                "create_payment_intent(customer=..., setup_future_usage='off_session') "
                f"answered customer={intent.customer!r}, "
                f"setup_future_usage={intent.setup_future_usage!r}"
            )

    def test_onboarding_links_and_sessions(self) -> None:
        account_id = self.onboarded_account()
        g = self.gateway
        link = g.create_account_link(
            account_id=account_id,
            link_type="account_onboarding",
            refresh_url="https://example.com/refresh",
            return_url="https://example.com/return",
        )
        self.expect_type(link, AccountLinkResult, "create_account_link")
        login = g.create_login_link(account_id=account_id)
        self.expect_type(login, LoginLinkResult, "create_login_link")
        session = g.create_account_session(account_id=account_id)
        self.expect_type(session, AccountSessionResult, "create_account_session")
        # What ONBOARDING_COLLECT / ONBOARDING_FUTURE_REQUIREMENTS and
        # EMBEDDED_COMPONENTS make the services send.
        try:
            link = g.create_account_link(
                account_id=account_id,
                link_type="account_onboarding",
                refresh_url="https://example.com/refresh",
                return_url="https://example.com/return",
                collect="eventually_due",
                future_requirements="include",
            )
        except TypeError as exc:
            raise AssertionError(
                f"create_account_link(collect=..., future_requirements=...) failed: {exc!r}"
            ) from exc
        self.expect_type(link, AccountLinkResult, "create_account_link(collect='eventually_due')")
        try:
            session = g.create_account_session(
                account_id=account_id,
                components={
                    "payouts": {"instant_payouts": False, "standard_payouts": False},
                    "notification_banner": {},
                },
            )
        except TypeError as exc:
            raise AssertionError(
                f"create_account_session(components={{name: features}}) failed: {exc!r}"
            ) from exc
        self.expect_type(session, AccountSessionResult, "create_account_session(components={...})")

    def test_a_paid_payment_can_be_transferred_and_the_transfer_reversed(self) -> None:
        g = self.gateway
        account_id = self.onboarded_account()
        group = f"conformance-{uuid.uuid4().hex[:12]}"
        intent = self.paid_payment_intent(transfer_group=group)
        if not intent.latest_charge:
            raise AssertionError(f"the paid PaymentIntent {intent.id} has no latest_charge")
        charge = g.retrieve_charge(intent.latest_charge)
        self.expect_type(charge, ChargeSnapshot, "retrieve_charge")
        key = self.new_key()
        transfer = g.create_transfer(
            idempotency_key=key,
            amount=self.amount // 2,
            currency=self.currency,
            destination=account_id,
            source_transaction=intent.latest_charge,
            transfer_group=group,
            metadata={"conformance": "1"},
        )
        self.expect_type(transfer, TransferSnapshot, "create_transfer")
        again = g.create_transfer(
            idempotency_key=key,
            amount=self.amount // 2,
            currency=self.currency,
            destination=account_id,
            source_transaction=intent.latest_charge,
            transfer_group=group,
            metadata={"conformance": "1"},
        )
        if again.id != transfer.id:
            raise AssertionError(f"create_transfer with the same key created {again.id}")
        self.expect_type(g.retrieve_transfer(transfer.id), TransferSnapshot, "retrieve_transfer")
        listed = g.list_transfers(transfer_group=group)
        if [t.id for t in listed] != [transfer.id]:
            raise AssertionError(f"list_transfers({group!r}) answered {listed!r}")
        reversal = g.create_transfer_reversal(
            transfer_id=transfer.id, idempotency_key=self.new_key(), amount=None, metadata={}
        )
        self.expect_type(reversal, TransferReversalSnapshot, "create_transfer_reversal")
        if reversal.transfer != transfer.id:
            raise AssertionError(f"the reversal belongs to {reversal.transfer}, not {transfer.id}")

    def test_a_paid_payment_can_be_refunded(self) -> None:
        g = self.gateway
        intent = self.paid_payment_intent()
        key = self.new_key()
        refund = g.create_refund(
            idempotency_key=key, payment_intent=intent.id, amount=None, metadata={}
        )
        self.expect_type(refund, RefundSnapshot, "create_refund")
        again = g.create_refund(
            idempotency_key=key, payment_intent=intent.id, amount=None, metadata={}
        )
        if again.id != refund.id:
            raise AssertionError(f"create_refund with the same key created {again.id}")
        self.expect_type(g.retrieve_refund(refund.id), RefundSnapshot, "retrieve_refund")
        listed = g.list_refunds(payment_intent=intent.id)
        if refund.id not in {r.id for r in listed}:
            raise AssertionError(f"list_refunds({intent.id!r}) does not list {refund.id}")

    def test_a_held_payment_can_be_captured_and_an_unpaid_one_cancelled(self) -> None:
        g = self.gateway
        held = self.paid_payment_intent(capture_method="manual")
        if held.status != "requires_capture":
            raise AssertionError(f"a paid manual-capture PaymentIntent is {held.status!r}")
        captured = g.capture_payment_intent(held.id, idempotency_key=self.new_key())
        self.expect_type(captured, PaymentIntentSnapshot, "capture_payment_intent")
        if captured.status != "succeeded":
            raise AssertionError(f"a captured PaymentIntent is {captured.status!r}")
        unpaid = self.create_payment_intent(capture_method="manual")
        cancelled = g.cancel_payment_intent(unpaid.id, idempotency_key=self.new_key())
        self.expect_type(cancelled, PaymentIntentSnapshot, "cancel_payment_intent")
        if cancelled.status != "canceled":
            raise AssertionError(f"a cancelled PaymentIntent is {cancelled.status!r}")

    # --- failures are GatewayErrors ---------------------------------------------------

    def test_a_missing_object_is_resource_missing(self) -> None:
        g = self.gateway
        missing = uuid.uuid4().hex[:16]
        calls: dict[str, Callable[[], object]] = {
            "retrieve_account": lambda: g.retrieve_account(f"acct_{missing}"),
            "retrieve_payment_intent": lambda: g.retrieve_payment_intent(f"pi_{missing}"),
            "retrieve_transfer": lambda: g.retrieve_transfer(f"tr_{missing}"),
            "retrieve_refund": lambda: g.retrieve_refund(f"re_{missing}"),
            "capture_payment_intent": lambda: g.capture_payment_intent(
                f"pi_{missing}", idempotency_key=self.new_key()
            ),
        }
        for name, call in calls.items():
            self.expect_error(ResourceMissing, call, f"{name} of a missing object")

    def test_events_are_plain_dicts(self) -> None:
        g = self.gateway
        self.create_account()
        since = int(time.time()) - 3600
        events = list(g.list_events(created_gte=since))
        for event in events:
            if not isinstance(event, dict) or "id" not in event or "type" not in event:
                raise AssertionError(f"list_events yielded {event!r}, not an event dict")
        if events:
            first = g.retrieve_event(events[0]["id"])
            if not isinstance(first, dict) or first.get("id") != events[0]["id"]:
                raise AssertionError(f"retrieve_event({events[0]['id']!r}) answered {first!r}")
        self.expect_error(
            ResourceMissing,
            lambda: g.retrieve_event(f"evt_{uuid.uuid4().hex[:16]}"),
            "retrieve_event of a missing event",
        )

    # --- webhooks -------------------------------------------------------------------------

    def test_verify_webhook_accepts_a_signed_event_and_refuses_anything_else(self) -> None:
        g = self.gateway
        event = {"id": "evt_conformance", "object": "event", "type": "account.updated"}
        payload = json.dumps(event).encode()
        good = sign_webhook_payload(payload, WEBHOOK_SECRET)
        verified = g.verify_webhook(payload, good, [WEBHOOK_SECRET], 300)
        if not isinstance(verified, dict) or verified.get("id") != "evt_conformance":
            raise AssertionError(f"verify_webhook of a signed event answered {verified!r}")
        refusals: dict[str, Callable[[], object]] = {
            "a tampered body": lambda: g.verify_webhook(
                payload + b" ", good, [WEBHOOK_SECRET], 300
            ),
            "another secret": lambda: g.verify_webhook(payload, good, ["whsec_other"], 300),
            "no signature header": lambda: g.verify_webhook(payload, None, [WEBHOOK_SECRET], 300),
            "a made-up signature": lambda: g.verify_webhook(
                payload, f"t={int(time.time())},v1={'0' * 64}", [WEBHOOK_SECRET], 300
            ),
            "a stale signature": lambda: g.verify_webhook(
                payload,
                sign_webhook_payload(payload, WEBHOOK_SECRET, int(time.time()) - 3600),
                [WEBHOOK_SECRET],
                300,
            ),
        }
        for what, call in refusals.items():
            self.expect_error(SignatureVerificationFailed, call, f"verify_webhook of {what}")


class AccountsV2Conformance(GatewayConformance):
    """:class:`GatewayConformance` plus Accounts v2 and thin events (``ACCOUNTS_API = "v2"``).

    Subclass this one instead when your gateway implements
    :class:`~django_escrow_connect.gateway.base.AccountsV2Gateway`; the hooks
    are the same (``complete_onboarding`` also receives v2 accounts).
    """

    @property
    def v2_gateway(self) -> AccountsV2Gateway:
        found = self.gateway
        if not isinstance(found, AccountsV2Gateway):
            raise AssertionError(
                f"{type(found).__name__} lacks the AccountsV2Gateway methods "
                "(create_account_v2, retrieve_account_v2, list_accounts_v2, "
                "create_account_link_v2, list_thin_events)"
            )
        return found

    def create_account_v2(self, *, key: Any = _DEFAULT, email: str = "seller@example.com") -> Any:
        return self.v2_gateway.create_account_v2(
            idempotency_key=self.new_key() if key is _DEFAULT else key,
            country=self.country,
            email=email,
            business_type="individual",
            metadata={"conformance": "v2"},
            capabilities=("transfers",),
        )

    def test_v2_creation_refuses_bad_keys_and_capabilities_before_a_request(self) -> None:
        for key in BAD_IDEMPOTENCY_KEYS:
            with self.refused(ValueError, TypeError, what=f"create_account_v2 with key {key!r}"):
                self.create_account_v2(key=key)
        with self.refused(ValueError, what="create_account_v2 with a capability v2 lacks"):
            self.v2_gateway.create_account_v2(
                idempotency_key=self.new_key(),
                country=self.country,
                email=None,
                business_type="individual",
                metadata={},
                capabilities=(
                    "transfers",
                    "legacy_payments_capability_x",
                    "tax_reporting_us_1099_k",
                ),
            )

    def test_v2_account_answers_a_repeated_key_and_is_read_and_listed(self) -> None:
        key = self.new_key()
        first = self.create_account_v2(key=key)
        self.expect_type(first, AccountSnapshot, "create_account_v2")
        again = self.create_account_v2(key=key)
        if again.id != first.id:
            raise AssertionError(
                f"create_account_v2 with a repeated key made a second account ({again.id})"
            )
        self.expect_error(
            IdempotencyConflict,
            lambda: self.create_account_v2(key=key, email="other@example.com"),
            "create_account_v2 with a repeated key and other parameters",
        )
        read = self.v2_gateway.retrieve_account_v2(first.id)
        self.expect_type(read, AccountSnapshot, "retrieve_account_v2")
        if read.id != first.id or read.metadata.get("conformance") != "v2":
            raise AssertionError(f"retrieve_account_v2 answered another account: {read!r}")
        listed = {snapshot.id: snapshot for snapshot in self.v2_gateway.list_accounts_v2()}
        if first.id not in listed or listed[first.id].metadata.get("conformance") != "v2":
            raise AssertionError("list_accounts_v2 does not list the new account with its metadata")

    def test_v2_onboarding_link_and_missing_account(self) -> None:
        account = self.create_account_v2()
        link = self.v2_gateway.create_account_link_v2(
            account_id=account.id,
            link_type="account_onboarding",
            refresh_url="https://example.com/refresh",
            return_url="https://example.com/return",
        )
        self.expect_type(link, AccountLinkResult, "create_account_link_v2")
        self.expect_error(
            ResourceMissing,
            lambda: self.v2_gateway.retrieve_account_v2("acct_conformanceMissing0"),
            "retrieve_account_v2 of an unknown account",
        )

    def test_v2_account_reaches_transfers_after_onboarding(self) -> None:
        account = self.create_account_v2()
        self.complete_onboarding(self.gateway, account.id)
        read = self.v2_gateway.retrieve_account_v2(account.id)
        if not read.transfers_active:
            raise AssertionError(
                f"an onboarded v2 account has capabilities {read.capabilities!r}, "
                "no active 'transfers' (stripe_balance.stripe_transfers)"
            )

    def test_thin_events_are_plain_dicts(self) -> None:
        self.create_account_v2()
        with self.refused(TypeError, what="list_thin_events with types as one string"):
            self.v2_gateway.list_thin_events(
                created_gte=datetime.now(timezone.utc), types="v2.core.account.closed"
            )
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        for event in self.v2_gateway.list_thin_events(created_gte=since):
            self.expect_type(event, dict, "list_thin_events item")
            if event.get("object") != "v2.core.event":
                raise AssertionError(f"list_thin_events listed a non-thin event: {event!r}")
