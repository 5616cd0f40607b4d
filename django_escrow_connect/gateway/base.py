"""The interface every payment gateway implements.

Services depend on :class:`PaymentGateway`, never on a concrete gateway, so
tests and demos can swap in a simulated one. Contract, for every
implementation:

- every call that creates an object or moves money takes a caller-supplied
  ``idempotency_key`` (derived from the local row and operation and stored
  before the call); the gateway never invents one;
- results are the plain types of :mod:`django_escrow_connect.gateway.types`;
- failures raise :class:`~django_escrow_connect.exceptions.GatewayError`
  subclasses (webhooks: ``SignatureVerificationFailed`` /
  ``InvalidWebhookPayload``), never provider-specific exceptions.

This module must not import ``stripe``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .types import (
    AccountBusinessType,
    AccountLinkCollect,
    AccountLinkResult,
    AccountLinkType,
    AccountSessionResult,
    AccountSnapshot,
    CancellationReason,
    CaptureMethod,
    ChargeSnapshot,
    CustomerSnapshot,
    DisputeSnapshot,
    FutureRequirements,
    LoginLinkResult,
    PaymentIntentSnapshot,
    PaymentMethodSnapshot,
    RefundReason,
    RefundSnapshot,
    ServiceAgreement,
    SessionComponents,
    SetupFutureUsage,
    TransferReversalSnapshot,
    TransferSnapshot,
)

__all__ = ["AccountsV2Gateway", "PaymentGateway"]


@runtime_checkable
class PaymentGateway(Protocol):
    """What the package needs from a payment provider (Stripe Connect semantics)."""

    # --- connected accounts -------------------------------------------------

    def create_account(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: Sequence[str] = ("transfers", "card_payments"),
        service_agreement: ServiceAgreement | None = None,
    ) -> AccountSnapshot:
        """Create a connected account: Express dashboard, platform pays fees and owns losses.

        ``capabilities`` are requested (``capabilities[<name>][requested]=true``);
        ``service_agreement`` is sent as ``tos_acceptance[service_agreement]``
        (None: Stripe's default, ``full``). A ``recipient`` account cannot
        request ``card_payments``.
        """
        ...

    def retrieve_account(self, account_id: str) -> AccountSnapshot: ...

    def list_accounts(self, *, created_gte: datetime) -> list[AccountSnapshot]:
        """The platform's connected accounts created at or after ``created_gte``.

        Used to find an account whose creation answer was lost once the
        creation's idempotency key may have expired (Stripe keeps keys for 24 hours).
        """
        ...

    def create_account_link(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
        collect: AccountLinkCollect = "currently_due",
        future_requirements: FutureRequirements = "omit",
    ) -> AccountLinkResult:
        """A single-use onboarding link; ``collect`` and ``future_requirements``
        are ``collection_options``, sent only when not Stripe's defaults."""
        ...

    def create_login_link(self, *, account_id: str) -> LoginLinkResult: ...

    def create_account_session(
        self,
        *,
        account_id: str,
        components: Sequence[str] | SessionComponents = ("account_onboarding",),
    ) -> AccountSessionResult:
        """An AccountSession enabling ``components``: names (Stripe's default
        features), or ``{name: {feature: bool}}``."""
        ...

    # --- payments ---------------------------------------------------------------

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
        """A PaymentIntent; ``on_behalf_of`` makes that connected account the settlement
        merchant (it needs ``card_payments``). ``customer`` with
        ``setup_future_usage`` saves the card the customer pays with;
        ``customer``, ``payment_method``, ``off_session`` and ``confirm``
        charge a saved card without the customer (a refusal raises, with the
        PaymentIntent it made in ``GatewayError.payment_intent``)."""
        ...

    def create_customer(
        self, *, idempotency_key: str, metadata: Mapping[str, str], description: str | None = None
    ) -> CustomerSnapshot:
        """A Customer to save a payer's card to (ids in metadata, no personal data)."""
        ...

    def detach_payment_method(self, payment_method_id: str) -> PaymentMethodSnapshot:
        """Detach a saved PaymentMethod from its Customer: it can no longer be charged."""
        ...

    def retrieve_payment_intent(
        self, payment_intent_id: str, *, expand_charge: bool = False
    ) -> PaymentIntentSnapshot: ...

    def list_payment_intents(
        self, *, customer: str, created_gte: datetime
    ) -> list[PaymentIntentSnapshot]:
        """The Customer's PaymentIntents created at or after ``created_gte``, newest
        first: every page, since the caller looks for one by its metadata.

        Used to find an off-session tip's PaymentIntent whose creation answer
        was lost: Stripe cannot look a PaymentIntent up by its idempotency key
        or (consistently) by metadata, but lists a Customer's.
        """
        ...

    def capture_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        amount_to_capture: int | None = None,
        application_fee_amount: int | None = None,
    ) -> PaymentIntentSnapshot: ...

    def cancel_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        cancellation_reason: CancellationReason | None = None,
    ) -> PaymentIntentSnapshot: ...

    def retrieve_charge(
        self, charge_id: str, *, stripe_account: str | None = None
    ) -> ChargeSnapshot: ...

    def retrieve_dispute(self, dispute_id: str) -> DisputeSnapshot: ...

    # --- transfers ----------------------------------------------------------------

    def create_transfer(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str,
        transfer_group: str,
        metadata: Mapping[str, str],
    ) -> TransferSnapshot: ...

    def retrieve_transfer(self, transfer_id: str) -> TransferSnapshot: ...

    def list_transfers(self, *, transfer_group: str) -> list[TransferSnapshot]: ...

    def create_transfer_reversal(
        self,
        *,
        transfer_id: str,
        idempotency_key: str,
        amount: int | None,
        metadata: Mapping[str, str],
    ) -> TransferReversalSnapshot: ...

    # --- refunds --------------------------------------------------------------------

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
    ) -> RefundSnapshot: ...

    def retrieve_refund(self, refund_id: str) -> RefundSnapshot: ...

    def list_refunds(self, *, payment_intent: str) -> list[RefundSnapshot]: ...

    # --- events and webhooks -----------------------------------------------------

    def retrieve_event(
        self, event_id: str, *, stripe_account: str | None = None
    ) -> dict[str, Any]: ...

    def list_events(
        self,
        *,
        created_gte: int,
        types: Sequence[str] | None = None,
        stripe_account: str | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def verify_webhook(
        self,
        payload: bytes,
        sig_header: str | None,
        secrets: Sequence[str],
        tolerance: int,
    ) -> dict[str, Any]:
        """Verify ``Stripe-Signature`` against any of ``secrets``; return the parsed event."""
        ...


@runtime_checkable
class AccountsV2Gateway(PaymentGateway, Protocol):
    """A gateway that also speaks Accounts v2 and thin events (``ACCOUNTS_API = "v2"``).

    A separate protocol, so gateways written for v1 stay complete
    :class:`PaymentGateway` implementations; a system check (E071) requires
    these methods only when ``ACCOUNTS_API`` is ``"v2"``.
    :class:`~.basegateway.BaseGateway` has all of them (one hook each).
    """

    def create_account_v2(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: Sequence[str] = ("transfers",),
    ) -> AccountSnapshot: ...

    def retrieve_account_v2(self, account_id: str) -> AccountSnapshot: ...

    def list_accounts_v2(self) -> list[AccountSnapshot]: ...

    def create_account_link_v2(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
        collect: AccountLinkCollect = "currently_due",
        future_requirements: FutureRequirements = "omit",
    ) -> AccountLinkResult: ...

    def list_thin_events(
        self,
        *,
        created_gte: datetime,
        types: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...
