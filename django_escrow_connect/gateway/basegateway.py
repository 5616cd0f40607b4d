"""A base class for gateways: the shared argument checks, then one hook per call.

:class:`BaseGateway` implements every method of
:class:`~django_escrow_connect.gateway.base.PaymentGateway`. Each public
method refuses a bad argument (:mod:`.arguments`: idempotency key, ids,
amounts, capabilities, service agreement) with ``ValueError``/``TypeError``
before anything reaches the provider, then calls its hook, named like the
method with a leading underscore (``create_account`` -> ``_create_account``),
with the same keyword arguments, already checked (``capabilities`` as a
de-duplicated tuple).

A subclass implements the hooks for its provider, nothing else. A hook it
does not implement raises ``NotImplementedError`` naming the gateway and the
method, so a method added to the protocol in a later release gets a default
here and breaks only the call that needs it, not every custom gateway.

Webhook verification is shared too: :meth:`BaseGateway.verify_webhook`
applies every rule of :func:`.signing.verify_webhook_payload` and asks
:meth:`BaseGateway._webhook_signature_matches` about each secret.

This module must not import ``stripe``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from .arguments import (
    require_amount,
    require_capabilities,
    require_collection,
    require_id,
    require_idempotency_key,
    require_service_agreement,
    require_session_components,
)
from .signing import signature_matches, verify_webhook_payload
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

if TYPE_CHECKING:
    from .base import AccountsV2Gateway, PaymentGateway

__all__ = ["MAX_EVENT_TYPES", "BaseGateway"]

#: Stripe's limit on ``types`` when listing events.
MAX_EVENT_TYPES = 20


class BaseGateway:
    """Every PaymentGateway method with its argument checks; subclasses add the provider.

    Subclass it and implement the ``_<method>`` hooks your provider supports;
    see "Writing a custom gateway" in ``docs/gateways.md``.
    """

    #: Whether :meth:`verify_webhook` verifies events when no signing secret is
    #: configured (``secrets`` empty), with a secret of its own. A real
    #: provider never does: the webhook receiver refuses every delivery to an
    #: endpoint without secrets unless the gateway says so (the simulated
    #: gateway does, for development). Read with ``getattr``: a gateway that
    #: implements the protocol without this class need not define it.
    verifies_without_configured_secrets: ClassVar[bool] = False

    def _not_implemented(self, method: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not implement {method}")

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
        require_idempotency_key(idempotency_key)
        requested = require_capabilities(capabilities)
        require_service_agreement(service_agreement)
        return self._create_account(
            idempotency_key=idempotency_key,
            country=country,
            email=email,
            business_type=business_type,
            metadata=metadata,
            capabilities=requested,
            service_agreement=service_agreement,
        )

    def _create_account(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: tuple[str, ...],
        service_agreement: ServiceAgreement | None,
    ) -> AccountSnapshot:
        raise self._not_implemented("create_account")

    def retrieve_account(self, account_id: str) -> AccountSnapshot:
        return self._retrieve_account(require_id(account_id, "account_id"))

    def _retrieve_account(self, account_id: str) -> AccountSnapshot:
        raise self._not_implemented("retrieve_account")

    def list_accounts(self, *, created_gte: datetime) -> list[AccountSnapshot]:
        if not isinstance(created_gte, datetime):
            raise TypeError(f"created_gte must be a datetime, not {created_gte!r}")
        return self._list_accounts(created_gte=created_gte)

    def _list_accounts(self, *, created_gte: datetime) -> list[AccountSnapshot]:
        raise self._not_implemented("list_accounts")

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
        require_collection(collect, future_requirements)
        return self._create_account_link(
            account_id=require_id(account_id, "account_id"),
            link_type=link_type,
            refresh_url=refresh_url,
            return_url=return_url,
            collect=collect,
            future_requirements=future_requirements,
        )

    def _create_account_link(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
        collect: AccountLinkCollect,
        future_requirements: FutureRequirements,
    ) -> AccountLinkResult:
        raise self._not_implemented("create_account_link")

    def create_login_link(self, *, account_id: str) -> LoginLinkResult:
        return self._create_login_link(account_id=require_id(account_id, "account_id"))

    def _create_login_link(self, *, account_id: str) -> LoginLinkResult:
        raise self._not_implemented("create_login_link")

    def create_account_session(
        self,
        *,
        account_id: str,
        components: Sequence[str] | SessionComponents = ("account_onboarding",),
    ) -> AccountSessionResult:
        return self._create_account_session(
            account_id=require_id(account_id, "account_id"),
            components=require_session_components(components),
        )

    def _create_account_session(
        self, *, account_id: str, components: dict[str, dict[str, bool]]
    ) -> AccountSessionResult:
        # ``components`` iterates as the names in order (what this hook got
        # before features existed), and maps each name to its features.
        raise self._not_implemented("create_account_session")

    # --- connected accounts through Accounts v2 (/v2/core/accounts) -------------

    def create_account_v2(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: Sequence[str] = ("transfers",),
    ) -> AccountSnapshot:
        """An Accounts v2 account: ``recipient`` configuration, ``merchant`` if asked for.

        ``capabilities`` uses v1's names, so the owner-details hook means the
        same in both modes: ``transfers`` is the recipient configuration's
        ``stripe_balance.stripe_transfers``; a ``*_payments`` name (such as
        ``card_payments``) is requested on the merchant configuration. The
        Express dashboard, and the platform collecting fees and bearing
        losses, as v1's controller properties.
        """
        require_idempotency_key(idempotency_key)
        requested = require_capabilities(capabilities)
        for name in requested:
            if name != "transfers" and not name.endswith("_payments"):
                raise ValueError(
                    f"Capability {name!r} has no Accounts v2 equivalent the package knows: "
                    "use 'transfers' and '*_payments' capabilities."
                )
        return self._create_account_v2(
            idempotency_key=idempotency_key,
            country=country,
            email=email,
            business_type=business_type,
            metadata=metadata,
            capabilities=requested,
        )

    def _create_account_v2(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: AccountBusinessType | None,
        metadata: Mapping[str, str],
        capabilities: tuple[str, ...],
    ) -> AccountSnapshot:
        raise self._not_implemented("create_account_v2")

    def retrieve_account_v2(self, account_id: str) -> AccountSnapshot:
        """The account with its configurations, identity and requirements included."""
        return self._retrieve_account_v2(require_id(account_id, "account_id"))

    def _retrieve_account_v2(self, account_id: str) -> AccountSnapshot:
        raise self._not_implemented("retrieve_account_v2")

    def list_accounts_v2(self) -> list[AccountSnapshot]:
        """The platform's open accounts with the ``recipient`` configuration.

        Accounts v2 cannot filter by creation time or metadata: every page is
        read. Only top-level fields are filled (id, metadata, created, closed):
        the list answers without configurations or requirements.
        """
        return self._list_accounts_v2()

    def _list_accounts_v2(self) -> list[AccountSnapshot]:
        raise self._not_implemented("list_accounts_v2")

    def create_account_link_v2(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
        collect: AccountLinkCollect = "currently_due",
        future_requirements: FutureRequirements = "omit",
    ) -> AccountLinkResult:
        """A v2 account link (``/v2/core/account_links``, ``use_case.type = link_type``).

        ``collect`` and ``future_requirements`` are the use case's
        ``collection_options`` (``ONBOARDING_COLLECT``), as for v1 links.
        """
        require_collection(collect, future_requirements)
        return self._create_account_link_v2(
            account_id=require_id(account_id, "account_id"),
            link_type=link_type,
            refresh_url=refresh_url,
            return_url=return_url,
            collect=collect,
            future_requirements=future_requirements,
        )

    def _create_account_link_v2(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
        collect: AccountLinkCollect,
        future_requirements: FutureRequirements,
    ) -> AccountLinkResult:
        raise self._not_implemented("create_account_link_v2")

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
        require_idempotency_key(idempotency_key)
        require_amount(amount, "amount")
        check_saved_payment_method_arguments(
            customer=customer,
            setup_future_usage=setup_future_usage,
            payment_method=payment_method,
            off_session=off_session,
            confirm=confirm,
        )
        if application_fee_amount is not None:
            if destination is None:
                raise ValueError(
                    "application_fee_amount is only valid with a destination charge; with "
                    "separate charges and transfers, transfer less than was charged instead"
                )
            require_amount(application_fee_amount, "application_fee_amount", allow_zero=True)
        if destination is not None:
            require_id(destination, "destination")
        if on_behalf_of is not None:
            require_id(on_behalf_of, "on_behalf_of")
        return self._create_payment_intent(
            idempotency_key=idempotency_key,
            amount=amount,
            currency=currency,
            transfer_group=transfer_group,
            metadata=metadata,
            capture_method=capture_method,
            destination=destination,
            application_fee_amount=application_fee_amount,
            description=description,
            receipt_email=receipt_email,
            on_behalf_of=on_behalf_of,
            customer=customer,
            setup_future_usage=setup_future_usage,
            payment_method=payment_method,
            off_session=off_session,
            confirm=confirm,
        )

    def _create_payment_intent(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        transfer_group: str,
        metadata: Mapping[str, str],
        capture_method: CaptureMethod,
        destination: str | None,
        application_fee_amount: int | None,
        description: str | None,
        receipt_email: str | None,
        on_behalf_of: str | None,
        customer: str | None,
        setup_future_usage: SetupFutureUsage | None,
        payment_method: str | None,
        off_session: bool,
        confirm: bool,
    ) -> PaymentIntentSnapshot:
        raise self._not_implemented("create_payment_intent")

    # --- saved payment methods ----------------------------------------------------

    def create_customer(
        self, *, idempotency_key: str, metadata: Mapping[str, str], description: str | None = None
    ) -> CustomerSnapshot:
        require_idempotency_key(idempotency_key)
        return self._create_customer(
            idempotency_key=idempotency_key, metadata=metadata, description=description
        )

    def _create_customer(
        self, *, idempotency_key: str, metadata: Mapping[str, str], description: str | None
    ) -> CustomerSnapshot:
        raise self._not_implemented("create_customer")

    def detach_payment_method(self, payment_method_id: str) -> PaymentMethodSnapshot:
        return self._detach_payment_method(require_id(payment_method_id, "payment_method_id"))

    def _detach_payment_method(self, payment_method_id: str) -> PaymentMethodSnapshot:
        raise self._not_implemented("detach_payment_method")

    def retrieve_payment_intent(
        self, payment_intent_id: str, *, expand_charge: bool = False
    ) -> PaymentIntentSnapshot:
        return self._retrieve_payment_intent(
            require_id(payment_intent_id, "payment_intent_id"), expand_charge=expand_charge
        )

    def _retrieve_payment_intent(
        self, payment_intent_id: str, *, expand_charge: bool
    ) -> PaymentIntentSnapshot:
        raise self._not_implemented("retrieve_payment_intent")

    def list_payment_intents(
        self, *, customer: str, created_gte: datetime
    ) -> list[PaymentIntentSnapshot]:
        if not isinstance(created_gte, datetime):
            raise TypeError(f"created_gte must be a datetime, not {created_gte!r}")
        return self._list_payment_intents(
            customer=require_id(customer, "customer"), created_gte=created_gte
        )

    def _list_payment_intents(
        self, *, customer: str, created_gte: datetime
    ) -> list[PaymentIntentSnapshot]:
        raise self._not_implemented("list_payment_intents")

    def capture_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        amount_to_capture: int | None = None,
        application_fee_amount: int | None = None,
    ) -> PaymentIntentSnapshot:
        require_id(payment_intent_id, "payment_intent_id")
        require_idempotency_key(idempotency_key)
        if amount_to_capture is not None:
            require_amount(amount_to_capture, "amount_to_capture")
        if application_fee_amount is not None:
            require_amount(application_fee_amount, "application_fee_amount", allow_zero=True)
        return self._capture_payment_intent(
            payment_intent_id,
            idempotency_key=idempotency_key,
            amount_to_capture=amount_to_capture,
            application_fee_amount=application_fee_amount,
        )

    def _capture_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        amount_to_capture: int | None,
        application_fee_amount: int | None,
    ) -> PaymentIntentSnapshot:
        raise self._not_implemented("capture_payment_intent")

    def cancel_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        cancellation_reason: CancellationReason | None = None,
    ) -> PaymentIntentSnapshot:
        require_id(payment_intent_id, "payment_intent_id")
        require_idempotency_key(idempotency_key)
        return self._cancel_payment_intent(
            payment_intent_id,
            idempotency_key=idempotency_key,
            cancellation_reason=cancellation_reason,
        )

    def _cancel_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        cancellation_reason: CancellationReason | None,
    ) -> PaymentIntentSnapshot:
        raise self._not_implemented("cancel_payment_intent")

    def retrieve_charge(
        self, charge_id: str, *, stripe_account: str | None = None
    ) -> ChargeSnapshot:
        require_id(charge_id, "charge_id")
        if stripe_account is not None:
            require_id(stripe_account, "stripe_account")
        return self._retrieve_charge(charge_id, stripe_account=stripe_account)

    def _retrieve_charge(self, charge_id: str, *, stripe_account: str | None) -> ChargeSnapshot:
        raise self._not_implemented("retrieve_charge")

    def retrieve_dispute(self, dispute_id: str) -> DisputeSnapshot:
        return self._retrieve_dispute(require_id(dispute_id, "dispute_id"))

    def _retrieve_dispute(self, dispute_id: str) -> DisputeSnapshot:
        raise self._not_implemented("retrieve_dispute")

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
    ) -> TransferSnapshot:
        require_idempotency_key(idempotency_key)
        require_amount(amount, "amount")
        require_id(destination, "destination")
        require_id(source_transaction, "source_transaction")
        return self._create_transfer(
            idempotency_key=idempotency_key,
            amount=amount,
            currency=currency,
            destination=destination,
            source_transaction=source_transaction,
            transfer_group=transfer_group,
            metadata=metadata,
        )

    def _create_transfer(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str,
        transfer_group: str,
        metadata: Mapping[str, str],
    ) -> TransferSnapshot:
        raise self._not_implemented("create_transfer")

    def retrieve_transfer(self, transfer_id: str) -> TransferSnapshot:
        return self._retrieve_transfer(require_id(transfer_id, "transfer_id"))

    def _retrieve_transfer(self, transfer_id: str) -> TransferSnapshot:
        raise self._not_implemented("retrieve_transfer")

    def list_transfers(self, *, transfer_group: str) -> list[TransferSnapshot]:
        return self._list_transfers(transfer_group=transfer_group)

    def _list_transfers(self, *, transfer_group: str) -> list[TransferSnapshot]:
        raise self._not_implemented("list_transfers")

    def create_transfer_reversal(
        self,
        *,
        transfer_id: str,
        idempotency_key: str,
        amount: int | None,
        metadata: Mapping[str, str],
    ) -> TransferReversalSnapshot:
        require_id(transfer_id, "transfer_id")
        require_idempotency_key(idempotency_key)
        if amount is not None:
            require_amount(amount, "amount")
        return self._create_transfer_reversal(
            transfer_id=transfer_id,
            idempotency_key=idempotency_key,
            amount=amount,
            metadata=metadata,
        )

    def _create_transfer_reversal(
        self,
        *,
        transfer_id: str,
        idempotency_key: str,
        amount: int | None,
        metadata: Mapping[str, str],
    ) -> TransferReversalSnapshot:
        raise self._not_implemented("create_transfer_reversal")

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
    ) -> RefundSnapshot:
        require_idempotency_key(idempotency_key)
        require_id(payment_intent, "payment_intent")
        if amount is not None:
            require_amount(amount, "amount")
        return self._create_refund(
            idempotency_key=idempotency_key,
            payment_intent=payment_intent,
            amount=amount,
            metadata=metadata,
            reason=reason,
            reverse_transfer=reverse_transfer,
            refund_application_fee=refund_application_fee,
        )

    def _create_refund(
        self,
        *,
        idempotency_key: str,
        payment_intent: str,
        amount: int | None,
        metadata: Mapping[str, str],
        reason: RefundReason | None,
        reverse_transfer: bool,
        refund_application_fee: bool,
    ) -> RefundSnapshot:
        raise self._not_implemented("create_refund")

    def retrieve_refund(self, refund_id: str) -> RefundSnapshot:
        return self._retrieve_refund(require_id(refund_id, "refund_id"))

    def _retrieve_refund(self, refund_id: str) -> RefundSnapshot:
        raise self._not_implemented("retrieve_refund")

    def list_refunds(self, *, payment_intent: str) -> list[RefundSnapshot]:
        return self._list_refunds(payment_intent=require_id(payment_intent, "payment_intent"))

    def _list_refunds(self, *, payment_intent: str) -> list[RefundSnapshot]:
        raise self._not_implemented("list_refunds")

    # --- events and webhooks -----------------------------------------------------

    def retrieve_event(self, event_id: str, *, stripe_account: str | None = None) -> dict[str, Any]:
        require_id(event_id, "event_id")
        if stripe_account is not None:
            require_id(stripe_account, "stripe_account")
        return self._retrieve_event(event_id, stripe_account=stripe_account)

    def _retrieve_event(self, event_id: str, *, stripe_account: str | None) -> dict[str, Any]:
        raise self._not_implemented("retrieve_event")

    def list_events(
        self,
        *,
        created_gte: int,
        types: Sequence[str] | None = None,
        stripe_account: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events created at or after ``created_gte`` (unix seconds), newest first."""
        if isinstance(types, str):
            raise TypeError("types must be a sequence of event types, not a string")
        if types and len(types) > MAX_EVENT_TYPES:
            raise ValueError(f"Stripe accepts at most {MAX_EVENT_TYPES} event types at once")
        if stripe_account is not None:
            require_id(stripe_account, "stripe_account")
        return self._list_events(
            created_gte=created_gte,
            types=tuple(types) if types else None,
            stripe_account=stripe_account,
        )

    def _list_events(
        self,
        *,
        created_gte: int,
        types: tuple[str, ...] | None,
        stripe_account: str | None,
    ) -> Iterator[dict[str, Any]]:
        raise self._not_implemented("list_events")

    def list_thin_events(
        self,
        *,
        created_gte: datetime,
        types: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Thin (v2) events created at or after ``created_gte`` (``/v2/core/events``).

        Each is a ``v2.core.event`` as an event destination delivers it (the
        related object's id, no snapshot). ``types``: at most 20, as in v1.
        """
        if isinstance(types, str):
            raise TypeError("types must be a sequence of event types, not a string")
        if not isinstance(created_gte, datetime) or created_gte.tzinfo is None:
            raise TypeError(f"created_gte must be an aware datetime, not {created_gte!r}")
        if types and len(types) > MAX_EVENT_TYPES:
            raise ValueError(f"Stripe accepts at most {MAX_EVENT_TYPES} event types at once")
        return self._list_thin_events(
            created_gte=created_gte, types=tuple(types) if types else None
        )

    def _list_thin_events(
        self, *, created_gte: datetime, types: tuple[str, ...] | None
    ) -> Iterator[dict[str, Any]]:
        raise self._not_implemented("list_thin_events")

    def verify_webhook(
        self,
        payload: bytes,
        sig_header: str | None,
        secrets: Sequence[str],
        tolerance: int,
    ) -> dict[str, Any]:
        """Verify ``Stripe-Signature`` against any of ``secrets``; return the parsed event.

        The rules of :func:`.signing.verify_webhook_payload`; each secret is
        checked by :meth:`_webhook_signature_matches`.
        """
        return verify_webhook_payload(
            payload, sig_header, secrets, tolerance, matches=self._webhook_signature_matches
        )

    def _webhook_signature_matches(
        self, payload: bytes, header: str, secret: str, tolerance: int | None
    ) -> bool:
        """Whether ``header`` signs ``payload`` with ``secret`` (Stripe's ``v1`` scheme)."""
        return signature_matches(payload, header, secret, tolerance)


if TYPE_CHECKING:
    # mypy proves the base class satisfies the protocol it exists for.
    _conforms: type[PaymentGateway] = BaseGateway
    _conforms_v2: type[AccountsV2Gateway] = BaseGateway


def check_saved_payment_method_arguments(
    *,
    customer: str | None,
    setup_future_usage: str | None,
    payment_method: str | None,
    off_session: bool,
    confirm: bool,
) -> None:
    """Refuse a PaymentIntent that saves or reuses a card without what Stripe needs.

    Saving (``setup_future_usage``) needs the Customer the card is saved to;
    charging a saved card off-session needs the Customer, the card and an
    immediate confirmation (nobody is there to confirm it later).
    """
    if customer is not None:
        require_id(customer, "customer")
    if payment_method is not None:
        require_id(payment_method, "payment_method")
    if setup_future_usage is not None:
        if setup_future_usage not in ("off_session", "on_session"):
            raise ValueError("setup_future_usage must be 'off_session' or 'on_session'")
        if customer is None:
            raise ValueError("setup_future_usage needs the customer the card is saved to")
    if off_session:
        if not (confirm and payment_method and customer):
            raise ValueError(
                "an off-session PaymentIntent needs customer, payment_method and confirm=True"
            )
        if setup_future_usage is not None:
            raise ValueError("an off-session charge reuses a saved card: no setup_future_usage")
    if confirm and payment_method is None:
        raise ValueError("confirm=True needs the payment_method to confirm with")
