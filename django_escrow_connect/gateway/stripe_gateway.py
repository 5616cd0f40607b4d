"""The Stripe gateway: the only module of the package that imports ``stripe``.

It owns the :class:`stripe.StripeClient` (pinned API version, base address,
retries, timeout), passes the caller's idempotency keys, converts Stripe's
objects into the plain types of :mod:`.types` and translates every
``stripe.StripeError`` into :mod:`django_escrow_connect.exceptions`.

Request parameters are built as stripe-python's typed ``TypedDict`` params
(``stripe.params.*``), so mypy checks every call against the API version this
package pins.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import stripe
from django.core.exceptions import ImproperlyConfigured

from .. import conf
from ..conf import escrow_settings
from ..exceptions import (
    BalanceInsufficient,
    CardDeclined,
    GatewayAuthenticationFailed,
    GatewayError,
    GatewayPermissionDenied,
    IdempotencyConflict,
    InvalidRequest,
    RateLimited,
    ResourceMissing,
    TemporarilyUnavailable,
    UnreadableAnswer,
)
from . import signing
from .basegateway import BaseGateway
from .signing import sign_webhook_payload
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
    SetupFutureUsage,
    TransferReversalSnapshot,
    TransferSnapshot,
)

if TYPE_CHECKING:
    from stripe.params import (
        AccountCreateParams,
        AccountCreateParamsCapabilities,
        AccountLinkCreateParams,
        AccountLinkCreateParamsCollectionOptions,
        AccountListParams,
        AccountSessionCreateParams,
        AccountSessionCreateParamsComponents,
        CustomerCreateParams,
        EventListParams,
        PaymentIntentCancelParams,
        PaymentIntentCaptureParams,
        PaymentIntentCreateParams,
        PaymentIntentListParams,
        PaymentIntentRetrieveParams,
        PaymentMethodDetachParams,
        RefundCreateParams,
        RefundListParams,
        TransferCreateParams,
        TransferListParams,
        TransferReversalCreateParams,
    )
    from stripe.params.v2.core import (
        AccountCreateParams as AccountV2CreateParams,
    )
    from stripe.params.v2.core import (
        AccountCreateParamsConfiguration as AccountV2Configuration,
    )
    from stripe.params.v2.core import (
        AccountCreateParamsConfigurationMerchantCapabilities as MerchantV2Capabilities,
    )
    from stripe.params.v2.core import (
        AccountLinkCreateParams as AccountLinkV2CreateParams,
    )
    from stripe.params.v2.core import (
        AccountLinkCreateParamsUseCaseAccountOnboarding as AccountLinkV2Onboarding,
    )
    from stripe.params.v2.core import (
        AccountLinkCreateParamsUseCaseAccountOnboardingCollectionOptions as AccountLinkV2Collection,
    )
    from stripe.params.v2.core import (
        AccountLinkCreateParamsUseCaseAccountUpdate as AccountLinkV2Update,
    )
    from stripe.params.v2.core import (
        AccountListParams as AccountV2ListParams,
    )
    from stripe.params.v2.core import (
        AccountRetrieveParams as AccountV2RetrieveParams,
    )
    from stripe.params.v2.core import (
        EventListParams as EventV2ListParams,
    )

__all__ = [
    "StripeGateway",
    "build_http_client",
    "sign_webhook_payload",
    "translate_error",
    "translated_errors",
    "verify_webhook_payload",
]

logger = logging.getLogger(__name__)

Timeout = float | tuple[float, float]
Parsed = TypeVar("Parsed")

#: Page size used when auto-paginating list endpoints (Stripe's maximum).
PAGE_SIZE = 100
#: What a v2 account answer includes: what :meth:`AccountSnapshot.from_v2_dict` reads.
V2_ACCOUNT_INCLUDE: tuple[
    Literal[
        "configuration.merchant", "configuration.recipient", "defaults", "identity", "requirements"
    ],
    ...,
] = (
    "configuration.merchant",
    "configuration.recipient",
    "defaults",
    "identity",
    "requirements",
)
#: Longer error messages (an HTML error page, say) are cut to this length.
MAX_ERROR_MESSAGE_LENGTH = 1000


class StripeGateway(BaseGateway):
    """:class:`~django_escrow_connect.gateway.base.PaymentGateway` on Stripe Connect.

    The argument checks are :class:`~.basegateway.BaseGateway`'s; this class
    implements its hooks with stripe-python.

    Configuration comes from ``ESCROW_CONNECT`` (``STRIPE_SECRET_KEY``,
    ``STRIPE_API_BASE``, ``STRIPE_MAX_NETWORK_RETRIES``, ``STRIPE_TIMEOUT``)
    and is read when the client is first needed; each constructor argument
    overrides its setting. ``http_client`` replaces the transport entirely
    (its own timeout then applies).
    """

    #: Page size when auto-paginating list endpoints (Stripe's maximum).
    page_size: int = PAGE_SIZE

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        max_network_retries: int | None = None,
        timeout: Timeout | None = None,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        self._api_key = api_key
        self._api_base = api_base
        self._max_network_retries = max_network_retries
        self._timeout = timeout
        self._http_client = http_client
        self._client: stripe.StripeClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} api_base={self._resolved_api_base()!r}>"

    # --- client -----------------------------------------------------------------

    @property
    def client(self) -> stripe.StripeClient:
        """The lazily created ``StripeClient`` (one per gateway instance)."""
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = self._build_client()
        return client

    def _resolved_api_base(self) -> str | None:
        base = self._api_base if self._api_base is not None else escrow_settings.STRIPE_API_BASE
        return str(base).rstrip("/") if base else None

    def _build_client(self) -> stripe.StripeClient:
        api_key = self._api_key if self._api_key is not None else escrow_settings.STRIPE_SECRET_KEY
        if not api_key:
            raise ImproperlyConfigured(
                f"{conf.SETTING_NAME}['STRIPE_SECRET_KEY'] is not set: add your Stripe "
                "secret key (sk_test_... or a restricted rk_... key) to the "
                f"{conf.SETTING_NAME} setting."
            )
        retries = (
            self._max_network_retries
            if self._max_network_retries is not None
            else escrow_settings.STRIPE_MAX_NETWORK_RETRIES
        )
        http_client = self._http_client
        if http_client is None:
            timeout = self._timeout if self._timeout is not None else escrow_settings.STRIPE_TIMEOUT
            http_client = build_http_client(timeout)
        api_base = self._resolved_api_base()
        return stripe.StripeClient(
            str(api_key),
            stripe_version=conf.STRIPE_API_VERSION,
            base_addresses={"api": api_base, "connect": api_base} if api_base else {},
            max_network_retries=int(retries),
            http_client=http_client,
        )

    # --- connected accounts -------------------------------------------------

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
        params: AccountCreateParams = {
            "country": country,
            "controller": {
                "stripe_dashboard": {"type": "express"},
                "fees": {"payer": "application"},
                "losses": {"payments": "application"},
                "requirement_collection": "stripe",
            },
            "capabilities": _requested_capabilities(capabilities),
            "metadata": dict(metadata),
        }
        if service_agreement is not None:
            params["tos_acceptance"] = {"service_agreement": service_agreement}
        if email:
            params["email"] = email
        if business_type:
            params["business_type"] = business_type
        with translated_errors():
            account = self.client.v1.accounts.create(params, _options(idempotency_key))
        return _read(AccountSnapshot.from_dict, account)

    def _retrieve_account(self, account_id: str) -> AccountSnapshot:
        with translated_errors():
            account = self.client.v1.accounts.retrieve(account_id)
        return _read(AccountSnapshot.from_dict, account)

    def _list_accounts(self, *, created_gte: datetime) -> list[AccountSnapshot]:
        params: AccountListParams = {
            "created": {"gte": int(created_gte.timestamp())},
            "limit": self.page_size,
        }
        with translated_errors():
            page = self.client.v1.accounts.list(params)
        return list(_read_each(AccountSnapshot.from_dict, page))

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
        params: AccountLinkCreateParams = {
            "account": account_id,
            "type": link_type,
            "refresh_url": refresh_url,
            "return_url": return_url,
        }
        # Stripe's defaults are left out, so the default request stays the one
        # the package always sent.
        collection: AccountLinkCreateParamsCollectionOptions = {}
        if collect != "currently_due":
            collection["fields"] = collect
        if future_requirements != "omit":
            collection["future_requirements"] = future_requirements
        if collection:
            params["collection_options"] = collection
        with translated_errors():
            link = self.client.v1.account_links.create(params)
        return _read(AccountLinkResult.from_dict, link)

    def _create_login_link(self, *, account_id: str) -> LoginLinkResult:
        with translated_errors():
            link = self.client.v1.accounts.login_links.create(account_id)
        return _read(LoginLinkResult.from_dict, link)

    def _create_account_session(
        self, *, account_id: str, components: dict[str, dict[str, bool]]
    ) -> AccountSessionResult:
        enabled: dict[str, Any] = {
            name: {"enabled": True, "features": dict(features)} if features else {"enabled": True}
            for name, features in components.items()
        }
        params: AccountSessionCreateParams = {
            "account": account_id,
            # Component names are checked by Stripe; the TypedDict cannot be
            # built from a runtime list of keys.
            "components": _components(enabled),
        }
        with translated_errors():
            session = self.client.v1.account_sessions.create(params)
        return _read(AccountSessionResult.from_dict, session)

    # --- connected accounts through Accounts v2 ---------------------------------

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
        configuration: AccountV2Configuration = {
            "recipient": {
                "capabilities": {"stripe_balance": {"stripe_transfers": {"requested": True}}}
            }
        }
        merchant = [name for name in capabilities if name.endswith("_payments")]
        if merchant:
            configuration["merchant"] = {"capabilities": _merchant_capabilities(merchant)}
        params: AccountV2CreateParams = {
            # v1's controller properties: the Express dashboard, the platform
            # collecting fees and bearing losses (Stripe collects requirements).
            "dashboard": "express",
            "defaults": {
                "responsibilities": {
                    "fees_collector": "application",
                    "losses_collector": "application",
                }
            },
            "identity": {"country": country},
            "configuration": configuration,
            "include": list(V2_ACCOUNT_INCLUDE),
            "metadata": dict(metadata),
        }
        if business_type:
            params["identity"]["entity_type"] = business_type
        if email:
            params["contact_email"] = email
        with translated_errors():
            account = self.client.v2.core.accounts.create(params, _options(idempotency_key))
        return _read(AccountSnapshot.from_v2_dict, account)

    def _retrieve_account_v2(self, account_id: str) -> AccountSnapshot:
        params: AccountV2RetrieveParams = {"include": list(V2_ACCOUNT_INCLUDE)}
        with translated_errors():
            account = self.client.v2.core.accounts.retrieve(account_id, params)
        return _read(AccountSnapshot.from_v2_dict, account)

    def _list_accounts_v2(self) -> list[AccountSnapshot]:
        params: AccountV2ListParams = {
            "applied_configurations": ["recipient"],
            "limit": self.page_size,
        }
        with translated_errors():
            page = self.client.v2.core.accounts.list(params)
        return list(_read_each(AccountSnapshot.from_v2_dict, page))

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
        # No ``configurations``: since 2026-09-30.endive Stripe decides which
        # configurations need onboarding, and refuses the parameter.
        # Collection options only when they differ from Stripe's defaults, so
        # the default request stays the one earlier releases sent.
        collection: AccountLinkV2Collection = {}
        if collect != "currently_due":
            collection["fields"] = collect
        if future_requirements != "omit":
            collection["future_requirements"] = future_requirements
        params: AccountLinkV2CreateParams
        if link_type == "account_update":
            update: AccountLinkV2Update = {"refresh_url": refresh_url, "return_url": return_url}
            if collection:
                update["collection_options"] = collection
            params = {
                "account": account_id,
                "use_case": {"type": "account_update", "account_update": update},
            }
        else:
            onboarding: AccountLinkV2Onboarding = {
                "refresh_url": refresh_url,
                "return_url": return_url,
            }
            if collection:
                onboarding["collection_options"] = collection
            params = {
                "account": account_id,
                "use_case": {"type": "account_onboarding", "account_onboarding": onboarding},
            }
        with translated_errors():
            link = self.client.v2.core.account_links.create(params)
        return _read(AccountLinkResult.from_v2_dict, link)

    # --- payments ---------------------------------------------------------------

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
        params: PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency.lower(),
            "capture_method": capture_method,
            # Nobody can follow a redirect off-session (and Stripe wants a
            # return_url for a confirmed PaymentIntent that allows them).
            "automatic_payment_methods": (
                {"enabled": True, "allow_redirects": "never"} if off_session else {"enabled": True}
            ),
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
        }
        if customer is not None:
            params["customer"] = customer
        if setup_future_usage is not None:
            params["setup_future_usage"] = setup_future_usage
        if payment_method is not None:
            params["payment_method"] = payment_method
        if off_session:
            params["off_session"] = True
        if confirm:
            params["confirm"] = True
        if destination is not None:
            params["transfer_data"] = {"destination": destination}
            if application_fee_amount is not None:
                params["application_fee_amount"] = application_fee_amount
        if on_behalf_of is not None:
            params["on_behalf_of"] = on_behalf_of
        if description:
            params["description"] = description
        if receipt_email:
            params["receipt_email"] = receipt_email
        with translated_errors():
            intent = self.client.v1.payment_intents.create(params, _options(idempotency_key))
        return _read(PaymentIntentSnapshot.from_dict, intent)

    def _create_customer(
        self, *, idempotency_key: str, metadata: Mapping[str, str], description: str | None
    ) -> CustomerSnapshot:
        params: CustomerCreateParams = {"metadata": dict(metadata)}
        if description:
            params["description"] = description
        with translated_errors():
            customer = self.client.v1.customers.create(params, _options(idempotency_key))
        return _read(CustomerSnapshot.from_dict, customer)

    def _detach_payment_method(self, payment_method_id: str) -> PaymentMethodSnapshot:
        params: PaymentMethodDetachParams = {}
        with translated_errors():
            method = self.client.v1.payment_methods.detach(payment_method_id, params)
        return _read(PaymentMethodSnapshot.from_dict, method)

    def _retrieve_payment_intent(
        self, payment_intent_id: str, *, expand_charge: bool
    ) -> PaymentIntentSnapshot:
        params: PaymentIntentRetrieveParams = {}
        if expand_charge:
            params["expand"] = ["latest_charge"]
        with translated_errors():
            intent = self.client.v1.payment_intents.retrieve(payment_intent_id, params)
        return _read(PaymentIntentSnapshot.from_dict, intent)

    def _list_payment_intents(
        self, *, customer: str, created_gte: datetime
    ) -> list[PaymentIntentSnapshot]:
        params: PaymentIntentListParams = {
            "customer": customer,
            "created": {"gte": int(created_gte.timestamp())},
            "limit": self.page_size,
        }
        with translated_errors():
            page = self.client.v1.payment_intents.list(params)
        return list(_read_each(PaymentIntentSnapshot.from_dict, page))

    def _capture_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        amount_to_capture: int | None,
        application_fee_amount: int | None,
    ) -> PaymentIntentSnapshot:
        params: PaymentIntentCaptureParams = {}
        if amount_to_capture is not None:
            params["amount_to_capture"] = amount_to_capture
        if application_fee_amount is not None:
            params["application_fee_amount"] = application_fee_amount
        with translated_errors():
            intent = self.client.v1.payment_intents.capture(
                payment_intent_id, params, _options(idempotency_key)
            )
        return _read(PaymentIntentSnapshot.from_dict, intent)

    def _cancel_payment_intent(
        self,
        payment_intent_id: str,
        *,
        idempotency_key: str,
        cancellation_reason: CancellationReason | None,
    ) -> PaymentIntentSnapshot:
        params: PaymentIntentCancelParams = {}
        if cancellation_reason is not None:
            params["cancellation_reason"] = cancellation_reason
        with translated_errors():
            intent = self.client.v1.payment_intents.cancel(
                payment_intent_id, params, _options(idempotency_key)
            )
        return _read(PaymentIntentSnapshot.from_dict, intent)

    def _retrieve_charge(self, charge_id: str, *, stripe_account: str | None) -> ChargeSnapshot:
        with translated_errors():
            charge = self.client.v1.charges.retrieve(
                charge_id, None, _options(stripe_account=stripe_account)
            )
        return _read(ChargeSnapshot.from_dict, charge)

    def _retrieve_dispute(self, dispute_id: str) -> DisputeSnapshot:
        with translated_errors():
            dispute = self.client.v1.disputes.retrieve(dispute_id)
        return _read(DisputeSnapshot.from_dict, dispute)

    # --- transfers ----------------------------------------------------------------

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
        params: TransferCreateParams = {
            "amount": amount,
            "currency": currency.lower(),
            "destination": destination,
            # A charge id (ch_...), never a PaymentIntent id: the transfer then
            # waits for that charge's funds instead of failing on the balance.
            "source_transaction": source_transaction,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
        }
        with translated_errors():
            transfer = self.client.v1.transfers.create(params, _options(idempotency_key))
        return _read(TransferSnapshot.from_dict, transfer)

    def _retrieve_transfer(self, transfer_id: str) -> TransferSnapshot:
        with translated_errors():
            transfer = self.client.v1.transfers.retrieve(transfer_id)
        return _read(TransferSnapshot.from_dict, transfer)

    def _list_transfers(self, *, transfer_group: str) -> list[TransferSnapshot]:
        params: TransferListParams = {"transfer_group": transfer_group, "limit": self.page_size}
        with translated_errors():
            page = self.client.v1.transfers.list(params)
        return list(_read_each(TransferSnapshot.from_dict, page))

    def _create_transfer_reversal(
        self,
        *,
        transfer_id: str,
        idempotency_key: str,
        amount: int | None,
        metadata: Mapping[str, str],
    ) -> TransferReversalSnapshot:
        params: TransferReversalCreateParams = {"metadata": dict(metadata)}
        if amount is not None:
            params["amount"] = amount
        with translated_errors():
            reversal = self.client.v1.transfers.reversals.create(
                transfer_id, params, _options(idempotency_key)
            )
        return _read(TransferReversalSnapshot.from_dict, reversal)

    # --- refunds --------------------------------------------------------------------

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
        params: RefundCreateParams = {"payment_intent": payment_intent, "metadata": dict(metadata)}
        if amount is not None:
            params["amount"] = amount
        if reason is not None:
            params["reason"] = reason
        if reverse_transfer:
            params["reverse_transfer"] = True
        if refund_application_fee:
            params["refund_application_fee"] = True
        with translated_errors():
            refund = self.client.v1.refunds.create(params, _options(idempotency_key))
        return _read(RefundSnapshot.from_dict, refund)

    def _retrieve_refund(self, refund_id: str) -> RefundSnapshot:
        with translated_errors():
            refund = self.client.v1.refunds.retrieve(refund_id)
        return _read(RefundSnapshot.from_dict, refund)

    def _list_refunds(self, *, payment_intent: str) -> list[RefundSnapshot]:
        params: RefundListParams = {"payment_intent": payment_intent, "limit": self.page_size}
        with translated_errors():
            page = self.client.v1.refunds.list(params)
        return list(_read_each(RefundSnapshot.from_dict, page))

    # --- events and webhooks -----------------------------------------------------

    def _retrieve_event(self, event_id: str, *, stripe_account: str | None) -> dict[str, Any]:
        with translated_errors():
            event = self.client.v1.events.retrieve(
                event_id, None, _options(stripe_account=stripe_account)
            )
        return _read(_event, event)

    def _list_events(
        self,
        *,
        created_gte: int,
        types: tuple[str, ...] | None,
        stripe_account: str | None,
    ) -> Iterator[dict[str, Any]]:
        """The first page is fetched now (so errors surface here); later pages
        are fetched while iterating. The Events API reaches back 30 days."""
        params: EventListParams = {"created": {"gte": int(created_gte)}, "limit": self.page_size}
        if types:
            params["types"] = list(types)
        with translated_errors():
            page = self.client.v1.events.list(params, _options(stripe_account=stripe_account))
        return _read_each(_event, page)

    def _list_thin_events(
        self, *, created_gte: datetime, types: tuple[str, ...] | None
    ) -> Iterator[dict[str, Any]]:
        """Like :meth:`_list_events`: the first page now, the rest while iterating."""
        params: EventV2ListParams = {
            "created": {"gte": _rfc3339(created_gte)},
            "limit": self.page_size,
        }
        if types:
            params["types"] = list(types)
        with translated_errors():
            page = self.client.v2.core.events.list(params)
        return _read_each(_event, page)

    def _webhook_signature_matches(
        self, payload: bytes, header: str, secret: str, tolerance: int | None
    ) -> bool:
        """stripe-python's own ``WebhookSignature.verify_header``."""
        return _signature_valid(payload, header, secret, tolerance)


# --- webhooks ------------------------------------------------------------------------


def verify_webhook_payload(
    payload: bytes,
    sig_header: str | None,
    secrets: Sequence[str],
    tolerance: int,
) -> dict[str, Any]:
    """Verify a webhook and return its event as a plain dict.

    The rules of :func:`.signing.verify_webhook_payload` (secrets tried in
    turn for a rotation, stale timestamps told apart, body checked as UTF-8
    JSON event), with each signature checked by stripe-python's
    ``WebhookSignature.verify_header``. Raises
    :class:`SignatureVerificationFailed` and :class:`InvalidWebhookPayload`.
    """
    return signing.verify_webhook_payload(
        payload, sig_header, secrets, tolerance, matches=_signature_valid
    )


def _signature_valid(payload: bytes, header: str, secret: str, tolerance: int | None) -> bool:
    try:
        # Called only after the body was checked to be UTF-8.
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), header, secret, tolerance)
    except stripe.SignatureVerificationError:
        return False
    return True


# --- transport -------------------------------------------------------------------------


def build_http_client(timeout: Timeout) -> stripe.HTTPClient:
    """An HTTP client for stripe-python that enforces ``timeout`` (seconds).

    stripe-python 16 requires ``requests``, so this is a ``RequestsClient``
    (``timeout`` may be a ``(connect, read)`` tuple). vcrpy intercepts it.
    Only if ``requests`` were missing: ``HTTPXClient`` when httpx and anyio
    are installed, else stripe's urllib client, which has no timeout setting.
    """
    if importlib.util.find_spec("requests") is not None:
        return stripe.RequestsClient(timeout=timeout)
    if importlib.util.find_spec("httpx") is not None and importlib.util.find_spec("anyio"):
        return stripe.HTTPXClient(
            timeout=timeout if isinstance(timeout, (int, float)) else max(timeout)
        )
    logger.warning(
        "Neither requests nor httpx is installed: Stripe requests use urllib and "
        "%s['STRIPE_TIMEOUT'] is not enforced.",
        conf.SETTING_NAME,
    )
    return stripe.new_default_http_client()


# --- helpers ---------------------------------------------------------------------------


def _options(
    idempotency_key: str | None = None, *, stripe_account: str | None = None
) -> stripe.RequestOptions:
    # BaseGateway has checked both before the hook was called.
    options: stripe.RequestOptions = {}
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    if stripe_account is not None:
        options["stripe_account"] = stripe_account
    return options


def _components(enabled: dict[str, Any]) -> AccountSessionCreateParamsComponents:
    return enabled  # type: ignore[return-value]


def _requested_capabilities(names: Sequence[str]) -> AccountCreateParamsCapabilities:
    """``{name: {"requested": True}}`` in the given order."""
    requested = {name: {"requested": True} for name in names}
    # Capability names are checked by Stripe; the TypedDict cannot be built
    # from a runtime list of keys.
    return requested  # type: ignore[return-value]


def _merchant_capabilities(names: Sequence[str]) -> MerchantV2Capabilities:
    """``{name: {"requested": True}}`` for the merchant configuration."""
    requested = {name: {"requested": True} for name in names}
    # As _requested_capabilities: names are checked by Stripe.
    return requested  # type: ignore[return-value]


def _rfc3339(value: datetime) -> str:
    """An aware datetime as v2's RFC 3339 UTC timestamp (millisecond precision)."""
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _as_dict(obj: stripe.StripeObject) -> dict[str, Any]:
    """The object's JSON as plain dicts and lists (expanded objects included)."""
    return obj.to_dict(recursive=True, for_json=True)


def _read(
    parse: Callable[[dict[str, Any]], Parsed],
    obj: stripe.StripeObject,
    *,
    page_request_id: Callable[[], str | None] | None = None,
) -> Parsed:
    """Stripe's answer ``obj`` read by ``parse`` (a ``from_dict`` of :mod:`.types`).

    Stripe has already acted when its answer arrives: an answer that cannot
    be read is :class:`UnreadableAnswer` ("outcome unknown"), never a bare
    ``ValueError`` between the call and the commit of its outcome.
    ``page_request_id`` names the page ``obj`` came in, when it is a page's item.
    """
    with _unreadable_as_unknown(obj, page_request_id=page_request_id):
        return parse(_as_dict(obj))


def _read_each(parse: Callable[[dict[str, Any]], Parsed], page: Any) -> Iterator[Parsed]:
    """Every item of the list answer ``page``, each read by :func:`_read`.

    Later pages are fetched while iterating. A page of another shape (no
    ``auto_paging_iter``, ``data`` not a list, an item that is no object)
    is :class:`UnreadableAnswer` like any other answer, not a bare
    ``AttributeError`` that no caller expects from the gateway; it is
    logged with the request id of the page it came in.
    """
    listing = _Listing(page)
    # translated_errors inside: an error answer stripe-python fails on while
    # fetching a later page keeps its status and request id (its frame has them).
    with _unreadable_as_unknown(page, page_request_id=listing.request_id), translated_errors():
        if not isinstance(page, stripe.ListObject | stripe.v2.ListObject):
            # Not only unreadable: an API resource's ``auto_paging_iter`` is a
            # classmethod that would list all its kind with the global key.
            raise TypeError(f"a {type(page).__name__} where a list page should be")
        for obj in listing.items():
            yield _read(parse, obj, page_request_id=listing.request_id)


class _Listing:
    """The pages of a list answer, read one after the other.

    ``page`` is the page whose items are being read, None while a later one
    is being fetched or when stripe-python does not show which one it is:
    a failure then names no page rather than the wrong one.
    """

    def __init__(self, first: Any) -> None:
        self.page: Any = first

    def request_id(self) -> str | None:
        response = getattr(self.page, "last_response", None)
        return getattr(response, "request_id", None)

    def items(self) -> Iterator[Any]:
        first = self.page
        if isinstance(first, stripe.ListObject):
            # As stripe-python's auto_paging_iter (no ``ending_before`` is ever
            # sent), but page by page so that each item's page is known.
            page = first
            while True:
                yield from page
                self.page = None
                page = self.page = page.next_page()
                if page.is_empty:
                    return
        # v2 fetches its later pages through private calls only: its
        # auto_paging_iter, the items after the first page's named by none.
        count = len(first.data)
        if count == 0:
            self.page = None
        for index, obj in enumerate(_v2_items(first.auto_paging_iter()), start=1):
            yield obj
            if index >= count:
                self.page = None


def _v2_items(items: Iterator[Any]) -> Iterator[Any]:
    """A v2 page's ``auto_paging_iter``, a later page of another shape a ``TypeError``.

    stripe-python checks that a later page is a list with ``assert``: a bare
    ``AssertionError`` (an ``AttributeError`` under ``python -O``) that only
    its paging raises here, since the caller reads the items.
    """
    try:
        yield from items
    except AssertionError as exc:
        raise TypeError("a later page of another shape where a v2 list page should be") from exc


def _event(data: dict[str, Any]) -> dict[str, Any]:
    """An event is handed on as a plain dict; the webhook code reads it."""
    return data


@contextmanager
def _unreadable_as_unknown(
    answer: object, *, page_request_id: Callable[[], str | None] | None = None
) -> Iterator[None]:
    """Re-raise a failure to read Stripe's ``answer`` as :class:`UnreadableAnswer`.

    Stripe's request id is the answer's own, or ``page_request_id()`` for a
    page's item (an item carries no response of its own).
    """
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        if page_request_id is not None:
            request_id = page_request_id()
        else:
            request_id = getattr(getattr(answer, "last_response", None), "request_id", None)
        logger.error(
            "unreadable Stripe answer: %s",
            exc,
            extra={"stripe_request_id": request_id or "", "stripe_object": type(answer).__name__},
            # A bug of a from_dict is unknown outcomes too (Stripe has acted
            # all the same); its traceback is what tells it from a changed answer.
            exc_info=exc,
        )
        raise UnreadableAnswer(
            f"Stripe's answer could not be read: {exc}"[:MAX_ERROR_MESSAGE_LENGTH],
            code="unreadable_answer",
            request_id=request_id,
        ) from exc


# --- errors ------------------------------------------------------------------------------


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise any ``stripe.StripeError`` as the package's own exception.

    An error answer whose ``error`` is neither an object nor a string
    (``{"error": null}``) makes stripe-python fail while reading it, before
    any ``StripeError`` exists: that failure is :class:`UnreadableAnswer`
    too. Only a failure inside stripe-python's reading of an error answer
    is taken for one, never an error of this package's own code.
    """
    try:
        yield
    except stripe.StripeError as exc:
        raise translate_error(exc) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reading = _error_answer_reading(exc)
        if reading is None:
            raise
        raise _unreadable_error_answer(exc, reading) from exc


#: Where stripe-python reads an error answer: ``_APIRequestor.handle_error_response``
#: and the ``specific_*_error`` it calls.
_ERROR_ANSWER_MODULE = "stripe._api_requestor"
_ERROR_ANSWER_READER = "handle_error_response"


def _error_answer_reading(exc: BaseException) -> FrameType | None:
    """stripe-python's frame reading an error answer, if ``exc`` was raised inside it."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (
            frame.f_code.co_name == _ERROR_ANSWER_READER
            and frame.f_globals.get("__name__") == _ERROR_ANSWER_MODULE
        ):
            return frame
        tb = tb.tb_next
    return None


def _unreadable_error_answer(exc: Exception, reading: FrameType) -> GatewayError:
    """An error answer stripe-python failed on: Stripe may have acted, as after a timeout.

    Its status and headers are the arguments of the frame that read it.
    """
    status = reading.f_locals.get("rcode")
    headers = reading.f_locals.get("rheaders")
    request_id = _header(headers if isinstance(headers, Mapping) else None, "Request-Id")
    logger.error(
        "unreadable Stripe error answer (HTTP %s): %r",
        status,
        exc,
        extra={"stripe_request_id": request_id or ""},
    )
    if status == 429:
        # A 429 stays "slow down", whoever sent it and whatever its body.
        return RateLimited(
            "Stripe's answer could not be read (HTTP 429).",
            request_id=request_id,
            http_status=429,
        )
    return UnreadableAnswer(
        f"Stripe's answer could not be read (HTTP {status}).",
        code="unreadable_answer",
        request_id=request_id,
    )


def translate_error(exc: stripe.StripeError) -> GatewayError:
    """The package exception for a Stripe error (see ``exceptions`` for the classes)."""
    body = exc.json_body
    error: Mapping[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    code = _str_or_none(error.get("code")) or exc.code
    error_type = _str_or_none(error.get("type"))
    status = exc.http_status
    should_retry = _parse_should_retry(_header(exc.headers, "Stripe-Should-Retry"))

    cls: type[GatewayError]
    if _not_stripes_error(exc, body, status):
        return _undecodable(exc, status)
    if isinstance(exc, stripe.APIConnectionError):
        # No (usable) response: timeout, refused or reset connection, TLS failure.
        cls = TemporarilyUnavailable
        should_retry = bool(exc.should_retry)
    elif error_type == "idempotency_error" or isinstance(exc, stripe.IdempotencyError):
        cls = IdempotencyConflict
    elif code == "lock_timeout":
        cls = TemporarilyUnavailable
    elif status == 429 or isinstance(exc, stripe.RateLimitError):
        cls = RateLimited
    elif error_type == "card_error" or isinstance(exc, stripe.CardError):
        cls = CardDeclined
    elif code == "balance_insufficient":
        cls = BalanceInsufficient
    elif code == "resource_missing":
        cls = ResourceMissing
    elif status == 401 or isinstance(exc, stripe.AuthenticationError):
        cls = GatewayAuthenticationFailed
    elif status == 403 or isinstance(exc, stripe.PermissionError):
        cls = GatewayPermissionDenied
    elif status is None or status >= 500 or status == 409:
        # 409 without idempotency_error: a conflicting concurrent request.
        cls = TemporarilyUnavailable
    elif 400 <= status < 500:
        cls = InvalidRequest
    else:
        # A 1xx-3xx status on an error stripe-python built from an answer with
        # Stripe's error object (any other such answer is caught above by
        # _not_stripes_error): not a refusal Stripe would send; Stripe may
        # have acted.
        return _undecodable(exc, status)

    message = _str_or_none(error.get("message")) or _str_or_none(exc.user_message) or ""
    intent = error.get("payment_intent")
    return cls(
        message[:MAX_ERROR_MESSAGE_LENGTH],
        code=code,
        param=_str_or_none(error.get("param")),
        decline_code=_str_or_none(error.get("decline_code")),
        # A 429 whose body is not JSON has its headers where stripe-python
        # puts them then (json_body).
        request_id=_answer_request_id(exc),
        http_status=status,
        should_retry=should_retry,
        error_type=error_type,
        # An off-session confirmation Stripe refused still made this
        # PaymentIntent; the customer can confirm it (docs/tips.md).
        payment_intent=_error_payment_intent(intent),
    )


def _not_stripes_error(exc: stripe.StripeError, body: object, status: int | None) -> bool:
    """Whether an error answer lacks Stripe's error object, so it is not Stripe's word.

    stripe-python raises a plain ``APIError`` for an answer whose body is not
    JSON (a proxy's or WAF's HTML page; ``json_body`` is then the headers) or
    is JSON without ``error``, whatever its status. Who answered is unknown:
    the request may have reached Stripe and been carried out. Read as a
    refusal (4xx) or as a failure Stripe stored under the key (5xx), it would
    make the next attempt use a new key and perhaps move the money twice.
    Stripe's own 5xx carry ``{"error": {"type": "api_error"}}`` and keep
    their meaning. A 429 stays :class:`RateLimited`, already "try again later".
    """
    if type(exc) is not stripe.APIError or status is None or status == 429:
        return False
    # A dict ``error`` is an API error, a string one an OAuth error.
    return not (isinstance(body, dict) and isinstance(body.get("error"), dict | str))


def _error_payment_intent(intent: Any) -> PaymentIntentSnapshot | None:
    """The error's ``payment_intent``, or None when absent or unreadable.

    Unreadable, the error is still Stripe's answer (a decline stays a
    decline); only the intent it left behind is not offered.
    """
    if not isinstance(intent, dict):
        return None
    try:
        return PaymentIntentSnapshot.from_dict(intent)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.error("unreadable payment_intent in a Stripe error: %s", exc)
        return None


def _undecodable(exc: stripe.StripeError, status: int | None) -> UnreadableAnswer:
    request_id = _answer_request_id(exc)
    logger.error(
        "undecodable Stripe answer (HTTP %s)",
        status,
        extra={"stripe_request_id": request_id or ""},
    )
    return UnreadableAnswer(
        f"Stripe's answer could not be read (HTTP {status}).",
        code="unreadable_answer",
        request_id=request_id,
    )


def _answer_request_id(exc: stripe.StripeError) -> str | None:
    """Stripe's request id of an answer stripe-python could not use.

    For a body that is not JSON, stripe-python passes the response headers
    as the error's ``json_body`` and none as ``headers``: the id is there.
    """
    found = exc.request_id or _header(exc.headers, "Request-Id")
    if found is None and isinstance(exc.json_body, Mapping) and not _is_json(exc.http_body):
        found = _header(exc.json_body, "Request-Id")
    return found


def _is_json(text: str | None) -> bool:
    try:
        json.loads(text or "")
    except ValueError:
        return False
    return True


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A response header, whatever the case of its name."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if str(key).lower() == wanted:
            return str(value)
    return None


def _parse_should_retry(value: str | None) -> bool | None:
    lowered = (value or "").strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
