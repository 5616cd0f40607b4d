"""The simulated Stripe's state: objects, clock, idempotency records, faults, call log."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

from .. import exceptions
from ..exceptions import (
    GatewayAuthenticationFailed,
    GatewayError,
    GatewayPermissionDenied,
    IdempotencyConflict,
    RateLimited,
    ResourceMissing,
)
from ..gateway.arguments import require_idempotency_key as _require_idempotency_key
from ..gateway.types import PaymentIntentSnapshot
from .balances import (
    PlatformBalance,
)
from .events import (
    EventLog,
    UndeliveredEvent,
)
from .objects import (
    JSON,
    _plain,
    new_id,
)
from .rules import (
    IDEMPOTENCY_KEY_TTL_SECONDS,
)

T = TypeVar("T")

#: The format of :meth:`SimulatedStripe.dump_state`; raised on incompatible changes.
STATE_VERSION = 1
#: Store attributes saved as they are: Stripe's JSON objects and plain mappings.
_SAVED_AS_JSON = (
    "accounts",
    "payment_intents",
    "customers",
    "payment_methods",
    "charges",
    "transfers",
    "reversals",
    "refunds",
    "disputes",
    "payouts",
    "application_fees",
    "events",
    "thin_events",
    "v2_accounts",
    "account_links",
    "account_sessions",
    "balances",
    "endpoint_api_versions",
    "platform_available",
    "platform_pending",
    "platform_country",
    "_owners",
    "_pending_cards",
    "_payment_method_cards",
    "_async_refunds",
    "_unsettled_refunds",
)
_SAVED_AS_SETS = ("deauthorized", "_dispute_on_capture", "_appealed_disputes")
E = TypeVar("E", bound=GatewayError)


#: StoredError's fields after ``cls``, in order.
_STORED_ERROR_FIELDS = (
    "message",
    "code",
    "param",
    "decline_code",
    "http_status",
    "should_retry",
    "error_type",
)


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
    #: The id of the PaymentIntent a refused confirmation left (replayed as it is now).
    payment_intent_id: str | None = None

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
            exc.payment_intent.id if exc.payment_intent is not None else None,
        )

    def as_data(self) -> JSON:
        """JSON-able form; the error class by name, from :mod:`..exceptions`."""
        return {
            "class": self.cls.__name__,
            **{key: getattr(self, key) for key in _STORED_ERROR_FIELDS},
            "payment_intent_id": self.payment_intent_id,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> StoredError:
        error_class = getattr(exceptions, str(data["class"]), None)
        if not (isinstance(error_class, type) and issubclass(error_class, GatewayError)):
            raise ValueError(f"not a gateway error: {data['class']!r}")
        fields: dict[str, Any] = {key: data[key] for key in _STORED_ERROR_FIELDS}
        return cls(error_class, **fields, payment_intent_id=data.get("payment_intent_id"))

    def replay(self, request_id: str | None, store: Any = None) -> GatewayError:
        """The same error again, as a replay answers it (with the new request's id).

        A card error that left a PaymentIntent carries it again, as the store
        has it now (Stripe replays the first body; the id is what matters).
        """
        intent = None
        if self.payment_intent_id and store is not None:
            found = store.payment_intents.get(self.payment_intent_id)
            intent = PaymentIntentSnapshot.from_dict(found) if found is not None else None
        return self.cls(
            self.message,
            code=self.code,
            param=self.param,
            decline_code=self.decline_code,
            request_id=request_id,
            http_status=self.http_status,
            should_retry=self.should_retry,
            error_type=self.error_type,
            payment_intent=intent,
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
    GatewayAuthenticationFailed,
    GatewayPermissionDenied,
    RateLimited,
    IdempotencyConflict,
)


@dataclass(frozen=True)
class InjectedFailure:
    error: GatewayError
    after_effect: bool
    #: Stripe started executing, failed, and stored the error under the key.
    stored: bool = False


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
        "list_payment_intents",
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
        # Saved payment methods (off-session tips).
        "create_customer",
        "detach_payment_method",
        # Accounts v2 and thin events (the AccountsV2Gateway protocol).
        "create_account_v2",
        "retrieve_account_v2",
        "list_accounts_v2",
        "create_account_link_v2",
        "list_thin_events",
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
        "close_account_v2",
    }
)


class SimulatedStripe(EventLog, PlatformBalance):
    """The simulated Stripe: objects, idempotency keys, events, clock, faults.

    One process-wide instance, :data:`simulated_stripe`, backs every
    :class:`SimulatedGateway`. All state is guarded by :attr:`lock`; events
    are delivered after the lock is released.
    """

    accounts: dict[str, JSON]
    payment_intents: dict[str, JSON]
    #: Customers and the PaymentMethods saved to them (``customer`` None once detached).
    customers: dict[str, JSON]
    payment_methods: dict[str, JSON]
    charges: dict[str, JSON]
    transfers: dict[str, JSON]
    reversals: dict[str, JSON]
    refunds: dict[str, JSON]
    disputes: dict[str, JSON]
    payouts: dict[str, JSON]
    application_fees: dict[str, JSON]
    events: dict[str, JSON]
    #: Thin (v2) events, by id; delivered to the thin endpoint.
    thin_events: dict[str, JSON]
    #: What only Accounts v2 has, per v2 account id (its v1 view is in ``accounts``).
    v2_accounts: dict[str, JSON]
    idempotency: dict[str, IdempotencyRecord]
    #: ``(method, kwargs)`` of every gateway call the application made, in order.
    calls: list[tuple[str, dict[str, Any]]]
    #: Events the sink could not take (receiver missing or raising).
    undelivered: list[UndeliveredEvent]
    #: Latest account link per account: return/refresh URLs for the onboarding page.
    account_links: dict[str, JSON]
    #: Account sessions by the SHA-256 of their client secret (never the secret
    #: itself): account, components and expiry, for the stand-in Connect.js.
    account_sessions: dict[str, JSON]
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
            self.customers = {}
            self.payment_methods = {}
            self.charges = {}
            self.transfers = {}
            self.reversals = {}
            self.refunds = {}
            self.disputes = {}
            self.payouts = {}
            self.application_fees = {}
            self.events = {}
            self.thin_events = {}
            self.v2_accounts = {}
            self.idempotency = {}
            self.calls = []
            self.undelivered = []
            self.account_links = {}
            self.account_sessions = {}
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
            #: Saved cards: payment method -> the card number it charges.
            self._payment_method_cards: dict[str, str] = {}
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

    def dump_state(self) -> JSON:
        """Everything Stripe would remember, as JSON-able data (see :meth:`load_state`).

        Not saved: the call log and injected faults, which belong to one
        process's test, and the request being run.
        """
        with self.lock:
            data: JSON = {"version": STATE_VERSION, "time_offset": self._time_offset}
            for name in _SAVED_AS_JSON:
                data[name.lstrip("_")] = copy.deepcopy(getattr(self, name))
            for name in _SAVED_AS_SETS:
                data[name.lstrip("_")] = sorted(getattr(self, name))
            data["idempotency"] = {
                key: {
                    "method": record.method,
                    "fingerprint": record.fingerprint,
                    "response": copy.deepcopy(record.response),
                    "created": record.created,
                    "error": record.error.as_data() if record.error is not None else None,
                }
                for key, record in self.idempotency.items()
            }
            data["undelivered"] = [asdict(item) for item in self.undelivered]
        return data

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Replace all state with what :meth:`dump_state` returned (faults and calls cleared).

        Raises ``ValueError`` for data of another :data:`STATE_VERSION`,
        leaving the store as it was.
        """
        if data.get("version") != STATE_VERSION:
            raise ValueError(
                f"simulated Stripe state of version {data.get('version')!r}; "
                f"this version loads {STATE_VERSION}"
            )
        idempotency = {
            str(key): IdempotencyRecord(
                method=record["method"],
                fingerprint=record["fingerprint"],
                response=copy.deepcopy(record["response"]),
                created=int(record["created"]),
                error=(
                    StoredError.from_data(record["error"]) if record["error"] is not None else None
                ),
            )
            for key, record in data["idempotency"].items()
        }
        undelivered = [UndeliveredEvent(**item) for item in data["undelivered"]]
        with self.lock:
            self.reset()
            self._time_offset = int(data["time_offset"])
            for name in _SAVED_AS_JSON:
                # A state saved before a collection existed keeps reset()'s empty one.
                setattr(self, name, copy.deepcopy(data.get(name.lstrip("_"), getattr(self, name))))
            for name in _SAVED_AS_SETS:
                setattr(self, name, set(data[name.lstrip("_")]))
            self.idempotency = idempotency
            self.undelivered = undelivered

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
        v2: bool = False,
    ) -> JSON:
        """:meth:`execute`, answering a repeated key with the stored answer.

        As on Stripe ("Idempotent requests"), the first answer of a request
        that started executing is stored, whether a response or an error
        (a refusal such as ``balance_insufficient``, or a 500), and replayed
        for the same key and parameters for 24 hours. ``validate`` checks the
        parameters alone, before execution: its errors are not stored, nor
        are those in :data:`_NOT_STORED_ERRORS`.

        ``v2``: a ``/v2`` endpoint. Stripe documents that a v2 retry does not
        repeat what succeeded but finishes failed work: a stored 5xx is not
        replayed, the retry runs (a refusal, 4xx, still is).
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
                if record.error is not None and v2 and (record.error.http_status or 0) >= 500:
                    del self.idempotency[idempotency_key]
                    record = None
                elif record.error is not None:
                    raise record.error.replay(self._request.get("id"), self)
                else:
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
                GatewayPermissionDenied,
                f"The provided key does not have access to account '{account_id}' (or that "
                "account does not exist). Application access may have been revoked.",
                code="account_invalid",
                http_status=403,
            )
        return account

    def payouts_of(self, account_id: str) -> list[JSON]:
        """The payouts of connected account ``account_id``, oldest first (copies)."""
        with self.lock:
            return [
                copy.deepcopy(payout)
                for payout_id, payout in self.payouts.items()
                if self._owners.get(payout_id) == account_id
            ]

    def credit(self, account_id: str, currency: str, amount: int) -> None:
        balance = self.balances.setdefault(account_id, {})
        balance[currency] = balance.get(currency, 0) + amount

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


def dump_state() -> JSON:
    """The process-wide simulated Stripe's state, as JSON-able data."""
    return simulated_stripe.dump_state()


def load_state(data: Mapping[str, Any]) -> None:
    """Replace the process-wide simulated Stripe's state with ``data`` from :func:`dump_state`."""
    simulated_stripe.load_state(data)
