"""A simulated Stripe Connect gateway that moves no money.

Like Django's locmem e-mail backend: for development, demos and tests.
:class:`SimulatedGateway` implements
:class:`~django_escrow_connect.gateway.base.PaymentGateway` against an
in-memory, process-wide, thread-safe store (:data:`simulated_stripe`, a
:class:`SimulatedStripe`) of Stripe-shaped JSON objects (API version
``2026-10-28.endive``), and parses every answer with the ``from_dict`` of
:mod:`.types`, exactly as the real gateway does.

What it simulates:

- Stripe's rules that the escrow flow depends on: idempotency keys (replay,
  or :class:`IdempotencyConflict` when reused with other parameters),
  transfers limited by their ``source_transaction`` charge and by the
  destination's ``transfers`` capability, refund and reversal limits,
  authorisations that lapse after seven days (:meth:`SimulatedStripe.advance_time`);
- a customer paying with test cards (:data:`CARDS`,
  :meth:`SimulatedGateway.confirm_payment_intent`,
  :meth:`SimulatedGateway.complete_authentication`), a seller onboarding
  (:meth:`SimulatedGateway.complete_onboarding`), disputes, payouts and
  deauthorisation;
- webhooks: every change emits a full Stripe Event, signed with the
  endpoint's secret and handed to an *event sink* (:func:`set_event_sink`;
  by default the package's own webhook receiver), after the surrounding
  database transaction commits;
- failures, for tests: :meth:`SimulatedStripe.fail_next` makes the next call
  of a method raise, before or after it took effect; :attr:`SimulatedStripe.calls`
  records every call the application made.

This module must not import ``stripe``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import secrets as pysecrets
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

from django.db import transaction
from django.urls import NoReverseMatch, reverse

from .. import conf
from ..conf import escrow_settings
from ..exceptions import (
    AuthenticationFailed,
    BalanceInsufficient,
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ResourceMissing,
)
from .arguments import require_amount as _require_amount
from .arguments import require_capabilities as _require_capabilities
from .arguments import require_id as _require_id
from .arguments import require_idempotency_key as _require_idempotency_key
from .arguments import require_service_agreement as _require_service_agreement
from .signing import sign_webhook_payload, verify_webhook_payload
from .types import (
    AccountLinkResult,
    AccountLinkType,
    AccountSessionResult,
    AccountSnapshot,
    BusinessType,
    CancellationReason,
    CaptureMethod,
    ChargeSnapshot,
    DisputeSnapshot,
    LoginLinkResult,
    PaymentIntentSnapshot,
    PayoutSnapshot,
    RefundReason,
    RefundSnapshot,
    ServiceAgreement,
    TransferReversalSnapshot,
    TransferSnapshot,
)

__all__ = [
    "CARDS",
    "CONNECT_ENDPOINT",
    "PLATFORM_ENDPOINT",
    "SIMULATED_WEBHOOK_SECRET",
    "Delivery",
    "EventCollector",
    "EventSink",
    "SimulatedCard",
    "SimulatedGateway",
    "SimulatedStripe",
    "UndeliveredEvent",
    "dashboard_url",
    "default_event_sink",
    "get_event_sink",
    "onboarding_url",
    "reset",
    "set_event_sink",
    "simulated_stripe",
]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
T = TypeVar("T")
E = TypeVar("E", bound=GatewayError)

#: Endpoint names passed to the event sink: events about the platform's own
#: objects, and Connect events (about connected accounts; they carry ``account``).
PLATFORM_ENDPOINT = "platform"
CONNECT_ENDPOINT = "connect"

#: Signs simulated events when ``WEBHOOK_SECRETS`` / ``CONNECT_WEBHOOK_SECRETS``
#: is empty; :meth:`SimulatedGateway.verify_webhook` accepts it only when it is
#: given no secret, so it never weakens a configured endpoint.
SIMULATED_WEBHOOK_SECRET = "whsec_simulated_escrow_connect_not_secret"

#: The API version that replaced a PaymentIntent's ``charges`` list with ``latest_charge``.
_LATEST_CHARGE_SINCE = "2022-11-15"

#: A card authorisation (manual capture) lapses after seven days.
AUTHORIZATION_VALIDITY_SECONDS = 7 * 24 * 3600
ACCOUNT_LINK_TTL_SECONDS = 300
ACCOUNT_SESSION_TTL_SECONDS = 1800
DISPUTE_EVIDENCE_SECONDS = 7 * 24 * 3600
#: Stripe's dispute fee, in the disputed currency's minor unit (simplified).
DISPUTE_FEE = 1500
MAX_AMOUNT = 99_999_999
#: Card payments reach the platform's *available* balance this long after
#: the charge (Stripe's standard US payout schedule: two business days).
SETTLEMENT_DELAY_SECONDS = 2 * 24 * 3600
#: Stripe removes idempotency keys once they are at least 24 hours old.
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600
#: Stripe's minimum charge amounts for a few currencies (others: 1).
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50}

_EU = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
        "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    }
)  # fmt: skip
_CURRENCY_BY_COUNTRY = {
    "US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "NZ": "nzd", "JP": "jpy",
    "CH": "chf", "SG": "sgd", "HK": "hkd", "MX": "mxn", "BR": "brl", "NO": "nok",
    "SE": "sek", "DK": "dkk", "PL": "pln", "CZ": "czk", "HU": "huf", "RO": "ron",
    "BG": "bgn",
}  # fmt: skip

#: Stripe's "Europe" for Connect regions: the EEA, the United Kingdom and Switzerland.
_EUROPE = _EU | {"GB", "CH", "NO", "IS", "LI"}


def same_region(platform_country: str, account_country: str) -> bool:
    """Whether Stripe treats a platform and an account as in the same region.

    Europe (EEA, UK, Switzerland) is one region; elsewhere a region is the country.
    """
    a, b = platform_country.upper(), account_country.upper()
    return a == b or (a in _EUROPE and b in _EUROPE)


#: The embedded components an AccountSession can enable at API version
#: ``2026-10-28.endive`` (``components[...]`` of "Create an Account Session";
#: a test compares it with stripe-python's typed parameters).
ACCOUNT_SESSION_COMPONENTS = frozenset(
    {
        "account_management", "account_onboarding", "balance_report", "balances",
        "disputes_list", "documents", "financial_account", "financial_account_transactions",
        "instant_payouts_promotion", "issuing_card", "issuing_cards_list",
        "notification_banner", "payment_details", "payment_disputes",
        "payment_method_settings", "payments", "payout_details",
        "payout_reconciliation_report", "payouts", "payouts_list", "reporting_chart",
        "tax_registrations", "tax_settings", "terminal_hardware_orders",
        "terminal_hardware_shop",
    }
)  # fmt: skip

#: The controller properties the package creates accounts with (see
#: :meth:`~django_escrow_connect.gateway.stripe_gateway.StripeGateway.create_account`).
PACKAGE_CONTROLLER: Mapping[str, Any] = {
    "fees": {"payer": "application"},
    "losses": {"payments": "application"},
    "requirement_collection": "stripe",
    "stripe_dashboard": {"type": "express"},
}
_CONTROLLER_CHOICES = {
    "fees.payer": ("account", "application"),
    "losses.payments": ("application", "stripe"),
    "requirement_collection": ("application", "stripe"),
    "stripe_dashboard.type": ("express", "full", "none"),
}

_CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
_CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")
_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_CANCELABLE = (
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "requires_capture",
    "processing",
)
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
#: An inquiry (a pre-dispute "retrieval request"): no money is withdrawn yet.
_OPEN_INQUIRY_STATUSES = ("warning_needs_response", "warning_under_review")
#: Dispute statuses that leave a charge refundable: inquiries (a refund closes
#: them) and disputes that ended in the merchant's favour.
_REFUNDABLE_DISPUTE_STATUSES = (*_OPEN_INQUIRY_STATUSES, "warning_closed", "won", "prevented")

# --- test cards -----------------------------------------------------------------------


class SimulatedCard(NamedTuple):
    """A test card number and what paying with it does (for a checkout page)."""

    number: str
    label: str


#: The cards :meth:`SimulatedGateway.confirm_payment_intent` understands, by name.
CARDS: dict[str, SimulatedCard] = {
    "success": SimulatedCard("4242424242424242", "Visa - payment succeeds"),
    "declined": SimulatedCard("4000000000000002", "Visa - declined (generic_decline)"),
    "authentication_required": SimulatedCard(
        "4000002500003155", "Visa - requires 3-D Secure authentication"
    ),
    "disputed": SimulatedCard(
        "4000000000000259", "Visa - succeeds, then the customer disputes it as fraudulent"
    ),
    # Stripe's "Simulate an asynchronous refund" cards: every other card's
    # refunds succeed at once.
    "refund_pending": SimulatedCard(
        "4000000000007726", "Visa - succeeds; a refund is pending, then succeeds"
    ),
    "refund_fails": SimulatedCard(
        "4000000000005126", "Visa - succeeds; a refund succeeds, then fails"
    ),
}
#: Cards whose charge succeeds (the others decline or ask for authentication).
_PAYING_SCENARIOS = ("success", "disputed", "refund_pending", "refund_fails")
_SCENARIO_BY_NUMBER = {card.number: name for name, card in CARDS.items()}


# --- URLs of the simulated pages ---------------------------------------------------------


def onboarding_url(account_id: str) -> str:
    """Path of the simulated onboarding page of ``account_id`` (an account link's ``url``)."""
    try:
        return reverse("escrow_connect:simulated-onboarding", args=[account_id])
    except NoReverseMatch:
        return f"/escrow/simulated/onboarding/{account_id}/"


def dashboard_url(account_id: str) -> str:
    """Path of the simulated Express Dashboard of ``account_id`` (a login link's ``url``)."""
    try:
        return reverse("escrow_connect:simulated-dashboard", args=[account_id])
    except NoReverseMatch:
        return f"/escrow/simulated/dashboard/{account_id}/"


# --- event delivery --------------------------------------------------------------------------

#: ``sink(endpoint, payload, signature_header)``: delivers one signed event.
EventSink = Callable[[str, bytes, str], object]


class Delivery(NamedTuple):
    endpoint: str
    payload: bytes
    signature: str

    @property
    def event(self) -> JSON:
        return cast(JSON, json.loads(self.payload))


class EventCollector:
    """An event sink that keeps every delivery, for tests: ``set_event_sink(EventCollector())``."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()

    def __call__(self, endpoint: str, payload: bytes, signature: str) -> None:
        with self._lock:
            self.deliveries.append(Delivery(endpoint, payload, signature))

    @property
    def events(self) -> list[JSON]:
        """The delivered events, parsed, in delivery order."""
        with self._lock:
            return [delivery.event for delivery in self.deliveries]

    @property
    def types(self) -> list[str]:
        return [str(event["type"]) for event in self.events]

    def of_type(self, event_type: str) -> list[JSON]:
        return [event for event in self.events if event["type"] == event_type]

    def clear(self) -> None:
        with self._lock:
            self.deliveries.clear()


class ReceiverUnavailable(Exception):
    """The package's webhook receiver cannot be imported (not written or not installed)."""


_RECEIVER_MODULE = "django_escrow_connect.webhooks.receiver"


def default_event_sink(endpoint: str, payload: bytes, signature: str) -> object:
    """Hand the event to the package's real webhook pipeline.

    Imported lazily: ``django_escrow_connect.webhooks.receiver.receive(endpoint,
    payload, signature_header)``. Raises :class:`ReceiverUnavailable` when that
    module does not exist; the event is then kept as undelivered, as it is
    when the receiver answers with a non-2xx ``status_code``.
    """
    try:
        module = importlib.import_module(_RECEIVER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and _RECEIVER_MODULE.startswith(exc.name):
            raise ReceiverUnavailable(f"{_RECEIVER_MODULE} is not importable") from exc
        raise
    receive = getattr(module, "receive", None)
    if not callable(receive):
        raise ReceiverUnavailable(f"{_RECEIVER_MODULE} has no receive()")
    return receive(endpoint, payload, signature)


_sink_lock = threading.Lock()
_event_sink: EventSink | None = None


def set_event_sink(sink: EventSink | None) -> EventSink | None:
    """Deliver simulated events to ``sink`` (``None``: the default, the real receiver).

    Returns the previous sink (``None`` for the default), so a test can restore it.
    """
    global _event_sink
    with _sink_lock:
        previous, _event_sink = _event_sink, sink
    return previous


def get_event_sink() -> EventSink:
    """The callable the simulated Stripe delivers events to."""
    with _sink_lock:
        sink = _event_sink
    return sink if sink is not None else default_event_sink


def signing_secret(endpoint: str) -> str:
    """The secret the simulated Stripe signs ``endpoint``'s events with."""
    name = "CONNECT_WEBHOOK_SECRETS" if endpoint == CONNECT_ENDPOINT else "WEBHOOK_SECRETS"
    configured = escrow_settings.raw(name) or []
    if isinstance(configured, str):
        configured = [configured]
    for secret in configured:
        if isinstance(secret, str) and secret.strip():
            return secret
    return SIMULATED_WEBHOOK_SECRET


def event_endpoint(event: Mapping[str, Any]) -> str:
    """Which webhook endpoint receives ``event``."""
    return CONNECT_ENDPOINT if event.get("account") else PLATFORM_ENDPOINT


# --- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredError:
    """An error Stripe answered once a request had started executing."""

    cls: type[GatewayError]
    message: str
    code: str | None
    param: str | None
    decline_code: str | None
    http_status: int | None
    should_retry: bool | None
    error_type: str | None

    @classmethod
    def of(cls, exc: GatewayError) -> StoredError:
        return cls(
            type(exc),
            exc.message,
            exc.code,
            exc.param,
            exc.decline_code,
            exc.http_status,
            exc.should_retry,
            exc.error_type,
        )

    def replay(self, request_id: str | None) -> GatewayError:
        """The same error again, as a replay answers it (with the new request's id)."""
        return self.cls(
            self.message,
            code=self.code,
            param=self.param,
            decline_code=self.decline_code,
            request_id=request_id,
            http_status=self.http_status,
            should_retry=self.should_retry,
            error_type=self.error_type,
        )


@dataclass(frozen=True)
class IdempotencyRecord:
    method: str
    fingerprint: str
    #: The first answer: a response, or the error Stripe answered (``error``).
    response: JSON | None
    #: Simulated time of the first use; Stripe prunes keys after 24 hours.
    created: int = 0
    error: StoredError | None = None


#: Errors Stripe answers before an endpoint starts executing, so nothing is
#: stored under the key ("Idempotent requests"): authentication and access,
#: rate limiting, a concurrent request with the same key, a reused key.
#: Parameter validation is the other such case (``validate`` of
#: :meth:`SimulatedStripe.execute_idempotent`).
_NOT_STORED_ERRORS: tuple[type[GatewayError], ...] = (
    AuthenticationFailed,
    PermissionDenied,
    RateLimited,
    IdempotencyConflict,
)


@dataclass(frozen=True)
class InjectedFailure:
    error: GatewayError
    after_effect: bool
    #: Stripe started executing, failed, and stored the error under the key.
    stored: bool = False


@dataclass(frozen=True)
class UndeliveredEvent:
    endpoint: str
    event_id: str
    reason: str


#: Methods of the PaymentGateway protocol that count as calls to Stripe.
GATEWAY_METHODS = frozenset(
    {
        "create_account",
        "retrieve_account",
        "list_accounts",
        "create_account_link",
        "create_login_link",
        "create_account_session",
        "create_payment_intent",
        "retrieve_payment_intent",
        "capture_payment_intent",
        "cancel_payment_intent",
        "retrieve_charge",
        "retrieve_dispute",
        "create_transfer",
        "retrieve_transfer",
        "list_transfers",
        "create_transfer_reversal",
        "create_refund",
        "retrieve_refund",
        "list_refunds",
        "retrieve_event",
        "list_events",
    }
)
#: Simulated customer/Stripe actions; fault-injectable, not recorded in ``calls``.
SIMULATION_METHODS = frozenset(
    {
        "confirm_payment_intent",
        "complete_authentication",
        "complete_onboarding",
        "require_information",
        "deauthorize",
        "open_dispute",
        "close_dispute",
        "create_payout",
        "settle_refund",
    }
)


class SimulatedStripe:
    """The simulated Stripe: objects, idempotency keys, events, clock, faults.

    One process-wide instance, :data:`simulated_stripe`, backs every
    :class:`SimulatedGateway`. All state is guarded by :attr:`lock`; events
    are delivered after the lock is released.
    """

    accounts: dict[str, JSON]
    payment_intents: dict[str, JSON]
    charges: dict[str, JSON]
    transfers: dict[str, JSON]
    reversals: dict[str, JSON]
    refunds: dict[str, JSON]
    disputes: dict[str, JSON]
    payouts: dict[str, JSON]
    application_fees: dict[str, JSON]
    events: dict[str, JSON]
    idempotency: dict[str, IdempotencyRecord]
    #: ``(method, kwargs)`` of every gateway call the application made, in order.
    calls: list[tuple[str, dict[str, Any]]]
    #: Events the sink could not take (receiver missing or raising).
    undelivered: list[UndeliveredEvent]
    #: Latest account link per account: return/refresh URLs for the onboarding page.
    account_links: dict[str, JSON]
    #: Connected accounts' balances: account -> currency -> minor units.
    balances: dict[str, dict[str, int]]
    deauthorized: set[str]
    #: API version of each webhook endpoint (``PLATFORM_ENDPOINT`` /
    #: ``CONNECT_ENDPOINT``) when not the default (see :meth:`endpoint_api_version`).
    endpoint_api_versions: dict[str, str]
    #: The platform's settled money: currency -> minor units (may go negative,
    #: e.g. after a dispute; Stripe then debits the platform's bank).
    platform_available: dict[str, int]
    #: The platform's money not settled yet, one entry per captured charge:
    #: ``{"charge", "currency", "amount", "available_on"}``.
    platform_pending: list[JSON]
    #: The platform's country: transfers and destination charges to an account
    #: in another region follow Stripe's cross-border rules (see :func:`same_region`).
    platform_country: str

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (objects, keys, events, calls, faults, clock offset)."""
        with self.lock:
            self.accounts = {}
            self.payment_intents = {}
            self.charges = {}
            self.transfers = {}
            self.reversals = {}
            self.refunds = {}
            self.disputes = {}
            self.payouts = {}
            self.application_fees = {}
            self.events = {}
            self.idempotency = {}
            self.calls = []
            self.undelivered = []
            self.account_links = {}
            self.balances = {}
            self.deauthorized = set()
            self.endpoint_api_versions = {}
            self.platform_available = {}
            self.platform_pending = []
            self.platform_country = "US"
            self._failures: dict[str, list[InjectedFailure]] = {}
            self._owners: dict[str, str] = {}
            #: 3-D Secure in progress: payment intent -> card number.
            self._pending_cards: dict[str, str] = {}
            #: Charges paid with the dispute card: disputed once captured.
            self._dispute_on_capture: set[str] = set()
            #: Charges paid with an asynchronous-refund card: charge -> scenario.
            self._async_refunds: dict[str, str] = {}
            #: Refunds that will still change: refund -> the status they end in.
            self._unsettled_refunds: dict[str, str] = {}
            #: Disputes appealed once (a lost appeal cannot be appealed again).
            self._appealed_disputes: set[str] = set()
            self._time_offset = 0
            self._stored_failure: GatewayError | None = None
            self._outbox: list[JSON] | None = None
            self._request: JSON = {"id": None, "idempotency_key": None}

    # --- clock ---------------------------------------------------------------------

    def now(self) -> int:
        """The simulated time (unix seconds): real time plus :meth:`advance_time`."""
        return int(time.time()) + self._time_offset

    def advance_time(self, seconds: int) -> None:
        """Move the simulated clock forward.

        Lapsed authorisations are then canceled, and pending card payments
        whose ``available_on`` has passed join the platform's available balance.
        """
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self.lock:
            self._time_offset += int(seconds)
        self.execute("advance_time", {"seconds": seconds}, lambda: None, logged=False)

    # --- faults and the call log ---------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error: GatewayError,
        *,
        after_effect: bool = False,
        stored: bool = False,
    ) -> None:
        """Make the next call of ``method`` raise ``error``.

        ``after_effect=False``: raised before anything happens (the request
        never reached Stripe; nothing is stored under its key).
        ``after_effect=True``: raised after the call took effect, its
        response stored under its idempotency key and its events sent
        (Stripe acted, then the connection timed out: the stored answer is
        the success the client never saw). ``stored=True``: Stripe started
        executing, failed without effect (e.g. a 500) and stored that error
        under the key: a retry with the same key gets the same error for
        24 hours. Several failures for one method are raised by successive calls.
        """
        if method not in GATEWAY_METHODS | SIMULATION_METHODS:
            raise ValueError(f"{method!r} is not a method of the simulated gateway")
        if not isinstance(error, GatewayError):
            raise TypeError("gateways raise GatewayError subclasses only")
        if after_effect and stored:
            raise ValueError("a failure after the effect stores the success, not the error")
        with self.lock:
            self._failures.setdefault(method, []).append(
                InjectedFailure(error, after_effect, stored)
            )

    def call_count(self, method: str | None = None) -> int:
        """How many gateway calls were made (of ``method``, if given)."""
        with self.lock:
            return sum(1 for name, _ in self.calls if method is None or name == method)

    def _take_failure(self, method: str) -> InjectedFailure | None:
        queue = self._failures.get(method)
        return queue.pop(0) if queue else None

    # --- running a request -----------------------------------------------------------------

    def execute(
        self,
        method: str,
        params: Mapping[str, Any],
        action: Callable[[], T],
        *,
        idempotency_key: str | None = None,
        logged: bool = True,
        stripe_initiated: bool = False,
    ) -> T:
        """Run ``action`` as one request: log, faults, lock, then deliver its events."""
        outbox: list[JSON] = []
        failure: InjectedFailure | None = None
        try:
            with self.lock:
                if logged:
                    self.calls.append((method, _plain(dict(params))))
                failure = self._take_failure(method)
                if failure is not None and not failure.after_effect:
                    if not (failure.stored and idempotency_key is not None):
                        raise failure.error
                    # execute_idempotent's run() stores it under the key.
                    self._stored_failure, failure = failure.error, None
                previous_outbox, previous_request = self._outbox, self._request
                self._outbox = outbox
                self._request = {
                    "id": None if stripe_initiated else new_id("req", 14),
                    "idempotency_key": None if stripe_initiated else idempotency_key,
                }
                try:
                    self._expire_authorizations()
                    self._settle_balances()
                    result = copy.deepcopy(action())
                finally:
                    self._outbox, self._request = previous_outbox, previous_request
                    self._stored_failure = None
        finally:
            self._dispatch(outbox)
        if failure is not None:
            raise failure.error
        return result

    def execute_idempotent(
        self,
        method: str,
        params: Mapping[str, Any],
        idempotency_key: str,
        action: Callable[[], JSON],
        *,
        validate: Callable[[], None] | None = None,
    ) -> JSON:
        """:meth:`execute`, answering a repeated key with the stored answer.

        As on Stripe ("Idempotent requests"), the first answer of a request
        that started executing is stored, whether a response or an error
        (a refusal such as ``balance_insufficient``, or a 500), and replayed
        for the same key and parameters for 24 hours. ``validate`` checks the
        parameters alone, before execution: its errors are not stored, nor
        are those in :data:`_NOT_STORED_ERRORS`.
        """
        _require_idempotency_key(idempotency_key)
        fingerprint = json.dumps(_plain(dict(params)), sort_keys=True, default=str)

        def run() -> JSON:
            injected, self._stored_failure = self._stored_failure, None
            if validate is not None:
                validate()
            record = self.idempotency.get(idempotency_key)
            if record is not None and self.now() - record.created >= IDEMPOTENCY_KEY_TTL_SECONDS:
                # Stripe may prune a key once it is 24 hours old: the same key
                # is then a new request (the case a lost answer must survive).
                del self.idempotency[idempotency_key]
                record = None
            if record is not None:
                if record.method != method or record.fingerprint != fingerprint:
                    raise self.error(
                        IdempotencyConflict,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{idempotency_key}' if you meant to execute a different request.",
                        error_type="idempotency_error",
                    )
                if record.error is not None:
                    raise record.error.replay(self._request.get("id"))
                return copy.deepcopy(cast(JSON, record.response))
            try:
                if injected is not None:
                    raise injected
                response = action()
            except GatewayError as exc:
                if not isinstance(exc, _NOT_STORED_ERRORS):
                    self.idempotency[idempotency_key] = IdempotencyRecord(
                        method, fingerprint, None, self.now(), StoredError.of(exc)
                    )
                raise
            self.idempotency[idempotency_key] = IdempotencyRecord(
                method, fingerprint, copy.deepcopy(response), self.now()
            )
            return response

        return self.execute(
            method,
            {**params, "idempotency_key": idempotency_key},
            run,
            idempotency_key=idempotency_key,
        )

    def error(
        self,
        cls: type[E],
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        http_status: int = 400,
        error_type: str = "invalid_request_error",
    ) -> E:
        """An error as the real gateway would raise it for Stripe's answer."""
        return cls(
            message,
            code=code,
            param=param,
            request_id=self._request.get("id"),
            http_status=http_status,
            error_type=error_type,
        )

    def missing(self, kind: str, object_id: str, param: str | None = None) -> ResourceMissing:
        return self.error(
            ResourceMissing,
            f"No such {kind}: '{object_id}'",
            code="resource_missing",
            param=param,
            http_status=404,
        )

    # --- events ---------------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        obj: Mapping[str, Any],
        *,
        account: str | None = None,
        previous_attributes: Mapping[str, Any] | None = None,
        automatic: bool = False,
    ) -> JSON:
        """Record an event about ``obj`` (a Connect event when ``account`` is given).

        The event is rendered at its endpoint's API version
        (:meth:`endpoint_api_version`), as Stripe renders an event once, at
        creation, for the endpoint.
        """
        version = self.endpoint_api_version(
            PLATFORM_ENDPOINT if account is None else CONNECT_ENDPOINT
        )
        data: JSON = {"object": self._render(dict(obj), version)}
        if previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
        event: JSON = {"id": new_id("evt"), "object": "event"}
        if account is not None:
            event["account"] = account
        event.update(
            {
                "api_version": version,
                "created": self.now(),
                "data": data,
                "livemode": False,
                "pending_webhooks": 1,
                "request": (
                    {"id": None, "idempotency_key": None} if automatic else dict(self._request)
                ),
                "type": event_type,
            }
        )
        self.events[event["id"]] = event
        if self._outbox is not None:
            self._outbox.append(copy.deepcopy(event))
        else:  # pragma: no cover - every emitting path runs inside execute()
            self.undelivered.append(
                UndeliveredEvent(event_endpoint(event), event["id"], "emitted outside a request")
            )
        return event

    def endpoint_api_version(self, endpoint: str) -> str:
        """The API version ``endpoint``'s events are rendered at.

        :attr:`endpoint_api_versions` if set for the endpoint, else
        ``WEBHOOK_API_VERSION`` (the version the host says its endpoints
        have), else the pinned ``STRIPE_API_VERSION``.
        """
        configured = self.endpoint_api_versions.get(endpoint)
        if configured:
            return configured
        return str(escrow_settings.WEBHOOK_API_VERSION or "") or conf.STRIPE_API_VERSION

    def _render(self, obj: JSON, version: str) -> JSON:
        """``obj`` as an endpoint at ``version`` sees it (deep copy).

        One documented difference is rendered: before ``2022-11-15`` a
        PaymentIntent embedded its ``charges`` list and had no ``latest_charge``.
        """
        rendered = copy.deepcopy(obj)
        if rendered.get("object") == "payment_intent" and version < _LATEST_CHARGE_SINCE:
            latest = rendered.pop("latest_charge", None)
            charge = self.charges.get(latest) if isinstance(latest, str) else None
            data = [copy.deepcopy(charge)] if charge is not None else []
            rendered["charges"] = _list(data, f"/v1/charges?payment_intent={rendered['id']}")
        return rendered

    def _dispatch(self, events: list[JSON]) -> None:
        if not events:
            return
        batch = list(events)

        def deliver() -> None:
            for event in batch:
                self.deliver(event)

        # Deliver after the caller's transaction commits, so the webhook
        # pipeline sees its rows; a rolled-back transaction drops the delivery
        # (the events stay in the store, for retrieve_event / list_events).
        if transaction.get_connection().in_atomic_block:
            transaction.on_commit(deliver, robust=True)
        else:
            deliver()

    def deliver(self, event: Mapping[str, Any]) -> bool:
        """Sign ``event`` and give it to the sink; ``False`` if it was not delivered."""
        endpoint = event_endpoint(event)
        payload = json.dumps(event, indent=2).encode("utf-8")
        signature = sign_webhook_payload(payload, signing_secret(endpoint))
        event_id = str(event.get("id"))
        try:
            answer = get_event_sink()(endpoint, payload, signature)
        except ReceiverUnavailable as exc:
            logger.warning(
                "Simulated event %s (%s) not delivered: %s", event_id, event.get("type"), exc
            )
            reason = str(exc)
        except Exception as exc:
            logger.exception(
                "Delivering simulated event %s (%s) failed", event_id, event.get("type")
            )
            reason = f"{type(exc).__name__}: {exc}"
        else:
            # The receiver answers like an HTTP endpoint: Stripe retries non-2xx.
            status = getattr(answer, "status_code", None)
            if not isinstance(status, int) or status < 300:
                return True
            reason = f"HTTP {status}: {getattr(answer, 'reason', '')}".rstrip(": ")
            logger.warning(
                "Simulated event %s (%s) was refused: %s", event_id, event.get("type"), reason
            )
        with self.lock:
            self.undelivered.append(UndeliveredEvent(endpoint, event_id, reason))
        return False

    def redeliver(self, event_id: str) -> bool:
        """Deliver a stored event again (Stripe's at-least-once delivery, or a retry)."""
        with self.lock:
            event = copy.deepcopy(self.events.get(event_id))
        if event is None:
            raise KeyError(event_id)
        return self.deliver(event)

    def deliver_undelivered(self) -> int:
        """Try every undelivered event again; returns how many got through."""
        with self.lock:
            pending, self.undelivered = self.undelivered, []
        return sum(1 for item in pending if self.redeliver(item.event_id))

    # --- lookups ------------------------------------------------------------------------------

    def get(
        self, collection: dict[str, JSON], kind: str, object_id: str, param: str | None
    ) -> JSON:
        obj = collection.get(object_id)
        if obj is None or object_id in self._owners:
            raise self.missing(kind, object_id, param)
        return obj

    def account(self, account_id: str, param: str | None = "account") -> JSON:
        account = self.accounts.get(account_id)
        if account is None:
            raise self.missing("account", account_id, param)
        if account_id in self.deauthorized:
            raise self.error(
                PermissionDenied,
                f"The provided key does not have access to account '{account_id}' (or that "
                "account does not exist). Application access may have been revoked.",
                code="account_invalid",
                http_status=403,
            )
        return account

    def credit(self, account_id: str, currency: str, amount: int) -> None:
        balance = self.balances.setdefault(account_id, {})
        balance[currency] = balance.get(currency, 0) + amount

    # --- the platform's balance -------------------------------------------------------

    def platform_balance(self, currency: str) -> dict[str, int]:
        """The platform's ``available`` and ``pending`` balance in ``currency``."""
        currency = currency.lower()
        with self.lock:
            self._settle_balances()
            pending = sum(
                entry["amount"] for entry in self.platform_pending if entry["currency"] == currency
            )
            return {"available": self.platform_available.get(currency, 0), "pending": pending}

    def make_funds_available(self) -> None:
        """Settle every pending card payment now (as if its ``available_on`` had passed)."""
        with self.lock:
            for entry in self.platform_pending:
                entry["available_on"] = min(entry["available_on"], self.now())
            self._settle_balances()

    def _settle_balances(self) -> None:
        now = self.now()
        still_pending = []
        for entry in self.platform_pending:
            if entry["available_on"] <= now:
                self._credit_available(entry["currency"], entry["amount"])
            else:
                still_pending.append(entry)
        self.platform_pending = still_pending

    def _credit_available(self, currency: str, amount: int) -> None:
        self.platform_available[currency] = self.platform_available.get(currency, 0) + amount

    def _add_pending(self, charge: JSON, amount: int) -> None:
        """Money from ``charge`` the platform receives, pending until the charge settles."""
        for entry in self.platform_pending:
            if entry["charge"] == charge["id"]:
                entry["amount"] += amount
                return
        available_on = int(charge["created"]) + SETTLEMENT_DELAY_SECONDS
        if available_on <= self.now():
            self._credit_available(charge["currency"], amount)
            return
        self.platform_pending.append(
            {
                "charge": charge["id"],
                "currency": charge["currency"],
                "amount": amount,
                "available_on": available_on,
            }
        )

    def _debit_platform(self, currency: str, amount: int, *, charge: str | None = None) -> None:
        """Money leaves the platform: from ``charge``'s pending funds first, then available."""
        if charge is not None:
            for entry in self.platform_pending:
                if entry["charge"] == charge:
                    taken = min(entry["amount"], amount)
                    entry["amount"] -= taken
                    amount -= taken
                    break
        self._credit_available(currency, -amount)

    def _expire_authorizations(self) -> None:
        now = self.now()
        for intent in self.payment_intents.values():
            if intent["status"] != "requires_capture":
                continue
            charge = self.charges.get(intent["latest_charge"] or "")
            if charge is None:
                continue
            deadline = charge["payment_method_details"]["card"].get("capture_before")
            if deadline is None or deadline > now:
                continue
            # API 2025-03-31.basil and later: no refund object, charge not marked refunded.
            charge["status"] = "failed"
            charge["failure_code"] = "expired_for_capture"
            charge["failure_message"] = "The authorization expired before it was captured."
            intent.update(
                status="canceled",
                canceled_at=now,
                cancellation_reason="expired",
                amount_capturable=0,
            )
            self.emit("charge.expired", charge, automatic=True)
            self.emit("payment_intent.canceled", intent, automatic=True)


#: The process-wide simulated Stripe.
simulated_stripe = SimulatedStripe()


def reset() -> None:
    """Forget all simulated state (call between tests)."""
    simulated_stripe.reset()


# --- the gateway ---------------------------------------------------------------------------


class SimulatedGateway:
    """:class:`~django_escrow_connect.gateway.base.PaymentGateway` without Stripe or money.

    Configure with ``ESCROW_CONNECT = {"GATEWAY":
    "django_escrow_connect.gateway.simulated.SimulatedGateway"}`` (refused by a
    system check when DEBUG is off). Instances are cheap and share
    :data:`simulated_stripe` unless given their own ``store``.
    """

    def __init__(self, store: SimulatedStripe | None = None) -> None:
        self.store = store if store is not None else simulated_stripe

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"

    # --- connected accounts -----------------------------------------------------------

    def create_account(
        self,
        *,
        idempotency_key: str,
        country: str,
        email: str | None,
        business_type: BusinessType | None,
        metadata: Mapping[str, str],
        capabilities: Sequence[str] = ("transfers", "card_payments"),
        service_agreement: ServiceAgreement | None = None,
        controller: Mapping[str, Any] | None = None,
    ) -> AccountSnapshot:
        """A connected account with the package's controller properties.

        ``controller`` (not part of the gateway protocol) creates an account
        with other controller properties, to exercise Stripe's rules about
        them: login links exist only for Express Dashboard accounts, and
        ``account_update`` links only when the platform collects requirements
        (``requirement_collection=application``, which also needs
        ``stripe_dashboard.type=none`` and the platform paying fees and losses).
        """
        requested = _require_capabilities(capabilities)
        _require_service_agreement(service_agreement)
        s = self.store
        wanted_controller = _plain(
            dict(controller if controller is not None else PACKAGE_CONTROLLER)
        )
        params = {
            "country": country,
            "email": email,
            "business_type": business_type,
            "metadata": dict(metadata),
            "capabilities": list(requested),
            "service_agreement": service_agreement,
        }
        if controller is not None:
            params["controller"] = wanted_controller

        def validate() -> None:
            if not isinstance(country, str) or len(country) != 2 or not country.isalpha():
                raise s.error(InvalidRequest, f"Country '{country}' is unknown.", param="country")
            if business_type not in (None, "individual", "company"):
                raise s.error(
                    InvalidRequest,
                    f"Invalid business_type: {business_type!r}",
                    param="business_type",
                )
            agreement = service_agreement or "full"
            if agreement == "recipient" and "card_payments" in requested:
                raise s.error(
                    InvalidRequest,
                    "Accounts under the `recipient` service agreement cannot request the "
                    "`card_payments` capability. Request only `transfers`, or use the `full` "
                    "service agreement.",
                    param="tos_acceptance[service_agreement]",
                )
            self._check_controller(wanted_controller)

        def action() -> JSON:
            agreement = service_agreement or "full"
            account = _account_object(
                new_id("acct", 16), country.upper(), email, business_type, metadata, s.now()
            )
            account["controller"] = _controller_object(wanted_controller)
            account["type"] = _account_type(wanted_controller)
            account["capabilities"] = {name: "inactive" for name in requested}
            account["tos_acceptance"]["service_agreement"] = agreement
            s.accounts[account["id"]] = account
            s.balances[account["id"]] = {}
            return account

        response = s.execute_idempotent(
            "create_account", params, idempotency_key, action, validate=validate
        )
        return AccountSnapshot.from_dict(response)

    def _check_controller(self, controller: Mapping[str, Any]) -> None:
        s = self.store
        settings = _controller_settings(controller)
        for name, value in settings.items():
            choices = _CONTROLLER_CHOICES.get(name)
            param = "controller[" + "][".join(name.split(".")) + "]"
            if choices is None:
                raise s.error(InvalidRequest, f"Received unknown parameter: {param}", param=param)
            if value not in choices:
                raise s.error(
                    InvalidRequest,
                    f"Invalid {param}: must be one of {', '.join(choices)}",
                    param=param,
                )
        if settings.get("requirement_collection") == "application" and (
            settings.get("stripe_dashboard.type") != "none"
            or settings.get("fees.payer") != "application"
            or settings.get("losses.payments") != "application"
        ):
            raise s.error(
                InvalidRequest,
                "When the platform collects requirements "
                "(controller[requirement_collection]=application), the account cannot have "
                "a Stripe Dashboard and the platform must pay fees and losses: set "
                "controller[stripe_dashboard][type]=none, controller[fees][payer]=application "
                "and controller[losses][payments]=application.",
                param="controller[requirement_collection]",
            )

    def retrieve_account(self, account_id: str) -> AccountSnapshot:
        _require_id(account_id, "account_id")
        s = self.store
        response = s.execute(
            "retrieve_account", {"account_id": account_id}, lambda: s.account(account_id)
        )
        return AccountSnapshot.from_dict(response)

    def list_accounts(self, *, created_gte: datetime) -> list[AccountSnapshot]:
        s = self.store
        since = int(created_gte.timestamp())

        def action() -> list[JSON]:
            found = [a for a in s.accounts.values() if a["created"] >= since]
            return _newest_first(found)

        response = s.execute("list_accounts", {"created_gte": since}, action)
        return [AccountSnapshot.from_dict(a) for a in response]

    def create_account_link(
        self,
        *,
        account_id: str,
        link_type: AccountLinkType,
        refresh_url: str,
        return_url: str,
    ) -> AccountLinkResult:
        _require_id(account_id, "account_id")
        s = self.store
        params = {
            "account_id": account_id,
            "link_type": link_type,
            "refresh_url": refresh_url,
            "return_url": return_url,
        }

        def action() -> JSON:
            account = s.account(account_id)
            platform_collects = account["controller"].get("requirement_collection") == "application"
            if link_type not in ("account_onboarding", "account_update"):
                raise s.error(
                    InvalidRequest,
                    f"Invalid type: must be one of account_onboarding or account_update "
                    f"(got {link_type!r}).",
                    param="type",
                )
            if link_type == "account_update" and not platform_collects:
                raise s.error(
                    InvalidRequest,
                    f"Account links of type {link_type!r} are not available for accounts "
                    "whose requirements Stripe collects (controller[requirement_collection]"
                    "=stripe): use account_onboarding, or a login link to the Express "
                    "Dashboard.",
                    param="type",
                )
            for name, url in (("refresh_url", refresh_url), ("return_url", return_url)):
                if not isinstance(url, str) or not url.strip():
                    raise s.error(InvalidRequest, "Not a valid URL", param=name)
            now = s.now()
            s.account_links[account_id] = {
                "type": link_type,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "created": now,
                "expires_at": now + ACCOUNT_LINK_TTL_SECONDS,
            }
            return {
                "object": "account_link",
                "created": now,
                "expires_at": now + ACCOUNT_LINK_TTL_SECONDS,
                "url": onboarding_url(account_id),
            }

        return AccountLinkResult.from_dict(s.execute("create_account_link", params, action))

    def create_login_link(self, *, account_id: str) -> LoginLinkResult:
        _require_id(account_id, "account_id")
        s = self.store

        def action() -> JSON:
            account = s.account(account_id)
            dashboard = account["controller"].get("stripe_dashboard", {}).get("type")
            if dashboard != "express":
                raise s.error(
                    InvalidRequest,
                    f"Login links can only be created for accounts that use the Express "
                    f"Dashboard; {account_id} has controller[stripe_dashboard][type]="
                    f"{dashboard}.",
                    param="account",
                )
            if not account["details_submitted"]:
                raise s.error(
                    InvalidRequest,
                    "Cannot create a login link for an account that has not completed onboarding.",
                    param="account",
                )
            return {"object": "login_link", "created": s.now(), "url": dashboard_url(account_id)}

        response = s.execute("create_login_link", {"account_id": account_id}, action)
        return LoginLinkResult.from_dict(response)

    def create_account_session(
        self,
        *,
        account_id: str,
        components: Sequence[str] = ("account_onboarding",),
    ) -> AccountSessionResult:
        if isinstance(components, str):
            raise TypeError("components must be a sequence of component names, not a string")
        if not components:
            raise ValueError("components must name at least one embedded component")
        _require_id(account_id, "account_id")
        s = self.store

        def action() -> JSON:
            unknown = sorted(set(components) - ACCOUNT_SESSION_COMPONENTS)
            if unknown:
                param = f"components[{unknown[0]}]"
                raise s.error(InvalidRequest, f"Received unknown parameter: {param}", param=param)
            s.account(account_id)
            now = s.now()
            # Never stored: the client secret is a short-lived bearer credential.
            return {
                "object": "account_session",
                "account": account_id,
                "client_secret": f"accs_secret__{_random(40)}",
                "components": {name: {"enabled": True, "features": {}} for name in components},
                "expires_at": now + ACCOUNT_SESSION_TTL_SECONDS,
                "livemode": False,
            }

        params = {"account_id": account_id, "components": list(components)}
        return AccountSessionResult.from_dict(s.execute("create_account_session", params, action))

    # --- simulated onboarding (the seller's side) -----------------------------------------

    def latest_account_link(self, account_id: str) -> JSON | None:
        """The last account link's ``return_url``, ``refresh_url``, ``expires_at``..., or None."""
        with self.store.lock:
            link = self.store.account_links.get(account_id)
            return copy.deepcopy(link) if link is not None else None

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
            account["tos_acceptance"].update(date=now, ip="127.0.0.1", user_agent="simulated")
            account["business_profile"].update(
                mcc="5734", url="https://seller.example", product_description="Simulated"
            )
            changed_capabilities = [
                name for name, status in account["capabilities"].items() if status != "active"
            ]
            account["capabilities"] = {name: "active" for name in account["capabilities"]}
            self._emit_account_changes(account, before, changed_capabilities)
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
            self._emit_account_changes(account, before, changed)
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
        :class:`PermissionDenied` (``account_invalid``), as on Stripe.
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

    def _emit_account_changes(
        self, account: JSON, before: JSON, capabilities: Sequence[str]
    ) -> None:
        s = self.store
        previous = {key: value for key, value in before.items() if account.get(key) != value}
        if not previous:
            return
        account_id = account["id"]
        s.emit("account.updated", account, account=account_id, previous_attributes=previous)
        for name in capabilities:
            s.emit(
                "capability.updated",
                _capability_object(account, name),
                account=account_id,
                previous_attributes={"status": before["capabilities"].get(name)},
            )

    # --- payments --------------------------------------------------------------------------

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
    ) -> PaymentIntentSnapshot:
        _require_amount(amount, "amount")
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
            if amount > MAX_AMOUNT:
                raise s.error(
                    InvalidRequest,
                    f"Amount must be no more than {MAX_AMOUNT}.",
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
                self._check_settlement_merchant(s.account(on_behalf_of, "on_behalf_of"))
            if destination is not None:
                account = s.account(destination, "transfer_data[destination]")
                self._check_transfers_capability(account, "transfer_data[destination]")
                if on_behalf_of is None:
                    self._check_same_region(account, "transfer_data[destination]")
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
            s.payment_intents[pi_id] = intent
            s.emit("payment_intent.created", intent)
            return intent

        response = s.execute_idempotent(
            "create_payment_intent", params, idempotency_key, action, validate=validate
        )
        return PaymentIntentSnapshot.from_dict(response)

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
                raise self._unexpected_state(intent, "confirmed", _CONFIRMABLE)
            scenario = _SCENARIO_BY_NUMBER.get(number)
            intent["payment_method"] = new_id("pm")
            intent["last_payment_error"] = None
            intent["next_action"] = None
            if scenario in _PAYING_SCENARIOS:
                self._authorize(intent, number)
            elif scenario == "authentication_required":
                s._pending_cards[intent["id"]] = number
                intent["status"] = "requires_action"
                intent["next_action"] = {
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {
                        "type": "three_d_secure_redirect",
                        "stripe_js": f"/escrow/simulated/authenticate/{intent['id']}/",
                    },
                }
                s.emit("payment_intent.requires_action", intent)
            elif scenario == "declined":
                self._decline(intent, number, "generic_decline", "Your card was declined.")
            else:
                self._decline(
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
                raise self._unexpected_state(intent, "authenticated", ("requires_action",))
            number = s._pending_cards.pop(intent["id"], CARDS["authentication_required"].number)
            intent["next_action"] = None
            if succeed:
                self._authorize(intent, number, authenticated=True)
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
                raise self._unexpected_state(intent, "captured", ("requires_capture",))
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
                self._check_transfers_capability(destination, "transfer_data[destination]")
            intent["application_fee_amount"] = fee
            self._capture(intent, charge, amount, manual=True)
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
                raise self._unexpected_state(intent, "canceled", _CANCELABLE)
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

    # --- payment internals ---------------------------------------------------------------

    def _unexpected_state(self, intent: JSON, done: str, allowed: Sequence[str]) -> InvalidRequest:
        return self.store.error(
            InvalidRequest,
            f"This PaymentIntent could not be {done} because it has a status of "
            f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
            f"may be {done}: {', '.join(allowed)}.",
            code="payment_intent_unexpected_state",
            param="intent",
        )

    def _check_settlement_merchant(self, account: JSON) -> None:
        """``on_behalf_of``: the account settles the charge, as a full-agreement merchant."""
        if account["tos_acceptance"].get("service_agreement") == "recipient":
            raise self.store.error(
                InvalidRequest,
                f"The account {account['id']} is under the `recipient` service agreement "
                "and cannot be the settlement merchant (`on_behalf_of`) of a charge.",
                param="on_behalf_of",
            )
        if account["capabilities"].get("card_payments") != "active":
            raise self.store.error(
                InvalidRequest,
                f"The `on_behalf_of` account {account['id']} must have the `card_payments` "
                "capability active.",
                code="insufficient_capabilities_for_transfer",
                param="on_behalf_of",
            )

    def _check_same_region(self, account: JSON, param: str, *, recipient_ok: bool = False) -> None:
        """Stripe moves funds across regions only to ``recipient`` accounts (transfers)
        or with the connected account as settlement merchant (destination charges)."""
        if same_region(self.store.platform_country, account["country"]):
            return
        if recipient_ok and account["tos_acceptance"].get("service_agreement") == "recipient":
            return
        remedy = (
            "the account must be under the `recipient` service agreement"
            if recipient_ok
            else "set `on_behalf_of` to the connected account (the settlement merchant)"
        )
        raise self.store.error(
            InvalidRequest,
            f"Funds can't be sent to accounts located in {account['country']} from a "
            f"platform in {self.store.platform_country}: the regions differ, so {remedy}.",
            param=param,
        )

    def _check_transfers_capability(self, account: JSON, param: str) -> None:
        if account["capabilities"].get("transfers") != "active":
            raise self.store.error(
                InvalidRequest,
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param=param,
            )

    def _authorize(self, intent: JSON, number: str, *, authenticated: bool = False) -> None:
        """The card was authorised: a charge exists; capture now unless manual."""
        s = self.store
        manual = intent["capture_method"] == "manual"
        charge = _charge_object(intent, number, s.now(), authenticated=authenticated)
        if manual:
            charge["payment_method_details"]["card"]["capture_before"] = (
                s.now() + AUTHORIZATION_VALIDITY_SECONDS
            )
        s.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        intent["payment_method"] = charge["payment_method"]
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
            self._capture(intent, charge, intent["amount"], manual=False)

    def _capture(self, intent: JSON, charge: JSON, amount: int, *, manual: bool) -> None:
        s = self.store
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
            transfer = self._new_transfer(
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
            self._open_dispute(charge, "fraudulent")

    def _decline(self, intent: JSON, number: str, decline_code: str, message: str) -> None:
        s = self.store
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

    # --- transfers --------------------------------------------------------------------------

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
            self._check_transfers_capability(account, "destination")
            self._check_same_region(account, "destination", recipient_ok=True)
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
                transfer = self._new_transfer(
                    amount=amount,
                    currency=currency,
                    destination=destination,
                    source_transaction=None,
                    transfer_group=transfer_group or None,
                    metadata=metadata,
                )
                s.emit("transfer.created", transfer)
                return transfer
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
                    f"The currency of the transfer ({currency}) must match the currency of "
                    f"the source_transaction ({charge['currency']}).",
                    param="currency",
                )
            available = self._source_available(charge)
            if amount > available:
                raise s.error(
                    BalanceInsufficient,
                    f"Insufficient funds: the transfer amount ({amount}) exceeds what the "
                    f"source_transaction {source_transaction} can still cover ({available}).",
                    code="balance_insufficient",
                    param="amount",
                )
            transfer = self._new_transfer(
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
            self._check_reversible(transfer, reversal_amount)
            reversal = self._reverse(transfer, reversal_amount, metadata, source_refund=None)
            s.emit("transfer.reversed", transfer)
            return reversal

        response = s.execute_idempotent("create_transfer_reversal", params, idempotency_key, action)
        return TransferReversalSnapshot.from_dict(response)

    def _source_available(self, charge: JSON) -> int:
        """What a charge can still fund: captured, less refunds and net transfers from it."""
        transferred = sum(
            t["amount"] - t["amount_reversed"]
            for t in self.store.transfers.values()
            if t["source_transaction"] == charge["id"]
        )
        return int(charge["amount_captured"] - charge["amount_refunded"] - transferred)

    def _new_transfer(
        self,
        *,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str | None,
        transfer_group: str | None,
        metadata: Mapping[str, str],
    ) -> JSON:
        s = self.store
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

    def _check_reversible(self, transfer: JSON, amount: int) -> None:
        s = self.store
        destination = transfer["destination"]
        s.account(destination, "destination")
        balance = s.balances.get(destination, {}).get(transfer["currency"], 0)
        if amount > balance:
            raise s.error(
                BalanceInsufficient,
                f"The connected account {destination} has insufficient funds ({balance}) to "
                f"reverse {amount} of transfer {transfer['id']}.",
                code="balance_insufficient",
                param="amount",
            )

    def _reverse(
        self,
        transfer: JSON,
        amount: int,
        metadata: Mapping[str, str],
        *,
        source_refund: str | None,
        reversal_id: str | None = None,
    ) -> JSON:
        s = self.store
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

    # --- refunds --------------------------------------------------------------------------

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
                self._check_reversible(transfer, reversal_amount - returned)

            refund_id = new_id("re")
            behaviour = s._async_refunds.get(charge["id"])
            reversal: JSON | None = None
            if fee_object is not None and fee_refund:
                _refund_application_fee(fee_object, fee_refund, s.now())
                s.credit(fee_object["account"], fee_object["currency"], fee_refund)
                s._debit_platform(fee_object["currency"], fee_refund, charge=charge["id"])
            if transfer is not None and reversal_amount:
                reversal = self._reverse(transfer, reversal_amount, {}, source_refund=refund_id)
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

    # --- disputes and payouts (Stripe's side) ------------------------------------------

    def open_dispute(
        self, charge_or_intent: str, *, reason: str = "fraudulent", inquiry: bool = False
    ) -> DisputeSnapshot:
        """The customer disputes a captured charge (given by ``ch_...`` or ``pi_...`` id).

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
            return self._open_dispute(charge, reason, inquiry=inquiry)

        response = s.execute(
            "open_dispute",
            {"charge": charge_or_intent, "reason": reason, "inquiry": inquiry},
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
                    self._withdraw(dispute)
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

    def _withdraw(self, dispute: JSON) -> None:
        """A chargeback takes the disputed amount and the dispute fee from the platform."""
        s = self.store
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

    def _open_dispute(self, charge: JSON, reason: str, *, inquiry: bool = False) -> JSON:
        s = self.store
        now = s.now()
        dispute_id = new_id("dp")
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
            self._withdraw(dispute)
        s.emit("charge.dispute.created", dispute, automatic=True)
        if not inquiry:
            s.emit("charge.dispute.funds_withdrawn", dispute, automatic=True)
        return dispute

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

    # --- events and webhooks -------------------------------------------------------------

    def retrieve_event(self, event_id: str, *, stripe_account: str | None = None) -> dict[str, Any]:
        _require_id(event_id, "event_id")
        s = self.store

        def action() -> JSON:
            event = s.events.get(event_id)
            # Connect events live on the connected account: fetch them with its id.
            if event is None or event.get("account") != stripe_account:
                raise s.missing("event", event_id, "id")
            return event

        params = {"event_id": event_id, "stripe_account": stripe_account}
        return s.execute("retrieve_event", params, action)

    def list_events(
        self,
        *,
        created_gte: int,
        types: Sequence[str] | None = None,
        stripe_account: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events created at or after ``created_gte`` (simulated unix seconds), newest first."""
        if isinstance(types, str):
            raise TypeError("types must be a sequence of event types, not a string")
        if types and len(types) > 20:
            raise ValueError("Stripe accepts at most 20 event types at once")
        s = self.store
        wanted = set(types) if types else None

        def action() -> list[JSON]:
            if stripe_account is not None:
                s.account(stripe_account)
            found = [
                event
                for event in s.events.values()
                if event["created"] >= int(created_gte)
                and event.get("account") == stripe_account
                and (wanted is None or event["type"] in wanted)
            ]
            return found[::-1]

        params = {
            "created_gte": created_gte,
            "types": list(types) if types else None,
            "stripe_account": stripe_account,
        }
        return iter(s.execute("list_events", params, action))

    def verify_webhook(
        self,
        payload: bytes,
        sig_header: str | None,
        secrets: Sequence[str],
        tolerance: int,
    ) -> dict[str, Any]:
        """Verify ``Stripe-Signature`` like the Stripe gateway does.

        When no secret is configured (``secrets`` empty), the simulated
        gateway's own :data:`SIMULATED_WEBHOOK_SECRET` is accepted instead, so a
        development host needs no ``whsec_`` setting.
        """
        if isinstance(secrets, str):
            raise TypeError("secrets must be a sequence of signing secrets, not a single string")
        usable = [secret for secret in secrets if secret and secret.strip()]
        return verify_webhook_payload(
            payload, sig_header, usable or [SIMULATED_WEBHOOK_SECRET], tolerance
        )

    def resend_event(self, event_id: str) -> bool:
        """Deliver a stored event again, as Stripe's retries and duplicates do."""
        return self.store.redeliver(event_id)


# --- object builders --------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits


def _random(length: int) -> str:
    return "".join(pysecrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: ``pi_3Pq...``."""
    return f"{prefix}_{_random(length)}"


def _list(data: list[JSON], url: str) -> JSON:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _requirements(
    currently_due: Sequence[str],
    *,
    past_due: Sequence[str] = (),
    disabled_reason: str | None = None,
) -> JSON:
    return {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": list(currently_due),
        "disabled_reason": disabled_reason,
        "errors": [],
        "eventually_due": list(currently_due),
        "past_due": list(past_due),
        "pending_verification": [],
    }


def _initial_requirements(business_type: str | None) -> list[str]:
    common = ["business_profile.mcc", "business_profile.url", "external_account"]
    tos = ["tos_acceptance.date", "tos_acceptance.ip"]
    if business_type == "individual":
        person = [
            f"individual.{field}"
            for field in (
                "address.city", "address.line1", "address.postal_code", "address.state",
                "dob.day", "dob.month", "dob.year", "email", "first_name", "last_name",
                "phone", "ssn_last_4",
            )
        ]  # fmt: skip
        return sorted([*common, *person, *tos])
    if business_type == "company":
        company = [
            "company.address.city", "company.address.line1", "company.address.postal_code",
            "company.address.state", "company.name", "company.owners_provided",
            "company.phone", "company.tax_id", "representative.dob.day",
            "representative.dob.month", "representative.dob.year",
            "representative.first_name", "representative.last_name",
            "representative.relationship.title",
        ]  # fmt: skip
        return sorted([*common, *company, *tos])
    return sorted([*common, "business_type", *tos])


def _account_object(
    account_id: str,
    country: str,
    email: str | None,
    business_type: str | None,
    metadata: Mapping[str, str],
    created: int,
) -> JSON:
    due = _initial_requirements(business_type)
    currency = _CURRENCY_BY_COUNTRY.get(country) or ("eur" if country in _EU else "usd")
    return {
        "id": account_id,
        "object": "account",
        "business_profile": {
            "mcc": None,
            "name": None,
            "product_description": None,
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
        },
        "business_type": business_type,
        "capabilities": {"card_payments": "inactive", "transfers": "inactive"},
        "charges_enabled": False,
        "controller": {
            "fees": {"payer": "application"},
            "is_controller": True,
            "losses": {"payments": "application"},
            "requirement_collection": "stripe",
            "stripe_dashboard": {"type": "express"},
            "type": "application",
        },
        "country": country,
        "created": created,
        "default_currency": currency,
        "details_submitted": False,
        "email": email,
        "external_accounts": _list([], f"/v1/accounts/{account_id}/external_accounts"),
        "future_requirements": _requirements([]),
        "livemode": False,
        "metadata": dict(metadata),
        "payouts_enabled": False,
        "requirements": _requirements(due, past_due=due, disabled_reason="requirements.past_due"),
        "settings": {
            "payouts": {
                "debit_negative_balances": True,
                "schedule": {"delay_days": 2, "interval": "daily"},
                "statement_descriptor": None,
            }
        },
        "tos_acceptance": {
            "date": None,
            "ip": None,
            "service_agreement": "full",
            "user_agent": None,
        },
        "type": "express",
    }


def _controller_settings(controller: Mapping[str, Any]) -> dict[str, Any]:
    """``{"fees.payer": "application", ...}`` from nested controller properties."""
    flat: dict[str, Any] = {}
    for key, value in controller.items():
        if isinstance(value, Mapping):
            for inner, setting in value.items():
                flat[f"{key}.{inner}"] = setting
        else:
            flat[str(key)] = value
    return flat


def _controller_object(controller: Mapping[str, Any]) -> JSON:
    settings = _controller_settings(controller)
    return {
        # Stripe's defaults for what the request leaves out.
        "fees": {"payer": settings.get("fees.payer", "account")},
        "is_controller": True,
        "losses": {"payments": settings.get("losses.payments", "stripe")},
        "requirement_collection": settings.get("requirement_collection", "stripe"),
        "stripe_dashboard": {"type": settings.get("stripe_dashboard.type", "full")},
        "type": "application",
    }


def _account_type(controller: Mapping[str, Any]) -> str:
    """The legacy ``type`` Stripe reports for controller properties ("none" if none fits)."""
    c = _controller_object(controller)
    dashboard = c["stripe_dashboard"]["type"]
    if dashboard == "express" and c["requirement_collection"] == "stripe":
        return "express"
    if dashboard == "none" and c["requirement_collection"] == "application":
        return "custom"
    if dashboard == "full" and c["fees"]["payer"] == "account":
        return "standard"
    return "none"


def _bank_account(account: JSON) -> JSON:
    return {
        "id": new_id("ba"),
        "object": "bank_account",
        "account": account["id"],
        "account_holder_name": None,
        "account_holder_type": None,
        "bank_name": "STRIPE TEST BANK",
        "country": account["country"],
        "currency": account["default_currency"],
        "default_for_currency": True,
        "last4": "6789",
        "metadata": {},
        "routing_number": "110000000",
        "status": "new",
    }


def _capability_object(account: JSON, name: str) -> JSON:
    return {
        "id": name,
        "object": "capability",
        "account": account["id"],
        "future_requirements": _requirements([]),
        "livemode": False,
        "requested": True,
        "requested_at": account["created"],
        "requirements": copy.deepcopy(account["requirements"]),
        "status": account["capabilities"][name],
    }


def _payment_intent_object(
    pi_id: str,
    *,
    amount: int,
    currency: str,
    capture_method: str,
    transfer_group: str | None,
    metadata: Mapping[str, str],
    destination: str | None,
    application_fee_amount: int | None,
    description: str | None,
    receipt_email: str | None,
    created: int,
) -> JSON:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": application_fee_amount,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": capture_method,
        "client_secret": f"{pi_id}_secret_{_random(25)}",
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": None,
        "description": description,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {
            "card": {"installments": None, "network": None, "request_three_d_secure": "automatic"}
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": receipt_email,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": {"destination": destination} if destination is not None else None,
        "transfer_group": transfer_group,
    }


def _charge_object(intent: JSON, number: str, now: int, *, authenticated: bool = False) -> JSON:
    fingerprint = hashlib.sha256(number.encode()).hexdigest()[:16]
    destination = intent["transfer_data"]["destination"] if intent["transfer_data"] else None
    return {
        "id": new_id("ch"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": intent["application_fee_amount"],
        "balance_transaction": None,
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
        },
        "captured": False,
        "created": now,
        "currency": intent["currency"],
        "customer": None,
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": intent["id"],
        "payment_method": new_id("pm"),
        "payment_method_details": {
            "card": {
                "amount_authorized": intent["amount"],
                "brand": "visa",
                "capture_before": None,
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "US",
                "exp_month": 12,
                "exp_year": time.gmtime(now).tm_year + 3,
                "fingerprint": fingerprint,
                "funding": "credit",
                "last4": number[-4:],
                "network": "visa",
                "three_d_secure": (
                    {
                        "authentication_flow": "challenge",
                        "result": "authenticated",
                        "version": "2.2.0",
                    }
                    if authenticated
                    else None
                ),
            },
            "type": "card",
        },
        "receipt_email": intent["receipt_email"],
        "receipt_url": None,
        "refunded": False,
        "review": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "status": "succeeded",
        "transfer": None,
        "transfer_data": {"amount": None, "destination": destination} if destination else None,
        "transfer_group": intent["transfer_group"],
    }


def _application_fee_object(charge: JSON, account: str, amount: int, now: int) -> JSON:
    fee_id = new_id("fee")
    return {
        "id": fee_id,
        "object": "application_fee",
        "account": account,
        "amount": amount,
        "amount_refunded": 0,
        "application": "ca_simulated_escrow_connect",
        "balance_transaction": new_id("txn"),
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "livemode": False,
        "originating_transaction": None,
        "refunded": False,
        "refunds": _list([], f"/v1/application_fees/{fee_id}/refunds"),
    }


def _refund_application_fee(fee: JSON, amount: int, now: int) -> None:
    fee_refund = {
        "id": new_id("fr"),
        "object": "fee_refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "created": now,
        "currency": fee["currency"],
        "fee": fee["id"],
        "metadata": {},
    }
    fee["amount_refunded"] += amount
    fee["refunded"] = fee["amount_refunded"] >= fee["amount"]
    fee["refunds"]["data"].insert(0, fee_refund)
    fee["refunds"]["total_count"] = len(fee["refunds"]["data"])


def _balance_transaction(
    *, amount: int, fee: int, currency: str, source: str, description: str, now: int
) -> JSON:
    return {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "created": now,
        "currency": currency,
        "description": description,
        "fee": fee,
        "fee_details": [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Dispute fee",
                "type": "stripe_fee",
            }
        ]
        if fee
        else [],
        "net": amount - fee,
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "source": source,
        "status": "available",
        "type": "adjustment",
    }


# --- small helpers -------------------------------------------------------------------------


def _newest_first(objects: list[JSON]) -> list[JSON]:
    # Insertion order is creation order; reverse it (Stripe lists newest first).
    return objects[::-1]


def _proportion(total: int, part: int, whole: int) -> int:
    """``total * part / whole`` rounded half up, in integers."""
    if whole <= 0:
        return 0
    return (2 * total * part + whole) // (2 * whole)


def _card_number(card: str) -> str:
    if not isinstance(card, str) or not card.strip():
        raise ValueError("card must be a card number or a name from CARDS")
    named = CARDS.get(card.strip())
    if named is not None:
        return named.number
    return "".join(ch for ch in card if ch.isdigit())


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-like data (dicts, lists, scalars), copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
