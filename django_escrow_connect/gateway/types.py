"""Plain results returned by a payment gateway.

These frozen dataclasses are all the rest of the package sees of Stripe's
objects. Each has a ``from_dict`` that reads Stripe's JSON shape (API version
``2026-10-28.endive``), so a webhook handler can build one from an event's
``data.object`` without calling Stripe, and a simulated gateway can build one
from a hand-written dict.

Conventions: amounts stay integers in the currency's minor unit; Stripe's unix
timestamps become timezone-aware UTC datetimes; a field Stripe may *expand*
(``latest_charge``, ``destination``, ...) is always reduced to the object's id.

This module must not import ``stripe``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from ..money import MAX_MINOR_AMOUNT, normalize_currency

__all__ = [
    "AccountBusinessType",
    "AccountLinkCollect",
    "AccountLinkResult",
    "AccountLinkType",
    "AccountSessionResult",
    "AccountSnapshot",
    "CancellationReason",
    "CaptureMethod",
    "ChargeSnapshot",
    "CustomerSnapshot",
    "DisputeSnapshot",
    "FutureRequirements",
    "LoginLinkResult",
    "PaymentIntentSnapshot",
    "PaymentMethodSnapshot",
    "PayoutSnapshot",
    "RefundReason",
    "RefundSnapshot",
    "ServiceAgreement",
    "SessionComponents",
    "SetupFutureUsage",
    "TransferReversalSnapshot",
    "TransferSnapshot",
]

#: Stripe's ``business_type`` values the package creates accounts with; the stored
#: column uses :class:`django_escrow_connect.states.BusinessType` (same values).
AccountBusinessType = Literal["individual", "company"]
AccountLinkType = Literal["account_onboarding", "account_update"]
#: ``collection_options[fields]`` of an account link: which requirements
#: onboarding collects (Stripe's default: ``currently_due``).
AccountLinkCollect = Literal["currently_due", "eventually_due"]
#: ``collection_options[future_requirements]`` of an account link (Stripe's
#: default: ``omit``).
FutureRequirements = Literal["include", "omit"]
#: An AccountSession's components: ``{name: {feature: bool}}``; an empty
#: features dict leaves every feature at Stripe's default.
SessionComponents = Mapping[str, Mapping[str, bool]]
CaptureMethod = Literal["automatic", "automatic_async", "manual"]
CancellationReason = Literal["abandoned", "duplicate", "fraudulent", "requested_by_customer"]
RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer"]
#: ``setup_future_usage`` of a PaymentIntent that saves its payment method.
SetupFutureUsage = Literal["off_session", "on_session"]
#: ``tos_acceptance[service_agreement]`` of a connected account (Stripe: "Service
#: agreement types"). ``recipient`` accounts cannot request ``card_payments``.
ServiceAgreement = Literal["full", "recipient"]


# --- parsing helpers ---------------------------------------------------------


def _check_object(d: Mapping[str, Any], expected: str) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"Expected a {expected} object (a mapping), got {type(d).__name__}")
    obj = d.get("object")
    if obj is not None and obj != expected:
        raise ValueError(f"Expected a {expected!r} object, got {obj!r}")


def _require_str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"Missing or invalid {key!r} in {d.get('object') or 'object'}")
    return value


#: The longest id Stripe gives an object (its API upgrade policy: ids never
#: exceed 255 characters), and the length of every id column.
MAX_ID_LENGTH = 255


def _require_currency(d: Mapping[str, Any]) -> str:
    """``d["currency"]``: three ASCII letters, lowercased as every column stores it.

    Anything else is no currency Stripe sends, and no currency column holds
    it (a check constraint; ``varchar(3)`` on PostgreSQL): a signed event
    carrying one kept answering 500.
    """
    return normalize_currency(_require_str(d, "currency"))


def _require_id(d: Mapping[str, Any], key: str) -> str:
    """A Stripe id: a string of 1-255 characters.

    A longer one is no Stripe id, and storing it would fail on PostgreSQL
    (``varchar(255)``): a signed event carrying one kept answering 500.
    """
    value = _require_str(d, key)
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{key!r} in {d.get('object') or 'object'} is longer than a Stripe id")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Expected an integer amount, got {value!r}")
    if abs(value) > MAX_MINOR_AMOUNT:
        # Beyond every amount column (64 bits): SQLite cannot even bind it.
        raise ValueError(f"Amount out of range: {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    return bool(value)


def _datetime(value: Any) -> datetime | None:
    """Stripe's unix timestamp (seconds) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Expected a unix timestamp, got {value!r}")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"Unix timestamp out of range: {value!r}") from None


def _rfc3339(value: Any) -> datetime | None:
    """A v2 timestamp (RFC 3339, UTC, e.g. ``2025-03-27T17:15:18.000Z``) as an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"Expected an RFC 3339 timestamp, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"Not an RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp without a time zone: {value!r}")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+14:00: its UTC is before year 1
        raise ValueError(f"RFC 3339 timestamp whose UTC is off the calendar: {value!r}") from None


def _require_datetime(d: Mapping[str, Any], key: str) -> datetime:
    value = _datetime(d.get(key))
    if value is None:
        raise ValueError(f"Missing {key!r} in {d.get('object') or 'object'}")
    return value


def _id(value: Any) -> str | None:
    """The id of an expandable field: a plain id string, or an expanded object.

    A string longer than any Stripe id is refused (``ValueError``), as in
    :func:`_require_id`.
    """
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str):
        return None
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"Not a Stripe id (longer than {MAX_ID_LENGTH} characters): {value[:32]!r}"
        )
    return value


def _str_tuple(value: Any) -> tuple[str, ...]:
    if not value or not isinstance(value, (list, tuple)):
        return ()
    return tuple(str(item) for item in value)


def _latest_charge(d: Mapping[str, Any]) -> Any:
    """A PaymentIntent's latest charge: ``latest_charge`` (since 2022-11-15), or the
    first of the embedded ``charges`` list older API versions render instead."""
    latest = d.get("latest_charge")
    if latest is not None or "charges" not in d:
        return latest
    data = _mapping(d.get("charges")).get("data")
    return data[0] if isinstance(data, list) and data else None


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _card_capture_before(charge: Any) -> datetime | None:
    """``payment_method_details.card.capture_before`` of a charge (expanded or not)."""
    details = _mapping(_mapping(charge).get("payment_method_details"))
    return _datetime(_mapping(details.get("card")).get("capture_before"))


# --- Connect -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AccountSnapshot:
    """A connected account's identity and readiness to receive money."""

    id: str
    country: str | None = None
    email: str | None = None
    business_type: str | None = None
    charges_enabled: bool = False
    payouts_enabled: bool = False
    details_submitted: bool = False
    currently_due: tuple[str, ...] = ()
    eventually_due: tuple[str, ...] = ()
    past_due: tuple[str, ...] = ()
    disabled_reason: str | None = None
    capabilities: dict[str, str] = field(default_factory=dict)
    default_currency: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: When Stripe created the account (None when the answer did not say).
    created: datetime | None = None
    #: An Accounts v2 account that was closed (``closed: true``): it takes no
    #: transfers any more. Accounts v1 has no such flag (always False).
    closed: bool = False

    @property
    def transfers_active(self) -> bool:
        """Whether transfers to this account can be created now."""
        return self.capabilities.get("transfers") == "active"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccountSnapshot:
        _check_object(d, "account")
        requirements = _mapping(d.get("requirements"))
        capabilities: dict[str, str] = {}
        for name, status in _mapping(d.get("capabilities")).items():
            # Always a status string on the account; tolerate a capability object.
            value = status.get("status") if isinstance(status, Mapping) else status
            if isinstance(value, str):
                capabilities[str(name)] = value
        return cls(
            id=_require_id(d, "id"),
            country=_opt_str(d.get("country")),
            email=_opt_str(d.get("email")),
            business_type=_opt_str(d.get("business_type")),
            charges_enabled=_bool(d.get("charges_enabled")),
            payouts_enabled=_bool(d.get("payouts_enabled")),
            details_submitted=_bool(d.get("details_submitted")),
            currently_due=_str_tuple(requirements.get("currently_due")),
            eventually_due=_str_tuple(requirements.get("eventually_due")),
            past_due=_str_tuple(requirements.get("past_due")),
            disabled_reason=_opt_str(requirements.get("disabled_reason")),
            capabilities=capabilities,
            default_currency=_opt_str(d.get("default_currency")),
            metadata=_metadata(d.get("metadata")),
            created=_datetime(d.get("created")),
        )

    @classmethod
    def from_v2_dict(cls, d: Mapping[str, Any]) -> AccountSnapshot:
        """An Accounts v2 account (``v2.core.account``) on the same fields as a v1 one.

        Accounts v2 has configurations instead of v1's flat readiness fields;
        they are mapped so the rest of the package sees no difference:

        - ``capabilities["transfers"]``: the recipient configuration's
          ``stripe_balance.stripe_transfers`` status (what a ``/v1/transfers``
          to the account needs); ``capabilities["card_payments"]``: the
          merchant configuration's ``card_payments`` status, when it has one.
          In v1's words: ``active`` and ``pending`` as they are, anything else
          (``restricted``, ``rejected``, ``unsupported``) ``inactive``.
        - ``charges_enabled``: merchant ``card_payments`` is active.
        - ``payouts_enabled``: recipient ``stripe_balance.payouts`` is active;
          without that capability in the answer, ``stripe_transfers`` is.
        - requirements: each entry's ``description`` (the machine-readable
          requirement) under its ``minimum_deadline.status``; entries that
          await Stripe (not the user) are verification in progress, not due.
          ``eventually_due`` holds every requirement awaiting the user (v1's
          ``eventually_due`` includes the currently due ones too).
        - ``details_submitted``: the owner accepted Stripe's terms in
          onboarding (``identity.attestations.terms_of_service.account.date``),
          or nothing awaiting the user is currently or past due (v2 has no
          such flag). Like v1's, it stays true when requirements come later.
        - ``disabled_reason``: v1's vocabulary, while ``stripe_transfers`` is
          not active: ``rejected.<reason>`` for a rejection,
          ``requirements.past_due``, or ``requirements.pending_verification``.

        Parts the answer leaves out (``include`` not asked for) read as empty.
        """
        _check_object(d, "v2.core.account")
        identity = _mapping(d.get("identity"))
        configuration = _mapping(d.get("configuration"))
        recipient = _mapping(_mapping(configuration.get("recipient")).get("capabilities"))
        balance = _mapping(recipient.get("stripe_balance"))
        transfers = _mapping(balance.get("stripe_transfers"))
        payouts = _mapping(balance.get("payouts"))
        merchant = _mapping(_mapping(configuration.get("merchant")).get("capabilities"))
        card_payments = _mapping(merchant.get("card_payments"))
        capabilities: dict[str, str] = {}
        for name, capability in (("transfers", transfers), ("card_payments", card_payments)):
            status = capability.get("status")
            if isinstance(status, str):
                capabilities[name] = status if status in ("active", "pending") else "inactive"

        due: dict[str, list[str]] = {"currently_due": [], "eventually_due": [], "past_due": []}
        awaiting_stripe = False
        entries = _mapping(d.get("requirements")).get("entries")
        for entry in entries if isinstance(entries, list) else []:
            entry = _mapping(entry)
            description = entry.get("description")
            if not isinstance(description, str) or not description:
                continue
            if entry.get("awaiting_action_from") == "stripe":
                awaiting_stripe = True
                continue
            deadline = _mapping(entry.get("minimum_deadline")).get("status")
            # v1's currently_due includes what is past due.
            if deadline in ("currently_due", "past_due"):
                due["currently_due"].append(description)
            if deadline == "past_due":
                due["past_due"].append(description)
            due["eventually_due"].append(description)

        transfers_status = transfers.get("status")
        disabled_reason: str | None = None
        if transfers_status != "active":
            rejection = next(
                (
                    str(detail.get("code"))
                    for detail in transfers.get("status_details") or ()
                    if isinstance(detail, Mapping)
                    and str(detail.get("code") or "").startswith("rejected_")
                ),
                None,
            )
            if transfers_status == "rejected" or rejection:
                reason = (rejection or "rejected_other").removeprefix("rejected_")
                disabled_reason = f"rejected.{reason}"
            elif due["past_due"]:
                disabled_reason = "requirements.past_due"
            elif awaiting_stripe:
                disabled_reason = "requirements.pending_verification"
        payouts_status = payouts.get("status")
        payouts_enabled = (
            payouts_status == "active"
            if isinstance(payouts_status, str)
            else transfers_status == "active"
        )
        entity_type = identity.get("entity_type")
        terms = _mapping(_mapping(identity.get("attestations")).get("terms_of_service"))
        terms_accepted = _mapping(terms.get("account")).get("date")
        return cls(
            id=_require_id(d, "id"),
            country=_opt_str(identity.get("country")),
            email=_opt_str(d.get("contact_email")),
            business_type=entity_type if entity_type in ("individual", "company") else None,
            charges_enabled=capabilities.get("card_payments") == "active",
            payouts_enabled=payouts_enabled,
            details_submitted=bool(terms_accepted) or not due["currently_due"],
            currently_due=tuple(due["currently_due"]),
            eventually_due=tuple(due["eventually_due"]),
            past_due=tuple(due["past_due"]),
            disabled_reason=disabled_reason,
            capabilities=capabilities,
            default_currency=_opt_str(_mapping(d.get("defaults")).get("currency")),
            metadata=_metadata(d.get("metadata")),
            created=_rfc3339(d.get("created")),
            closed=d.get("closed") is True,
        )


@dataclass(frozen=True, kw_only=True)
class AccountLinkResult:
    """A single-use onboarding/update link; ``url`` is a bearer credential, never log it."""

    url: str = field(repr=False)
    expires_at: datetime

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccountLinkResult:
        _check_object(d, "account_link")
        return cls(url=_require_str(d, "url"), expires_at=_require_datetime(d, "expires_at"))

    @classmethod
    def from_v2_dict(cls, d: Mapping[str, Any]) -> AccountLinkResult:
        """A v2 account link (``v2.core.account_link``; ``expires_at`` is RFC 3339)."""
        _check_object(d, "v2.core.account_link")
        expires_at = _rfc3339(d.get("expires_at"))
        if expires_at is None:
            raise ValueError("Missing 'expires_at' in v2.core.account_link")
        return cls(url=_require_str(d, "url"), expires_at=expires_at)


@dataclass(frozen=True, kw_only=True)
class LoginLinkResult:
    """A single-use Express Dashboard link; ``url`` is a bearer credential, never log it."""

    url: str = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoginLinkResult:
        _check_object(d, "login_link")
        return cls(url=_require_str(d, "url"))


@dataclass(frozen=True, kw_only=True)
class AccountSessionResult:
    """An embedded-components session.

    Hand ``client_secret`` to the browser; never store or log it.
    """

    client_secret: str = field(repr=False)
    expires_at: datetime

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccountSessionResult:
        _check_object(d, "account_session")
        return cls(
            client_secret=_require_str(d, "client_secret"),
            expires_at=_require_datetime(d, "expires_at"),
        )


# --- Payments -------------------------------------------------------------------


def _last_payment_error(value: Any) -> dict[str, str | None] | None:
    if not isinstance(value, Mapping):
        return None
    return {key: _opt_str(value.get(key)) for key in ("code", "decline_code", "message", "type")}


@dataclass(frozen=True, kw_only=True)
class PaymentIntentSnapshot:
    """A PaymentIntent. ``client_secret`` goes to the browser only; it is hidden from repr."""

    id: str
    status: str
    amount: int
    amount_received: int = 0
    amount_capturable: int = 0
    currency: str
    client_secret: str | None = field(default=None, repr=False)
    latest_charge: str | None = None
    capture_method: str | None = None
    transfer_group: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: Manual capture only: when the authorisation lapses. Known only when the
    #: latest charge was expanded (``retrieve_payment_intent(expand_charge=True)``).
    capture_before: datetime | None = None
    #: When the PaymentIntent was created (before any authorisation of it).
    created: datetime | None = None
    #: ``code``, ``decline_code``, ``message`` and ``type`` of the last failed attempt.
    last_payment_error: dict[str, str | None] | None = None
    cancellation_reason: str | None = None
    #: The PaymentMethod used (an id); with ``setup_future_usage`` it is saved
    #: to ``customer`` once the PaymentIntent succeeds.
    payment_method: str | None = None
    customer: str | None = None
    setup_future_usage: str | None = None
    #: Destination charges: the application fee Stripe takes (``None`` when
    #: none was set). A capture may set another one (the Stripe dashboard
    #: does), so after a capture this is Stripe's figure, not the app's.
    application_fee_amount: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PaymentIntentSnapshot:
        _check_object(d, "payment_intent")
        latest_charge = _latest_charge(d)
        return cls(
            id=_require_id(d, "id"),
            status=_require_str(d, "status"),
            amount=_int(d.get("amount")),
            amount_received=_int(d.get("amount_received")),
            amount_capturable=_int(d.get("amount_capturable")),
            currency=_require_currency(d),
            client_secret=_opt_str(d.get("client_secret")),
            latest_charge=_id(latest_charge),
            capture_method=_opt_str(d.get("capture_method")),
            transfer_group=_opt_str(d.get("transfer_group")),
            metadata=_metadata(d.get("metadata")),
            capture_before=(
                _card_capture_before(latest_charge) if isinstance(latest_charge, Mapping) else None
            ),
            created=_datetime(d.get("created")),
            last_payment_error=_last_payment_error(d.get("last_payment_error")),
            cancellation_reason=_opt_str(d.get("cancellation_reason")),
            payment_method=_id(d.get("payment_method")),
            customer=_id(d.get("customer")),
            setup_future_usage=_opt_str(d.get("setup_future_usage")),
            application_fee_amount=_opt_int(d.get("application_fee_amount")),
        )


@dataclass(frozen=True, kw_only=True)
class CustomerSnapshot:
    """A Customer: the payer a saved payment method belongs to (ids only, no personal data)."""

    id: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CustomerSnapshot:
        _check_object(d, "customer")
        return cls(id=_require_id(d, "id"), metadata=_metadata(d.get("metadata")))


@dataclass(frozen=True, kw_only=True)
class PaymentMethodSnapshot:
    """A PaymentMethod; ``customer`` is None once it is detached."""

    id: str
    type: str | None = None
    customer: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PaymentMethodSnapshot:
        _check_object(d, "payment_method")
        return cls(
            id=_require_id(d, "id"),
            type=_opt_str(d.get("type")),
            customer=_id(d.get("customer")),
        )


@dataclass(frozen=True, kw_only=True)
class ChargeSnapshot:
    """A charge: what was captured, refunded and disputed, and where its funds landed."""

    id: str
    payment_intent: str | None = None
    amount: int
    amount_captured: int = 0
    amount_refunded: int = 0
    currency: str
    refunded: bool = False
    disputed: bool = False
    #: Null at first for ``capture_method=automatic_async``; filled in later (``charge.updated``).
    balance_transaction: str | None = None
    capture_before: datetime | None = None
    #: Destination charges: the platform's fee (``None`` when none was set),
    #: the application fee object's id and the transfer Stripe made.
    application_fee_amount: int | None = None
    application_fee: str | None = None
    transfer: str | None = None
    transfer_group: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChargeSnapshot:
        _check_object(d, "charge")
        return cls(
            id=_require_id(d, "id"),
            payment_intent=_id(d.get("payment_intent")),
            amount=_int(d.get("amount")),
            amount_captured=_int(d.get("amount_captured")),
            amount_refunded=_int(d.get("amount_refunded")),
            currency=_require_currency(d),
            refunded=_bool(d.get("refunded")),
            disputed=_bool(d.get("disputed")),
            balance_transaction=_id(d.get("balance_transaction")),
            capture_before=_card_capture_before(d),
            application_fee_amount=_opt_int(d.get("application_fee_amount")),
            application_fee=_id(d.get("application_fee")),
            transfer=_id(d.get("transfer")),
            transfer_group=_opt_str(d.get("transfer_group")),
        )


# --- Money movement ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TransferReversalSnapshot:
    """Money pulled back from a connected account into the platform balance."""

    id: str
    transfer: str
    amount: int
    currency: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransferReversalSnapshot:
        _check_object(d, "transfer_reversal")
        transfer = _id(d.get("transfer"))
        if transfer is None:
            raise ValueError("Missing 'transfer' in transfer_reversal")
        return cls(
            id=_require_id(d, "id"),
            transfer=transfer,
            amount=_int(d.get("amount")),
            currency=_require_currency(d),
            metadata=_metadata(d.get("metadata")),
        )


@dataclass(frozen=True, kw_only=True)
class TransferSnapshot:
    """A transfer from the platform balance to a connected account."""

    id: str
    amount: int
    amount_reversed: int = 0
    currency: str
    destination: str | None = None
    source_transaction: str | None = None
    transfer_group: str | None = None
    reversed: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    #: The reversals Stripe embeds in the transfer (its first page, newest first).
    reversals: tuple[TransferReversalSnapshot, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransferSnapshot:
        _check_object(d, "transfer")
        reversals = _mapping(d.get("reversals")).get("data") or ()
        return cls(
            id=_require_id(d, "id"),
            amount=_int(d.get("amount")),
            amount_reversed=_int(d.get("amount_reversed")),
            currency=_require_currency(d),
            destination=_id(d.get("destination")),
            source_transaction=_id(d.get("source_transaction")),
            transfer_group=_opt_str(d.get("transfer_group")),
            reversed=_bool(d.get("reversed")),
            metadata=_metadata(d.get("metadata")),
            reversals=tuple(
                TransferReversalSnapshot.from_dict(r)
                for r in reversals
                if isinstance(r, Mapping) and r.get("object") == "transfer_reversal"
            ),
        )


@dataclass(frozen=True, kw_only=True)
class RefundSnapshot:
    """A refund to the customer; ``status`` may be ``pending`` and fail later."""

    id: str
    amount: int
    currency: str
    status: str | None = None
    payment_intent: str | None = None
    charge: str | None = None
    reason: str | None = None
    failure_reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RefundSnapshot:
        _check_object(d, "refund")
        return cls(
            id=_require_id(d, "id"),
            amount=_int(d.get("amount")),
            currency=_require_currency(d),
            status=_opt_str(d.get("status")),
            payment_intent=_id(d.get("payment_intent")),
            charge=_id(d.get("charge")),
            reason=_opt_str(d.get("reason")),
            failure_reason=_opt_str(d.get("failure_reason")),
            metadata=_metadata(d.get("metadata")),
        )


@dataclass(frozen=True, kw_only=True)
class DisputeSnapshot:
    """A dispute (chargeback or inquiry) against a charge."""

    id: str
    charge: str | None = None
    payment_intent: str | None = None
    amount: int
    currency: str
    status: str
    reason: str | None = None
    evidence_due_by: datetime | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DisputeSnapshot:
        _check_object(d, "dispute")
        return cls(
            id=_require_id(d, "id"),
            charge=_id(d.get("charge")),
            payment_intent=_id(d.get("payment_intent")),
            amount=_int(d.get("amount")),
            currency=_require_currency(d),
            status=_require_str(d, "status"),
            reason=_opt_str(d.get("reason")),
            evidence_due_by=_datetime(_mapping(d.get("evidence_details")).get("due_by")),
        )


@dataclass(frozen=True, kw_only=True)
class PayoutSnapshot:
    """A payout from a connected account's balance to its bank (``payout.paid`` / ``.failed``)."""

    id: str
    amount: int
    currency: str
    status: str
    failure_code: str | None = None
    failure_message: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PayoutSnapshot:
        _check_object(d, "payout")
        return cls(
            id=_require_id(d, "id"),
            amount=_int(d.get("amount")),
            currency=_require_currency(d),
            status=_require_str(d, "status"),
            failure_code=_opt_str(d.get("failure_code")),
            failure_message=_opt_str(d.get("failure_message")),
        )


def __getattr__(name: str) -> Any:
    """``BusinessType`` (before 0.2) still works, with a ``DeprecationWarning`` (removed in 0.3)."""
    if name == "BusinessType":
        warnings.warn(
            "django_escrow_connect.gateway.types.BusinessType is deprecated; use "
            "AccountBusinessType (states.BusinessType is the stored column's choices)",
            DeprecationWarning,
            stacklevel=2,
        )
        return AccountBusinessType
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
